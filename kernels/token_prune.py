"""Prompt-token pruning in the prefill: from some layer on, each layer processes only the prompt tokens it keeps.

LazyLLM (Fu et al., "LazyLLM: Dynamic Token Pruning for Efficient Long Context LLM Inference", arXiv 2407.14057,
§3.2 and Fig. 4): from a pruning layer on, a prompt token whose attention score from the last token falls below a
top-k percentile is left out of every later layer; the layers after it see a subset of the tokens the layers before
it saw. The schedule is progressive (more tokens kept in early layers, fewer towards the end); Fig. 7 shows its
stages for Llama 2 7B as layers 1-9 (every prompt token: their cumulative use is the baseline's), 10-19, 20-28 and
29-32. What that does here:
- the layers before the first pruned one, and the embedding before them, process every prompt token;
- the pruned layers process their kept tokens only: their GEMMs, norms and pointwise kernels scale with them, and
  their attention computes the causal (query, key) pairs over them (a pruned token has no KV in those layers); the
  final norm and LM head run after them, on the same tokens. A progressive schedule is priced at its mean kept share
  over the pruned layers: linear work is the same, attention (quadratic in the kept tokens) a little less.
- decode is left as it is (explore/evaluate.py): LazyLLM's decode steps may revive any pruned token, computing its
  missing layers once from the hidden state its Aux Cache holds (§3.2), so a layer's cache may grow back to the
  whole prompt. Decode is priced on the full prompt's KV, the most a step reads; the revivals' work (at most the
  pruned layers' work the prefill skipped, §3.2: each token is computed at most once per layer) is not priced.
The pruned layers' shapes come from the same traced model at the kept prompt length, so every kernel is priced by
the shared mechanism rather than rescaled by hand.
"""

from __future__ import annotations

import numpy as np

from kernels.table import KernelTable

# Where LazyLLM's Llama 2 7B schedule starts pruning: its first stage, layers 1-9 of 32, keeps every prompt token
# (Fu et al., arXiv 2407.14057, Fig. 7's stages; its text: the early layers' token use is the baseline's).
PAPER_PRUNE_START = 9 / 32


def first_pruned_layer(layers: int, start: float) -> int:
    """Index of the first decoder layer that prunes when the share `start` (in [0, 1)) of `layers` runs every prompt
    token (rounded to whole layers; `layers` when none prunes)."""
    if not 0.0 <= start < 1.0:
        raise ValueError(f"start: found {start}, allowed: a fraction in [0, 1)")
    return min(layers, round(start * layers))


def kept_prompt_tokens(prompt: int, kept: float) -> int:
    """Prompt tokens a pruned layer processes when it keeps the share `kept` (in (0, 1]) of `prompt` (at least one:
    the last token, whose attention scores the rest, is always kept)."""
    if not 0.0 < kept <= 1.0:
        raise ValueError(f"kept: found {kept}, allowed: a fraction in (0, 1]")
    return min(prompt, max(1, round(kept * prompt)))


def pruned_prefill(full: KernelTable, kept: KernelTable, first: int) -> KernelTable:
    """A prefill whose decoder layers from `first` on process fewer tokens: the rows of `full` (the model traced at
    the whole prompt) before layer `first`, then the rows of `kept` (the same model traced at the kept tokens) from
    layer `first` on, the final norm and LM head included."""
    return KernelTable.concat([full.select(_before(full, first)), kept.select(~_before(kept, first))])


def _before(table: KernelTable, first: int) -> np.ndarray:
    """Rows of a pass that run before decoder layer `first`: the model's own kernels before its layers (embedding,
    rotary table) and those of the layers below `first`."""
    layers = [k.layer for k in table.kernels]
    first_layered = next((i for i, layer in enumerate(layers) if layer is not None), len(layers))
    return np.array([i < first_layered if layer is None else layer < first for i, layer in enumerate(layers)],
                    dtype=bool)
