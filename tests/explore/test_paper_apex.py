"""Serving throughput of Llama-2-7B on a T4 with and without hybrid CPU-GPU attention, against APEX's headline gain.

APEX (Fan, Zhang, Li and Nikolopoulos, arXiv:2506.03296; v2 and v4 abstracts): "Relative to GPU-only schedulers such
as vLLM, APEX improves throughput by 84%-96% on T4 and 11%-89% on A10, while preserving latency", on Llama-2-7B and
Llama-3.1-8B, for decode-heavy workloads (chat, Chain-of-Thought reasoning: short prefill, long decode). Only the
abstract could be read in this session: the testbed's host CPU, its DRAM and the per-setting workloads (section 5)
were not, so the setting below is not the paper's in those respects, and the check is of the abstract's range.

Here: llama-2-7b on the t4 preset (uncalibrated datasheet roofline: no Turing fit exists), vLLM-style continuous
batching (max_seqs 256, vLLM's default), 200 requests of 256 prompt and 512 output tokens all arriving at once
(offline throughput), GPU-only against `attention_placement: hybrid` with the ampere-altra preset as the host (the
nearest documented server CPU among the presets, 8-channel DDR4-3200 at 204.8 GB/s; NOT the paper's host) over
pcie3-x16 (the T4's PCIe Gen3 x16). Nothing is fitted on these runs. Tolerance: the gain within 15% of the abstract's
T4 range, both sides.

Measured at the time of writing: 125 tokens/s GPU-only (a mean batch of 6.4: the T4's 16 GB hold the 13.5 GB of
weights and a few sequences' KV), 560 with the host attending to the rest (a mean batch of 187): a gain of 4.5x
against 1.84-1.96x, a miss (below). The A40 (GA102, 48 GB; the A10's die with twice its memory, standing in for the
A10, for which no preset ships) gains 1.00x: its KV space does not bind at these lengths.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from sim.serving_spec import ServingSpec
from workloads.requests import Fixed

PAPER_T4_GAIN = (1.84, 1.96)  # abstract: +84% to +96% over vLLM on T4
TOLERANCE = 0.15
HYBRID = dict(attention_device="ampere-altra", attention_link="pcie3-x16", attention_placement="hybrid")
HOST_NOT_THE_PAPER_S = ("the host is the ampere-altra preset (204.8 GB/s of DDR4, 80 cores), not APEX's testbed CPU, "
                        "which could not be read here: a host that fast attends to ~180 sequences beside the T4 "
                        "(4.5x against 1.84-1.96x); APEX's scheduler also keeps sequences off the CPU where it would "
                        "lead, which the placement here, by memory alone, does not")


def tokens_per_s(evaluator, device: str, hybrid: bool) -> dict[str, float]:
    spec = ServingSpec(requests=200, rate_per_s=1e6, prompt=Fixed(tokens=256), output=Fixed(tokens=512),
                       **(HYBRID if hybrid else {}))
    point = DesignPoint(model="llama-2-7b", device=device, batch=1, prompt=0, output=0, serving=spec)
    return evaluator.evaluate(point).metrics


@pytest.mark.xfail(strict=True, reason=HOST_NOT_THE_PAPER_S)
def test_hybrid_gain_on_a_t4_is_apex_s(evaluator):
    gain = (tokens_per_s(evaluator, "t4", True)["tokens_per_s"]
            / tokens_per_s(evaluator, "t4", False)["tokens_per_s"])
    low, high = PAPER_T4_GAIN
    assert low * (1 - TOLERANCE) <= gain <= high * (1 + TOLERANCE)


def test_hybrid_pays_where_the_gpu_s_kv_space_binds(evaluator):
    """APEX's conclusion: the CPU's attention raises throughput where the GPU's memory holds the weights but little KV
    (T4), by batching more sequences; the gain shrinks where the GPU holds them (its A10 gains are lower than its T4
    ones; here the 48 GB A40 stands in)."""
    t4 = tokens_per_s(evaluator, "t4", False), tokens_per_s(evaluator, "t4", True)
    a40 = tokens_per_s(evaluator, "a40", False), tokens_per_s(evaluator, "a40", True)
    assert t4[1]["mean_batch_size"] > 2 * t4[0]["mean_batch_size"]
    t4_gain = t4[1]["tokens_per_s"] / t4[0]["tokens_per_s"]
    a40_gain = a40[1]["tokens_per_s"] / a40[0]["tokens_per_s"]
    assert t4_gain > PAPER_T4_GAIN[0] * (1 - TOLERANCE)
    assert a40_gain < t4_gain
