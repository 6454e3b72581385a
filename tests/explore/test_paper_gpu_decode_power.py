"""GPU board power in decode against a measurement: H200 decode draws 137-300 W of its 700 W.

Ma, Afzal, Eitzinger and Wellein, "The Illusion of Power Capping in LLM Decode: A Phase-Aware Energy
Characterisation Across Attention Architectures", arXiv:2605.11999 (2026), abstract: across GQA, MLA,
Gated DeltaNet and Mamba2 models on an NVIDIA H200, autoregressive decode draws 137-300 W, because it is
memory-bound. Our GPU energy model (idle power + DRAM pJ/bit + FLOP energy derived from the TDP, see
hw_models/gpu.py) was not fitted on any power data; this checks it against that measured range for a GQA
model (Llama-3-8B) over batch sizes 1-64 (prompt 512, 256 outputs), served as an engine serves it (execution
"engine": the paper measures LLM serving, whose decode saturates HBM bandwidth; a PyTorch-eager decode at small
batch would wait on its host instead). The power is the decode's, as the paper measures it: the energy and time the
255 decode steps add to the run of one output token (the prefill's compute-bound GEMMs draw far more).
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint

MEASURED_W = (137.0, 300.0)


def _decode_power_W(evaluator, batch: int) -> float:
    """The energy the decode steps add over the time they add: a run of 256 outputs less a run of one."""
    runs = []
    for output in (1, 256):
        metrics = evaluator.evaluate(DesignPoint(model="llama-3-8b", device="h200", batch=batch, prompt=512,
                                                 output=output, execution="engine")).metrics
        runs.append((metrics["energy_per_token_J"] * batch * output, metrics["e2e_s"]))
    (energy_1, time_1), (energy_256, time_256) = runs
    return (energy_256 - energy_1) / (time_256 - time_1)


@pytest.mark.parametrize("batch", [1, 8, 32, 64])
def test_h200_decode_power_in_measured_range(evaluator, batch):
    power_W = _decode_power_W(evaluator, batch)
    assert MEASURED_W[0] <= power_W <= MEASURED_W[1], power_W


def test_power_rises_with_batch(evaluator):
    """More tokens per weight read means more math and KV traffic per second: power never falls with batch."""
    powers = [_decode_power_W(evaluator, b) for b in (1, 8, 32, 64)]
    assert powers == sorted(powers)
