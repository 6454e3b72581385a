"""A serving point not run has every column its run would fill, NaN: the autoscale columns wherever a pool of it may
scale, by max_replicas, prefill_max_replicas or mixed_max_replicas (explore/evaluate.py _serving_unrun)."""

from __future__ import annotations

import math

import pytest

from explore.evaluate import _serving_unrun
from hw_models.registry import load_device
from sim.serving import AUTOSCALE_METRICS
from sim.serving_spec import ServingSpec


@pytest.mark.parametrize("scaling", [
    {"max_replicas": 3},
    {"prefill_replicas": 1, "prefill_max_replicas": 3},
    {"mixed_device": "l4", "mixed_replicas": 1, "mixed_max_replicas": 3},
])
def test_a_point_not_run_has_the_autoscale_columns_wherever_a_pool_may_scale(scaling):
    spec = ServingSpec(autoscale_target=4, **scaling)
    metrics = _serving_unrun(spec, None, "not modeled", load_device("h100-sxm"), [])
    assert all(math.isnan(metrics[name]) for name in AUTOSCALE_METRICS), scaling


def test_a_point_whose_pools_are_fixed_has_no_autoscale_columns():
    metrics = _serving_unrun(ServingSpec(prefill_replicas=1), None, "not modeled", load_device("h100-sxm"), [])
    assert not set(AUTOSCALE_METRICS) & set(metrics)
