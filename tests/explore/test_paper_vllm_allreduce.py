"""NCCL's all-reduce against vLLM's custom one on A100s, against the runs vLLM published with its custom all-reduce
kernels (github.com/vllm-project/vllm/pull/2192, 2023-12-19, "Latency and memory": benchmark_latency.py, batch 64,
256 prompt and 256 output tokens, decode in CUDA graphs; latency before and after), shipped as the batch_run rows of
data/published/vllm-custom-allreduce-a100.csv (`backend` nccl and custom) and scored as `explore validate` scores
them. No term is fitted on them.

- Llama-2-70B over four A100s: 16.37 s before, 14.57 s after. Each decode step all-reduces 1 MB messages (64 tokens
  of 8,192 16-bit values) 160 times, 64 times gpt-fast's batch-1 messages: the custom kernels' link bytes are a third
  of their time here (5 of 16 us a call, two-shot), NCCL's fitted latency most of its 52 us. Ours 12.93 s and
  11.42 s (-21.0%, -21.6%); the custom all-reduce saves 1.51 s of the published 1.80 s.
- LLaMA 33B over two A100s: 15.88 s and 14.38 s. 852 KB messages, 120 a step. Ours 13.09 s and 12.00 s (-17.6%,
  -16.6%); the custom all-reduce saves 1.09 s of the published 1.50 s.

Both savings come out short (16% and 27%): NCCL inside vLLM's CUDA graphs on A100 cost at least as much as the
latency fitted on Vidur's eager calls (41.7 us a small message), which prices it here.
"""

from __future__ import annotations

import pytest

from tests.explore.published_runs import published_runs, time_errors

RUNS = published_runs("vllm-custom-allreduce-a100.csv")
TOLERANCE = 0.20
SHORT_70B = ("both Llama-2-70B runs 21% short (-21.0% with NCCL, -21.6% custom), by 3.4 s and 3.2 s: about 13 ms a "
             "decode step that the engine model does not price, alike in both. vLLM v0.2 scheduled, prepared inputs "
             "and sampled in Python every step; no source gives that cost, so it is not modeled")


@pytest.fixture(scope="module")
def predicted_s(evaluator) -> dict[tuple[str, str], float]:
    """Each run's simulated makespan by (model, all-reduce)."""
    errors = time_errors(evaluator, RUNS)
    return {(run.model, run.backend): run.time_s * (1 + float(error)) for run, error in zip(RUNS, errors, strict=True)}


MEASURED = {(run.model, run.backend): run.time_s for run in RUNS}


@pytest.mark.slow  # Llama-2-70B and LLaMA 33B traced at batch 64, a few seconds
@pytest.mark.parametrize("model", [
    "llama-2-70b",
    pytest.param("llama-33b", marks=pytest.mark.xfail(strict=True, reason=(
        "ours saves 1.09 s where vLLM measured 1.50 s (-27%): on two A100s the 852 KB all-reduce costs 47 us with "
        "NCCL as fitted on Vidur's eager calls and 11 us as custom kernels, 36 us apart, where the published saving "
        "is about 49 us a call: NCCL in vLLM's CUDA graphs cost more than the fit, or its custom kernels less"))),
])
def test_custom_all_reduce_saves_what_vllm_measured(predicted_s, model):
    """The time the custom all-reduce saves over NCCL is within 20% of the published saving, and the custom run is the
    faster."""
    saved = predicted_s[(model, "nccl")] - predicted_s[(model, "custom")]
    published = MEASURED[(model, "nccl")] - MEASURED[(model, "custom")]
    assert saved > 0 and abs(saved / published - 1) <= TOLERANCE, (saved, published)


@pytest.mark.slow
@pytest.mark.parametrize("key", [pytest.param(key, marks=[pytest.mark.xfail(strict=True, reason=SHORT_70B)]
                                              if key[0] == "llama-2-70b" else [], id="-".join(key))
                                 for key in MEASURED])
def test_each_run_matches_vllm(predicted_s, key):
    assert abs(predicted_s[key] / MEASURED[key] - 1) <= TOLERANCE, (predicted_s[key], MEASURED[key])
