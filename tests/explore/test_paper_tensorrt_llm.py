"""Static batch runs against TensorRT-LLM's published peak throughput (github.com/NVIDIA/TensorRT-LLM
docs/source/performance.md@138f96d, "Peak Throughput": gptSessionBenchmark, static batches of one input and output
length), shipped as the batch_run rows of data/published/tensorrt-llm-static.csv: Llama-2-7B in FP8 (weights,
activations and KV cache) on an H100 (v0.6.1) and an L40S (v0.5), Llama-2-70B in FP8 on two and four H100s, and
Llama-2-7B in FP16 on an A100, scored as `explore validate` scores them.

No term is fitted on these runs. The fp8 GEMMs are priced by H200's and L40S's fits of aiconfigurator's fp8 GEMMs
(the H100 borrows H200's, the same GH100 SMs), kernels another tool timed; these are whole runs of an engine.

Ours, in time, on one GPU: H100 FP8 -2.9% to +10.2% (median +0.1%), L40S FP8 +4.0% to +10.8% (median +6.3%), A100
FP16 +3.6%.
Tensor-parallel on H100s: the miss below.
"""

from __future__ import annotations

import pytest

from tests.explore.published_runs import assert_all_within, published_runs, time_errors

RUNS = published_runs("tensorrt-llm-static.csv")
TOLERANCE = 0.20


@pytest.fixture(scope="module")
def errors(evaluator) -> dict[tuple[str, str, int, int, int, int], float]:
    """Each run's time error by (device, model, batch, tp, input, output)."""
    return {(run.device, run.model, run.batch, max(run.tp, 1), run.seq_len, run.kv_len - run.seq_len): float(error)
            for run, error in zip(RUNS, time_errors(evaluator, RUNS), strict=True)}


@pytest.mark.slow  # nine runs of Llama-2-7B on three GPUs, about 20 s
def test_one_gpu_runs_match_tensorrt_llm(errors):
    assert_all_within({key: error for key, error in errors.items() if key[3] == 1}, 9, TOLERANCE)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "Llama-2-70B on H100s: within 8% on the two runs decoding 128 tokens (TP 2, batch 1,024 and 96) and 43% short on "
    "the two decoding 2,048 (TP 4 at batch 480, TP 2 at batch 64). Diagnosed, not modeled: these tables (v0.6.1) "
    "predate TensorRT-LLM's XQA kernel, its decode attention for GQA models (docs/source/blogs/XQA-kernel.md, v0.8: "
    "'2.4x more Llama-70B throughput', 1,227 against 2,941 output tokens/s per H200 at 128 in and 2,048 out). The "
    "kernel before it ran each query head apart, reading its KV head once per query head, 8 times for Llama-2-70B "
    "less what L2 caught. The two long runs' shortfalls (51 s, 72 s) are 4.2x and 4.4x the attention time we price "
    "(12.2 s, 16.4 s), the same multiple in both, and the short runs spend too little in decode attention to show "
    "it. No engine-version attention kernel is modeled; an L2 reuse fitted on these runs would be fitted on the "
    "check"))
def test_tensor_parallel_runs_match_tensorrt_llm(errors):
    assert_all_within({key: error for key, error in errors.items() if key[3] > 1}, 4, TOLERANCE)
