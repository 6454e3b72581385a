"""Llama-2-70B on four A100s with NCCL's all-reduce and with vLLM's custom one, against the pair of runs vLLM
published with its custom all-reduce kernels (github.com/vllm-project/vllm/pull/2192, 2023-12-19, "Latency and
memory": benchmark_latency.py, batch 64, 256 prompt and 256 output tokens, decode in CUDA graphs; 16.37 s before,
14.57 s after), shipped as the two batch_run rows of data/published/vllm-custom-allreduce-a100.csv (`backend` nccl and
custom) and scored as `explore validate` scores them. No term is fitted on them.

Each decode step all-reduces 1 MB messages (64 tokens of 8,192 16-bit values) 160 times, 64 times gpt-fast's batch-1
messages: the custom kernels' link bytes are a third of their time here (5 of 16 us a call, two-shot), NCCL's fitted
latency most of its 52 us. Ours: 12.93 s and 11.42 s, -21.0% and -21.6%; the custom all-reduce saves 1.51 s of the
published 1.80 s. That saving also says NCCL inside vLLM's CUDA graphs cost about as much as the latency fitted on
Vidur's eager calls.
"""

from __future__ import annotations

import pytest

from tests.explore.published_runs import published_runs, time_errors

RUNS = published_runs("vllm-custom-allreduce-a100.csv")
TOLERANCE = 0.20


@pytest.fixture(scope="module")
def predicted_s(evaluator) -> dict[str, float]:
    """Each run's simulated makespan by its all-reduce."""
    errors = time_errors(evaluator, RUNS)
    return {run.backend: run.time_s * (1 + float(error)) for run, error in zip(RUNS, errors, strict=True)}


@pytest.mark.slow  # Llama-2-70B traced at batch 64, a few seconds
def test_custom_all_reduce_saves_what_vllm_measured(predicted_s):
    """The time the custom all-reduce saves over NCCL is within 20% of the published saving (1.80 s, 11% of the
    NCCL run), and the custom run is the faster."""
    measured = {run.backend: run.time_s for run in RUNS}
    saved, published = predicted_s["nccl"] - predicted_s["custom"], measured["nccl"] - measured["custom"]
    assert saved > 0 and abs(saved / published - 1) <= TOLERANCE, (saved, published)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "both runs 21% short (-21.0% with NCCL, -21.6% custom), by 3.4 s and 3.2 s: about 13 ms a decode step that "
    "the engine model does not price, alike in both runs. vLLM v0.2 scheduled, prepared inputs and sampled in Python "
    "every step; no source gives that cost, so it is not modeled"))
def test_both_runs_match_vllm(predicted_s):
    measured = {run.backend: run.time_s for run in RUNS}
    assert all(abs(predicted_s[k] / measured[k] - 1) <= TOLERANCE for k in measured), (predicted_s, measured)
