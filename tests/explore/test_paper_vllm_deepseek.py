"""DeepSeek-R1 (DeepSeek-V3's architecture) on eight H200s against vLLM's published offline run:
data/published/deepseek/vllm-deepseek-r1-h200.csv (vLLM pull request 13747, 2025-02-25: benchmark_throughput.py, -tp 8,
100 prompts of 3,000 tokens, 1,000 output tokens each, FlashMLA: 692.34 output tokens/s, a 144.4 s run).

The row is not a `batch_run` of the measured-kernel table: its fp8 weights are block-scaled (the checkpoint's 128 x 128
scales, run as W8A8), which a batch_run row's 'fp8' (scaled per tensor) does not say. It runs here as the design point
of the same run: a static batch of 100 served as an engine, fp8 e4m3 weights and activations in scale groups of 128
(NumericFormat's block-scaled variant, priced by the H200's fp8 block-scaled GEMM and MoE fits), tensor parallelism 8
with the experts split by it and vLLM's custom all-reduce.

Ours: 50.2 s, 0.35x the published time, a miss kept as an expected failure, its cause not settled here: the H200's
block-scaled fits are of the kernels aiconfigurator measured on a later vLLM (its FlashInfer CUTLASS MoE among them),
not of the February 2025 vLLM that ran this, and engine versions' kernels and schedulers are not modeled. Priced with
fp8 scaled per tensor instead, the same run comes out 169.7 s (1.17x): its decode steps take 4x the block-scaled ones
(the per-tensor fused-MoE fit prices a tp-8 decode layer of 100 tokens, 1.41 GB of experts a device, at 2.42 ms, 583
GB/s; the block-scaled fit at 0.42 ms), a gap no published figure here settles.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from explore.design_point import DesignPoint

PUBLISHED = Path(__file__).resolve().parents[2] / "data" / "published" / "deepseek" / "vllm-deepseek-r1-h200.csv"
with open(PUBLISHED, newline="") as _file:
    ROW = next(csv.DictReader(_file))
TOLERANCE = 0.20  # the project's bound on a whole run against a published measurement
FP8_BLOCK = (("act_type", "fp8_e4m3"), ("weight_type", "fp8_e4m3"))  # scale groups of 128: NumericFormat's default


def _point(**knobs) -> DesignPoint:
    return DesignPoint(model=ROW["model"], device=ROW["device"], batch=int(ROW["batch"]), prompt=int(ROW["prompt"]),
                       output=int(ROW["output"]), execution="engine", tp=int(ROW["tp"]), weight_bits=8, act_bits=8,
                       knobs=tuple(sorted({**dict(FP8_BLOCK), "allreduce": ROW["allreduce"], **knobs}.items())))


@pytest.mark.slow  # DeepSeek-V3 traced at full size: minutes
@pytest.mark.xfail(strict=True, reason="ours 0.35x the published run, cause not settled: the H200's fp8 block-scaled "
                                       "fits are of a later vLLM's kernels; engine versions are not modeled")
def test_deepseek_r1_on_eight_h200s_matches_vllms_offline_run(evaluator):
    point = _point()
    assert point.numeric_format.block_scaled_variant == "fp8/block128"
    metrics = evaluator.evaluate(point).metrics
    assert metrics["fits_in_memory"] is True
    ratio = metrics["e2e_s"] / float(ROW["time_s"])
    assert abs(ratio - 1) <= TOLERANCE, ratio
