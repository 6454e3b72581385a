"""Splitwise (Patel et al., ISCA 2024): running prefill and decode on separate machines, with each request's KV
cache moved between them, serves more within the same latency SLOs: "1.4x higher throughput at 20% lower
cost" than the same GPUs each running both phases, or "2.35x more throughput with the same cost and power".

Here: Llama-2-7B on H100s, the Splitwise conversation trace's request lengths at Poisson arrivals, vLLM-style
continuous batching on every replica, KV over InfiniBand NDR. Capacity is the highest arrival rate at which
p99 TTFT <= 1 s, p99 time per output token <= 50 ms and p99 time between tokens <= 100 ms (our choice of
SLOs: Splitwise states its own as slowdowns over an idle machine). Every replica runs as a serving engine
(`execution: engine`: fused kernels, decode replayed from CUDA graphs), as Splitwise's vLLM-based machines did.
Measured on the first 500 requests (H100 pricing attention with the fits it borrows from H200): four mixed
replicas about 51 req/s; one prefill and two decode H100s about 32 req/s (0.63x, the paper: 1.4x at 20% lower
cost); two and two about 31 req/s (0.61x, the paper: 2.35x). The paper's conclusion is reversed: a documented
miss (strict xfails below), not yet explained: the likely cause is that our mixed replicas lose too little to
prefill interference, so splitting mostly takes GPUs away from decode. Under PyTorch-eager replicas (a host floor
of about 28 ms per iteration) the direction comes out as the paper's (about 1.7x), but not for the paper's
reason, so that is not what these checks use.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from sim.capacity import highest_rate
from sim.serving_spec import ServingSpec

REQUESTS = 500


def _capacity(evaluator, **pools) -> float:
    def meets(rate: float) -> bool:
        spec = ServingSpec(scheduler="continuous", requests=REQUESTS, trace="splitwise-conv", rate_per_s=rate, **pools)
        point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0,
                            serving=spec, execution="engine")
        m = evaluator.evaluate(point).metrics
        return m["ttft_p99_s"] <= 1.0 and m["tpot_p99_s"] <= 0.05 and m["tbt_p99_s"] <= 0.1

    return highest_rate(meets, low=2.0, high=100.0, rel_tol=0.05)


# Four capacity searches over serving simulations, about 20 s: kept out of the unit run with the other long checks.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def capacities(evaluator) -> dict[str, float]:
    return {"mixed 4": _capacity(evaluator, replicas=4),
            "1 prefill + 2 decode": _capacity(evaluator, replicas=2, prefill_replicas=1),
            "2 prefill + 2 decode": _capacity(evaluator, replicas=2, prefill_replicas=2)}


@pytest.mark.xfail(strict=True, reason="reversed: ours about 0.63x (three disaggregated H100s serve less than four "
                                       "mixed ones) against the paper's 1.4x; see the module docstring")
def test_fewer_disaggregated_gpus_serve_more(capacities):
    """Three disaggregated H100s against four mixed ones: more throughput at 25% lower cost (paper: 1.4x at
    20% lower cost)."""
    gain = capacities["1 prefill + 2 decode"] / capacities["mixed 4"]
    assert gain >= 1.05, capacities


@pytest.mark.xfail(strict=True, reason="reversed: ours about 0.63x (three disaggregated H100s serve less than four "
                                       "mixed ones) against the paper's 1.4x; see the module docstring")
def test_fewer_gpus_gain_near_the_paper(capacities):
    gain = capacities["1 prefill + 2 decode"] / capacities["mixed 4"]
    assert 1.4 / 1.35 <= gain <= 1.4 * 1.35, capacities


@pytest.mark.xfail(strict=True, reason="reversed: ours about 0.61x at the same cost and power against the "
                                       "paper's 2.35x; see the module docstring")
def test_same_gpus_disaggregated_serve_more(capacities):
    """Four H100s either way (the same cost and power): disaggregated serves more (paper: 2.35x)."""
    gain = capacities["2 prefill + 2 decode"] / capacities["mixed 4"]
    assert gain > 1.1, capacities


@pytest.mark.xfail(strict=True, reason="ours about 0.61x at the same cost against the paper's 2.35x: see the module "
                                       "docstring")
def test_same_gpus_gain_near_the_paper(capacities):
    gain = capacities["2 prefill + 2 decode"] / capacities["mixed 4"]
    assert 2.35 / 1.35 <= gain <= 2.35 * 1.35, capacities
