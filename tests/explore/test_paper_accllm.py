"""W2A8KV4 with pruning and sink + window attention on the alveo-u280 preset against AccLLM (Y. Liang et al.,
"AccLLM: Accelerating Long-Context LLM Inference Via Algorithm-Hardware Co-Design", IEEE TVLSI, arXiv:2505.03745,
abstract): on a Xilinx Alveo U280, 4.07x the energy efficiency and 2.98x the throughput of FlightLLM.

AccLLM compares with FlightLLM's published U280 figures (55 token/s decoding LLaMA2-7B at a measured 45 W, quoted in
its Table VII; tests/explore/test_paper_flightllm.py checks the preset against them), so the ratios here are ours
for AccLLM over those figures. AccLLM's own setting past the abstract is not readable here: its pruning is expressed
as 2:4 (the N:M pattern the preset's sparse DSP chains skip), its Lambda-shaped attention as kv_budget 320
(attention sinks and a recent window, kernels/kv_policy.py), on Llama-2-7B at batch 1, 128 prompt and 512 output
tokens (FlightLLM's first Fig. 12 case); throughput is decode throughput (1 / tpot_s), as FlightLLM reports it.
Tolerance: 25% on either side of each ratio, the direction beside it.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint

TOLERANCE = 0.25
FLIGHTLLM_TOKENS_PER_S = 55.0
FLIGHTLLM_TOKENS_PER_J = 55.0 / 45.0


@pytest.fixture(scope="module")
def accllm(evaluator) -> dict:
    point = DesignPoint(model="llama-2-7b", device="alveo-u280", batch=1, prompt=128, output=512, weight_bits=2,
                        act_bits=8, kv_bits=4, sparsity="2:4", knobs=(("kv_budget", 320),))
    return evaluator.evaluate(point).metrics


def _near(ours: float, paper: float) -> bool:
    return paper * (1 - TOLERANCE) <= ours <= paper * (1 + TOLERANCE)


# Ours 2.97x (163 token/s).
def test_throughput_is_2_98_times_flightllm(accllm):
    ratio = (1.0 / accllm["tpot_s"]) / FLIGHTLLM_TOKENS_PER_S
    assert _near(ratio, 2.98) and ratio > 1.0, ratio


@pytest.mark.xfail(strict=True, reason=(
    "ours 2.60x (3.18 token/J at 48.7 W), not 4.07x: 4.07x FlightLLM's 1.22 token/J at 2.98x its 55 token/s is "
    "AccLLM drawing about 33 W, below the preset's static power alone (39.2 W, a proxy: power.idle_W of "
    "alveo-u280); its traffic and math add the rest. AccLLM's measured board power is not readable here"))
def test_energy_efficiency_is_4_07_times_flightllm(accllm):
    ratio = (1.0 / accllm["energy_per_token_J"]) / FLIGHTLLM_TOKENS_PER_J
    assert _near(ratio, 4.07) and ratio > 1.0, ratio
