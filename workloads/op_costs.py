"""FLOPs and bytes of one aten op, from its inputs and outputs.

FLOPs of GEMMs and attention come from torch.utils.flop_counter's registry where it has the op; we
fill in what it misses (CPU flash attention). Bytes follow a few rules: views move nothing, gathers
read only the rows they gather, copies read the source and write the destination.
"""

from __future__ import annotations

import math

import numpy as np

# Ops that alias their input without moving data. _unsafe_view and friends carry no alias
# annotation in their schema but are views all the same.
VIEW_OPS = frozenset({
    "view", "_unsafe_view", "reshape", "_reshape_alias", "alias", "t", "transpose", "permute", "expand",
    "slice", "select", "unsqueeze", "squeeze", "as_strided", "detach", "lift_fresh", "split", "chunk",
    "unbind", "narrow", "view_as_real", "view_as_complex", "split_with_sizes", "unflatten", "flatten",
})

# Ops that create or move data but do no arithmetic.
ZERO_FLOP_OPS = frozenset({
    "copy_", "copy", "clone", "_to_copy", "cat", "stack", "index_select", "embedding", "gather", "index",
    "index_copy_", "index_copy", "index_put_", "index_put", "arange", "zeros", "zeros_like", "ones",
    "ones_like", "empty", "empty_like", "full", "full_like", "new_zeros", "new_empty", "new_ones",
    "scalar_tensor", "fill_", "zero_", "contiguous", "repeat", "repeat_interleave", "tril", "triu",
    "masked_fill", "masked_fill_", "where", "topk", "sort", "argmax", "scatter", "scatter_", "_softmax_backward",
})

# Ops whose first input is a table from which only the output's rows are read.
GATHER_OPS = frozenset({"embedding", "index_select", "gather", "index"})

# In-place ops that add a source into rows of their first input picked by an index: only those rows are read
# and written (an MoE layer adds each expert's output into its tokens' rows).
SCATTER_ADD_OPS = frozenset({"index_add_", "index_add", "scatter_add_", "scatter_add"})

# Ops that allocate an output without reading inputs.
FACTORY_OPS = frozenset({
    "arange", "zeros", "ones", "empty", "full", "scalar_tensor", "zeros_like", "ones_like", "empty_like",
    "full_like", "new_zeros", "new_empty", "new_ones",
})

# Reductions over the dims given as their second argument (keepdim the third): aten's reduce_kernel on a GPU.
REDUCTION_OPS = frozenset({"mean", "sum", "amax", "amin", "prod", "var", "std", "logsumexp"})

ATTENTION_OPS = frozenset({
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_attention_math", "_scaled_dot_product_fused_attention_overrideable",
})


def causal_pairs(q_len: int, kv_len: int, window: int | None = None) -> int:
    """(query, key) pairs a causal kernel computes: query i sees the kv_len - q_len cached keys and i + 1 new; with a
    sliding `window`, at most the `window` keys ending at its own position (Mistral's; FlashAttention's window_size)."""
    if window is None:
        return q_len * (kv_len - q_len) + q_len * (q_len + 1) // 2
    return _windowed_prefix_pairs(kv_len, window) - _windowed_prefix_pairs(kv_len - q_len, window)


def _windowed_prefix_pairs(positions, window: int):
    """Pairs of the first `positions` queries of a causal kernel whose queries see at most `window` keys each (a
    number, or an array of them)."""
    seen = np.minimum(positions, window) if isinstance(positions, np.ndarray) else min(positions, window)
    return seen * (seen + 1) // 2 + (positions - seen) * window


def attention_flops(batch: int, heads: int, q_len: int, kv_len: int, head_dim: int, v_dim: int,
                    causal: bool = False, window: int | None = None) -> float:
    """FLOPs of softmax(Q K^T) V (QK^T and PV, 2 FLOPs per multiply-add).

    Without `causal`, masking is ignored: torch.utils.flop_counter's convention for the fused attention ops
    it knows (what a trace records). With it, only the (query, key) pairs a causal kernel computes count, within
    the model's sliding `window` where it has one.
    """
    pairs = causal_pairs(q_len, kv_len, window) if causal else q_len * kv_len
    return 2.0 * batch * heads * pairs * (head_dim + v_dim)


def _prod(shape) -> int:
    return math.prod(shape) if shape else 1


def generic_flops(short_name: str, in_numels: list[int], out_numels: list[int]) -> float:
    """One FLOP per element for pointwise ops and per input element for reductions; zero for data movement."""
    if short_name in ZERO_FLOP_OPS or short_name in VIEW_OPS or short_name in FACTORY_OPS:
        return 0.0
    return float(max(max(in_numels, default=0), max(out_numels, default=0)))


def registry_flops(func, args, kwargs, out) -> float | None:
    """FLOPs from torch's flop registry, or None where it has no formula for the op."""
    from torch.utils.flop_counter import flop_registry

    formula = flop_registry.get(func.overloadpacket)
    if formula is None:
        return None
    return float(formula(*args, **kwargs, out_val=out))
