"""A fused MoE layer past vLLM's chunk under uniform routing, priced on a GPU as its calls (hw_models/gpu.py
_moe_calls, kernels/moe.py chunk_columns): each call costs what the layer of that call's tokens costs under the same
routing, in a serving engine's step template and in a static pass alike."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from explore.evaluate import Evaluator
from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.fusion import ENGINE
from kernels.kernel import KernelKind
from kernels.moe import FUSED_MOE_CHUNK_TOKENS
from kernels.shapes import StepTemplate, step_shape
from kernels.table import KIND_CODE
from workloads.model_config import UNIFORM

CHUNK = FUSED_MOE_CHUNK_TOKENS
MOE = KIND_CODE[KernelKind.MOE]
PARTS = ("time_s", "compute_s", "memory_s", "overhead_s", "compute_J", "memory_J", "static_J")


@pytest.fixture(scope="module")
def mixtral_like(tiny_mixtral):
    """The tiny Mixtral with Mixtral's routing (top-2 of 8), long enough for a prompt past the chunk."""
    return replace(tiny_mixtral, num_experts=8, max_positions=2 * CHUNK)


def _moe_costs(device, table, count=None) -> dict[str, float]:
    """The costs of a table's fused MoE rows, each counted `count` times (once where not given)."""
    costs = device.cost_table(table, execution="engine")
    moe = table.kind == MOE
    times = np.ones(len(table)) if count is None else count
    return {part: float(getattr(costs, part)[moe] @ times[moe]) for part in PARTS}


def test_a_templates_uniform_layer_past_the_chunk_costs_its_calls(mixtral_like, trace_of):
    """A prefill step of 16,384 + 3 tokens, uniform: its fused MoE layers cost the step of 16,384 tokens' (all 8
    experts) and the step of 3 tokens' (8 (1 - (6/8)^3) = 4.6 -> 5 experts, not one a routed row's 6)."""
    def trace(phase: str, batch: int, prompt: int):
        return (trace_of(mixtral_like, "decode", batch, 1, prompt) if phase == "decode"
                else trace_of(mixtral_like, "prefill", batch, prompt))

    template = StepTemplate.from_model(replace(mixtral_like, moe_routing=UNIFORM), NumericFormat(), trace,
                                       fusion=ENGINE)
    device = load_device("h200")
    whole, chunk, left = (_moe_costs(device, *template.table(step_shape([(tokens, 0)], sampled=1)))
                          for tokens in (CHUNK + 3, CHUNK, 3))
    three, _ = template.table(step_shape([(3, 0)], sampled=1))
    assert set(three.batch[three.kind == MOE]) == {5.0}
    for part in PARTS:
        assert whole[part] == pytest.approx(chunk[part] + left[part], rel=1e-9), part


def test_a_static_uniform_layer_past_the_chunk_costs_its_calls(mixtral_like):
    """The same layer in a static engine pass (Evaluator.lowered): a prefill of one prompt of 16,384 + 3 tokens costs
    the prefills of 16,384 and of 3 tokens, each traced under uniform routing (5 experts at 3 tokens)."""
    evaluator, device = Evaluator(), load_device("h200")
    uniform = replace(mixtral_like, moe_routing=UNIFORM)
    whole, chunk, left = (_moe_costs(device, evaluator.lowered(uniform, "prefill", 1, tokens, fusion=ENGINE))
                          for tokens in (CHUNK + 3, CHUNK, 3))
    three = evaluator.lowered(uniform, "prefill", 1, 3, fusion=ENGINE)
    assert set(three.batch[three.kind == MOE]) == {5.0}
    for part in PARTS:
        assert whole[part] == pytest.approx(chunk[part] + left[part], rel=1e-9), part
