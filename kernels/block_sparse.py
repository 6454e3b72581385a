"""Block-sparse prefill attention chosen by a low-bit estimate (SALE).

SALE (Zhang et al., "SALE: Low-bit Estimation for Efficient Sparse Attention in Long-context LLM Prefilling", arXiv
2505.24179; code BirdChristopher/SALE) runs a causal prefill's attention in two passes per layer:

- the estimate: Q and K quantized to 4 bits (int4_flash_attn/quant_triton.py), then Q.K of every causal block pair
  at INT4 (blocks of 64 queries x 32 keys: experiments/128k_niah_latency.py, block_size_q 64, block_size_k 32);
  no softmax times V, so 2 x head_dim operations per (query, key) pair and query head against attention's 4 x
  head_dim;
- the sparse pass: attention over the local window (the 128 keys before each query: local_window 128, every
  query's diagonal block included) plus the block pairs whose estimate passes a per-head calibrated threshold.

The share of the block pairs beyond the local window that are kept is set by those thresholds and published as no
number: here it is a knob (`kept`), not a fitted value. Pairs are counted per token (a query's 128 preceding keys
are local), a block's granularity left out. Decode is unchanged: SALE is prefill-only.

PrefillSelection.pairs is what the sparse pass computes; kernels/block_estimate.py is the estimate as kernels of its
own (the 4-bit Q.K, whose dtype the device prices, and the quantization pass before it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workloads.op_costs import causal_pairs

# Keys before (and at) each query that SALE always computes (README and 128k_niah_latency.py: local_window 128).
SALE_LOCAL_TOKENS = 128
# A forward of at most this many queries runs plain FlashAttention, with no estimate (BirdChristopher/SALE
# llama31_sparse_patch_4_51.py: q_len <= 1024): a short prompt, or a serving engine's prefill chunk of that size.
SALE_DENSE_QUERIES = 1024


@dataclass(frozen=True)
class PrefillSelection:
    """A prefill whose attention computes each query's local window plus `kept` of its other causal pairs, chosen by
    a 4-bit estimate of every pair (SALE)."""

    kept: float
    dense_queries: int = SALE_DENSE_QUERIES  # chunks of at most this many queries run dense, with no estimate

    def __post_init__(self) -> None:
        if not 0.0 < self.kept <= 1.0:
            raise ValueError(f"prefill_kept: found {self.kept}, allowed: a fraction in (0, 1]")

    def selects(self, queries):
        """Whether a chunk of `queries` new tokens selects (and runs the estimate): more than dense_queries of them (a
        number, or an array of them)."""
        return np.asarray(queries) > self.dense_queries

    def pairs(self, queries, keys, window: int | None = None):
        """The (query, key) pairs the sparse pass computes of a causal chunk of `queries` new tokens over `keys` keys,
        each query attending to at most `window` keys (None: all of them): the local window's pairs, and `kept` of the
        rest, or every pair where the chunk runs dense (a number, or an array of them)."""
        local = SALE_LOCAL_TOKENS if window is None else min(window, SALE_LOCAL_TOKENS)
        near, every = causal_pairs(queries, keys, local), causal_pairs(queries, keys, window)
        selected = near + self.kept * (every - near)
        if np.ndim(queries) == 0:
            return selected if self.selects(queries) else every
        return np.where(self.selects(queries), selected, every)
