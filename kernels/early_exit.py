"""Early exit / layer skipping in decode: each decode token runs a share of the decoder layers (its expected depth).

SkipDecode (Del Corro et al., "SkipDecode: Autoregressive Skip Decoding with Batching and Caching for Efficient LLM
Inference", arXiv 2307.02628, abstract and §3): every token of a batch at one position exits at the same layer, and
exit points fall monotonically with the position, so no token ever needs the KV of a layer that an earlier token
skipped ("eliminating the need to recompute KV caches for preceding tokens"); it bypasses the lower layers and runs
the upper ones. What that does here:
- a decode step runs the kernels of its kept layers only (the model's embedding, final norm and LM head always run);
  the skipped layers do no work;
- attention in a kept layer reads every cached token: the prompt ran every layer, and each earlier decode token ran
  at least the layers a later one runs;
- a decode token holds KV in its kept layers only: its share of a full token's KV is the kept share of the layers.
  (CALM, Schuster et al. 2022, instead copies the exit layer's hidden state into the skipped layers to compute their
  KV, which keeps every layer's KV and adds their K/V projections; SkipDecode needs none of it.)
- the prefill runs every layer.
A step runs whole layers: the expected depth times the layer count, rounded (at least one).
"""

from __future__ import annotations

import numpy as np

from kernels.table import KernelTable


def kept_layers(layers: int, depth: float) -> int:
    """Decoder layers a decode token runs at expected depth `depth` (a share in (0, 1]) of `layers`."""
    if not 0.0 < depth <= 1.0:
        raise ValueError(f"depth: found {depth}, allowed: a fraction in (0, 1]")
    return min(layers, max(1, round(depth * layers)))


def skip_layers(table: KernelTable, layers: int, depth: float) -> KernelTable:
    """A decode step's kernels at expected depth `depth`: those outside the layer stack, and those of its upper
    kept_layers(layers, depth) layers (SkipDecode bypasses the lower ones)."""
    keep = kept_layers(layers, depth)
    if keep == layers:
        return table
    first = layers - keep
    mask = np.array([k.layer is None or k.layer >= first for k in table.kernels], dtype=bool)
    return table.select(mask)


def decode_kv_share(layers: int, depth: float) -> float:
    """The share of a full token's KV a decode token holds at expected depth `depth`: its kept layers'."""
    return kept_layers(layers, depth) / layers
