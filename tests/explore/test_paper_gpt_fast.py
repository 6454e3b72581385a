"""Batch-1 generation on A100s against gpt-fast's published benchmarks (github.com/pytorch-labs/gpt-fast README.md
at commit 0f925b5, "Benchmarks": A100-80GB power-limited to 330 W, eight in a hybrid cube mesh, torch.compile with
CUDA graphs, batch 1, a 5-token prompt and 200 new tokens), shipped as the batch_run rows of
data/published/gpt-fast-a100.csv: bf16, int8 weight-only (per channel) and int4 weight-only (groups of 32,
tinygemm) on one GPU, and tensor-parallel bf16 on 2-8 GPUs, scored as `explore validate` scores them.

No term is fitted on these runs. The eager dispatch cost derived from gpt-fast (hw_models/device.py) is from its
eager baseline, not these compiled runs, and does not enter an engine's price.

Ours, in time, on one GPU: bf16 -3.0%; int8 -10.2% (Llama-2-7B) and -10.1% (Llama-2-70B); int4 -12.0% and -16.1%.
Tensor-parallel: the miss below.
"""

from __future__ import annotations

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
@pytest.mark.xfail(strict=True, reason=(
    "tensor-parallel runs priced 8% (Llama-2-70B on 2 GPUs) to 73% (Llama-2-7B on 8) too long: every decode step "
    "pays two all-reduces a layer at the 41.7 us small-message latency fitted on Vidur's DGX A100 NCCL calls "
    "(hw_models/calibration/links/a100-dgx.yaml; 2.7 ms a token for Llama-2-7B), while gpt-fast's own numbers leave "
    "at most about 7 us for each on 8 GPUs (3.0 ms a token, 2.6 ms of it the rest of the step as priced): it runs "
    "PyTorch's intra-node all-reduce (ENABLE_INTRA_NODE_COMM=1) inside CUDA graphs, not NCCL calls. LMDeploy's "
    "TurboMind Llama-2-70B over four A100s agrees with the NCCL figure (test_paper_lmdeploy.py, |error| 4.3%), and "
    "aiconfigurator's nccl-tests on H200 and B200 put small all-reduces at 4.7-8.0 us: the latency is the "
    "implementation's, and no knob yet says which one an engine runs"))
def test_tensor_parallel_runs_match_gpt_fast(errors):
    assert_all_within({key: error for key, error in errors.items() if key[2] > 1}, 8, TOLERANCE)


@pytest.mark.slow
def test_more_gpus_never_slow_a_run_measured_or_simulated(errors):
    """gpt-fast's tokens/s rise with the GPUs of a tensor-parallel run (Llama-2-7B 104.9 -> 328.4 on 1 -> 8), and so
    do ours: an invariant both sides keep, whatever the all-reduce costs."""
    for model in ("llama-2-7b", "llama-2-70b"):
        runs = sorted((max(r.tp, 1), r.time_s) for r in RUNS if r.model == model and r.dtype == "bf16")
        measured = np.array([t for _, t in runs])
        predicted = np.array([t * (1 + errors[(model, "bf16", tp)]) for tp, t in runs])
        assert np.all(np.diff(measured) < 0) and np.all(np.diff(predicted) < 0), (model, measured, predicted)
