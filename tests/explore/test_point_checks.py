"""explore/point_checks.py: every point a sweep makes is judged before it runs, without enumerating a search's
space."""

from __future__ import annotations

import pytest
from tiny_sweep import write_sweep, write_tiny_model, write_tiny_serving_sweep

from explore.evaluate import Evaluator
from explore.point_checks import check_sweep_points
from explore.sweep import Sweep, load_sweep
from workloads.errors import InputError


def test_a_search_over_a_vast_space_is_judged_without_enumerating_it(tmp_path, monkeypatch):
    """10^12 points, all device what-ifs (which no check reads): judged as the one point they share, where enumerating
    them would never end."""
    model = write_tiny_model(tmp_path)
    overrides = ", ".join(f"device.{path}: {{range: [{low}, {high}], steps: 1000}}" for path, low, high in (
        ("memory.bandwidth_GBps", 1000, 5000), ("memory.capacity_GB", 40, 200),
        ("compute.peak_TFLOPS.bf16", 100, 2000), ("compute.peak_TFLOPS.fp16", 100, 2000)))
    path = write_sweep(tmp_path, f"name: vast\nmodel: {model}\ndevice: h100-sxm\n"
                                 "workload: {batch: 1, prompt: 16, output: 4}\n"
                                 f"overrides: {{{overrides}}}\nobjectives: {{minimize: [tpot_s]}}\n"
                                 "search: {strategy: random, budget: 10, seed: 0}\n")
    sweep = load_sweep(path)
    assert sweep.size() == 10**12
    made = []
    point = Sweep.point
    monkeypatch.setattr(Sweep, "point", lambda self, values: made.append(values) or point(self, values))
    check_sweep_points(sweep, Evaluator())
    assert len(made) == 1


def test_a_refused_point_on_its_devices_default_link_says_default(tmp_path):
    """A device whose preset names no default link (NeuPIMs) refuses `link: default` on two stages; the point is
    named with the value the sweep wrote, not an empty one."""
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: pp\nmodel: {model}\ndevice: neupims\n"
                                 "workload: {batch: 1, prompt: 16, output: 4}\n"
                                 "parallel: {pp: 2, link: [pcie4-x16, default]}\n")
    with pytest.raises(InputError) as err:
        check_sweep_points(load_sweep(path), Evaluator())
    assert str(err.value).endswith("(at link=default)"), err.value


def test_a_missing_serving_key_is_refused_at_its_section_s_line(tmp_path):
    """max_replicas with the default hpa autoscaler and no autoscale_target: the key the message names is not in the
    file, so the message names the line of the section it belongs in (line 5: name, model, device, execution,
    serving), as the sweep's other serving refusals do (LocatedYAML.line_of)."""
    path = write_tiny_serving_sweep(tmp_path, "  rate: 10\n  max_replicas: 4\n")
    with pytest.raises(InputError) as err:
        check_sweep_points(load_sweep(path), Evaluator())
    message = str(err.value)
    assert message.startswith(f"{path}:5: serving.autoscale_target: found none"), message
    assert "allowed: " in message and "\n" not in message
