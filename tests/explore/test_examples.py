"""The example sweeps validate as written, and their first and last design points evaluate."""

from __future__ import annotations

from pathlib import Path

import pytest

from explore.sweep import load_sweep
from hw_models.registry import DEVICE_KINDS, read_device_yaml

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_the_examples_issue_5_asks_for_ship():
    names = {p.stem for p in EXAMPLES}
    assert {"quickstart", "npu-pim-whatif", "quant-sparsity", "fpga-sweep", "device-families"} <= names


def test_device_families_spans_every_kind():
    sweep = load_sweep(str(next(p for p in EXAMPLES if p.stem == "device-families")))
    kinds = {read_device_yaml(device)[0]["kind"] for device in sweep.dimensions()["device"]}
    assert kinds == set(DEVICE_KINDS)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_as_written(path, evaluator):
    sweep = load_sweep(str(path))
    points = sweep.points()
    assert len(points) == sweep.size() >= 2
    if path.stem == "gpu-whatif-grid":
        return  # 10k points on two GPUs: covered by tests/explore/test_search.py
    for point in (points[0], points[-1]):
        metrics = evaluator.evaluate(point).metrics
        assert metrics["fits_in_memory"] is False or metrics["tokens_per_s"] > 0


def test_the_readme_sweep_example_validates(tmp_path):
    """The sweep file the README's "Sweep files" section shows, copied as a user would."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Sweep files", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "readme-sweep.yaml"
    path.write_text(block)
    sweep = load_sweep(str(path))
    assert sweep.size() > 1 and "device.memory.capacity_GB" in sweep.derived_values()
