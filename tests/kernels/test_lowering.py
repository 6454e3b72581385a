"""Lowering trace ops to kernels: views dropped, GEMM shapes, causal attention FLOPs by hand."""

from __future__ import annotations

import pytest

from kernels.kernel import KernelKind
from kernels.lowering import lower_op, lower_trace
from workloads.op_costs import ATTENTION_OPS, causal_pairs
from workloads.trace import Op, TensorMeta


def _attention_op(batch, heads, kv_heads, q_len, kv_len, head_dim, causal, kv_role="kv") -> Op:
    q = TensorMeta(shape=(batch, heads, q_len, head_dim), dtype="bfloat16")
    k = TensorMeta(shape=(batch, kv_heads, kv_len, head_dim), dtype="bfloat16", role=kv_role)
    v = TensorMeta(shape=(batch, kv_heads, kv_len, head_dim), dtype="bfloat16", role=kv_role)
    out = TensorMeta(shape=(batch, heads, q_len, head_dim), dtype="bfloat16")
    return Op(name="aten._scaled_dot_product_flash_attention_for_cpu.default", inputs=(q, k, v), outputs=(out,),
              flops=4.0 * batch * heads * q_len * kv_len * head_dim, bytes_read={"activation": q.nbytes,
              kv_role: k.nbytes + v.nbytes}, bytes_written={"activation": out.nbytes}, layer=0,
              module="layers.0.self_attn", attrs={"is_causal": causal})


def test_causal_pairs_by_hand():
    # q == kv: query i sees i + 1 keys, 1 + 2 + ... + q = q (q + 1) / 2.
    assert causal_pairs(4, 4) == 1 + 2 + 3 + 4 == 10
    assert causal_pairs(512, 512) == 512 * 513 // 2 == 131_328
    # A chunk of 4 queries after 6 cached keys: 7 + 8 + 9 + 10.
    assert causal_pairs(4, 10) == 7 + 8 + 9 + 10 == 34
    # One query sees everything.
    assert causal_pairs(1, 100) == 100


def test_prefill_attention_lowers_to_causal_kernel():
    # Llama-2-7B layer, prompt 512: 2 x batch x heads x q(q+1)/2 x (d_k + d_v) = 2 x 32 x 131328 x 256.
    op = _attention_op(batch=1, heads=32, kv_heads=32, q_len=512, kv_len=512, head_dim=128, causal=True,
                       kv_role="activation")
    kernel = lower_op(op, "bfloat16")
    assert kernel.kind == KernelKind.ATTENTION_PREFILL
    assert kernel.causal
    assert kernel.flops == 2 * 32 * (512 * 513 // 2) * 256 == 2_151_677_952
    # Slightly more than half the non-causal figure (the diagonal).
    assert kernel.flops == pytest.approx(op.flops * 513 / 1024)
    assert (kernel.batch, kernel.heads, kernel.kv_heads, kernel.q_len, kernel.kv_len, kernel.head_dim) == (
        1, 32, 32, 512, 512, 128)
    assert kernel.tensor_core and kernel.dtype == "bf16"


def test_decode_attention_lowers_to_decode_kernel():
    # Llama-3-8B layer, one query over 8192 keys, 8 KV heads: 4 x 32 heads x 128 x 8192 FLOPs,
    # KV bytes 2 x 8 x 8192 x 128 x 2.
    op = _attention_op(batch=1, heads=32, kv_heads=8, q_len=1, kv_len=8192, head_dim=128, causal=False)
    kernel = lower_op(op, "bfloat16")
    assert kernel.kind == KernelKind.ATTENTION_DECODE
    assert not kernel.causal
    assert kernel.flops == 4 * 32 * 128 * 8192
    assert kernel.kv_bytes == 2 * 8 * 8192 * 128 * 2
    assert kernel.kv_heads == 8 and kernel.kv_len == 8192
    # q read + output written: 2 x 32 x 128 x 2 bytes.
    assert kernel.act_bytes == 2 * 32 * 128 * 2


def test_gemm_shape_and_bytes():
    a = TensorMeta(shape=(1, 512, 4096), dtype="bfloat16")
    w = TensorMeta(shape=(4096, 11008), dtype="bfloat16", role="weight")
    c = TensorMeta(shape=(512, 11008), dtype="bfloat16")
    op = Op(name="aten.mm.default", inputs=(a, w), outputs=(c,), flops=2.0 * 512 * 4096 * 11008,
            bytes_read={"activation": a.nbytes, "weight": w.nbytes}, bytes_written={"activation": c.nbytes},
            layer=3, module="layers.3.mlp.up_proj")
    kernel = lower_op(op, "bfloat16")
    assert kernel.kind == KernelKind.GEMM
    assert (kernel.m, kernel.n, kernel.k, kernel.batch) == (512, 11008, 4096, 1)
    assert kernel.weight_bytes == 4096 * 11008 * 2
    assert kernel.act_bytes == (512 * 4096 + 512 * 11008) * 2
    assert kernel.flops == 2 * 512 * 4096 * 11008
    assert kernel.layer == 3 and kernel.module == "layers.3.mlp.up_proj"


def test_addmm_uses_the_matrix_operands_not_the_bias():
    bias = TensorMeta(shape=(64,), dtype="float16", role="weight")
    a = TensorMeta(shape=(8, 32), dtype="float16")
    w = TensorMeta(shape=(32, 64), dtype="float16", role="weight")
    op = Op(name="aten.addmm.default", inputs=(bias, a, w), outputs=(TensorMeta(shape=(8, 64), dtype="float16"),),
            flops=2.0 * 8 * 32 * 64, bytes_read={}, bytes_written={}, layer=None, module="fc")
    kernel = lower_op(op, "float16")
    assert (kernel.m, kernel.n, kernel.k) == (8, 64, 32)
    assert kernel.dtype == "fp16"


@pytest.mark.parametrize("phase, seq_len, context", [("prefill", 16, 0), ("decode", 1, 16)])
def test_lower_trace_drops_views_only(phase, seq_len, context, tiny_llama, trace_of):
    trace = trace_of(tiny_llama, phase, 2, seq_len, context)
    kernels = lower_trace(trace)
    non_views = [op for op in trace.ops if not op.is_view]
    assert len(kernels) == len(non_views) < len(trace.ops)
    assert [k.op for k in kernels] == [op.short_name for op in non_views]
    # Lowering keeps all traffic (views have none) and all non-attention FLOPs.
    assert sum(k.total_bytes for k in kernels) == sum(op.total_bytes for op in trace.ops)
    non_attention = sum(op.flops for op in trace.ops if op.short_name not in ATTENTION_OPS)
    assert sum(k.flops for k in kernels if k.kernel_class != "attention") == non_attention


def test_tiny_trace_attention_kernels(tiny_llama, trace_of):
    # tiny-llama, batch 2, 4 heads of 16, 2 layers.
    prefill = lower_trace(trace_of(tiny_llama, "prefill", 2, 16))
    attention = [k for k in prefill if k.kernel_class == "attention"]
    assert [k.kind for k in attention] == [KernelKind.ATTENTION_PREFILL] * 2
    # 2 x batch x heads x q(q+1)/2 x (d + d) = 2 x 2 x 4 x 136 x 32.
    assert all(k.flops == 2 * 2 * 4 * (16 * 17 // 2) * 32 == 69_632 for k in attention)
    decode = lower_trace(trace_of(tiny_llama, "decode", 2, 1, 16))
    attention = [k for k in decode if k.kernel_class == "attention"]
    assert [k.kind for k in attention] == [KernelKind.ATTENTION_DECODE] * 2
    # 4 x batch x heads x d x 1 x kv_len, kv_len = 17; KV bytes 2 x batch x 2 KV heads x 17 x 16 x 2 bytes.
    assert all(k.flops == 4 * 2 * 4 * 16 * 17 == 8_704 for k in attention)
    assert all(k.kv_bytes == 2 * 2 * 2 * 17 * 16 * 2 for k in attention)
    # GEMMs: q_proj in decode is (batch x 1) x 64 @ 64 x 64.
    (q_proj,) = [k for k in decode if k.module == "layers.0.self_attn.q_proj"]
    assert (q_proj.kind, q_proj.m, q_proj.n, q_proj.k) == (KernelKind.GEMM, 2, 64, 64)


def test_norm_module_ops_lower_to_norm_parts(tiny_llama, trace_of):
    """Eager, our decoder's RMSNorm is separate aten ops (square, mean, add eps, rsqrt, two products), each a
    pointwise kernel of its own (a norm part, reported as norm time), not a fused norm kernel; the engine fuses them
    (tests/kernels/test_fusion.py)."""
    kernels = lower_trace(trace_of(tiny_llama, "decode", 2, 1, 16))
    norm_ops = [k for k in kernels if k.module.endswith("layernorm") or k.module == "norm"]
    assert norm_ops and "rsqrt" in {k.op for k in norm_ops}
    assert {k.kind for k in norm_ops} == {KernelKind.NORM_PART} and {k.kernel_class for k in norm_ops} == {"norm"}
    assert any(k.kind == KernelKind.EMBEDDING for k in kernels)


def test_a_fused_norm_op_lowers_to_a_norm_kernel():
    op = Op(name="aten.rms_norm.default", inputs=(TensorMeta(shape=(2, 64), dtype="float32"),),
            outputs=(TensorMeta(shape=(2, 64), dtype="float32"),), flops=512.0,
            bytes_read={"activation": 512}, bytes_written={"activation": 512}, layer=0, module="layers.0.mlp")
    assert lower_op(op, "float32").kind == KernelKind.NORM


def test_pointwise_kernels_by_kind(tiny_llama, trace_of):
    """Per Llama layer: one SiLU activation (the gate), the q/k rotation in the attention block (RoPE: 2 x
    (2 mul, neg, cat, add) for q and k), two KV-cache writes and two residual adds as other pointwise ops."""
    kernels = [k for k in lower_trace(trace_of(tiny_llama, "decode", 2, 1, 16)) if k.layer == 0]
    by_kind = {kind: [k for k in kernels if k.kind == kind] for kind in KernelKind}
    assert [k.op for k in by_kind[KernelKind.ACTIVATION]] == ["silu"]
    assert sorted(k.op for k in by_kind[KernelKind.ROPE_PART]) == sorted(["mul", "mul", "neg", "cat", "add"] * 2)
    assert all(k.module.endswith("self_attn") for k in by_kind[KernelKind.ROPE_PART])
    residual = [k for k in by_kind[KernelKind.ELEMENTWISE] if k.op == "add"]
    cache_writes = [k for k in by_kind[KernelKind.ELEMENTWISE] if k.op == "copy_"]
    assert len(residual) == 2 and len(cache_writes) == 2
    # All three report as the "elementwise" class in breakdowns.
    assert {k.kernel_class for k in by_kind[KernelKind.ACTIVATION] + by_kind[KernelKind.ROPE_PART]} == {"elementwise"}


def _pointwise(name: str, inputs: list[TensorMeta], out: TensorMeta | None) -> Op:
    return Op(name=f"aten.{name}.default", inputs=tuple(inputs), outputs=(out,) if out else (), flops=0.0,
              bytes_read={"activation": sum(t.nbytes for t in inputs)},
              bytes_written={"activation": out.nbytes if out else 0}, layer=0, module="layers.0.mlp")


def test_general_layout_marks_casts_broadcasts_and_strided_operands():
    x = TensorMeta(shape=(4, 64), dtype="bfloat16")

    def general(name, inputs, out=x):
        return lower_op(_pointwise(name, inputs, out), "bfloat16").general_layout

    # Dense operands of the output's shape and dtype: the contiguous vectorized loop. A scalar operand and a
    # reduction's larger input do not leave it.
    assert not general("add", [x, x])
    assert not general("add", [x, TensorMeta(shape=(), dtype="float64")])
    assert not general("mean", [x], TensorMeta(shape=(4, 1), dtype="bfloat16"))
    # A cast, a per-row broadcast, a strided input or output: the general loop.
    assert general("_to_copy", [x], TensorMeta(shape=(4, 64), dtype="float32"))
    assert general("mul", [x, TensorMeta(shape=(4, 1), dtype="bfloat16")])
    assert general("neg", [TensorMeta(shape=(4, 64), dtype="bfloat16", contiguous=False)])
    assert general("copy_", [TensorMeta(shape=(4, 64), dtype="bfloat16", contiguous=False), x], None)


def test_captured_decoder_ops_off_the_contiguous_loop(trace_of):
    """In a captured Llama prefill layer, the eager RMSNorm's casts and per-row products, RoPE's broadcast products,
    strided halves and their sums, and the KV-cache writes are general-layout kernels; the residual adds, SiLU, the
    MLP product, the norm's pow and mean are not (the H200's profiled prefill marks the same ops from its strides)."""
    trace = trace_of("llama-3-8b", "prefill", 1, 64)
    kernels = [k for k in lower_trace(trace) if k.layer == 0 and not k.tensor_core]
    general = {(k.kind, k.op) for k in kernels if k.general_layout}
    assert general == {(KernelKind.NORM_PART, "_to_copy"), (KernelKind.NORM_PART, "mul"),
                       (KernelKind.ROPE_PART, "mul"), (KernelKind.ROPE_PART, "neg"), (KernelKind.ROPE_PART, "cat"),
                       (KernelKind.ROPE_PART, "add"),
                       (KernelKind.ELEMENTWISE, "copy_")}
    contiguous = {(k.kind, k.op) for k in kernels if not k.general_layout}
    assert {(KernelKind.ACTIVATION, "silu"), (KernelKind.ELEMENTWISE, "add"), (KernelKind.NORM_PART, "pow"),
            (KernelKind.NORM_PART, "mean")} <= contiguous
