"""GPU pricing of fused MoE layers whose hot experts keep more bits (kernels/moe.py hot_expert_parts, hw_models/gpu.py):
each part on its width's plan, the layer's fixed time paid once."""

from __future__ import annotations

from explore.design_point import DesignPoint


def _tpot(evaluator, hot_experts: float) -> float:
    knobs = (("hot_expert_bits", 8), ("hot_experts", hot_experts)) if hot_experts else ()
    point = DesignPoint(model="mixtral-8x7b", device="h100-sxm", batch=1, prompt=128, output=16, weight_bits=4,
                        execution="engine", knobs=knobs)
    return evaluator.evaluate(point).metrics["tpot_s"]


def test_more_hot_experts_never_decode_faster(evaluator):
    """A batch-1 Mixtral decode is memory-bound: reading more experts at 8 bits instead of 4 is never faster, so the
    time per token grows with the hot share from W4's to W8-experts' (a split layer's routing, activation and top-k
    sum are not paid twice)."""
    tpot = [_tpot(evaluator, share) for share in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert tpot == sorted(tpot) and tpot[0] < tpot[-1], tpot
