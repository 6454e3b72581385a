"""Block evaluation (explore/blocks.py, sim/block.py) against the per-point reference (sim/analytic.py)."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest

from explore.blocks import evaluate_points
from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from hw_models.device_block import check_knob_values
from tests.explore.tiny_sweep import TINY_CONFIG, write_tiny_model
from workloads.errors import InputError

# Sums are taken in another order than the reference's (counts of distinct rows): equal to rounding.
RELATIVE = 1e-9


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("models")
    windowed = folder / "windowed" / "config.json"
    windowed.parent.mkdir()
    windowed.write_text(json.dumps(TINY_CONFIG | {"model_type": "mistral", "sliding_window": 8}))
    return {"llama": write_tiny_model(folder), "windowed": str(windowed)}


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator()


def assert_same(reference: dict, block: dict, where: str) -> None:
    assert set(reference) == set(block), where
    for key, expected in reference.items():
        got = block[key]
        if isinstance(expected, float) and math.isnan(expected):
            assert isinstance(got, float) and math.isnan(got), f"{where}: {key} = {got}, expected NaN"
        elif isinstance(expected, float):
            assert got == pytest.approx(expected, rel=RELATIVE, abs=1e-300), f"{where}: {key}"
        else:
            assert got == expected, f"{where}: {key}"


def assert_blocks_agree(evaluator: Evaluator, points: list[DesignPoint]) -> None:
    """The sweep path (explore/blocks.py) prices each point as the reference path, Evaluator.evaluate, does."""
    for point, block in zip(points, evaluate_points(evaluator, points), strict=True):
        assert_same(evaluator.evaluate(point).metrics, block, f"{point}")


def whatif_points(model: str) -> list[DesignPoint]:
    """GPU what-ifs over bandwidth, peak, idle power and capacity (10 MB does not hold the largest batch), over
    formats, executions, lengths and presets (fitted, sibling, uncalibrated)."""
    points = []
    for device, calibrated in (("h100-sxm", True), ("h100-pcie", True), ("l40s", True), ("a100-sxm-80gb", False)):
        for (weight, act, kv), execution, (batch, prompt, output), sparsity in itertools.product(
                ((16, 16, 16), (8, 8, 8), (4, 16, 16)), ("eager", "graphs", "engine"),
                ((1, 16, 1), (4, 24, 2), (256, 200, 9)), ("dense", "2:4")):
            for bandwidth, peak, idle, capacity in ((900.0, 300.0, 60.0, 80.0), (3350.0, 989.5, 100.0, 0.01),
                                                    (8000.0, 2000.0, 40.0, 80.0)):
                overrides = (("memory.bandwidth_GBps", bandwidth), ("compute.peak_TFLOPS.bf16", peak),
                             ("power.idle_W", idle), ("memory.capacity_GB", capacity))
                points.append(DesignPoint(
                    model=model, device=device, batch=batch, prompt=prompt, output=output, weight_bits=weight,
                    act_bits=act, kv_bits=kv, sparsity=sparsity, execution=execution, use_calibration=calibrated,
                    overrides=overrides))
    return points


def test_blocks_equal_the_per_point_reference(models, evaluator):
    points = random.Random(0).sample(whatif_points(models["llama"]), 240)  # blocks form whatever the order
    blocks = evaluate_points(evaluator, points)
    assert any(not row["fits_in_memory"] for row in blocks) and any(row["fits_in_memory"] for row in blocks)
    for point, block in zip(points, blocks, strict=True):
        assert_same(evaluator.evaluate(point).metrics, block, f"{point}")


def test_windows_and_other_paths_equal_the_reference(models, evaluator):
    """A sliding window caps the attention of a block's steps; points the block path does not take (a system of
    devices, a family without block fields, a device that interleaves decode sub-batches) get the reference."""
    bandwidths = ((("memory.bandwidth_GBps", 1500.0),), (("memory.bandwidth_GBps", 3000.0),))
    points = [DesignPoint(model=models[model], device=device, batch=batch, prompt=24, output=12, tp=tp,
                          overrides=overrides)
              for model, device, batch, tp in (("windowed", "h100-sxm", 4, 1), ("llama", "h100-sxm", 2, 2))
              for overrides in bandwidths]
    points += [DesignPoint(model=models["llama"], device=device, batch=batch, prompt=24, output=12)
               for device, batch in (("m2-ultra-tmac", 1), ("versal-vhk158", 1), ("neupims", 32))]
    for point, block in zip(points, evaluate_points(evaluator, points), strict=True):
        assert_same(evaluator.evaluate(point).metrics, block, f"{point}")


def test_a_point_gets_the_same_numbers_in_any_block(models, evaluator):
    """Each point's sums run along its own row: its numbers do not depend on which points share its block (a
    resumed sweep evaluates a block's missing points alone)."""
    points = [p for p in whatif_points(models["llama"]) if p.device == "h100-sxm"][:60]
    together = evaluate_points(evaluator, points)
    for point, row in zip(points, together, strict=True):
        alone = evaluate_points(evaluator, [point])[0]
        assert json.dumps(alone, sort_keys=True) == json.dumps(row, sort_keys=True)


def test_a_knob_that_changes_shapes_makes_one_block_per_value(models, evaluator):
    """The SM count sets GEMM waves: it is not a block field, and each value still matches the reference."""
    points = [DesignPoint(model=models["llama"], device="h100-sxm", batch=4, prompt=24, output=4,
                          overrides=(("compute.sm_count", sms), ("memory.bandwidth_GBps", bandwidth)))
              for sms in (66, 132) for bandwidth in (1000.0, 4000.0)]
    for point, block in zip(points, evaluate_points(evaluator, points), strict=True):
        assert_same(evaluator.evaluate(point).metrics, block, f"{point}")


def test_block_values_are_checked_as_single_what_ifs():
    """A value a single what-if refuses is refused in a block too: by a field's own bounds, or by a check that
    compares fields (idle power at or above the TDP)."""
    with pytest.raises(InputError, match="bandwidth_GBps"):
        check_knob_values("h100-sxm", {"memory.bandwidth_GBps": [1000.0, -5.0]})
    with pytest.raises(InputError, match="idle_W"):
        check_knob_values("h100-sxm", {"power.idle_W": [50.0, 600.0, 800.0]})


def test_fpga_what_ifs_equal_the_reference(models, evaluator):
    """The FPGA family prices its block fields per kernel too: clock, achieved HBM efficiency and the on-chip
    activation buffer (which decides what a decode pass keeps on chip) vary across one block."""
    points = [DesignPoint(model=models["llama"], device=device, batch=1, prompt=24, output=12, weight_bits=8,
                          act_bits=8, sparsity=sparsity,
                          overrides=(("compute.clock_MHz", clock), ("memory.efficiency", efficiency),
                                     ("onchip.activation_buffer_MB", buffer)))
              for device in ("alveo-u280", "versal-vhk158") for sparsity in ("dense", "2:4")
              for clock, efficiency, buffer in ((200.0, 0.5, 0.001), (300.0, 0.8, 8.0))]
    for point, block in zip(points, evaluate_points(evaluator, points), strict=True):
        assert_same(evaluator.evaluate(point).metrics, block, f"{point}")


def test_a_sweeps_rows_equal_the_reference_runs(models, evaluator, tmp_path):
    """End to end through the runner and the store: a what-if grid (a block field and a field that splits its blocks,
    a generic knob, a constraint) gives the reference path's rows, inputs equal and metrics to rounding."""
    from explore.runner import run_sweep
    from explore.sweep import load_sweep
    from tests.explore.tiny_sweep import write_sweep

    sweep = load_sweep(write_sweep(tmp_path, f"""
name: rows
model: {models['llama']}
device: [h100-sxm, l40s]
workload: {{batch: [1, 64], prompt: 24, output: 3, kv_budget: [0, 8]}}
format: {{weight_bits: [16, 4]}}
overrides:
  device.compute.sm_count: [66, 132]
  device.memory.bandwidth_GBps: [900, 4000]
  device.memory.capacity_GB: [0.0001, 80]
constraints: ["tpot_s >= 0"]
"""))
    blocks = run_sweep(sweep, tmp_path / "blocks", evaluator=evaluator)
    reference = run_sweep(sweep, tmp_path / "reference", evaluator=Evaluator(blocks=False))
    assert len(blocks) == sweep.size() == 2 ** 7
    assert any(r["meets_constraints"] for r in blocks) and not all(r["meets_constraints"] for r in blocks)
    assert any(not r["fits_in_memory"] for r in blocks)
    for row, expected in zip(blocks, reference, strict=True):
        assert_same(expected, row, row["point_id"])
