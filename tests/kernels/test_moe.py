"""Fused MoE layers: work and traffic by hand (kernels/moe.py), the replay of aiconfigurator's routing, its MoE rows
read from a slice of the real table, and a serving engine's fusion of tiny-Mixtral's experts (kernels/fusion.py),
re-shaped by step templates as the traced passes are."""

from __future__ import annotations

import csv
import gzip
import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kernels.aiconfigurator_import import read_aiconfigurator
from kernels.aiconfigurator_routing import _balanced_loads, routed_on_rank0
from kernels.formats import NumericFormat
from kernels.fusion import ENGINE, fuse_engine
from kernels.kernel import KernelKind
from kernels.lowering import lower_trace
from kernels.measured import MeasuredKernel, read_table, write_table
from kernels.moe import FUSED_MOE_CHUNK_TOKENS, chunk_columns, device_routing, fused_moe_kernel, moe_chunks
from kernels.parallel import shard_tensor_parallel
from kernels.shapes import StepTemplate, step_shape
from kernels.table import KIND_CODE, KernelTable
from workloads.errors import InputError
from workloads.model_config import UNIFORM

AICONFIGURATOR = Path(__file__).resolve().parents[3] / "shared" / "data" / "aiconfigurator"
MOE_TABLE = "h200_sxm/moe/vllm/0.24.0/moe_perf.csv.gz"
COLUMNS = ("flops", "weight_bytes", "act_bytes", "kv_bytes")
MOE = KIND_CODE[KernelKind.MOE]


def test_fused_moe_work_and_traffic_by_hand():
    """3 tokens, top-2 of 4 experts (hidden 64, intermediate 128, bf16): 6 rows, every expert touched."""
    kernel = fused_moe_kernel(tokens=3, routed=6, touched=4, hidden=64, inter=128, weight_width=2, act_width=2,
                              dtype="bf16")
    assert kernel.flops == 2 * 6 * (64 * 2 * 128 + 128 * 64)  # gate-up GEMM (N = 2f) and down GEMM (N = h)
    assert kernel.weight_bytes == 4 * 3 * 64 * 128 * 2  # four experts' gate, up and down matrices
    # Rows read (6 x 64); caches of 6 x 256 (gate-up output), 6 x 128 (activation) and 6 x 64 (down output), each
    # written and read back; the output written (3 x 64).
    assert kernel.act_bytes == 2 * (6 * 64 + 2 * 6 * 256 + 2 * 6 * 128 + 2 * 6 * 64 + 3 * 64)
    # A grouped GEMM: 4 experts of 1.5 rows each, n over the three matrices, so 2 m n k batch is its FLOPs.
    assert (kernel.m, kernel.n, kernel.k, kernel.batch) == (1.5, 384, 64, 4)
    assert 2 * kernel.m * kernel.n * kernel.k * kernel.batch == kernel.flops
    # Under expert parallelism the caches hold every row the device routes (12), the GEMMs only its own (6).
    spread = fused_moe_kernel(tokens=6, routed=6, touched=2, hidden=64, inter=128, weight_width=2, act_width=2,
                              dtype="bf16", routed_all=12)
    assert spread.act_bytes == 2 * (6 * (64 + 128) + 12 * (5 * 128 + 2 * 64) + 6 * 64)


def test_balanced_routing_touches_the_fewest_experts_rows_allow():
    # 1 token, top-2 of 8: two experts; 3 tokens: six; 8 tokens: all 8, two rows each.
    assert [device_routing(t, 2, 8, 8) for t in (1, 3, 8)] == [(2, 2), (6, 6), (8, 16)]
    # The busier of two devices (4 experts each) gets 3 of the 6 rows, as aiconfigurator's collector routes them
    # (balanced_logits: stride ceil(8 / 2) = 4, token t to experts floor(4 t / 3) and floor(4 t / 3) + 4: 0, 4; 1, 5;
    # 2, 6, of which experts 0-3 hold 0, 1 and 2).
    assert device_routing(3, 2, 8, 4) == (3, 3)
    # By hand, DeepSeek-V3 on eight devices: one token's 8 experts lie one a device; 4 tokens' 32 rows, 4 a device.
    assert device_routing(1, 8, 256, 32) == (1, 1) and device_routing(4, 8, 256, 32) == (4, 4)


def test_uniform_routing_on_a_device_by_hand():
    """DeepSeek-V3, 32 tokens: uniform routing touches 256 (1 - (31/32)^32) = 163.3 -> 163 experts, its 256 rows two
    each on the first 93 (256 = 163 + 93) and one on the other 70. Alone a device reads all 163; on eight devices (32
    experts each) the busiest holds experts 0, 8, ..., 160 of the fill order, 21 = ceil(163 / 8) of them (163 / 8 =
    20.4 a device in expectation), 12 of them (0 to 88) among the first 93: 12 x 2 + 9 rows."""
    assert device_routing(32, 8, 256, 256, UNIFORM) == (163, 256)
    assert device_routing(32, 8, 256, 32, UNIFORM) == (21, 33)
    # One token: its 8 experts, under either model, one a device on eight devices.
    assert device_routing(1, 8, 256, 256, UNIFORM) == device_routing(1, 8, 256, 256) == (8, 8)
    assert device_routing(1, 8, 256, 32, UNIFORM) == (1, 1)


# DeepSeek-V3, Qwen3 MoE and Mixtral shapes on 2 to 32 devices, no more devices than experts.
ROUTED_ON_DEVICES = [(experts, topk, ep) for experts, topk in ((256, 8), (128, 8), (8, 2))
                     for ep in (2, 4, 8, 16, 32) if ep <= experts]


@pytest.mark.parametrize("experts, topk, ep", ROUTED_ON_DEVICES)
def test_balanced_routing_under_expert_parallelism_is_the_collectors(experts, topk, ep):
    """The busiest device's experts and rows under balanced routing, for every decode batch whose rows do not fill
    the experts, are those of EP rank 0 under aiconfigurator's collector (balanced_logits, replayed by
    routed_on_rank0): a token's experts lie on different devices, so a decode step of one token reaches one expert a
    device, not every expert on the first device."""
    for tokens in range(1, experts // topk + 1):
        touched, rows = routed_on_rank0(tokens, topk, experts, ep, "balanced")
        assert device_routing(tokens, topk, experts, experts // ep) == (round(touched), round(rows)), tokens


def test_collector_routing_replayed_by_hand():
    """aiconfigurator's balanced_logits: stride ceil(E / k); token t takes (t + i stride) mod E when there are at
    least `stride` tokens, else floor(t stride / tokens + i stride) mod E."""
    # 2 tokens, top-2 of 8 (stride 4, fewer tokens): token 0 -> 0, 4; token 1 -> 2, 6.
    assert _balanced_loads(2, 2, 8).tolist() == [1, 0, 1, 0, 1, 0, 1, 0]
    # 5 tokens (>= stride): token t -> t, t + 4 (mod 8): token 4 takes experts 4 and 0 a second time.
    assert _balanced_loads(5, 2, 8).tolist() == [2, 1, 1, 1, 2, 1, 1, 1]
    # EP rank 0 of 2 holds experts 0-3: 2 of the 4 experts touched at 2 tokens, 2 rows.
    assert routed_on_rank0(2, 2, 8, 2, "balanced") == (2.0, 2.0)
    # Skewed routing reaches fewer experts than balanced routing, on average (the draw itself:
    # tests/workloads/test_expert_skew.py).
    touched, routed = routed_on_rank0(8, 4, 64, 1, "power_law_1.2")
    assert routed == 32 and touched < routed_on_rank0(8, 4, 64, 1, "balanced")[0] == 32


def _slice(tmp_path: Path, rows: int) -> Path:
    """The first `rows` MoE rows of aiconfigurator's H200 table, in a folder of its layout."""
    out = tmp_path / MOE_TABLE
    out.parent.mkdir(parents=True)
    with gzip.open(AICONFIGURATOR / MOE_TABLE, "rt") as src, gzip.open(out, "wt") as dst:
        dst.writelines(itertools.islice(src, rows + 1))
    return tmp_path


@pytest.mark.skipif(not AICONFIGURATOR.is_dir(), reason="../shared/data/aiconfigurator not present")
def test_moe_rows_from_a_slice_of_the_real_table(tmp_path):
    folder = _slice(tmp_path, 400)
    with gzip.open(folder / MOE_TABLE, "rt") as f:
        raw = list(csv.DictReader(f))
    rows = read_aiconfigurator(folder)
    kept = [r for r in raw if r["moe_dtype"] in ("bfloat16", "fp8", "fp8_block", "nvfp4", "int4_wo", "w4a16_mxfp4",
                                                  "w4a8_mxfp4_mxfp8")]
    assert len(rows) == len(kept) > 0
    for raw_row, row in zip(kept, rows, strict=True):
        assert (row.kernel, row.device, row.timing) == ("moe", "h200", "graph")
        assert row.m == int(raw_row["num_tokens"]) and row.k == int(raw_row["hidden_size"])
        assert row.n == int(raw_row["inter_size"]) // int(raw_row["moe_tp_size"])  # the device's shard
        assert (row.topk, row.experts, row.expert_parallel) == tuple(
            int(raw_row[c]) for c in ("topk", "num_experts", "moe_ep_size"))
        assert row.routing == raw_row["distribution"] and row.backend == raw_row["kernel_source"]
        assert row.time_s == pytest.approx(float(raw_row["latency"]) * 1e-3)
    first = rows[0]  # fp8 (modelopt, FlashInfer CUTLASS), 1 token, hidden 2816, intermediate 704, top-8 of 128
    assert (first.dtype, first.variant, first.source) == (
        "fp8", "tensor", "aiconfigurator:h200_sxm:moe:fp8:vllm_modeloptfp8moe_flashinfer_cutlass_flashinferexperts:"
                         "h2816:i704:top8:e128")
    path = tmp_path / "t.csv.gz"
    write_table(path, rows)
    assert read_table(path) == rows


def test_moe_row_prices_the_replayed_routing():
    """A measured row's kernel: 4 tokens, top-2 of 8 experts, balanced on one device: 8 rows over all 8 experts;
    fp8 weights with block scales; a Triton backend's caches sized by every routed row."""
    row = MeasuredKernel(device="h200", kernel="moe", dtype="fp8", variant="block128", time_s=1e-4, source="s",
                         m=4, n=128, k=64, topk=2, experts=8, routing="balanced", backend="vllm_triton")
    kernel = row.to_kernel()
    assert (kernel.kind, kernel.batch, kernel.m) == (KernelKind.MOE, 8, 1.0)
    assert kernel.weight_bytes == pytest.approx(8 * 3 * 64 * 128 * (1 + 4 / 128 ** 2))
    # Spread over 4 devices, the first holds experts 0 and 1: one row each (token t takes t and t + 4), of the 8
    # rows the device routes.
    spread = replace(row, expert_parallel=4).to_kernel()
    assert (spread.batch, spread.m) == (2, 1.0)
    assert spread.act_bytes == pytest.approx(2 * (2 * (64 + 128) + 8 * (5 * 128 + 2 * 64) + 4 * 64))


def test_moe_rows_are_checked(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("device,kernel,m,n,k,dtype,time_s,topk,experts,expert_parallel,routing\n"
                    "h200,moe,4,128,64,bf16,1e-4,2,8,3,balanced\n")
    with pytest.raises(InputError, match="experts a multiple of expert_parallel"):
        read_table(path)
    path.write_text("device,kernel,m,n,k,dtype,time_s,topk,experts,routing\nh200,moe,4,128,64,bf16,1e-4,2,8,zipf\n")
    with pytest.raises(InputError, match="routing: found 'zipf'"):
        read_table(path)


def _eager(trace_of, config, phase: str, batch: int, length: int) -> KernelTable:
    trace = (trace_of(config, "decode", batch, 1, length) if phase == "decode"
             else trace_of(config, "prefill", batch, length))
    return KernelTable.from_kernels(lower_trace(trace))


@pytest.mark.parametrize("phase,batch,length", [("decode", 1, 16), ("decode", 3, 40), ("prefill", 2, 24)])
def test_engine_runs_one_fused_moe_kernel_per_layer(tiny_mixtral, trace_of, phase, batch, length):
    """tiny-Mixtral (4 experts, top-2): every expert kernel (gathers, GEMMs, activation, products, scatter-adds)
    and the zeroed output become one fused MoE kernel per layer, with their FLOPs and weights."""
    c = tiny_mixtral
    eager = _eager(trace_of, c, phase, batch, length)
    engine = fuse_engine(eager)
    fused = np.flatnonzero(engine.kind == MOE)
    assert len(fused) == c.num_layers
    assert not any(".experts." in k.module for k in engine.kernels)
    experts = np.array([".experts." in k.module or k.op == "zeros_like" for k in eager.kernels])
    assert engine.flops[fused].sum() == pytest.approx(eager.flops[experts].sum(), rel=1e-12)
    assert engine.weight_bytes[fused].sum() == pytest.approx(eager.weight_bytes[experts].sum(), rel=1e-12)
    tokens = batch * (1 if phase == "decode" else length)
    routed = tokens * c.experts_per_token
    touched = min(c.num_experts, routed)
    for i in fused:
        assert (engine.batch[i], engine.m[i] * engine.batch[i]) == (touched, routed)
        assert engine.weight_bytes[i] == touched * 3 * c.hidden_size * c.intermediate_size * 2
    # The router's softmax, top-k and renormalization run as one kernel.
    assert sum(k.op == "topk_softmax" for k in engine.kernels) == c.num_layers
    assert sum(k.op in ("topk", "_softmax") for k in engine.kernels) == 0


@pytest.mark.parametrize("tp", [1, 2])
def test_template_reshapes_the_fused_moe_kernel(tiny_mixtral, trace_of, tp):
    """A template of the engine passes (traced where every expert gets tokens) prices an iteration as the fused
    trace of that iteration does: at 1 decode token two of the four experts are read, at 3 all of them. With
    tp = ep = 2 each device holds two experts."""
    config, fmt = tiny_mixtral, NumericFormat()
    ep = tp

    def shard(table):
        return shard_tensor_parallel(table, tp, config, ep)

    def trace(phase: str, batch: int, prompt: int):
        return (trace_of(config, "decode", batch, 1, prompt) if phase == "decode"
                else trace_of(config, "prefill", batch, prompt))

    template = StepTemplate.from_model(config, fmt, trace, shard=shard, fusion=ENGINE)
    for phase, batch, length, shape in (("decode", 1, 40, step_shape(decode_kv=[41], sampled=1)),
                                        ("decode", 3, 40, step_shape(decode_kv=[41] * 3, sampled=3)),
                                        ("prefill", 2, 24, step_shape([(24, 0)] * 2, sampled=2))):
        reference = fuse_engine(shard(_eager(trace_of, config, phase, batch, length))).with_format(fmt)
        table, count = template.table(shape)
        for column in (*COLUMNS, "batch"):
            moe, want = table.kind == MOE, reference.kind == MOE
            assert float(getattr(table, column)[moe] @ count[moe]) == pytest.approx(
                float(getattr(reference, column)[want].sum()), rel=1e-9), (phase, batch, column)
        assert count.sum() == len(reference)


@pytest.mark.parametrize("fusion", ["", ENGINE])
@pytest.mark.parametrize("tp", [1, 2])
def test_a_uniform_template_prices_an_iteration_as_its_uniform_trace(tiny_mixtral, trace_of, fusion, tp):
    """Under uniform routing a template (traced balanced, every expert busy) routes each iteration as a trace of that
    iteration routes it: the same expert kernels, or fused MoE rows of the same touched experts (batch), rows per
    expert (m) and traffic. 16 experts, top-2: 3 decode tokens touch 16 (1 - (7/8)^3) = 5.3 -> 5 (balanced: 6), 5 touch
    7.8 -> 8 (10), a prefill of 48 tokens all 16; with tp = ep = 2 the busier device holds every second expert."""
    balanced = replace(tiny_mixtral, num_experts=16)
    uniform = replace(balanced, moe_routing=UNIFORM)

    def shard(table):
        return shard_tensor_parallel(table, tp, balanced, tp)

    def trace(phase: str, batch: int, prompt: int):
        return (trace_of(balanced, "decode", batch, 1, prompt) if phase == "decode"
                else trace_of(balanced, "prefill", batch, prompt))

    template = StepTemplate.from_model(uniform, NumericFormat(), trace, shard=shard, fusion=fusion)
    for phase, batch, length, shape, touched in (("decode", 3, 40, step_shape(decode_kv=[41] * 3, sampled=3), 5),
                                                 ("decode", 5, 40, step_shape(decode_kv=[41] * 5, sampled=5), 8),
                                                 ("prefill", 2, 24, step_shape([(24, 0)] * 2, sampled=2), 16)):
        eager = _eager(trace_of, uniform, phase, batch, length)
        assert len({k.module.split(".experts.")[1].split(".")[0] for k in eager.kernels
                    if ".experts." in k.module}) == touched
        reference = (fuse_engine(shard(eager)) if fusion else shard(eager)).with_format(NumericFormat())
        table, count = template.table(shape)
        assert count.sum() == len(reference), (phase, batch)
        for column in (*COLUMNS, "batch", "m"):
            assert float(getattr(table, column) @ count) == pytest.approx(
                float(getattr(reference, column).sum()), rel=1e-9), (phase, batch, column)


@pytest.mark.parametrize("fusion", ["", ENGINE])
def test_uniform_routing_never_prices_a_step_above_balanced(tiny_mixtral, trace_of, fusion):
    """Uniform routing reads no more experts' weights than balanced for the same rows and FLOPs, so no step costs more
    on a device of each kind: decode steps of 1 to 64 tokens and prefill chunks, 16 experts, top-2."""
    from hw_models.registry import load_device

    balanced = replace(tiny_mixtral, num_experts=16)

    def trace(phase: str, batch: int, prompt: int):
        return (trace_of(balanced, "decode", batch, 1, prompt) if phase == "decode"
                else trace_of(balanced, "prefill", batch, prompt))

    plain = StepTemplate.from_model(balanced, NumericFormat(), trace, fusion=fusion)
    routed = replace(plain, moe_routing=UNIFORM)
    shapes = [step_shape(decode_kv=[100] * n, sampled=n) for n in (1, 2, 3, 4, 5, 8, 16, 32, 64)] + [
        step_shape([(n, 0)], sampled=1) for n in (2, 5, 16)]
    for name in ("h100-sxm", "neupims", "ampere-altra", "alveo-u280"):
        device = load_device(name)
        for shape in shapes:
            times = [float(device.cost_table(t).time_s @ c) for t, c in (plain.table(shape), routed.table(shape))]
            assert times[1] <= times[0] * (1 + 1e-12), (name, shape.tokens, times)  # sums in another order


def test_a_layer_runs_in_calls_of_vllms_chunk_by_hand():
    """vLLM's chunk of 16,384 tokens (VLLM_FUSED_MOE_CHUNK_SIZE, 16 * 1024): a layer of up to one chunk is one call of
    all its tokens; 16,385 tokens are one whole chunk and one token left; 2 x 16,384 + 1,000 two whole chunks and
    1,000 left; 2 x 16,384 two whole chunks and nothing left."""
    assert FUSED_MOE_CHUNK_TOKENS == 16 * 1024
    whole, left = moe_chunks(np.array([1, 16384, 16385, 2 * 16384 + 1000, 2 * 16384]))
    assert whole.tolist() == [0, 0, 1, 2, 2]
    assert left.tolist() == [1, 16384, 1, 1000, 0]


def test_a_call_of_a_layer_is_the_layer_of_the_calls_tokens():
    """Mixtral's experts (hidden 4096, intermediate 14336, top-2 of 8, bf16) at 2 x 16,384 + 1,000 tokens, balanced:
    cut to a call of 16,384 tokens, or of the 1,000 left, each call is the layer kernels/moe.py builds for that many
    tokens (32,768 or 2,000 rows over all 8 experts, each read whole), and carries its tokens."""
    def layer(tokens: int):
        return fused_moe_kernel(tokens=tokens, routed=2 * tokens, touched=8, hidden=4096, inter=14336,
                                weight_width=2, act_width=2, dtype="bf16")

    whole = layer(2 * 16384 + 1000)
    assert whole.tokens == 2 * 16384 + 1000
    table = KernelTable.from_kernels([whole, whole])
    cut = chunk_columns(tokens=table.tokens, m=table.m, batch=table.batch, flops=table.flops,
                        weight_bytes=table.weight_bytes, act_bytes=table.act_bytes,
                        call_tokens=np.array([16384.0, 1000.0]))
    for row, call in enumerate((layer(16384), layer(1000))):
        for name in ("flops", "act_bytes", "m", "batch", "weight_bytes", "tokens"):
            assert cut[name][row] == pytest.approx(getattr(call, name), rel=1e-12), (row, name)
    # Few tokens reach at most one expert a routed row: 3 tokens of a layer of 40,000 (top-2) reach 6 experts.
    few = chunk_columns(tokens=np.array([40000.0]), m=np.array([10000.0]), batch=np.array([8.0]),
                        flops=np.ones(1), weight_bytes=np.full(1, 8.0), act_bytes=np.ones(1),
                        call_tokens=np.array([3.0]))
    assert [few[name][0] for name in ("batch", "m", "weight_bytes")] == pytest.approx([6.0, 1.0, 6.0], rel=1e-12)


def test_an_engines_fused_moe_kernel_carries_its_layers_tokens(tiny_mixtral, trace_of):
    """The fused MoE kernel of a traced prefill of 2 prompts of 24 tokens routes 48 tokens; an engine step template
    re-sized to 3 such prompts gives its fused MoE rows 72, as the fused trace of that pass has them."""
    fmt = NumericFormat()
    eager = KernelTable.from_kernels(lower_trace(trace_of(tiny_mixtral, "prefill", 2, 24)))
    engine = fuse_engine(eager)
    moe = engine.kind == MOE
    assert moe.any() and set(engine.tokens[moe].tolist()) == {48.0}
    assert {k.tokens for k in engine.kernels if k.kind == KernelKind.MOE} == {48.0}
    assert not engine.tokens[~moe].any()

    def trace(phase: str, batch: int, prompt: int):
        return (trace_of(tiny_mixtral, "decode", batch, 1, prompt) if phase == "decode"
                else trace_of(tiny_mixtral, "prefill", batch, prompt))

    template = StepTemplate.from_model(tiny_mixtral, fmt, trace, fusion=ENGINE)
    table, _ = template.table(step_shape([(24, 0)] * 3, sampled=3))
    reference = fuse_engine(KernelTable.from_kernels(lower_trace(trace_of(tiny_mixtral, "prefill", 3, 24))))
    assert set(table.tokens[table.kind == MOE].tolist()) == {72.0} == set(reference.tokens[reference.kind == MOE])
