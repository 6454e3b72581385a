"""Design points as columns (explore/point_blocks.py): the same points, in the same order, under the same keys as
DesignPoints made one by one."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from tiny_sweep import write_sweep, write_tiny_model

from explore.design_point import DesignPoint
from explore.point_blocks import PointBlock, PointSet, blocks_of
from explore.sweep import load_sweep

# One sweep per way points() builds its blocks: what-ifs with a derived device field that reads no what-if
# (constant within a block), generic knobs and sparsity; a derived device field that reads a what-if (points made
# one by one); no what-if at all; a serving sweep.
SWEEPS = {
    "what-ifs": """
name: a
model: {model}
device: [h100-sxm, l4]
workload: {{batch: [1, 4], prompt: 16, output: [2, 4], kv_budget: [0, 8]}}
format: {{weight_bits: [16, 4], sparsity: [dense, '2:4']}}
execution: [eager, graphs]
overrides:
  device.memory.bandwidth_GBps: [1000, 2000.5, 3000]
  device.compute.peak_TFLOPS.bf16: {{range: [400, 900], steps: 3}}
derived: {{device.memory.capacity_GB: "20 * batch"}}
""",
    "derived from a what-if": """
name: b
model: {model}
device: h100-sxm
workload: {{batch: [1, 2], prompt: 16, output: 2}}
overrides: {{device.memory.bandwidth_GBps: [1000, 2000]}}
derived: {{device.power.idle_W: "device.memory.bandwidth_GBps / 40"}}
""",
    "no what-if": """
name: c
model: {model}
device: [h100-sxm, a100-sxm-80gb]
workload: {{batch: [1, 2, 3], prompt: 16, output: 2}}
""",
    "serving": """
name: d
model: {model}
device: h100-sxm
serving:
  rate: [1.0, 2.0]
  requests: 8
  prompt: {{dist: uniform, low: 8, high: 16}}
  output: {{dist: uniform, low: 2, high: 4}}
overrides: {{device.memory.bandwidth_GBps: [1000, 2000]}}
""",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return write_tiny_model(tmp_path_factory.mktemp("model"))


def _fresh(point: DesignPoint) -> DesignPoint:
    """The same point made anew, its key computed by DesignPoint.point_id itself."""
    return dataclasses.replace(point)


@pytest.mark.parametrize("name", list(SWEEPS))
def test_points_equal_the_grid_made_point_by_point(tmp_path, model, name):
    sweep = load_sweep(write_sweep(tmp_path, SWEEPS[name].format(model=model)))
    points = sweep.points()
    one_by_one = sweep._each_point(sweep.dimensions())
    assert len(points) == len(one_by_one) == sweep.size()
    assert list(points) == one_by_one
    assert points.point_ids() == [p.point_id for p in one_by_one] == [_fresh(p).point_id for p in points]
    assert [p.row() for p in points] == [p.row() for p in one_by_one]
    for block in points.blocks:  # input columns as columns: each point's row
        rows = block.input_columns().rows()
        assert rows == [p.row() for p in block.points()]


def test_what_if_blocks_hold_each_combination_of_the_other_knobs(tmp_path, model):
    sweep = load_sweep(write_sweep(tmp_path, SWEEPS["what-ifs"].format(model=model)))
    blocks = sweep.points().blocks
    # 2 devices x 2 batches x 2 outputs x 2 KV budgets x 2 weight widths x 2 sparsities x 2 launch modes, each
    # block the 3 x 3 bandwidths and peaks; the derived capacity is constant within a block.
    assert len(blocks) == 2 ** 7 and {b.size for b in blocks} == {9}
    assert all(b.paths == ("memory.bandwidth_GBps", "compute.peak_TFLOPS.bf16", "memory.capacity_GB") for b in blocks)
    assert all(len(set(b.values[2])) == 1 for b in blocks)


def test_a_key_is_the_hash_of_the_points_canonical_text():
    """The key a results folder written before holds: sha256 of the fields as sorted JSON, defaults that came
    later left out (sparsity, serving, tp, link, pp, ep, link overrides, knobs), first 16 hex digits."""
    text = ('{"act_bits": 16, "batch": 4, "device": "h100-sxm", "execution": "eager", "kv_bits": 16, '
            '"model": "llama-2-7b", "output": 32, "overrides": [["memory.bandwidth_GBps", 1000.0], '
            '["compute.peak_TFLOPS.bf16", 400]], "prompt": 256, "use_calibration": true, "weight_bits": 16}')
    point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=4, prompt=256, output=32,
                        overrides=(("memory.bandwidth_GBps", 1000.0), ("compute.peak_TFLOPS.bf16", 400)))
    expected = hashlib.sha256(text.encode()).hexdigest()[:16]
    assert point.point_id == expected
    (block,) = blocks_of([point])
    assert block.point_ids == [expected]


def test_values_equal_as_numbers_keep_their_own_keys():
    """1000 and 1000.0 are one dict key but two JSON texts: each point keeps the key of its own value."""
    base = DesignPoint(model="m", device="h100-sxm", batch=1, prompt=1, output=1)
    points = [dataclasses.replace(base, overrides=(("memory.bandwidth_GBps", value),)) for value in (1000, 1000.0)]
    (block,) = blocks_of(points)
    assert block.size == 2 and block.point_ids == [_fresh(p).point_id for p in points]
    assert block.point_ids[0] != block.point_ids[1]


def test_blocks_of_keeps_the_order_and_joins_only_neighbours():
    base = DesignPoint(model="m", device="h100-sxm", batch=1, prompt=1, output=1)
    points = [dataclasses.replace(base, batch=batch, overrides=(("memory.bandwidth_GBps", bw),))
              for batch, bw in ((1, 1.0), (1, 2.0), (2, 1.0), (1, 3.0))]
    blocks = blocks_of(points)
    assert [b.size for b in blocks] == [2, 1, 1]
    assert [p for b in blocks for p in b.points()] == points


def test_a_point_set_reads_as_a_sequence_of_points():
    base = DesignPoint(model="m", device="h100-sxm", batch=1, prompt=1, output=1)
    points = [dataclasses.replace(base, batch=b, overrides=(("memory.bandwidth_GBps", float(v)),))
              for b in (1, 2) for v in range(3)]
    view = PointSet(blocks_of(points))
    assert len(view) == 6 and list(view) == points
    assert view[4] == points[4] and view[-1] == points[-1] and view[1:5] == points[1:5]
    assert view[4].point_id == _fresh(points[4]).point_id
    with pytest.raises(IndexError):
        view[6]
    part = view.blocks[1].take([2, 0])
    assert part.points() == [points[5], points[3]] and part.point_ids == [points[5].point_id, points[3].point_id]
    assert PointBlock.of(points[2]).points() == [points[2]]
