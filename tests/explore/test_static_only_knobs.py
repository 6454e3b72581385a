"""Knobs priced in static batches only (explore/evaluate.py STATIC_ONLY_KNOBS): a serving point that sets one is
refused in one line naming the knob, the value found and the default allowed."""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from sim.serving_spec import ServingSpec
from workloads.errors import InputError
from workloads.requests import Fixed


@pytest.mark.parametrize(("name", "value", "message"), [
    ("offload", "weights", "offload: found 'weights' with serving:, allowed: none (offloading in a serving run"),
    ("exit_depth", 0.5, "exit_depth: found 0.5 with serving:, allowed: 1 (layer skipping"),
    ("prompt_kept", 0.5, "prompt_kept: found 0.5 with serving:, allowed: 1 (prompt-token pruning"),
])
def test_a_serving_point_refuses_a_static_only_knob(tiny_config, tiny_evaluator, name, value, message):
    spec = ServingSpec(requests=4, rate_per_s=20.0, prompt=Fixed(tokens=40), output=Fixed(tokens=4))
    point = DesignPoint(model=tiny_config, device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0, serving=spec,
                        knobs=((name, value),))
    with pytest.raises(InputError) as err:
        tiny_evaluator.evaluate(point)
    assert message in str(err.value) and "\n" not in str(err.value)
