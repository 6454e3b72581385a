"""Every preset of every device kind: loads, cites sources, and its costs obey the shared invariants.

Invariants (one interface, whatever the family): a kernel's time is at least each of its parts; energy is
the sum of its parts and none is negative; static energy is the device's idle power over the kernel's
time; every kernel is placed on one of the device's units; and the event simulation of a whole batch
agrees with the analytic path.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from explore.design_point import DesignPoint
from hw_models.device import DeviceModel
from hw_models.link import load_link
from hw_models.registry import DEVICE_KINDS, load_device, preset_names, read_device_yaml
from kernels.formats import NumericFormat
from kernels.lowering import lower_trace
from kernels.table import KernelTable

FORMATS = [NumericFormat(), NumericFormat(weight_bits=4), NumericFormat(weight_bits=8, act_bits=8, sparsity="2:4")]


@pytest.fixture(scope="module")
def tables(trace_of) -> list[KernelTable]:
    """Llama-2-7B prefill (batch 2, 32 tokens) and decode (batch 2), in three formats."""
    traced = [trace_of("llama-2-7b", "prefill", 2, 32), trace_of("llama-2-7b", "decode", 2, 1, 32)]
    return [KernelTable.from_kernels(lower_trace(t)).with_format(f) for t in traced for f in FORMATS]


def test_every_kind_has_presets():
    kinds = {read_device_yaml(name)[0]["kind"] for name in preset_names()}
    assert kinds == set(DEVICE_KINDS)


@pytest.mark.parametrize("name", preset_names())
def test_loads_with_sources(name):
    device = load_device(name)
    assert isinstance(device, DeviceModel) and device.name == name
    assert device.memory_bytes > 0 and device.idle_power_W >= 0 and device.area_mm2 > 0
    spec = device.spec
    sections = [getattr(spec, f.name) for f in dataclasses.fields(spec)]
    sections = [s for s in sections if dataclasses.is_dataclass(s)]
    assert {"power", "area", "price"} <= {f.name for f in dataclasses.fields(spec)}
    for section in sections:
        _check_sources(section)


def _check_sources(section) -> None:
    """A section cites a source, or groups sub-sections that each do."""
    if hasattr(section, "source"):
        assert isinstance(section.source, str) and len(section.source.strip()) >= 10, type(section).__name__
        return
    parts = [getattr(section, f.name) for f in dataclasses.fields(section)]
    parts = [p for p in parts if dataclasses.is_dataclass(p)]
    assert parts, f"{type(section).__name__} has no source"
    for part in parts:
        _check_sources(part)


@pytest.mark.parametrize("name", preset_names())
def test_cost_invariants(name, tables):
    device = load_device(name)
    for table in tables:
        costs = device.cost_table(table)
        assert np.all(np.isfinite(costs.time_s)) and np.all(costs.time_s > 0)
        assert np.all(costs.time_s >= np.maximum(costs.compute_s, costs.memory_s) * (1 - 1e-12))
        for part in (costs.compute_s, costs.memory_s, costs.overhead_s, costs.compute_J, costs.memory_J):
            assert np.all(part >= 0)
        np.testing.assert_allclose(costs.energy_J, costs.compute_J + costs.memory_J + costs.static_J, rtol=1e-12)
        np.testing.assert_allclose(costs.static_J, device.idle_power_W * costs.time_s, rtol=1e-12)
        assert set(np.unique(costs.unit_index).tolist()) <= set(range(len(device.units)))


@pytest.mark.parametrize("name", preset_names())
def test_event_simulation_agrees_with_analytic(name, evaluator):
    point = DesignPoint(model="llama-2-7b", device=name, batch=4, prompt=32, output=4, weight_bits=4)
    evaluation = evaluator.evaluate(point)
    metrics, fast = evaluation.metrics, evaluation.result
    # 3.4 GB of 4-bit weights and a little KV cache fit every preset (the smallest memory is 8 GB): it is simulated.
    assert metrics["fits_in_memory"] and fast is not None, metrics["infeasible_reason"]
    sim = evaluator.evaluate(point, event_sim=True).result
    assert sim.makespan_s == pytest.approx(fast.makespan_s, rel=1e-9)
    assert sim.energy_J == pytest.approx(fast.energy_J, rel=1e-9)
    assert metrics["tokens_per_s"] == pytest.approx(4 * 4 / fast.makespan_s, rel=1e-9)
    assert metrics["energy_per_token_J"] == pytest.approx(fast.energy_J / 16, rel=1e-9)
    assert metrics["area_mm2"] == pytest.approx(load_device(name).area_mm2, rel=1e-12) and metrics["area_mm2"] > 0


@pytest.mark.parametrize("load, fields", [(load_device, "device fields"), (load_link, "link fields")])
@pytest.mark.parametrize("text, found", [("", "found no keys (an empty file)"), ("[1, 2]\n", "found a list")])
def test_a_device_or_link_file_that_is_no_mapping_says_what_it_holds(tmp_path, one_line_error, load, fields, text,
                                                                    found):
    """An empty device or link YAML is 'no keys (an empty file)', as an empty sweep file is; it said 'found
    NoneType'."""
    path = tmp_path / "file.yaml"
    path.write_text(text)
    where, message = one_line_error(lambda: load(str(path)))
    assert where == str(path) and message == f"{found}, allowed: a mapping of {fields}"
