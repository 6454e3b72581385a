"""Batch-1 generation on A100s against gpt-fast's published benchmarks (github.com/pytorch-labs/gpt-fast README.md
at commit 0f925b5, "Benchmarks": A100-80GB power-limited to 330 W, eight in a hybrid cube mesh, torch.compile with
CUDA graphs, batch 1, a 5-token prompt and 200 new tokens), shipped as the batch_run rows of
data/published/gpt-fast-a100.csv: bf16, int8 weight-only (per channel) and int4 weight-only (groups of 32,
tinygemm) on one GPU, and tensor-parallel bf16 on 2-8 GPUs, scored as `explore validate` scores them.

No term is fitted on these runs. The eager dispatch cost derived from gpt-fast (hw_models/device.py) is from its
eager baseline, not these compiled runs, and does not enter an engine's price.

Ours, in time, on one GPU: bf16 -4.1%; int8 -11.8% (Llama-2-7B) and -10.6% (Llama-2-70B); int4 -14.0% and -16.8%.
Tensor-parallel, with the custom all-reduce gpt-fast's command enables: bf16 -2.8% to -4.1% on 2-8 GPUs;
Llama-2-70B in int8 and int4 on 8 GPUs -16.0% and -20.1% (a miss).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.explore.published_runs import assert_all_within, published_runs, time_errors

RUNS = published_runs("gpt-fast-a100.csv")
TOLERANCE = 0.20  # issue 13's bound on a W4A16 over W16 comparison with a published measurement, applied to each run


@pytest.fixture(scope="module")
def errors(evaluator) -> dict[tuple[str, str, int], float]:
    """Each run's time error by (model, dtype, GPUs)."""
    return {(run.model, run.dtype, max(run.tp, 1)): float(error)
            for run, error in zip(RUNS, time_errors(evaluator, RUNS), strict=True)}


@pytest.mark.slow  # 7B and 70B traced at batch 1, about 15 s
def test_one_gpu_runs_in_three_formats_match_gpt_fast(errors):
    assert_all_within({key: error for key, error in errors.items() if key[2] == 1}, 5, TOLERANCE)


@pytest.mark.slow
def test_tensor_parallel_runs_match_gpt_fast(errors):
    """gpt-fast's tensor-parallel command sets ENABLE_INTRA_NODE_COMM=1: PyTorch's IntraNodeComm all-reduce, run
    here as the custom all-reduce (`backend` custom: hw_models/link.py custom_all_reduce_time_s). Its box is a
    hybrid cube mesh, where IntraNodeComm runs 8 GPUs with one more barrier and read phase than the one-shot priced
    on NVLink 3's switch (about 1.8 us an all-reduce, 4% of the 8-GPU Llama-2-7B run): a known small
    underestimate, not a fitted term. Priced with NCCL's all-reduce at its device time (fitted on Vidur's DGX A100
    calls; 28.8 us a 16 KB message on eight) the same runs come out 1-45% too long
    (test_the_all_reduce_gpt_fast_ran_explains_its_run_better_than_nccl). Llama-2-70B in int4 on 8 is checked apart
    (a miss)."""
    assert_all_within({key: error for key, error in errors.items() if key[2] > 1 and key != INT4_ON_8}, 7, TOLERANCE)


INT4_ON_8 = ("llama-2-70b", "w4a16", 8)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="ours 20.1% short (17.8% before 1c26a1b priced the engine's fused add + RMSNorm "
                                       "at the residual add's stream, as TokenWeave's deletions measure it on H100): "
                                       "every run here came out 1-2 points shorter, and this one, short like the "
                                       "one-GPU int4 runs (tinygemm's batch-1 kernel at its fitted rate), crossed 20%")
def test_llama_2_70b_in_int4_on_eight_gpus_matches_gpt_fast(errors):
    assert abs(errors[INT4_ON_8]) <= TOLERANCE, errors[INT4_ON_8]


@pytest.mark.slow
def test_more_gpus_never_slow_a_run_measured_or_simulated(errors):
    """gpt-fast's tokens/s rise with the GPUs of a tensor-parallel run (Llama-2-7B 104.9 -> 328.4 on 1 -> 8), and so
    do ours: an invariant both sides keep, whatever the all-reduce costs."""
    for model in ("llama-2-7b", "llama-2-70b"):
        runs = sorted((max(r.tp, 1), r.time_s) for r in RUNS if r.model == model and r.dtype == "bf16")
        measured = np.array([t for _, t in runs])
        predicted = np.array([t * (1 + errors[(model, "bf16", tp)]) for tp, t in runs])
        assert np.all(np.diff(measured) < 0) and np.all(np.diff(predicted) < 0), (model, measured, predicted)


@pytest.mark.slow
def test_the_all_reduce_gpt_fast_ran_explains_its_run_better_than_nccl(evaluator, errors):
    """The 8-GPU Llama-2-7B run priced with NCCL's all-reduce (its device time fitted on Vidur's DGX A100 calls,
    28.8 us a 16 KB message on eight) instead of the custom one its command enables: longer, and farther from the
    published time, which the custom all-reduce meets within 20% (today NCCL's comes out 45% too long)."""
    run = next(r for r in RUNS if r.model == "llama-2-7b" and r.tp == 8)
    nccl, custom = float(time_errors(evaluator, [replace(run, backend="")])[0]), errors[("llama-2-7b", "bf16", 8)]
    assert nccl > custom and abs(nccl) > abs(custom) and abs(custom) <= TOLERANCE, (nccl, custom)
