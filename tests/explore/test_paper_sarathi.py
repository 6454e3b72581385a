"""Sarathi-Serve (Agrawal et al., OSDI 2024): chunked prefill with stall-free batching serves more requests
within a tail time-between-tokens SLO than vLLM's prefill-first continuous batching: "up to 2.6x higher
serving capacity" for Mistral-7B on one A100 (abstract).

Capacity as the paper defines it: the highest arrival rate at which the p99 time between tokens stays within
the SLO and the median scheduling delay within 2 s. Workload: the arXiv-summarization request lengths the
paper uses (shipped in workloads/traces), Poisson arrivals. SLO: p99 TBT <= 100 ms (our reading of the
paper's strict SLO for Mistral-7B; the direction does not depend on it). Sarathi-Serve with a 512-token
budget against vLLM with 128 sequences, as in the paper's comparison.

The direction holds. The size does not: our vLLM capacity is limited by p99 TBT at about 0.6 req/s, because
every arXiv prompt (about 2,600 tokens) is prefilled whole in about 150 ms on the calibrated A100, stalling
every running decode past 100 ms; once more than 1% of token gaps hold such a stall, p99 TBT fails. Chunked
prefill keeps every gap near 60 ms and is limited by queueing instead, at about 3 req/s: 5x, against the
paper's "up to 2.6x". Recorded as a miss.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from sim.capacity import highest_rate
from sim.serving_spec import ServingSpec

MODEL, DEVICE = "mistral-7b", "a100-sxm-80gb"
TBT_SLO_S = 0.1
MAX_SCHEDULING_DELAY_S = 2.0
REQUESTS = 150
PAPER_GAIN = 2.6


def _capacity(evaluator, **knobs) -> float:
    def meets(rate: float) -> bool:
        spec = ServingSpec(requests=REQUESTS, trace="arxiv-summarization", arrival="poisson", rate_per_s=rate,
                           **knobs)
        point = DesignPoint(model=MODEL, device=DEVICE, batch=spec.max_seqs, prompt=0, output=0, serving=spec)
        metrics = evaluator.evaluate(point).metrics
        return metrics["tbt_p99_s"] <= TBT_SLO_S and metrics["queue_p50_s"] <= MAX_SCHEDULING_DELAY_S

    return highest_rate(meets, low=0.1, high=20.0, rel_tol=0.1)


# Capacity searches over serving simulations, about 9 s: run with -m slow beside the other long checks.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def capacities(evaluator) -> dict[str, float]:
    return {"vllm": _capacity(evaluator, scheduler="continuous", max_seqs=128),
            "sarathi": _capacity(evaluator, scheduler="chunked", chunk_tokens=512)}


def test_chunked_prefill_serves_more_within_the_tbt_slo(capacities):
    assert capacities["vllm"] > 0, "vLLM-style scheduling meets the SLO at some rate"
    assert capacities["sarathi"] > 1.2 * capacities["vllm"], capacities


@pytest.mark.xfail(strict=True, reason="ours about 5x vs the paper's up-to 2.6x: whole-prompt prefills of "
                                       "arXiv prompts break a 100 ms p99 TBT at a lower rate than the paper saw")
def test_capacity_gain_near_the_paper(capacities):
    gain = capacities["sarathi"] / capacities["vllm"]
    assert PAPER_GAIN / 2 <= gain <= PAPER_GAIN * 1.35, f"gain {gain:.2f}x, paper up to {PAPER_GAIN}x"
