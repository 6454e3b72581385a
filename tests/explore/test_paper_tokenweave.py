"""The share of a tensor-parallel pass spent in all-reduce over NVLink, against TokenWeave.

TokenWeave (Gond, Kwatra and Ramjee, "TokenWeave: Efficient Compute-Communication Overlap for Distributed LLM
Inference", arXiv:2505.11329; abstract and Fig. 1, "Communication overhead of AllReduce for three models vs sequence
length on 8xH100 DGX"): tensor parallelism "can introduce overheads of up to 20% even over GPUs connected via
NVLink", in vLLM, for iterations of 1K tokens and more (the paper's target: "token lengths as small as 1024"); its
Fig. 1 values themselves are an image we could not read, so the abstract's "up to 20%" is the figure checked, read as
the share of an iteration's time spent in all-reduce. TokenWeave's remedy (splitting the tokens in two and
overlapping one half's all-reduce with the other's compute, a fused AllReduce-RMSNorm kernel) is not expressible:
the tool runs a pass's collectives between its kernels, never beside them.

Here: Llama-3-70B (Llama-3.3-70B's shape: hidden 8192, 80 layers) over 8 H100-SXMs on NVLink4 (8-way tensor
parallel, NCCL: vLLM's custom all-reduce stops at 8 MB, and 1K tokens of 8192 16-bit values are 16 MB), engine
execution, prefills of 1K, 2K, 4K and 8K tokens (one prompt of 1,024 or 2,048, then batches of 2,048-token prompts:
the preset's context is 8,192). The largest share over those must lie within 1.25x either way of 20%, which bounds
both sides; the direction (a share that matters, even over NVLink) is checked on its own. Measured at the time of
writing: 27.6%, 26.0%, 25.1%, 24.5% (each all-reduce of 2K tokens, 33.5 MB, 166 us: a bus bandwidth of about
350 GB/s, fitted on h200-hgx NCCL data).
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint

PAPER_SHARE = 0.20
TOLERANCE = 1.25
ITERATIONS = ((1, 1024), (1, 2048), (2, 2048), (4, 2048))  # (prompts, tokens each): 1K to 8K tokens an iteration

pytestmark = pytest.mark.slow  # Llama-3-70B traced at four prefill shapes over 8 devices


@pytest.fixture(scope="module")
def shares(evaluator) -> list[float]:
    """The all-reduce share of each prefill's time."""
    out = []
    for batch, prompt in ITERATIONS:
        metrics = evaluator.evaluate(DesignPoint(model="llama-3-70b", device="h100-sxm", batch=batch, prompt=prompt,
                                                 output=1, tp=8, execution="engine")).metrics
        out.append(metrics["time_communication_s"] / metrics["ttft_s"])
    return out


def test_all_reduce_is_a_real_share_even_over_nvlink(shares):
    """The paper's premise: every iteration of 1K tokens or more spends a share worth overlapping in all-reduce."""
    assert min(shares) >= 0.05, shares


@pytest.mark.xfail(strict=True, reason="ours up to 27.6% (1K tokens) against the paper's up to 20%; not established "
                                       "which side is off: our prefill GEMMs, fitted on measured H100 kernels, may "
                                       "run faster than vLLM's in the paper, or NCCL's all-reduce (fitted on "
                                       "h200-hgx data, about 350 GB/s of bus bandwidth at 33.5 MB) slower")
def test_largest_share_near_the_paper(shares):
    assert PAPER_SHARE / TOLERANCE <= max(shares) <= PAPER_SHARE * TOLERANCE, shares
