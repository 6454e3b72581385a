"""A serving engine's kernels (kernels/fusion.py) against the eager kernels of the same pass: one decoder layer
by hand, FLOPs kept, fewer launches and less traffic, LayerNorm models left alone, and step templates that count
the first layer's unfused norm once."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kernels.formats import NumericFormat
from kernels.fusion import ENGINE, fuse, fuse_engine
from kernels.kernel import KernelKind
from kernels.lowering import lower_trace
from kernels.parallel import shard_tensor_parallel
from kernels.shapes import StepTemplate, step_shape
from kernels.table import KIND_CODE, KINDS, KernelTable

BF16 = 2  # bytes per element of the traced tiny models
COLUMNS = ("flops", "weight_bytes", "act_bytes", "kv_bytes")
ENGINE_LAYER = ["fused_add_rms_norm", "mm", "rotary_embedding", "reshape_and_cache", "paged_flash_attention", "mm",
                "fused_add_rms_norm", "mm", "silu_and_mul", "mm"]


def _eager(trace_of, config, phase: str, batch: int, length: int) -> KernelTable:
    trace = (trace_of(config, "decode", batch, 1, length) if phase == "decode"
             else trace_of(config, "prefill", batch, length))
    return KernelTable.from_kernels(lower_trace(trace))


def _rows(table: KernelTable, layer: int) -> list[int]:
    return [i for i, k in enumerate(table.kernels) if k.layer == layer]


def test_one_decoder_layer_by_hand(tiny_llama, trace_of):
    """tiny-llama (hidden 64, 4 heads of 16, 2 KV heads, FFN 128), one decode token: the second layer's ten
    engine kernels, their shapes and the bytes each moves, counted from the config."""
    c, tokens = tiny_llama, 1
    eager = _eager(trace_of, c, "decode", tokens, 16)
    engine = fuse_engine(eager)
    rows = _rows(engine, 1)
    assert [engine.kernels[i].op for i in rows] == ENGINE_LAYER
    assert [KINDS[engine.kind[i]] for i in rows] == [
        KernelKind.ADD_NORM, KernelKind.GEMM, KernelKind.ROPE, KernelKind.ELEMENTWISE, KernelKind.ATTENTION_DECODE,
        KernelKind.GEMM, KernelKind.ADD_NORM, KernelKind.GEMM, KernelKind.ACTIVATION, KernelKind.GEMM]
    norm, qkv, rope, write, _, _, _, gate_up, act, _ = rows
    h, q, kv, f, d = c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size, \
        c.head_dim
    assert engine.n[qkv] == (c.num_heads + 2 * c.num_kv_heads) * d and engine.n[gate_up] == 2 * f
    assert engine.flops[qkv] == 2 * tokens * h * (q + 2 * kv) and engine.flops[gate_up] == 2 * tokens * h * 2 * f
    hidden = tokens * h * BF16
    expected = {
        qkv: hidden + tokens * (q + 2 * kv) * BF16,  # the input read once, q, k and v written
        gate_up: hidden + tokens * 2 * f * BF16,
        norm: 4 * hidden,  # input and residual read, new residual and output written
        rope: 2 * tokens * (q + kv) * BF16 + tokens * d * BF16,  # q and k in place, one cos/sin row per token
        write: 2 * tokens * kv * BF16,  # k and v read, written into the cache (kv_bytes)
        act: 3 * tokens * f * BF16,  # gate and up read, their product written
    }
    for i, want in expected.items():
        assert engine.act_bytes[i] == want, engine.kernels[i].op
    assert engine.kv_bytes[write] == 2 * tokens * kv * BF16
    assert engine.weight_bytes[norm] == h * BF16 and engine.weight_bytes[qkv] == h * (q + 2 * kv) * BF16
    # The same layer in eager: 40 kernels (two 8-op RMSNorms, 10 rotary ops, 2 cache copies, ...).
    assert len(_rows(eager, 1)) == 40


def test_an_engines_kernels_read_their_rows_contiguously(tiny_llama, trace_of):
    """The eager norm casts to fp32 and RoPE multiplies strided halves: pointwise ops off PyTorch's contiguous
    vectorized loop (general layout), priced by the general-layout fit where a GPU has one. The engine's fused norm,
    rotary and cache-write kernels that replace them are its own kernels over contiguous rows: none is general
    layout, in the table's column and in its kernels alike (before, each took its anchor row's flag)."""
    eager = _eager(trace_of, tiny_llama, "decode", 2, 16)
    engine = fuse_engine(eager)
    assert eager.general_layout.any()  # what the fused kernels replace
    fused = [i for i, k in enumerate(engine.kernels) if k.op in ("fused_add_rms_norm", "rms_norm", "rotary_embedding",
                                                                  "reshape_and_cache")]
    assert len(fused) == 4 * tiny_llama.num_layers + 1  # two norms, RoPE and the cache write a layer; the final norm
    assert not engine.general_layout[fused].any()
    assert not any(engine.kernels[i].general_layout for i in fused)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_opt", "tiny_mixtral"])
@pytest.mark.parametrize("phase,batch,length", [("decode", 1, 16), ("decode", 3, 40), ("prefill", 2, 24)])
def test_fused_kernels_keep_the_eager_flops(request, trace_of, model, phase, batch, length):
    """Every fused kernel does the work of the eager kernels it replaces; only the rotary table of positions,
    which the engine computes once at load, leaves the pass."""
    eager = _eager(trace_of, request.getfixturevalue(model), phase, batch, length)
    engine = fuse_engine(eager)
    rope_part = KIND_CODE[KernelKind.ROPE_PART]
    table = [i for i, k in enumerate(eager.kernels) if eager.kind[i] == rope_part and k.layer is None]
    assert engine.flops.sum() == pytest.approx(eager.flops.sum() - eager.flops[table].sum(), rel=1e-12)
    assert engine.weight_bytes.sum() == pytest.approx(eager.weight_bytes.sum(), rel=1e-12)  # weights read once
    assert engine.kv_bytes.sum() == pytest.approx(eager.kv_bytes.sum(), rel=1e-12)
    assert engine.act_bytes.sum() < eager.act_bytes.sum()  # intermediates never reach memory
    assert len(engine) < len(eager)


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("model", ["tiny_llama", "tiny_opt", "tiny_mixtral"])
def test_engine_never_launches_more_kernels_than_eager(request, trace_of, model, tp):
    config = request.getfixturevalue(model)
    for phase in ("decode", "prefill"):
        eager = shard_tensor_parallel(_eager(trace_of, config, phase, 4, 16), tp, config)
        engine = fuse_engine(eager)
        assert len(engine) < len(eager)
        assert engine.flops.sum() <= eager.flops.sum() and engine.bytes.sum() < eager.bytes.sum()
        # Collectives stay where sharding put them, one per row-parallel projection.
        collectives = [k.op for k in engine.kernels if k.op == "all_reduce"]
        assert len(collectives) == sum(k.op == "all_reduce" for k in eager.kernels)


def test_layernorm_models_keep_their_adds_and_norms(tiny_opt, trace_of):
    """OPT: LayerNorm is one kernel already and vLLM adds the residual apart; q, k and v (with biases) still run as
    one GEMM, and a ReLU MLP has no gate to fuse."""
    eager = _eager(trace_of, tiny_opt, "decode", 2, 16)
    engine = fuse_engine(eager)
    ops = [k.op for k in engine.kernels if k.layer == 1]
    assert ops.count("native_layer_norm") == 2 and ops.count("add") == 2
    assert "fused_add_rms_norm" not in ops and "silu_and_mul" not in ops and "relu" in ops
    gemms = [k.module for i, k in enumerate(engine.kernels) if k.layer == 1 and engine.kind[i] == KIND_CODE[
        KernelKind.GEMM]]
    assert gemms == ["layers.1.self_attn.qkv_proj", "layers.1.self_attn.o_proj", "layers.1.mlp.up_proj",
                     "layers.1.mlp.down_proj"]


def test_fusion_names_are_checked(tiny_llama, trace_of):
    eager = _eager(trace_of, tiny_llama, "decode", 1, 16)
    assert fuse(eager, "") is eager
    assert len(fuse(eager, ENGINE)) == len(fuse_engine(eager))
    with pytest.raises(ValueError, match="fusion: found 'tvm', allowed: '', 'engine'"):
        fuse(eager, "tvm")


def test_template_counts_the_first_layers_norm_once(tiny_llama, trace_of):
    """A four-layer model from a template traced on two layers: the first layer's input norm has no residual
    add to fuse, every later one fuses the add of the layer before it. Counted once and three times, the template
    prices what the fused four-layer trace holds."""
    deep, fmt = replace(tiny_llama, name="tiny-llama-4", num_layers=4), NumericFormat()
    few = replace(deep, num_layers=2)

    def trace(phase: str, batch: int, prompt: int):
        return (trace_of(few, "decode", batch, 1, prompt) if phase == "decode"
                else trace_of(few, "prefill", batch, prompt))

    template = StepTemplate.from_model(deep, fmt, trace, fusion=ENGINE)
    for phase, shape in (("decode", step_shape(decode_kv=[41] * 3, sampled=3)),
                         ("prefill", step_shape([(24, 0)] * 2, sampled=2))):
        batch, length = (3, 40) if phase == "decode" else (2, 24)
        reference = fuse_engine(_eager(trace_of, deep, phase, batch, length)).with_format(fmt)
        table, count = template.table(shape)
        assert count.sum() == len(reference)
        for column in COLUMNS:
            assert float(getattr(table, column) @ count) == pytest.approx(float(getattr(reference, column).sum()),
                                                                           rel=1e-9), (phase, column)
        plain = [i for i, k in enumerate(table.kernels) if k.op == "rms_norm"]
        assert np.sort(count[plain]).tolist() == [1.0]  # the first layer's input norm; the final one fuses an add
