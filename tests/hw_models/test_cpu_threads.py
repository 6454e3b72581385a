"""Thread scaling of the CPU cost model (hw_models/cpu.py) against published multi-thread decode rates.

Model: a run uses compute.threads cores; each kernel's core time follows Amdahl's law with an absolute serial
part per kernel, s + (C - s) / t with s = min(thread_scaling.serial_us, C) and C the one-thread time; DRAM
moves at min(memory peak, threads x thread_scaling.core_dram_GBps). The loss s (1 - 1 / t) is paid on top of
the parallel part whichever bounds it, max(C / t, memory) + loss, so a memory-bound kernel is slower on more
threads past its sweet spot (hw_models/cpu.py).

Data: T-MAC's datasheet, github.com/microsoft/T-MAC docs/profiling_data.md (commit 0babfafb75), Apple
M2-Ultra, token generation in tokens/s at NUM_THREADS 1 and 8 (Llama-2-7B) or 1 and 4 (BitNet-3B), for T-MAC
(LUT kernels) and for llama.cpp (Q2_K for W2 and BitNet, Q4_0 for W4, its dequantizing kernels); and the
T-MAC paper's abstract (Wei et al., EuroSys 2025, arXiv:2407.00088v2): BitNet-b1.58-3B at 30 tokens/s on one
core and 71 on eight, M2-Ultra (a later T-MAC than the datasheet's 22.08 on one thread).

Fit: m2-ultra-tmac's serial_us (61 us) is solved on one point, T-MAC Llama-2-7B W2 on 8 threads (51.01
tokens/s; the one-thread rate, 16.68, is the CPU model's own and is not fitted). Everything else is held out.

Tolerance 25%, on both the rate at N threads and the speedup over one thread. Observed on the held-out T-MAC
points: rate +4% (W4, 8 threads), +15% (BitNet, 4), +3% (BitNet, paper, 8); speedup +10%, -24%, -7%. On
llama.cpp's: speedup -11% (W2), -10% (W4), -15% (BitNet); Q4_0's rates +9% (one thread) and -3% (eight), its
one-thread kernel priced by its instruction count per block (ampere-altra.yaml's source), not fitted.
Known miss (xfail): Q2_K's rates, +47% and +32% (Llama-2-7B, 1 and 8 threads), +72% and +47% (BitNet, 1 and 4),
with Q2_K priced by its own instruction count, not fitted (80 SIMD/FP instructions per 256-weight super-block
besides its 16 dot products, 5.0 byte-lane slots per weight against Q4_0's 4.5; priced at Q4_0's count they were
+61%, +39%, +88%, +56%). The count gives Q2_K 1.09x Q4_0's one-thread time per token; llama.cpp measured 1.48x on
one M2 core (3.82 against 5.65 tokens/s). What the count leaves out is latency: Q2_K's scalar accumulation per 16
weights (isum += vaddvq_s32(...) * scale) is a chain of 16 dependent multiply-adds per super-block, which the model
(issue slots only) does not price. The thread model is not what misses: the serial time per token that each
published pair implies with its own one-thread time, (T_N - T_1 / N) / (1 - 1 / N), is 9.0-16.1 ms across T-MAC
and llama.cpp alike, and the model charges 13.9 ms (Llama-2-7B) and 11.3 ms (BitNet-3B), checked within 30% over
the seven pairs (test_serial_time_matches_what_each_pair_implies).
BitNet-3B's shape: hidden 3200, FFN 8640, 26 layers, 32 heads, vocabulary 32002 (1bitLLM/bitnet_b1_58-3B's
config as copied in two public repositories; its Hugging Face page was not readable here), run as a Llama.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest

from hw_models.cpu import CPUModel, parallel_efficiency, threaded_s
from hw_models.registry import load_device, read_device_yaml, validate_spec
from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.lowering import lower_trace
from kernels.table import KernelTable
from workloads.model_config import load_model_config

TOLERANCE = 0.25
SERIAL_TOLERANCE = 0.30  # the serial time per token implied by each published pair (see the docstring)
DATASHEET = "T-MAC docs/profiling_data.md, M2-Ultra"
PAPER = "T-MAC paper abstract (arXiv:2407.00088v2), M2-Ultra"
CPU_PRESETS = ("m2-ultra-tmac", "ampere-altra", "ampere-altra-sail", "ci-host-cpu")


@dataclass(frozen=True)
class Pair:
    """Published decode rates of one model and kernel library at one thread and at `threads` threads."""

    model: str
    bits: int
    library: str  # "t-mac" (LUT kernels) or "llama.cpp" (the preset without them)
    threads: int
    one_thread: float  # tokens/s
    many_threads: float  # tokens/s
    source: str

    def __str__(self) -> str:
        return f"{self.library} {self.model} W{self.bits} 1->{self.threads} threads"


FIT = Pair("llama-2-7b", 2, "t-mac", 8, 16.68, 51.01, DATASHEET)
HELD_OUT_TMAC = (
    Pair("llama-2-7b", 4, "t-mac", 8, 8.97, 35.65, DATASHEET),
    Pair("bitnet-3b", 2, "t-mac", 4, 22.08, 54.46, DATASHEET),
    Pair("bitnet-3b", 2, "t-mac", 8, 30.0, 71.0, PAPER),
)
HELD_OUT_LLAMA_CPP = (
    Pair("llama-2-7b", 2, "llama.cpp", 8, 3.82, 22.06, DATASHEET),
    Pair("llama-2-7b", 4, "llama.cpp", 8, 5.65, 31.57, DATASHEET),
    Pair("bitnet-3b", 2, "llama.cpp", 4, 6.49, 22.09, DATASHEET),
)


@pytest.fixture(scope="module")
def decode_tables(evaluator, trace_of) -> dict[str, KernelTable]:
    """Batch-1 decode steps at 64 cached tokens: Llama-2-7B (shared with the paper tests) and BitNet-3B."""
    llama = load_model_config("llama-2-7b")
    bitnet = dataclasses.replace(llama, name="bitnet-3b", hidden_size=3200, intermediate_size=8640, num_layers=26,
                                 num_heads=32, num_kv_heads=32, head_dim=100, vocab_size=32002, max_positions=2048,
                                 source="1bitLLM/bitnet_b1_58-3B shape (see the module docstring)")
    return {"llama-2-7b": evaluator.lowered("llama-2-7b", "decode", 1, 64),
            "bitnet-3b": KernelTable.from_kernels(lower_trace(trace_of(bitnet, "decode", 1, 1, 64)))}


def _device(library: str, threads: int, serial_us: float | None = None):
    overrides = {"compute.threads": threads}
    if library == "llama.cpp":
        overrides["lut"] = None
    if serial_us is not None:
        overrides["thread_scaling.serial_us"] = serial_us
    return load_device("m2-ultra-tmac", overrides)


def _tokens_per_s(tables, pair: Pair, threads: int, serial_us: float | None = None) -> float:
    table = tables[pair.model].with_format(NumericFormat(weight_bits=pair.bits))
    return 1.0 / float(_device(pair.library, threads, serial_us).cost_table(table).time_s.sum())


def _gemm(m: int, n: int = 4096, k: int = 4096) -> Kernel:
    return Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * m * n * k, weight_bytes=2.0 * n * k,
                  act_bytes=2.0 * (m * k + m * n), kv_bytes=0.0, dtype="bf16", tensor_core=True, m=m, n=n, k=k)


# --- the model's invariants ----------------------------------------------------------------------------------


def test_efficiency_is_one_at_one_thread_and_falls_with_threads():
    single = np.array([0.0, 1e-6, 61e-6, 1e-3, 1.0])
    assert np.all(parallel_efficiency(single, 1, 61e-6) == 1.0)
    assert np.all(threaded_s(single, 1, 61e-6) == single)
    previous = np.ones_like(single)
    for threads in (2, 4, 8, 16, 80):
        efficiency = parallel_efficiency(single, threads, 61e-6)
        assert np.all((efficiency > 0) & (efficiency <= previous + 1e-15))
        previous = efficiency
    # A kernel shorter than its serial part gains nothing; a long one almost the full factor.
    assert parallel_efficiency(np.array([30e-6]), 8, 61e-6)[0] == pytest.approx(1 / 8)
    assert parallel_efficiency(np.array([1.0]), 8, 61e-6)[0] > 0.999


@pytest.mark.parametrize("name", CPU_PRESETS)
def test_one_thread_pays_no_thread_losses(name):
    """At one thread the serial part changes nothing: the same costs with any serial time."""
    table = KernelTable.from_kernels([_gemm(1), _gemm(64)]).with_format(NumericFormat(weight_bits=4))
    data, where = read_device_yaml(name)
    data["compute"]["threads"] = 1
    one = CPUModel(validate_spec(data, where)).cost_table(table)
    data["thread_scaling"] = {"source": "what-if", **(data.get("thread_scaling") or {}), "serial_us": 1000.0}
    other = CPUModel(validate_spec(data, where)).cost_table(table)
    assert np.array_equal(one.time_s, other.time_s) and np.array_equal(one.compute_s, other.compute_s)


@pytest.mark.parametrize("name", CPU_PRESETS)
def test_more_threads_never_slow_a_compute_bound_kernel(name, decode_tables):
    """Every kernel of a decode step (W2, bf16) and of GEMMs of 1 to 512 rows, at every thread count up to 16,
    then every 8th: a kernel whose parallel part is bound by compute on the higher count is never slower there
    (Amdahl's law); on a preset without a serial part no kernel ever is."""
    cores = read_device_yaml(name)[0]["compute"]["cores"]
    serial = load_device(name).spec.serial_s
    gemms = KernelTable.from_kernels([_gemm(m) for m in (1, 4, 64, 512)])
    tables = [decode_tables["llama-2-7b"].with_format(NumericFormat(weight_bits=bits)) for bits in (2, 16)]
    tables.append(gemms.with_format(NumericFormat(weight_bits=2)))
    counts = sorted({*range(1, min(cores, 16) + 1), *range(16, cores + 1, 8), cores})
    devices = [load_device(name, {"compute.threads": threads}) for threads in counts]
    checked = 0
    for table in tables:
        previous = None
        for threads, device in zip(counts, devices, strict=True):
            costs = device.cost_table(table)
            if previous is not None:
                bound = (costs.compute_s >= costs.memory_s) if serial else np.ones(len(table), dtype=bool)
                assert np.all(costs.time_s[bound] <= previous[bound] * (1 + 1e-12)), f"{name}: {threads} threads"
                checked += int(bound.sum())
            previous = costs.time_s
    assert checked > 0 or len(counts) == 1  # a one-core preset has nothing to compare


def test_a_memory_bound_kernel_has_a_sweet_spot():
    """A bf16 4096 x 4096 GEMV on m2-ultra-tmac, by hand from the preset: one core's bf16 rate is 2 x 3.49 GHz x 4
    pipes x (128 / 16) lanes = 223.4 GFLOP/s, so its 33.55 MFLOP take C = 150.2 us on one thread; its 33.57 MB
    stream in M = 42.0 us at 800 GB/s (no per-thread limit; four of them, 134 MB, overflow the 96 MB system-level
    cache); the loss is 61 us x (1 - 1 / t). Time max(C / t, M)
    + loss falls to t = 4 (M + 45.75 us = 87.7 us), then grows by the loss alone: while threads wait on each other
    the weights do not stream, so the loss cannot hide under the DRAM time (it used to: 8-bit decode then came
    out faster than 4-bit). llama.cpp users see this sweet spot (ggml-org/llama.cpp issue #34: a 13900K decodes
    a 7B model at 18.3 tokens/s on 8 threads, 15.7 on 16)."""
    table = KernelTable.from_kernels([_gemm(1)] * 4)
    times = {t: float(load_device("m2-ultra-tmac", {"compute.threads": t}).cost_table(table).time_s[0])
             for t in range(1, 17)}
    c_s, m_s, serial_s = 2 * 4096**2 / 223.36e9, (2 * 4096**2 + 4 * 4096) / 800e9, 61e-6
    for t, time_s in times.items():
        assert time_s == pytest.approx(max(c_s / t, m_s) + serial_s * (1 - 1 / t), rel=1e-9), t
    assert min(times, key=times.get) == 4
    assert times[16] - times[4] == pytest.approx(serial_s * (1 / 4 - 1 / 16), rel=1e-9)


def test_threads_default_to_all_cores_and_may_not_exceed_them(one_line_error):
    assert load_device("m2-ultra-tmac").spec.threads == 16
    assert load_device("m2-ultra-tmac", {"compute.cores": 8}).spec.threads == 8
    where, message = one_line_error(lambda: load_device("m2-ultra-tmac", {"compute.threads": 32}))
    assert where.endswith("m2-ultra-tmac.yaml")
    assert message.startswith("compute.threads: found 32, allowed: 1 to 16 (compute.cores)")


def test_dram_bandwidth_grows_with_threads_up_to_the_peak():
    """Altra: one N1 core draws 25.1 GB/s (whisper.cpp issue #89); 8 cores 200.8, 9 or more the 204.8 peak."""
    rates = {t: load_device("ampere-altra", {"compute.threads": t}).spec.bandwidth_Bps / 1e9 for t in (1, 8, 9, 80)}
    assert rates == pytest.approx({1: 25.1, 8: 200.8, 9: 204.8, 80: 204.8})
    table = KernelTable.from_kernels([_gemm(1)] * 200).with_format(NumericFormat(weight_bits=16))
    one = load_device("ampere-altra", {"compute.threads": 1}).cost_table(table)
    assert one.memory_s.sum() == pytest.approx(table.bytes.sum() / 25.1e9)


def test_large_gemms_scale_almost_linearly():
    """Prefill-sized GEMMs dwarf the serial part: 4 to 8 threads is close to 2x (on a Snapdragon X Elite T-MAC's
    README reports 50.1 -> 94.4 tokens/s for a 256-token W2 prefill, 1.88x; a different chip, so only the shape)."""
    table = KernelTable.from_kernels([_gemm(256)]).with_format(NumericFormat(weight_bits=2))
    four, eight = (load_device("m2-ultra-tmac", {"compute.threads": t}).cost_table(table).time_s[0] for t in (4, 8))
    assert 1.9 < four / eight <= 2.0


# --- fit and held-out points -----------------------------------------------------------------------------------


def test_serial_us_is_the_fit(decode_tables):
    """The preset's serial_us is the one that puts the fit point on its published rate (bisection)."""
    low, high = 0.0, 1000.0
    for _ in range(30):
        mid = (low + high) / 2
        too_fast = _tokens_per_s(decode_tables, FIT, FIT.threads, mid) > FIT.many_threads
        low, high = (mid, high) if too_fast else (low, mid)
    preset = read_device_yaml("m2-ultra-tmac")[0]["thread_scaling"]["serial_us"]
    assert preset == pytest.approx((low + high) / 2, abs=0.5)
    assert _tokens_per_s(decode_tables, FIT, 1) == pytest.approx(FIT.one_thread, rel=0.02)  # not fitted


@pytest.mark.parametrize("pair", HELD_OUT_TMAC, ids=str)
def test_held_out_tmac_rates_and_speedups(pair, decode_tables):
    one, many = (_tokens_per_s(decode_tables, pair, t) for t in (1, pair.threads))
    assert many == pytest.approx(pair.many_threads, rel=TOLERANCE), f"{pair} ({pair.source})"
    assert many / one == pytest.approx(pair.many_threads / pair.one_thread, rel=TOLERANCE), f"{pair} ({pair.source})"


@pytest.mark.parametrize("pair", (FIT, *HELD_OUT_TMAC, *HELD_OUT_LLAMA_CPP), ids=str)
def test_serial_time_matches_what_each_pair_implies(pair, decode_tables):
    """Per token, the serial time the model charges (sum over kernels of min(serial, one-thread time)) against
    the one the published pair implies with its own one-thread time; llama.cpp's pairs included."""
    one, many = 1.0 / pair.one_thread, 1.0 / pair.many_threads
    implied_s = (many - one / pair.threads) / (1.0 - 1.0 / pair.threads)
    table = decode_tables[pair.model].with_format(NumericFormat(weight_bits=pair.bits))
    device = _device(pair.library, 1)
    single_s = device.cost_table(table).compute_s
    modeled_s = float(np.minimum(load_device("m2-ultra-tmac").spec.serial_s, single_s).sum())
    assert modeled_s == pytest.approx(implied_s, rel=SERIAL_TOLERANCE), f"{pair} ({pair.source})"


@pytest.mark.parametrize("pair", HELD_OUT_LLAMA_CPP, ids=str)
def test_held_out_llama_cpp_speedups(pair, decode_tables):
    one, many = (_tokens_per_s(decode_tables, pair, t) for t in (1, pair.threads))
    speedup = pair.many_threads / pair.one_thread
    assert speedup * (1 - TOLERANCE) <= many / one <= speedup * (1 + TOLERANCE), f"{pair} ({pair.source})"


Q2_K_MISS = pytest.mark.xfail(strict=True, reason=(
    "Q2_K's rates come out 32-72% fast: the preset prices its kernel's instruction count (5.0 byte-lane slots per "
    "weight against Q4_0's 4.5, 1.09x Q4_0's time per token on one M2 core, where llama.cpp measured 1.48x: 3.82 "
    "against 5.65 tokens/s), but its per-16-weight scalar accumulation is a chain of dependent multiply-adds whose "
    "latency an issue count does not see; see the docstring"))


@pytest.mark.parametrize("pair", [pytest.param(p, marks=Q2_K_MISS) if p.bits == 2 else p for p in HELD_OUT_LLAMA_CPP],
                         ids=str)
def test_held_out_llama_cpp_rates(pair, decode_tables):
    """The dequantizing kernel's one-thread rate is its instruction count (ampere-altra.yaml's source), not fitted."""
    for threads, rate in ((1, pair.one_thread), (pair.threads, pair.many_threads)):
        assert _tokens_per_s(decode_tables, pair, threads) == pytest.approx(rate, rel=TOLERANCE), f"{pair}, {threads}"
