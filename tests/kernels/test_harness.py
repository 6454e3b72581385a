"""The measurement harness on the CPU: medians, row contents, plausible rates, table round trip, the CLI command."""

from __future__ import annotations

import itertools

import pytest
import torch

from kernels import harness
from kernels.measured import read_table, write_table
from workloads.errors import InputError

DEVICE = "cpu-local"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a shared two-core runner a second thread waits on whatever else runs there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class FakeClock:
    """Stands in for the harness's perf_counter_ns: time moves only when a timed function says it ran, so the
    checks below hold on a loaded machine (they used to time real sleeps)."""

    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns

    def run(self, seconds: float) -> None:
        self.now_ns += round(seconds * 1e9)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(harness, "perf_counter_ns", fake)
    return fake


def _runner(clock: FakeClock, durations: list[float]):
    """(fn, make_inputs, calls): fn "runs" for the duration make_inputs hands it, in turn."""
    calls = []
    cycle = itertools.cycle(durations)

    def make():
        calls.append(1)
        return (next(cycle),)

    return clock.run, make, calls


def test_time_op_returns_the_median_of_fresh_runs(clock):
    fn, make, calls = _runner(clock, [0.002, 0.004, 0.006, 0.008, 0.050])  # mean 0.014, median 0.006
    t = harness.time_op(fn, make, device="cpu", warmup=0, repeats=5, flush=False)
    assert t == pytest.approx(0.006, abs=1e-12)
    assert len(calls) == 5  # inputs made afresh for every run


def test_time_op_warms_up_cycles_a_pool_and_honours_min_time(clock):
    fn, make, calls = _runner(clock, [0.001])
    harness.time_op(fn, make, device="cpu", warmup=2, repeats=3, pool=2, min_time_s=0.02, flush=False)
    assert len(calls) == 2  # the pool is made once
    timed = []
    harness.time_op(lambda: timed.append(clock.run(0.001)), lambda: (), device="cpu", warmup=2, repeats=3,
                    min_time_s=0.02, flush=False)
    assert len(timed) == 2 + 20  # 2 warm-up runs, then 1 ms runs until 20 ms are spent (not just the 3 asked for)
    with pytest.raises(ValueError):
        harness.time_op(fn, make, device="cpu", repeats=0)


def test_cache_flush_reads_a_buffer_larger_than_the_cache_and_writes_none(monkeypatch):
    """The flush leaves the cache clean: a flush that wrote its buffer would leave dirty lines whose write-back the
    timed kernel pays (in-place writes bump a tensor's version counter; a read does not)."""
    monkeypatch.setitem(harness.FLUSH_BYTES, "cpu", 2**20)
    flusher = harness._CacheFlusher("cpu")
    buffer = flusher._buffer
    assert buffer.numel() * buffer.element_size() == 2**20 and bool((buffer == 1).all())
    version = buffer._version
    flusher()
    assert buffer._version == version


def test_gemm_rows_rates_and_scaling():
    small, large = (32, 32, 32), (512, 512, 512)  # 4096 times the FLOPs
    rows = harness.measure_gemms([small, large], device=DEVICE, dtype="fp32", repeats=10)
    assert [(r.kernel, r.m, r.n, r.k, r.dtype, r.device) for r in rows] == [
        ("gemm", *small, "fp32", DEVICE), ("gemm", *large, "fp32", DEVICE)]
    assert all(r.source.startswith(f"harness torch {torch.__version__}; ") for r in rows)
    rate = 2 * 512**3 / rows[1].time_s
    assert 1e8 < rate < 1e13
    assert rows[1].time_s > rows[0].time_s


def test_attention_rows():
    cases = [(1, 4, 2, 32, 32, 16), (2, 4, 2, 1, 64, 16)]
    rows = harness.measure_attention(cases, device=DEVICE, dtype="fp32", repeats=5)
    got = [(r.kernel, r.batch, r.heads, r.kv_heads, r.seq_len, r.kv_len, r.head_dim) for r in rows]
    assert got == [("attention_prefill", 1, 4, 2, 32, 32, 16), ("attention_decode", 2, 4, 2, 1, 64, 16)]
    assert all(r.time_s > 0 and r.m == 0 and r.bytes == 0 for r in rows)
    with pytest.raises(ValueError, match="q_len"):
        harness.measure_attention([(1, 4, 2, 8, 32, 16)], device=DEVICE, dtype="fp32")


def test_streaming_rows_count_one_pass_of_bytes():
    rows, numel = harness.measure_streaming([(8, 256)], device=DEVICE, dtype="bf16", repeats=5), 8 * 256
    # The cast reads bf16 and writes fp32; the per-row product reads the rows and their 8 scales; the negation of
    # a strided half reads and writes half the elements.
    assert [(r.kernel, r.variant, r.bytes, r.dtype) for r in rows] == [
        ("norm", "", 2 * numel * 2, "bf16"), ("activation", "", 2 * numel * 2, "bf16"),
        ("elementwise", "", 3 * numel * 2, "bf16"), ("elementwise", "general", numel * (2 + 4), "bf16"),
        ("elementwise", "general", 2 * numel * 2 + 8 * 2, "bf16"), ("elementwise", "general", numel * 2, "bf16")]
    assert [r.source.rsplit("op=", 1)[1] for r in rows] == ["rms_norm[8x256]", "silu[8x256]", "add[8x256]",
                                                            "cast[8x256]", "mul_row[8x256]", "neg_half[8x256]"]
    assert [r.to_kernel().general_layout for r in rows] == [False] * 3 + [True] * 3


@pytest.mark.parametrize("name", ["table.csv", "table.csv.gz"])
def test_rows_round_trip_through_the_table(tmp_path, name):
    rows = (harness.measure_gemms([(16, 64, 32)], device=DEVICE, dtype="fp32", repeats=3)
            + harness.measure_attention([(1, 2, 1, 1, 16, 8)], device=DEVICE, dtype="fp32", repeats=3)
            + harness.measure_streaming([(4, 64)], device=DEVICE, dtype="fp32", repeats=3))
    write_table(tmp_path / name, rows)
    assert read_table(tmp_path / name) == rows
    assert rows[0].to_kernel().flops == 2 * 16 * 64 * 32


def test_decode_step_time_positive_and_sane_in_context(tiny_llama):
    short, long = 16, 8192  # at 8192 attention over the cache is most of the step, even for this tiny model

    def step_s(context_len: int) -> float:
        return harness.measure_decode_step(tiny_llama, batch=2, context_len=context_len, device="cpu", dtype="fp32",
                                           repeats=15)

    # The faster of three interleaved measurements of each: a loaded host (other tests on the same cores) slows one
    # measurement by more than the 20% the comparison allows, and rarely all three.
    t_short, t_long = (min(times) for times in zip(*((step_s(short), step_s(long)) for _ in range(3)), strict=True))
    assert t_short > 0
    # More context never makes a step faster (beyond noise), and the work grows at most linearly in it.
    assert 0.8 * t_short <= t_long <= t_short * long / short


def test_decode_step_rows_name_the_model_and_count_the_new_token(tiny_llama):
    rows = harness.measure_decode_steps("tiny.json", tiny_llama, [(2, 16), (1, 64)], device=DEVICE, repeats=3)
    assert [(r.kernel, r.model, r.batch, r.kv_len) for r in rows] == [("decode_step", "tiny.json", 2, 17),
                                                                     ("decode_step", "tiny.json", 1, 65)]
    assert {r.dtype for r in rows} == {"bf16"}  # the config's own dtype (tiny_llama: bfloat16)
    assert all(r.time_s > 0 and "op=decode_step[tiny.json]" in r.source for r in rows)


def test_grids():
    gpu = harness.default_gemm_grid()
    ms = {m for m, _, _ in gpu}
    assert {1, 2, 8192} <= ms and max(ms) == 8192 and any(m % 2 for m in ms if m > 1)
    assert len(gpu) == len(set(gpu)) < 400
    # A CPU session does at most ~1e11 FLOPs over the grid (20 timed + 3 warm-up runs per shape).
    assert sum(2 * m * n * k for m, n, k in harness.cpu_gemm_grid()) * 23 < 1.5e11
    for case in harness.default_attention_cases() + harness.cpu_attention_cases():
        assert case[3] in (1, case[4])


def _measure_args(*argv: str):
    from explore.cli import _command_parser  # the explore command's own parser

    return _command_parser().parse_args(["measure", *argv])


def test_measure_command_writes_a_table(tmp_path, capsys):
    from explore.measure_cmd import cmd_measure

    out = tmp_path / "m.csv.gz"
    args = _measure_args("--device-name", DEVICE, "--kinds", "gemm", "--quick", "--repeats", "3", "--dtype", "fp32",
                         "--threads", "1", "-o", str(out))
    assert cmd_measure(args) == 0
    rows = read_table(out)
    assert rows and {r.device for r in rows} == {DEVICE} and {r.kernel for r in rows} == {"gemm"}
    printed = capsys.readouterr().out
    assert "provenance: harness torch" in printed and "explore measure --device-name cpu-local" in printed
    assert rows[0].source.partition("; op=mm[")[0] in printed and "; threads 1; " in printed


@pytest.mark.parametrize("argv", [("--kinds", "gemm,fft"), ("-o", "table.json"), ("--repeats", "0"),
                                  ("--threads", "0"), ("--device-name", " "), ("--kinds", "decode_step"),
                                  ("--model", "llama-9-7b")])
def test_measure_command_rejects_bad_arguments(argv):
    from explore.measure_cmd import cmd_measure

    base = {"--device-name": DEVICE, "--kinds": "gemm", "-o": "t.csv", "--repeats": "3"}
    base.update(dict([argv]))
    if argv[0] == "--model":
        base["--kinds"] = "decode_step"
    args = _measure_args(*itertools.chain.from_iterable(base.items()))
    with pytest.raises(InputError):
        cmd_measure(args)


def test_the_timed_norm_computes_the_models_rms_norm():
    # The harness times torch's fused rms_norm in place of the decoder's module of eager ops: the same function.
    from workloads.decoder import RMSNorm

    x = torch.randn(8, 64, dtype=torch.float32)
    (_, _, _, norm, _), *_ = harness._streaming_ops(torch, 64, torch.float32, "cpu")
    assert torch.allclose(norm(x), RMSNorm(64, 1e-5, torch.float32)(x), rtol=1e-5, atol=1e-6)


def test_graph_replayed_steps_need_cuda(tiny_llama):
    with pytest.raises(ValueError, match="allowed: a CUDA device"):
        harness.measure_decode_step(tiny_llama, batch=1, context_len=8, device="cpu", dtype="bf16", graph=True)
    # On the CPU a step is timed eagerly only: one row per case, none 'graph'.
    rows = harness.measure_decode_steps("tiny.json", tiny_llama, [(1, 8)], device=DEVICE, repeats=2)
    assert [r.timing for r in rows] == ["isolated"]


def test_a_profiled_step_reads_back_as_a_trace(tmp_path, tiny_llama):
    from workloads.profiler_import import profile_to_trace

    path = tmp_path / "step.json.gz"
    ops = harness.profile_decode_step(tiny_llama, path, batch=1, context_len=16, device="cpu")
    trace = profile_to_trace(path)
    # Every decoder layer's attention is in the trace, and the file holds no fewer events than it counted as ops.
    assert sum("scaled_dot_product" in op.name for op in trace.ops) == tiny_llama.num_layers
    assert ops >= len(trace.ops) > 0


def test_a_profiled_prefill_lowers_to_prefill_attention_and_prompt_sized_gemms(tmp_path, tiny_llama):
    from kernels.kernel import KernelKind
    from kernels.lowering import lower_op
    from workloads.profiler_import import profile_to_trace

    path = tmp_path / "prefill.json.gz"
    harness.profile_decode_step(tiny_llama, path, batch=2, context_len=0, new_tokens=24, device="cpu")
    trace = profile_to_trace(path)
    kernels = [k for op in trace.ops if (k := lower_op(op, trace.dtype)) is not None]
    attention = [k for k in kernels if k.kind in (KernelKind.ATTENTION_PREFILL, KernelKind.ATTENTION_DECODE)]
    assert [(k.kind, k.batch, k.q_len, k.kv_len) for k in attention] == [
        (KernelKind.ATTENTION_PREFILL, 2, 24, 24)] * tiny_llama.num_layers
    # Every token of both prompts through the layers; the LM head over each prompt's last position only.
    gemms = {(k.module == "lm_head", k.m) for k in kernels if k.kind == KernelKind.GEMM}
    assert gemms == {(False, 2 * 24), (True, 2)}


def test_a_profiled_step_names_the_module_of_each_op(tmp_path, tiny_llama, trace_of):
    """The profile's ops carry the modules that ran them, as a captured trace's do: the same GEMM modules in the same
    order, the layer read off the path, and the norm modules' ops lowered as norm parts (kernels/lowering.py)."""
    from kernels.kernel import KernelKind
    from kernels.lowering import lower_op
    from workloads.profiler_import import profile_to_trace

    path = tmp_path / "step.json.gz"
    harness.profile_decode_step(tiny_llama, path, batch=1, context_len=16, device="cpu")
    profiled = profile_to_trace(path)
    captured = trace_of(tiny_llama, "decode", 1, 1, 16)

    def gemm_modules(trace):
        return [op.module for op in trace.ops if (k := lower_op(op, trace.dtype)) is not None and k.kind ==
                KernelKind.GEMM]

    assert gemm_modules(profiled) == gemm_modules(captured)
    assert {op.layer for op in profiled.ops if op.module.startswith("layers.1.")} == {1}
    norms = [lower_op(op, profiled.dtype) for op in profiled.ops if op.module.endswith("input_layernorm")]
    assert norms and {k.kind for k in norms if k is not None} == {KernelKind.NORM_PART}


@pytest.mark.parametrize("dtype, variant", [("fp8", "tensor"), ("w8a8", ""), ("w4a16", "")])
def test_quantized_gemm_rows_name_their_format(dtype, variant):
    rows = harness.measure_gemms([(32, 256, 256)], device=DEVICE, dtype=dtype, repeats=3)
    assert [(r.kernel, r.m, r.n, r.k, r.dtype, r.variant) for r in rows] == [("gemm", 32, 256, 256, dtype, variant)]
    assert rows[0].time_s > 0


def test_a_shape_the_op_refuses_is_left_out():
    # tinygemm packs k in tiles of 8 x 16 and groups of 128: k = 96 is neither.
    assert harness.measure_gemms([(4, 256, 96)], device=DEVICE, dtype="w4a16", repeats=3) == []


def test_int4_linears_replace_every_linear_and_keep_the_models_shapes(tiny_llama):
    from dataclasses import replace

    from workloads.decoder import DecoderModel, KVCache

    config = replace(tiny_llama, hidden_size=128, intermediate_size=256, head_dim=32, vocab_size=256)
    assert harness.int4_refusal(config) == ""
    with torch.no_grad():
        model = DecoderModel(config, torch.bfloat16).eval()
        # Per layer q, k, v, o, gate, up and down; and the LM head.
        assert harness.int4_linears(model, "cpu") == 7 * 2 + 1
        assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
        logits = model(torch.randint(0, 256, (2, 3)), KVCache(config, 2, 8, torch.bfloat16), 0)
    assert logits.shape[-1] == 256 and torch.isfinite(logits.float()).all()


def test_int4_refusal_names_the_dimension(tiny_llama):
    assert harness.int4_refusal(tiny_llama) == "hidden_size 64 is not a multiple of tinygemm's group of 128"


def test_a_check_writes_its_rows_with_the_harness_provenance(tmp_path, capsys):
    import csv

    out = tmp_path / "check.csv"

    def rows(device, cpu):
        assert (device, cpu) == ("cpu", True)
        yield from ({"op": "mean", "rows": r, "time_s": r * 1e-6} for r in (1, 16))

    assert harness.run_check([str(out), "--cpu"], rows) == 0
    written = list(csv.DictReader(out.open()))
    assert [(r["op"], r["rows"]) for r in written] == [("mean", "1"), ("mean", "16")]
    assert {r["source"] for r in written} == {harness.harness_source("cpu")}
    assert f"{out}: 2 rows" in capsys.readouterr().out
