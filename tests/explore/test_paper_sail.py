"""Paper checks for the CPU family: SAIL's speedup over a Neoverse-N1 CPU, T-MAC's measured M2 Ultra rates and its
gains over llama.cpp.

SAIL (Zhang, Park, Lee, Sadredini, "SAIL: SRAM-Accelerated LLM Inference System with Lookup-Table-based
GEMV", arXiv:2509.25853, 2025), abstract: "up to 10.7x speedup ... compared to ARM Neoverse-N1 CPU
baselines" (gem5), on low-bit LLM decoding (Llama-2-7B and -13B). Only the abstract was readable in this
session's stored copies, so the figure and setting (core count of the simulated baseline, batch size, bit
width) behind "up to 10.7x" could not be read; we compare at the settings the abstract's mechanisms
favour most (2-bit weights; batch 1 and 16) and report what our model gives.

WHY WE MISS 10.7x (by far more than 35%; nothing tuned): our baseline is a real 80-core Ampere Altra. With
160 NEON pipes, llama.cpp-style dequantization keeps up with DDR4 at batch 1, so the baseline already sits
at the DRAM floor, and SAIL, which must still stream every weight from DRAM each step (the weights do not
fit in 32 MB of cache), cannot go below that floor: decode speedup 1.0x at batch 1. At batch 16 the baseline
turns compute-bound (16 x the multiply-adds) while SAIL's batched row reads serve 32 tokens per read, and each
looked-up entry's add into its token's sum runs in the arrays, bit-serial (the preset's pim.add_GOPS, a PROXY
after Neural Cache: SAIL's adder throughput was not readable): about 1.67x. Were the adds done on the cores'
SIMD lanes (pim.add_GOPS 3840, a what-if), 1.19x. The paper's gem5 baseline must be far more
compute-bound than an 80-core Altra (a small simulated core count), which is what produces speedups near 10x;
as a what-if (not a preset), the same model with 4 cores gives about 5.7x at batch 1 and 13x at batch 16 for
2-bit weights (4 N1 cores draw 4 x 25.1 GB/s of DRAM bandwidth, the preset's per-thread figure, so SAIL
streams its weights at 100 GB/s; without that limit, 11.7x and 27x).
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint

PAPER_SPEEDUP_UP_TO = 10.7  # SAIL abstract, vs ARM Neoverse-N1 baselines
TOLERANCE = 0.35  # on a paper's figure, both sides

def _tpot_s(evaluator, device: str, batch: int, bits: int, overrides: tuple = ()) -> float:
    point = DesignPoint(model="llama-2-7b", device=device, batch=batch, prompt=64, output=16, weight_bits=bits,
                        overrides=overrides)
    return evaluator.evaluate(point).metrics["tpot_s"]


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("bits", [2, 4])
def test_sail_never_slower_than_its_baseline(batch, bits, evaluator):
    sail, base = (_tpot_s(evaluator, device, batch, bits) for device in ("ampere-altra-sail", "ampere-altra"))
    assert sail <= base * (1 + 1e-9)


def test_sail_faster_where_the_baseline_is_compute_bound(evaluator):
    """Direction: at batch 16 (2 bits) the baseline's multiply-adds bound it and SAIL's batched row reads win."""
    speedup_b16 = _tpot_s(evaluator, "ampere-altra", 16, 2) / _tpot_s(evaluator, "ampere-altra-sail", 16, 2)
    assert speedup_b16 > 1.2


@pytest.mark.parametrize("device", ["ampere-altra", "ampere-altra-sail"])
def test_batch_1_decode_sits_at_the_dram_floor(evaluator, device):
    """By hand: Llama-2-7B's 6.74e9 weights (Touvron et al. 2023) at 2 + 16/128 bits stream at the Altra's 204.8 GB/s
    in 8.74 ms, while 80 cores dequantize and multiply them in ~4.4 + 0.9 ms: both designs decode at that floor
    (within 5%: KV cache, activations and the small kernels), which is why SAIL cannot speed up batch 1 here."""
    floor_s = 6.74e9 * (2 + 16 / 128) / 8 / 204.8e9
    assert floor_s <= _tpot_s(evaluator, device, 1, 2) <= 1.05 * floor_s


@pytest.mark.xfail(strict=True, reason="ours at most 1.67x (batch 16) and 1.0x (batch 1) against the paper's up to "
                                        "10.7x: an 80-core Altra baseline sits at the DRAM floor (module docstring)")
def test_sail_best_speedup_near_paper(evaluator):
    """The paper's "up to 10.7x" against our best setting (2-bit weights, batch 1 or 16), within 35% either side:
    a model whose baseline matches the paper's gem5 CPU would pass."""
    best = max(_tpot_s(evaluator, "ampere-altra", batch, 2) / _tpot_s(evaluator, "ampere-altra-sail", batch, 2)
               for batch in (1, 16))
    assert PAPER_SPEEDUP_UP_TO * (1 - TOLERANCE) <= best <= PAPER_SPEEDUP_UP_TO * (1 + TOLERANCE), best


def test_sail_speedup_grows_as_the_baseline_gets_compute_bound(evaluator):
    """What-if (not a preset): fewer baseline cores, as in a small gem5 system, raise SAIL's speedup."""
    few = (("compute.cores", 4),)
    speedup_4 = _tpot_s(evaluator, "ampere-altra", 1, 2, few) / _tpot_s(evaluator, "ampere-altra-sail", 1, 2, few)
    speedup_80 = _tpot_s(evaluator, "ampere-altra", 1, 2) / _tpot_s(evaluator, "ampere-altra-sail", 1, 2)
    assert speedup_4 > 2.5 * speedup_80


# T-MAC (Wei et al., EuroSys 2025), github.com/microsoft/T-MAC docs/profiling_data.md, M2-Ultra token
# generation rates (tokens/s) of Llama-2-7B: W2 16.68 (1 thread), 51.01 (8 threads); W4 8.97 (1 thread),
# 35.65 (8 threads).
TMAC_M2_ULTRA = {(2, 1): 16.68, (2, 8): 51.01, (4, 1): 8.97, (4, 8): 35.65}


@pytest.mark.parametrize("bits", [2, 4])
def test_tmac_single_thread_decode_rate(bits, evaluator):
    """One performance core (NUM_THREADS=1): within 35% of T-MAC's measured rate."""
    ours = 1.0 / _tpot_s(evaluator, "m2-ultra-tmac", 1, bits, (("compute.cores", 1),))
    assert ours == pytest.approx(TMAC_M2_ULTRA[(bits, 1)], rel=TOLERANCE)


@pytest.mark.parametrize("bits", [2, 4])
def test_tmac_eight_threads_decode_rate(bits, evaluator):
    """Eight threads (compute.threads: 8): within 35% of T-MAC's measured rate (51.0 W2, 35.7 W4); we give 51.0
    and 37.0 tokens/s. W2 is the point m2-ultra-tmac's thread_scaling.serial_us is fitted on (61 us per kernel
    that does not shrink with threads), W4 is held out (tests/hw_models/test_cpu_threads.py has the model's
    other held-out points). Without thread-scaling losses it was 134 and 90, an upper bound only."""
    ours = 1.0 / _tpot_s(evaluator, "m2-ultra-tmac", 1, bits, (("compute.threads", 8),))
    assert ours == pytest.approx(TMAC_M2_ULTRA[(bits, 8)], rel=TOLERANCE)


# T-MAC's abstract (arXiv:2407.00088v2): "up to 4x increase in throughput and 70% reduction in energy consumption
# compared to llama.cpp", over four devices; its datasheet's largest M2 Ultra gain is Llama-2-7B W2 on one thread
# (16.68 against llama.cpp Q2_K's 3.82 tokens/s, 4.4x), the setting compared here.
TMAC_SPEEDUP_UP_TO, TMAC_ENERGY_RATIO = 4.0, 1 - 0.70


def _tmac_and_llama_cpp(evaluator) -> tuple[dict, dict]:
    """Metrics of token generation (8 prompt tokens, 256 generated) on one M2 Ultra thread, W2: T-MAC's LUT kernels,
    then the same preset without them (llama.cpp's dequantizing kernels)."""
    def metrics(overrides):
        point = DesignPoint(model="llama-2-7b", device="m2-ultra-tmac", batch=1, prompt=8, output=256, weight_bits=2,
                            overrides=(("compute.threads", 1), *overrides))
        return evaluator.evaluate(point).metrics
    return metrics(()), metrics((("lut", None),))


def test_tmac_speedup_over_llama_cpp(evaluator):
    """Ours 3.0x against "up to 4x" (inside 35%, T-MAC several times faster): low because llama.cpp's Q2_K is
    priced 47% fast on one M2 core (tests/hw_models/test_cpu_threads.py; 2.7x and 61% when Q2_K was priced at Q4_0's
    instruction count); at its measured 3.82 tokens/s the same T-MAC rate would give 4.4x."""
    tmac, llama_cpp = _tmac_and_llama_cpp(evaluator)
    speedup = llama_cpp["tpot_s"] / tmac["tpot_s"]
    assert TMAC_SPEEDUP_UP_TO * (1 - TOLERANCE) <= speedup <= TMAC_SPEEDUP_UP_TO * (1 + TOLERANCE), speedup


@pytest.mark.xfail(strict=True, reason=(
    "ours 0.45 of llama.cpp's energy per token against the abstract's 0.30 (a 55% reduction against 70%): the "
    "energy follows the time, since the preset's per-token energy is mostly its 10 W idle power over the step (the "
    "SIMD work is priced at Horowitz's 45 nm lane-op energy, no per-instruction core overhead), and llama.cpp's Q2_K "
    "baseline is priced 47% fast"))
def test_tmac_energy_reduction_over_llama_cpp(evaluator):
    tmac, llama_cpp = _tmac_and_llama_cpp(evaluator)
    ratio = tmac["energy_per_token_J"] / llama_cpp["energy_per_token_J"]
    assert TMAC_ENERGY_RATIO * (1 - TOLERANCE) <= ratio <= TMAC_ENERGY_RATIO * (1 + TOLERANCE), ratio
