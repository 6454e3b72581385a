"""First-token latency against TensorRT-LLM's published low-latency tables (github.com/NVIDIA/TensorRT-LLM
docs/source/performance.md@138f96d, "Low Latency", TensorRT-LLM v0.5: gptSessionBenchmark at batch 1 with one output
token), shipped as the batch_run rows of data/published/tensorrt-llm-first-token.csv (one output token: the run is
the prefill) and scored as `explore validate` scores them: Llama-2-7B in FP8 on an H100 and an L40S and in FP16 on an
A100, and Llama-2-70B over four H100s (FP8) and four A100s (FP16), prompts of 128 and 2,048 tokens.

No term is fitted on these runs. They check what the throughput tables barely reach: a prefill alone, and on four
GPUs its all-reduces of 2-32 MB (128-2,048 tokens of 8,192 16-bit values), in NCCL's bandwidth regime. The published
latencies are whole milliseconds: the 7 ms and 14 ms rows carry up to 7% and 4% of rounding.

Ours, in time (at e59d0fe): A100 -11.6%, +0.0% (7B) and -5.5%, +4.5% (70B over four); H100 -20.8%, -3.5% (7B) and
-27.1%, +2.1% (70B over four); L40S +7.7% (128 tokens) and +35.0% (2,048 tokens). The three beyond 20% are strict xfails
below. The 128-token rows moved at b77240e (H100 7B -17.5% -> -20.8%, 70B -24.8% -> -27.1%, A100 7B -10.1% -> -11.6%):
`execution: engine` launches a prefill of at most 512 tokens as vLLM v1 does, from piecewise CUDA graphs (attention
launched from the host, the kernels between replayed), where TensorRT-LLM v0.5's gptSessionBenchmark launched every
kernel from the host (its CUDA graphs off by default); the engine knob names no other engine's launch.
"""

from __future__ import annotations

import pytest

from tests.explore.published_runs import published_runs, time_errors

RUNS = published_runs("tensorrt-llm-first-token.csv")
TOLERANCE = 0.20
MISSES = {
    ("h100-sxm", "llama-2-7b", 128): (
        "ours 5.54 ms against 7 ms (-20.8%; the rounding of a whole millisecond leaves -15% to -26%): a 128-token "
        "prefill under `execution: engine` launches from vLLM's piecewise CUDA graphs since b77240e (-17.5% before), "
        "TensorRT-LLM v0.5's benchmark from the host; the short prompts run shorter than published on the H100"),
    ("h100-sxm", "llama-2-70b", 128): (
        "ours 19.0 ms against 26 ms (-27.1%; -24.8% before b77240e's piecewise launch of a 128-token prefill; the "
        "rounding of a whole millisecond leaves -26% to -28%): not diagnosed. At 2,048 tokens the same system is +2%: "
        "the short prompts run shorter than published on the H100, where the A100's do not"),
    ("l40s", "llama-2-7b", 2048): (
        "ours 98.6 ms against 73 ms (+35%): the prefill's fp8 GEMMs take 74 ms, 49% of the L40S's 733 TFLOP/s fp8 "
        "peak, as aiconfigurator's own L40S rows at m = 2,048 run (45-52%: 0.206 ms for 2,048 x 4,096 x 4,096, "
        "0.536 ms for 2,048 x 12,288 x 4,096, vLLM's CUTLASS kernels), while the published run's whole prefill implies "
        "at least 50% and its GEMMs more; at 128 tokens the same GPU is +9.3%. Two sources disagree on the L40S's "
        "compute-bound fp8 GEMMs (boards and clocks not published)"),
}


@pytest.fixture(scope="module")
def errors(evaluator) -> dict[tuple[str, str, int], float]:
    """Each run's time error by (device, model, prompt tokens)."""
    return {(run.device, run.model, run.seq_len): float(error)
            for run, error in zip(RUNS, time_errors(evaluator, RUNS), strict=True)}


def _cases():
    for run in RUNS:
        key = (run.device, run.model, run.seq_len)
        marks = [pytest.mark.xfail(strict=True, reason=MISSES[key])] if key in MISSES else []
        yield pytest.param(key, marks=marks, id=f"{run.device}-{run.model}-tp{max(run.tp, 1)}-{run.seq_len}")


@pytest.mark.slow  # Llama-2-7B and 70B prefilled at 128 and 2,048 tokens on three GPUs, about 20 s
@pytest.mark.parametrize("key", list(_cases()))
def test_first_token_latency_matches_tensorrt_llm(errors, key):
    assert abs(errors[key]) <= TOLERANCE, errors[key]


def test_the_rows_are_the_published_tables():
    """Ten rows: two prompt lengths each of Llama-2-7B on three GPUs and of Llama-2-70B over four H100s and A100s,
    batch 1, one output token, the 70B runs tensor-parallel over four."""
    assert len(RUNS) == 10 and all(r.batch == 1 and r.kv_len == r.seq_len + 1 for r in RUNS)
    assert sorted({r.seq_len for r in RUNS}) == [128, 2048]
    assert all((r.tp == 4) == (r.model == "llama-2-70b") for r in RUNS)
