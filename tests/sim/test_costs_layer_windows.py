"""IterationCostModel prices a model whose attention windows differ by layer (gpt-oss) at each layer's own window:
the shape's window sums (StepShape.window_kv, window_pairs, window_cached) survive its buckets and representatives."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hw_models.registry import load_device
from kernels.shapes import step_shape
from sim.costs import IterationCostModel
from tests.kernels.test_shapes_layer_windows import WINDOW, config, template, tracer  # noqa: F401 (fixtures)

# 3 decodes of 101 keys, as tests/kernels/test_shapes_layer_windows.py prices them by hand; a chunk of 40 after 60.
SHAPES = {"decodes": step_shape(decode_kv=[101] * 3, sampled=3, layer_window=WINDOW),
          "chunk": step_shape([(40, 60)], sampled=1, layer_window=WINDOW)}


def _energy_J(template, shape, bucket_tokens: int) -> float:  # noqa: F811
    cost = IterationCostModel(load_device("h100-sxm"), template, execution="graphs",
                              kv_bucket_tokens=bucket_tokens).price(shape)
    return cost.compute_J + cost.memory_J


@pytest.mark.parametrize("bucket_tokens", [0, 16])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_windowed_layers_cost_between_no_keys_and_every_key(template, name, bucket_tokens):  # noqa: F811
    """The sliding layers attend to their last 24 keys: more work than attending to none (window sums of 0) and less
    than every layer full (window sums equal to the full layers'). A cost model that drops the window sums from its
    bucket prices them at none."""
    shape = SHAPES[name]
    assert shape.window_kv + shape.window_pairs > 0
    none = replace(shape, window_kv=0, window_pairs=0, window_cached=0)
    full = replace(shape, window_kv=shape.decode_kv, window_pairs=shape.prefill_pairs,
                   window_cached=shape.prefill_cached)
    windowed_J = _energy_J(template, shape, bucket_tokens)
    assert _energy_J(template, none, bucket_tokens) < windowed_J < _energy_J(template, full, bucket_tokens)
