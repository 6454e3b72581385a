"""DeepSeek-R1 (DeepSeek-V3's architecture) on eight H200s against published runs in block-scaled fp8, tensor
parallelism 8: vLLM's offline run, data/published/deepseek/vllm-deepseek-r1-h200.csv (vLLM pull request 13747,
2025-02-25: benchmark_throughput.py, 100 prompts of 3,000 tokens, 1,000 output tokens each, FlashMLA: 692.34 output
tokens/s, a 144.4 s run), and SGLang v0.5.7's mean TPOT at 8-64 requests in flight of 1,024 + 1,024 tokens,
inferencex-sglang-r1-h200.csv (SemiAnalysis InferenceX, 2026-03-05).

Neither is a `batch_run` of the measured-kernel table: their fp8 weights are block-scaled (the checkpoint's 128 x 128
scales, run as W8A8), which a batch_run row's 'fp8' (scaled per tensor) does not say. Each runs here as the design point
of the same run: a static batch served as an engine in the checkpoint's format (kernels/formats.py, as examples/mtp.yaml
serves it: fp8 e4m3 weights with a float32 scale per 128 x 128 block, 8.002 bits a weight, fp8 e4m3 activations with a
float32 scale per token and 128 values, 8.25 bits, the embedding and LM head in bf16; NumericFormat's block-scaled
variant, priced by the H200's fp8 block-scaled GEMM and MoE fits), tensor parallelism 8 with the experts split by it and
the engine's custom all-reduce; SGLang's requests in flight as a static batch of as many, whose TPOT the serving run's
mean approaches (a new request's 1,024-token prefill interleaves about once every 128 decode steps at 8 in flight).

vLLM's run: ours 49.6 s, 0.34x the published time (at 118bb2c; 50.8 s, 0.35x, in the fp16 scales per 128 values the
project counted before), a miss kept as an expected failure, its cause not settled here: the H200's block-scaled fits
are of the kernels aiconfigurator measured on a later vLLM (its FlashInfer CUTLASS MoE among them), not of the February
2025 vLLM that ran this, and engine versions' kernels and schedulers are not modeled. Priced with fp8 scaled per tensor
instead, the same run came out 169.7 s (1.17x, at 0ed8c2e): its decode steps took 4x the block-scaled ones (the
per-tensor fused-MoE fit prices a tp-8 decode layer of 100 tokens, 1.41 GB of experts a device, at 2.42 ms, 583 GB/s;
the block-scaled fit at 0.41 ms at 118bb2c, 0.42 in fp16 scales per 128), a gap no published figure here settles.
SGLang, at 118bb2c: ours 14.4 ms against 12.8 at 8 in flight (1.13x) and 33.4 against 34.6 at 64 (0.96x); in the fp16
scales per 128 values the project counted before, 14.6 (1.14x) and 33.9 (0.98x).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from explore.design_point import DesignPoint

PUBLISHED = Path(__file__).resolve().parents[2] / "data" / "published" / "deepseek"
TOLERANCE = 0.20  # the project's bound on a whole run against a published measurement
# The checkpoint's format, as examples/mtp.yaml serves it (config.json quantization_config: e4m3, weight_block_size
# [128, 128]; README_WEIGHTS.md: float32 scales, activations per token and 128 channels; inference/model.py keeps the
# embedding and LM head in bf16). group_size 128, the sides of a block, is the default, which a point's knobs leave out.
FP8_BLOCK = (("act_type", "fp8_e4m3"), ("head_bits", 16), ("scale_granularity", "block"), ("scale_type", "fp32"),
             ("weight_type", "fp8_e4m3"))


def _rows(name: str) -> list[dict]:
    with open(PUBLISHED / name, newline="") as f:
        return list(csv.DictReader(f))


VLLM = _rows("vllm-deepseek-r1-h200.csv")[0]
SGLANG = {int(row["concurrency"]): row for row in _rows("inferencex-sglang-r1-h200.csv")}


def _point(row: dict, batch: int, allreduce: str = "custom") -> DesignPoint:
    """The row's run as a design point: a static batch of `batch` in block-scaled fp8 W8A8 (module docstring)."""
    point = DesignPoint(model=row["model"], device=row["device"], batch=batch, prompt=int(row["prompt"]),
                        output=int(row["output"]), execution="engine", tp=int(row["tp"]), weight_bits=8, act_bits=8,
                        knobs=tuple(sorted({**dict(FP8_BLOCK), "allreduce": allreduce}.items())))
    assert point.numeric_format.block_scaled_variant == "fp8/block128"
    return point


@pytest.mark.slow  # DeepSeek-V3 at full size: a minute or two of CPU (its traces and kernel tables)
@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="ours 0.34x the published run, cause not settled: the H200's fp8 block-scaled fits are of a "
                          "later vLLM's kernels; engine versions are not modeled")
def test_deepseek_r1_on_eight_h200s_matches_vllms_offline_run(evaluator):
    metrics = evaluator.evaluate(_point(VLLM, int(VLLM["batch"]), VLLM["allreduce"])).metrics
    assert metrics["fits_in_memory"] is True
    ratio = metrics["e2e_s"] / float(VLLM["time_s"])
    assert abs(ratio - 1) <= TOLERANCE, ratio


@pytest.mark.slow  # DeepSeek-V3 at full size: a minute or two of CPU each (its traces and kernel tables)
@pytest.mark.parametrize("in_flight", [8, 64])  # the sweep's ends
def test_deepseek_r1_decode_on_eight_h200s_matches_sglang(evaluator, in_flight):
    row = SGLANG[in_flight]
    metrics = evaluator.evaluate(_point(row, in_flight)).metrics
    assert metrics["fits_in_memory"] is True
    ratio = metrics["tpot_s"] / float(row["tpot_s"])
    assert abs(ratio - 1) <= TOLERANCE, ratio
