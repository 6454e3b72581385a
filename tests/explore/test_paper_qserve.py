"""Serving throughput against QServe's published table (Lin et al., "QServe: W4A8KV4 Quantization and System Co-design
for Efficient LLM Serving", MLSys 2025; github.com/mit-han-lab/qserve README.md@172741f, "Efficiency Benchmarks",
the paper's Table 4).

The table: maximum throughput in tokens/s, 1,024 input and 512 output tokens per sequence, in-flight batching off,
paged attention on, "the same device memory budget" for every system; QServe's batch per model and GPU is published,
TensorRT-LLM's is not. QServe's runs are shipped as `batch_run` rows of data/published/qserve-throughput.csv
(per-channel weights on the A100 and groups of 128 with two-level scales on the L40S, as the README recommends for
each) and scored as `explore validate` scores them. TensorRT-LLM's W4A16 is AWQ with groups of 128 and its W8A8 is
SmoothQuant, whose KV cache is 8-bit (the README's accuracy footnote: "SmoothQuant is evaluated with per-tensor static
KV cache quantization"). OOM: the system could not hold the model. Each point runs as a serving engine (fused kernels,
decode replayed from CUDA graphs), one static batch prefilled whole and decoded to the end.

Checked here: QServe's gain over TensorRT-LLM's fastest format (the table's "throughput increase", Llama-3-8B: 1.20x on
the A100, over FP16; 1.39x on the L40S, over W8A8), QServe's absolute throughput at its published batch, and which
cells the table marks OOM.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from explore.calibrate_cmd import step_point
from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from tests.explore.published_runs import assert_all_within, published_runs, time_errors

QSERVE_RUNS = published_runs("qserve-throughput.csv")
A100, L40S = "a100-sxm-80gb", "l40s"
TENSORRT_LLM = {
    "fp16": dict(weight_bits=16),
    "w4a16": dict(weight_bits=4, knobs=(("group_size", 128),)),  # AWQ, groups of 128
    "w8a8": dict(weight_bits=8, act_bits=8, kv_bits=8, knobs=(("scale_granularity", "channel"),)),  # SmoothQuant
}
# tokens/s of TensorRT-LLM FP16, W4A16 and W8A8 (None: OOM); QServe's runs are QSERVE_RUNS.
TABLE = {
    L40S: {"llama-3-8b": (1326, 1431, 2634), "llama-2-7b": (444, 681, 1271), "mistral-7b": (1566, 1457, 2569),
           "llama-2-13b": (92, 368, 440), "llama-2-70b": (None, 119, None)},
    A100: {"llama-3-8b": (2503, 2370, 2396), "llama-2-7b": (1549, 1549, 2334), "mistral-7b": (2371, 2403, 2427),
           "llama-2-13b": (488, 871, 1277), "llama-2-70b": (None, 358, 235)},
}
TOLERANCE = 0.30


def _serving(model: str, device: str, batch: int, fmt: dict) -> DesignPoint:
    return DesignPoint(model=model, device=device, batch=batch, prompt=1024, output=512, execution="engine", **fmt)


def _runs(device: str) -> list:
    return [row for row in QSERVE_RUNS if row.device == device]


def _largest_batch_rate(evaluator: Evaluator, device: str, fmt: dict) -> float:
    """Llama-3-8B's tokens/s at the largest batch, in steps of 32 up to the table's largest (256), whose weights, KV
    cache and activations fit the device (steps, not every batch: each batch size is a trace of its own)."""
    for batch in range(256, 0, -32):
        metrics = evaluator.evaluate(_serving("llama-3-8b", device, batch, fmt)).metrics
        if metrics["fits_in_memory"]:
            return metrics["tokens_per_s"]
    raise AssertionError(f"no batch of {fmt} fits {device}")


# Ours: L40S 1.24x (QServe 4,450 tokens/s at batch 128 against W8A8's 3,570 at batch 192), A100 1.05x (6,130 against
# W8A8's 5,850, both at batch 256). The table's A100 W8A8 (2,396) is no faster than its FP16 (2,503), where ours is
# 1.9x faster (FP16: 3,120 at batch 192): the paper's A100 gain is over FP16, ours over W8A8 (the table's gain over
# W8A8 is 1.25x). Within 30% of the paper on either side, and above 1.
@pytest.mark.slow  # eight batch sizes of an 8B model traced, about 15 s
@pytest.mark.parametrize("device, paper", [(A100, 1.20), (L40S, 1.39)])
def test_qserve_over_the_fastest_tensorrt_llm_format(evaluator, device, paper):
    (run,) = (row for row in _runs(device) if row.model == "llama-3-8b")
    point, _ = step_point(device, run, "qserve-throughput.csv", evaluator)
    qserve = evaluator.evaluate(point).metrics["tokens_per_s"]
    best = max(_largest_batch_rate(evaluator, device, fmt) for fmt in TENSORRT_LLM.values())
    speedup = qserve / best
    assert 1.0 < speedup and abs(speedup / paper - 1) <= TOLERANCE, speedup


def _time_errors(evaluator: Evaluator, device: str) -> dict[str, float]:
    """Each QServe run's simulated makespan over the published one, minus 1, by model (explore validate's scoring)."""
    runs = _runs(device)
    return {run.model: float(e) for run, e in zip(runs, time_errors(evaluator, runs), strict=True)}


# Ours, in time (throughput is its inverse): -18% (Llama-3-8B), -3% (Llama-2-7B), -16% (Mistral-7B), -4%
# (Llama-2-13B, batch 75), -16% (Llama-2-70B, batch 24). The GQA models (4 and 8 query heads a KV head) come out 12-15
# points shorter than the MHA ones, and 10-16 on the A100 (below). QServe's decode attention
# (kernels/csrc/fused_attention/decoderMaskedMultiheadAttentionTemplate.hpp, TensorRT-LLM's masked MHA before XQA)
# runs one thread block per (sequence, query head), each loading its KV head's cache: a GQA group reads it once per
# query head, less what L2 catches, where the model prices one read a KV head. Not modeled: the L2 share is not known.
@pytest.mark.slow  # five models traced at their batch, about 10 s
def test_qserve_runs_on_l40s_at_their_published_batch(evaluator):
    assert_all_within(_time_errors(evaluator, L40S), 5, TOLERANCE)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "ours 32% (Llama-2-13B) to 52% (Mistral-7B) shorter than the table's A100 QServe runs, and 1.4-2.4x its "
    "A100 W8A8 throughput, while its A100 FP16 and W4A16 runs are within -4% to +55% of ours as on the L40S. The "
    "table's A100 int8 runs are slow beyond what the chip explains: W8A8 is no faster than FP16 (Llama-3-8B 2,396 "
    "against 2,503 tokens/s) and QServe takes longer per sequence on the A100 (0.17 s at batch 256) than on the L40S "
    "(0.14 s at 128), though the A100 has 2.4x the L40S's bandwidth and 0.85x its int8 peak (624 against 733 TOPS). "
    "No measurement of an A100 int8 GEMM is in the project's data. Beyond that, the GQA models miss by 42-52% and "
    "the MHA ones by 32-36%, as on the L40S (-18% to -20% against -3% to -6%): QServe's decode attention reads a "
    "KV head once per query head (one block per sequence and query head), which the model does not price"))
def test_qserve_runs_on_a100_at_their_published_batch(evaluator):
    assert_all_within(_time_errors(evaluator, A100), 5, TOLERANCE)


@pytest.mark.slow  # five models traced at batch 1, about 10 s
def test_what_the_table_marks_oom_does_not_fit(evaluator):
    """Llama-2-70B's 16-bit weights fit neither GPU and its 8-bit ones not the L40S's 48 GB; every cell with a
    throughput holds at least one sequence, and so does each of QServe's runs at batch 1."""
    for device, rows in TABLE.items():
        qserve = {run.model: run for run in _runs(device)}
        for model, row in rows.items():
            for name, published in zip(TENSORRT_LLM, row, strict=True):
                fits = evaluator.evaluate(_serving(model, device, 1, TENSORRT_LLM[name])).metrics["fits_in_memory"]
                assert bool(fits) == (published is not None), (device, model, name)
            point, _ = step_point(device, qserve[model], "qserve-throughput.csv", evaluator)
            assert evaluator.evaluate(replace(point, batch=1)).metrics["fits_in_memory"], (device, model, "qserve")
