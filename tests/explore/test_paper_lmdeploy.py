"""Whole static batch runs on A100s against LMDeploy's published benchmark (github.com/InternLM/lmdeploy
docs/en/benchmark/a100_fp16.md@3e391df, "Static Inference Benchmark": lmdeploy v0.1.0a1, TurboMind, A100-80G, CUDA
11.8, fp16; Llama-2-7B and 13B on one GPU, Llama-2-70B tensor-parallel over four), shipped as the batch_run rows of
data/published/lmdeploy-a100-static.csv and scored as `explore validate` scores them: each run is the static point of
its batch, prompt, output and devices as a serving engine runs it, and its makespan is the point's e2e_s.

No term is fitted on these runs: the A100's kernel fits are Vidur's, its launch costs an H100 measurement
(hw_models/presets/a100-sxm-80gb.yaml). The single batch-1 decode step that test_decode_step_published.py takes
from the same table is a check there too, not a fit.

Ours, in time, on one device: median -6.5% (p90 17.6%) over Llama-2-7B's and Llama-2-13B's 29 runs (Llama-2-13B -4%
in the median, Llama-2-7B -11%). The shortest against the table: Llama-2-7B's 32 and 64 one-token prompts decoded
to 128 tokens (-30%, -23%), whose published first-token latencies spread to 0.73 s and 0.21 s (requests that
started late and lengthened the run), and its 16 prompts of 2,048 tokens decoded to 128 (-25%), whose first tokens
came 0.14-3.6 s in, as if the engine prefilled the prompts a few at a time, where a static batch prefills them
together. Tensor-parallel over four A100s (NVLink 3, NCCL's all-reduce at its device time as Vidur's DGX A100 calls
give it, 23.6 us a 16 KB message): median -12.1% (p90 19.0%) over Llama-2-70B's 20 runs, from -3.9% to -22.7%, a miss
(ENGINE_NCCL).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.explore.published_runs import published_runs, time_errors

RUNS = published_runs("lmdeploy-a100-static.csv")
TARGET_MEDIAN = 0.10  # a run's makespan, in the median
TARGET_EACH = 0.35  # any run
ENGINE_NCCL = (
    "Llama-2-70B over four A100s comes out 12.1% short in the median (target 10%), twice the one-GPU runs' 6.5%, with "
    "NCCL's all-reduce priced at its device time (23.6 us a 16 KB message on four A100s: Vidur's DGX A100 calls read "
    "as device time or the host's interval between calls, which nccl-tests confirm on NVLink 4). Priced at the "
    "interval instead (41.7 us) these runs came out -3.3%: TurboMind's NCCL calls cost more than NCCL's device time, "
    "as vLLM's (test_paper_vllm_allreduce.py) do; no source here says why, so nothing prices it")


@pytest.fixture(scope="module")
def errors(evaluator) -> np.ndarray:
    return time_errors(evaluator, RUNS)


@pytest.mark.slow  # 49 runs of three 7B-70B models at their own batch and lengths, about a minute
@pytest.mark.parametrize("devices, runs", [(1, 29), pytest.param(4, 20, marks=pytest.mark.xfail(
    strict=True, reason=ENGINE_NCCL))])
def test_static_runs_on_a100_match_lmdeploy(errors, devices, runs):
    chosen = np.array([max(run.tp, 1) == devices for run in RUNS])
    chosen_errors = errors[chosen]
    assert len(chosen_errors) == runs
    assert float(np.median(np.abs(chosen_errors))) <= TARGET_MEDIAN, np.median(np.abs(chosen_errors))
    assert float(np.abs(chosen_errors).max()) <= TARGET_EACH, chosen_errors


@pytest.mark.slow
def test_more_batch_never_lowers_throughput_measured_or_simulated(errors):
    """Both sides agree that 16 sequences with the same lengths produce more tokens per second than one (the table's
    invariant, and ours): per model and lengths, tokens/s rises from batch 1 to 16."""
    predicted = np.array([run.time_s for run in RUNS]) * (1.0 + errors)
    for times in (np.array([run.time_s for run in RUNS]), predicted):
        rate = {(r.model, r.seq_len, r.kv_len, r.batch): r.batch * (r.kv_len - r.seq_len) / t
                for r, t in zip(RUNS, times, strict=True)}
        for (model, seq_len, kv_len, batch), tokens_per_s in rate.items():
            if batch == 1 and (model, seq_len, kv_len, 16) in rate:
                assert rate[(model, seq_len, kv_len, 16)] > tokens_per_s
