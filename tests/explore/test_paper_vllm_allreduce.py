"""NCCL's all-reduce against vLLM's custom one on A100s, against the runs vLLM published with its custom all-reduce
kernels (github.com/vllm-project/vllm/pull/2192, 2023-12-19, "Latency and memory": benchmark_latency.py, batch 64,
256 prompt and 256 output tokens, decode in CUDA graphs; latency before and after), shipped as the batch_run rows of
data/published/vllm-custom-allreduce-a100.csv (`backend` nccl and custom) and scored as `explore validate` scores
them. No term is fitted on them.

- Llama-2-70B over four A100s: 16.37 s before, 14.57 s after. Each decode step all-reduces 1 MB messages (64 tokens
  of 8,192 16-bit values) 160 times, 64 times gpt-fast's batch-1 messages: the custom kernels' link bytes are a third
  of their time here (5 of 16 us a call, two-shot), NCCL's device time 38 us. Ours 12.05 s and 11.15 s (-26.4%,
  -23.5%); the custom all-reduce saves 0.90 s of the published 1.80 s.
- LLaMA 33B over two A100s: 15.88 s and 14.38 s. 852 KB messages, 120 a step. Ours 12.33 s and 11.80 s (-22.3%,
  -17.9%); the custom all-reduce saves 0.53 s of the published 1.50 s.

The prefill's all-reduces (64 x 256 tokens: 268 MB on 70B, 218 MB on 33B) exceed the custom kernels' 8 MiB buffer
(hw_models/link.py CUSTOM_ALL_REDUCE_MAX_B) and run on NCCL in both runs, as in vLLM; the savings are the decode
steps'. Both savings come out short (50% and 65%): NCCL inside vLLM's CUDA graphs on A100 cost more than NCCL's
device time (Vidur's DGX A100 calls read as device time or the host's interval between calls, hw_models/link.py
as_timed_s). The pull request's own hypothesis names a reason: captured in a graph, NCCL "requires inserting more nodes
per invocation", among them "a few host nodes"; a host node waits on a host thread, which no measurement here prices
(on another stack, Meta's CTRAN on GB200, moving such host nodes off the launch stream saved 52-85 us a collective
replay: github.com/meta-pytorch/torchcomms pull 3646).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.explore.published_runs import published_runs, time_errors

RUNS = published_runs("vllm-custom-allreduce-a100.csv")
TOLERANCE = 0.20
COSTLIER = ("NCCL in vLLM's CUDA graphs cost more than NCCL's device time (Vidur's DGX A100 calls read as device time "
            "or the host's interval between calls), or its custom kernels less. The pull request names a reason: "
            "captured in a graph, NCCL inserts a few host nodes per call; what they cost is measured nowhere here")
SHORT_70B = ("both Llama-2-70B runs short (-26.4% with NCCL, -23.5% custom), by 4.3 s and 3.4 s: about 13 ms a "
             "decode step that the engine model does not price, alike in both, and NCCL's cost in vLLM beyond its "
             "device time (COSTLIER) in the NCCL run. vLLM v0.2 scheduled, prepared inputs "
             "and sampled in Python every step; no source gives that cost, so it is not modeled")


@pytest.fixture(scope="module")
def predicted_s(evaluator) -> dict[tuple[str, str], float]:
    """Each run's simulated makespan by (model, all-reduce)."""
    errors = time_errors(evaluator, RUNS)
    return {(run.model, run.backend): run.time_s * (1 + float(error)) for run, error in zip(RUNS, errors, strict=True)}


MEASURED = {(run.model, run.backend): run.time_s for run in RUNS}
MISSES = {("llama-2-70b", "nccl"): SHORT_70B, ("llama-2-70b", "custom"): SHORT_70B,
          ("llama-33b", "nccl"): "LLaMA 33B with NCCL comes out 22.3% short (the custom run 17.9%): " + COSTLIER}


@pytest.mark.slow  # Llama-2-70B and LLaMA 33B traced at batch 64, a few seconds
@pytest.mark.parametrize("model", [
    pytest.param("llama-2-70b", marks=pytest.mark.xfail(strict=True, reason=(
        "ours saves 0.90 s where vLLM measured 1.80 s (-50%): on four A100s the 1 MB all-reduce costs 38 us with NCCL "
        "at its device time and 16 us as custom kernels, where the published saving is about 44 us a call: "
        + COSTLIER))),
    pytest.param("llama-33b", marks=pytest.mark.xfail(strict=True, reason=(
        "ours saves 0.53 s where vLLM measured 1.50 s (-65%): on two A100s the 852 KB all-reduce costs 29 us with "
        "NCCL at its device time and 11 us as custom kernels, where the published saving is about 49 us a call: "
        + COSTLIER))),
])
def test_custom_all_reduce_saves_what_vllm_measured(predicted_s, model):
    """The time the custom all-reduce saves over NCCL is within 20% of the published saving, and the custom run is the
    faster."""
    saved = predicted_s[(model, "nccl")] - predicted_s[(model, "custom")]
    published = MEASURED[(model, "nccl")] - MEASURED[(model, "custom")]
    assert saved > 0 and abs(saved / published - 1) <= TOLERANCE, (saved, published)


@pytest.mark.slow
@pytest.mark.parametrize("key", [pytest.param(key, marks=[pytest.mark.xfail(strict=True, reason=MISSES[key])]
                                              if key in MISSES else [], id="-".join(key))
                                 for key in MEASURED])
def test_each_run_matches_vllm(predicted_s, key):
    assert abs(predicted_s[key] / MEASURED[key] - 1) <= TOLERANCE, (predicted_s[key], MEASURED[key])


README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.slow
def test_readme_accuracy_row_states_the_runs_as_scored(predicted_s):
    """The README's Accuracy row for these pairs gives each run's time error and each saving as the runs score."""
    row = next(line for line in README.read_text().splitlines() if line.startswith("|") and "vLLM's pairs" in line)
    errors = re.search(r"33B (-?[\d.]+)% / (-?[\d.]+)%, 70B (-?[\d.]+)% / (-?[\d.]+)%", row).groups()
    savings = re.search(r"saves ([\d.]+) s of [\d.]+ s \(33B\) and ([\d.]+) s of [\d.]+ s \(70B\)", row).groups()
    keys = [("llama-33b", "nccl"), ("llama-33b", "custom"), ("llama-2-70b", "nccl"), ("llama-2-70b", "custom")]
    for key, stated in zip(keys, errors, strict=True):
        assert float(stated) == pytest.approx(100 * (predicted_s[key] / MEASURED[key] - 1), abs=0.05), (key, stated)
    for model, stated in zip(["llama-33b", "llama-2-70b"], savings, strict=True):
        saved = predicted_s[(model, "nccl")] - predicted_s[(model, "custom")]
        assert float(stated) == pytest.approx(saved, abs=0.005), (model, stated)
