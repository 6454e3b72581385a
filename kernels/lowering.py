"""Lower trace ops to kernels: one kernel per aten op that moves data, views dropped (they cost nothing).

This is eager execution: every non-view op launches a kernel. Attention ops become fused attention
kernels whose FLOPs count only the work a causal kernel does; a norm is a norm kernel where one aten op computes
it (rms_norm, layer_norm), and a norm module's separate ops are norm parts: pointwise kernels of their own, priced
as such, that reports count as norm time.
"""

from __future__ import annotations

import math

from kernels.formats import DTYPE_SHORT
from kernels.kernel import Kernel, KernelKind
from workloads.op_costs import ATTENTION_OPS, REDUCTION_OPS, attention_flops
from workloads.trace import Op, Trace

GEMM_OPS = frozenset({"mm", "addmm", "matmul", "linear", "_scaled_mm"})
BATCHED_GEMM_OPS = frozenset({"bmm", "baddbmm"})
SOFTMAX_OPS = frozenset({"_softmax", "softmax", "_safe_softmax", "log_softmax", "_log_softmax"})
NORM_OPS = frozenset({"native_layer_norm", "layer_norm", "rms_norm", "_fused_rms_norm", "native_group_norm"})
EMBEDDING_OPS = frozenset({"embedding"})
ACTIVATION_OPS = frozenset({"silu", "silu_", "gelu", "gelu_", "relu", "relu_", "sigmoid", "tanh", "gelu_tanh"})
# Writes into the KV cache: pointwise like RoPE, but a copy with its own access pattern.
CACHE_WRITE_OPS = frozenset({"copy_", "index_copy_", "index_copy", "index_put_", "index_put", "slice_scatter"})
ATTENTION_MODULES = ("self_attn", "attn", "attention", "self_attention")


def _is_norm_module(module: str) -> bool:
    """A normalization module (`input_layernorm`, `norm`, `ln_f`): eager, its pow, mean, rsqrt and products are
    pointwise kernels of their own (norm parts), which an engine fuses into one norm kernel (kernels/fusion.py)."""
    last = module.rsplit(".", 1)[-1].lower()
    return "norm" in last or last.startswith("ln")


def _is_rope(op: Op) -> bool:
    """A pointwise op of the attention block (rotary embedding of q and k), not a KV-cache write: eager, a part of
    the rotary embedding (rope parts), which an engine fuses into one rotary kernel (kernels/fusion.py)."""
    last = op.module.rsplit(".", 1)[-1].lower()
    return (last in ATTENTION_MODULES or "rotary" in last) and op.short_name not in CACHE_WRITE_OPS


def _bytes(op: Op, role: str) -> float:
    return float(op.bytes_read.get(role, 0) + op.bytes_written.get(role, 0))


def _common(op: Op, trace_dtype: str) -> dict:
    return dict(op=op.short_name, weight_bytes=_bytes(op, "weight"), act_bytes=_bytes(op, "activation"),
                kv_bytes=_bytes(op, "kv"), dtype=DTYPE_SHORT.get(trace_dtype, trace_dtype), layer=op.layer,
                module=op.module)


def _gemm(op: Op, common: dict) -> Kernel:
    a, b = op.inputs[-2].shape, op.inputs[-1].shape  # addmm's first input is the bias
    m, k, n = math.prod(a[:-1]), a[-1], b[-1]
    return Kernel(kind=KernelKind.GEMM, flops=op.flops, tensor_core=True, m=m, n=n, k=k, batch=1, **common)


def _batched_gemm(op: Op, common: dict) -> Kernel:
    a, b = op.inputs[-2].shape, op.inputs[-1].shape
    return Kernel(kind=KernelKind.BATCHED_GEMM, flops=op.flops, tensor_core=True, m=a[-2], n=b[-1], k=a[-1],
                  batch=math.prod(a[:-2]), **common)


def _attention(op: Op, common: dict, window: int | None) -> Kernel:
    q, k, v = op.inputs[0].shape, op.inputs[1].shape, op.inputs[2].shape
    batch, heads, q_len, head_dim = q[0], q[1], q[-2], q[-1]
    kv_len = k[-2]
    causal = bool(op.attrs.get("is_causal", False))
    flops = attention_flops(batch, heads, q_len, kv_len, head_dim, v[-1], causal=causal, window=window)
    kind = KernelKind.ATTENTION_PREFILL if q_len > 1 else KernelKind.ATTENTION_DECODE
    # A cached value read inside its key (the capture reads it once: MLA's latent) adds no width of its own.
    cached = [t.nbytes for t in op.inputs[1:3] if t.role == "kv"]
    within = len(cached) == 2 and op.bytes_read.get("kv", 0) < sum(cached)
    return Kernel(kind=kind, flops=flops, tensor_core=True, batch=batch, heads=heads, kv_heads=k[1], q_len=q_len,
                  kv_len=kv_len, head_dim=head_dim, v_head_dim=v[-1] if v[-1] != head_dim else 0,
                  kv_width=head_dim if within else 0, causal=causal, window=window or 0, **common)


POINTWISE_KINDS = (KernelKind.ELEMENTWISE, KernelKind.ACTIVATION, KernelKind.ROPE_PART, KernelKind.NORM_PART)


def general_layout(op: Op) -> bool:
    """Whether a pointwise op leaves PyTorch's contiguous vectorized loop (TensorIterator's fast path, taken when
    every operand is dense with the output's shape and dtype): its output or an input is not dense, or a tensor
    input (not a 0-dim scalar) has another dtype or is broadcast to the output (fewer dims, or size 1 where the
    output's dim is larger; a reduction's input, larger than its output, is not). Density is torch's (size-1 dims
    carry any stride), so a transposed view is dense at a decode step's one position and not over a prompt, and a
    table broadcast over sequences is not broadcast to one sequence: kernels/shapes.py keeps each traced shape's
    flags."""
    out = op.outputs[0] if op.outputs else (op.inputs[0] if op.inputs else None)
    if out is None:
        return False

    def broadcast(t) -> bool:
        if t.shape == out.shape:  # most operands: neither fewer dims nor a size 1 against a larger one
            return False
        return len(t.shape) < len(out.shape) or any(
            a == 1 and b > 1 for a, b in zip(t.shape[::-1], out.shape[::-1], strict=False))

    return not out.contiguous or any(
        t.shape and (not t.contiguous or t.dtype != out.dtype or broadcast(t)) for t in op.inputs)


def lower_op(op: Op, trace_dtype: str, window: int | None = None) -> Kernel | None:
    """The kernel an op launches, or None for views; a causal attention op computes only the pairs inside the model's
    sliding `window` (Trace.window_of its layer), as a serving engine's kernels skip the masked blocks."""
    if op.is_view:
        return None
    name = op.short_name
    common = _common(op, trace_dtype)
    if name in ATTENTION_OPS:
        return _attention(op, common, window)
    if name in GEMM_OPS:
        return _gemm(op, common)
    if name in BATCHED_GEMM_OPS:
        return _batched_gemm(op, common)
    if name in SOFTMAX_OPS:
        kind = KernelKind.SOFTMAX
    elif name in NORM_OPS:
        kind = KernelKind.NORM
    elif _is_norm_module(op.module):
        kind = KernelKind.NORM_PART
    elif name in EMBEDDING_OPS:
        kind = KernelKind.EMBEDDING
    elif name in ACTIVATION_OPS:
        kind = KernelKind.ACTIVATION
    elif _is_rope(op):
        kind = KernelKind.ROPE_PART
    else:
        kind = KernelKind.ELEMENTWISE
    general = kind in POINTWISE_KINDS and general_layout(op)
    rows, length = last_dim_reduction(op)
    return Kernel(kind=kind, flops=op.flops, tensor_core=False, general_layout=general, reduce_rows=rows,
                  reduce_length=length, **common)


def last_dim_reduction(op: Op) -> tuple[int, int]:
    """(rows, values per row) of a reduction over exactly its input's last dim (its output that shape less the last
    dim, kept as 1 or dropped); (0, 0) for other ops."""
    if op.short_name not in REDUCTION_OPS or not op.inputs or not op.outputs:
        return 0, 0
    shape, out = tuple(op.inputs[0].shape), tuple(op.outputs[0].shape)
    if len(shape) < 1 or shape[-1] < 2 or out not in (shape[:-1], (*shape[:-1], 1)):
        return 0, 0
    return math.prod(shape[:-1]), shape[-1]


def lower_trace(trace: Trace) -> list[Kernel]:
    """Kernels of a trace, in execution order."""
    kernels = (lower_op(op, trace.dtype, trace.window_of(op.layer)) for op in trace.ops)
    return [k for k in kernels if k is not None]
