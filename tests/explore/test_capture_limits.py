"""A serving point's engine sizes its CUDA graphs by the point's scheduler limits (explore/evaluate.py
Evaluator.capture_limits into sim/cuda_graphs.py): vLLM's largest captured size is min(2 x max_num_seqs, 512,
max_num_batched_tokens) (vllm/config/vllm.py at 000fc94, _set_cudagraph_sizes), the chunked scheduler's budget its
chunk_tokens."""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from sim.serving_spec import ServingSpec
from workloads.requests import Fixed

SPEC = ServingSpec(requests=4, rate_per_s=10.0, prompt=Fixed(tokens=40), output=Fixed(tokens=4))


def _point(model: str, **spec) -> DesignPoint:
    from dataclasses import replace

    serving = replace(SPEC, **spec)
    return DesignPoint(model=model, device="h100-sxm", batch=serving.max_seqs, prompt=0, output=0, serving=serving,
                       execution="engine")


@pytest.mark.parametrize(("spec", "largest"), [
    ({}, 512), ({"max_seqs": 64}, 128), ({"max_seqs": 64, "scheduler": "chunked"}, 128),
    ({"scheduler": "chunked", "chunk_tokens": 256}, 256), ({"max_batched_tokens": 300}, 300)])
def test_a_serving_points_cost_model_captures_up_to_its_schedulers_ceiling(tiny_evaluator, tiny_config, spec,
                                                                           largest):
    point = _point(tiny_config, **spec)
    assert tiny_evaluator.cost_model(point, point.numeric_format).capture.largest() == largest


def test_a_static_point_keeps_vllms_defaults(tiny_config):
    point = DesignPoint(model=tiny_config, device="h100-sxm", batch=4, prompt=40, output=4, execution="engine")
    assert Evaluator.capture_limits(point).largest() == 512
