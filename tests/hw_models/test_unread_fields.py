"""Preset fields marked Unread: no cost model reads them (changing one changes no cost), and a what-if
override of one is refused with a one-line error."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from hw_models.calibration import load_calibration
from hw_models.registry import DEVICE_KINDS, _read, load_device, what_if_fields
from hw_models.registry import validate_spec as validate
from hw_models.validation import unread_fields
from kernels.formats import NumericFormat
from kernels.lowering import lower_trace
from kernels.table import KernelTable

# One preset of each kind, with every optional part its kind has (PIM banks, SAIL arrays, sparse DSP chains).
PRESETS = ("h100-sxm", "neupims", "ampere-altra-sail", "m2-ultra-tmac", "alveo-u280")


def _changed(value):
    """A different value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return type(value)(value * 2 + 1)
    return f"{value} (changed)"


def _paths(data: dict, pattern: tuple[str, ...]):
    """The concrete paths of `data` matching a pattern ('*' matches every key)."""
    if not pattern:
        yield ()
        return
    head, rest = pattern[0], pattern[1:]
    for key in (data if head == "*" else [head]):
        if isinstance(data, dict) and key in data:
            value = data[key]
            if not rest:
                yield (key,)
            elif isinstance(value, dict):
                yield from ((key, *tail) for tail in _paths(value, rest))


def _tables(trace_of) -> list[KernelTable]:
    """Prefill and decode of a 7B model at 16-bit and with 4-bit weights (the LUT and packed-DSP paths)."""
    tables = []
    for phase, seq, context in (("prefill", 128, 0), ("decode", 1, 128)):
        table = KernelTable.from_kernels(lower_trace(trace_of("llama-2-7b", phase, 4, seq, context)))
        tables += [table, table.with_format(NumericFormat(weight_bits=4, act_bits=8, kv_bits=8))]
    return tables


def _priced(model, tables) -> list:
    out = [model.area_mm2, model.memory_bytes, model.price]
    for table in tables:
        for execution in ("eager", "graphs"):
            costs = model.cost_table(table, execution=execution)
            out += [np.asarray(v) for v in dataclasses.asdict(costs).values()]
    return out


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", PRESETS)
def test_unread_fields_change_no_cost(name, trace_of):
    data, where, reference, _ = _read(name)
    kind = DEVICE_KINDS[data["kind"]]
    tables = _tables(trace_of)
    calibration = load_calibration(name)
    baseline = _priced(kind.model_class(reference, reference=reference, calibration=calibration), tables)
    checked = []
    for pattern in unread_fields(kind.spec_class):
        for path in _paths(data, pattern):
            changed = copy.deepcopy(data)
            node = changed
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = _changed(node[path[-1]])
            model = kind.model_class(validate(changed, where), reference=reference, calibration=calibration)
            assert _same(_priced(model, tables), baseline), f"{name}: {'.'.join(path)} is marked Unread but is read"
            checked.append(path)
    assert checked, f"{name}: no Unread field present to check"


@pytest.mark.parametrize("name,path", [("h100-sxm", "memory.l2_cache_MB"), ("h100-sxm", "power.tdp_W"),
                                       ("alveo-u280", "onchip.bram_MB"), ("neupims", "area.process")])
def test_override_of_unread_field_is_refused(name, path, one_line_error):
    where, rest = one_line_error(lambda: load_device(name, {path: 1}))
    assert where.endswith(f"{name}.yaml")
    assert rest.startswith(f"device.{path}: not a what-if knob: ")


def test_override_of_a_read_field_still_applies():
    assert load_device("h100-sxm", {"power.idle_W": 50}).spec.power.idle_W == 50


# Fields a cost model reads only beside another (ReadWith): (device that lacks it, device that has it, field, a value
# that changes the cost where it is read: fewer lane ops a lookup than T-MAC's 4, so the LUT kernels stay the faster).
READ_WITH = [("npu-only", "neupims", "energy.pim_mac_pJ", 50),
             ("npu-only", "neupims", "energy.pim_access_pJ_per_bit", 50),
             ("ampere-altra-sail", "m2-ultra-tmac", "lut.lookup_lane_ops", 1)]


@pytest.mark.parametrize("without, with_it, path, value", READ_WITH)
def test_a_field_read_only_beside_another_is_refused_where_that_is_missing(without, with_it, path, value, trace_of,
                                                                          one_line_error):
    """npu-only has no PIM banks to spend energy.pim_mac_pJ in, and SAIL's PIM arrays look up by row reads, not
    lookup_lane_ops SIMD instructions: a what-if of either there was taken and changed nothing (the run's header named
    it a what-if). Where the section or setting is there, the same what-if changes the cost."""
    tables = _tables(trace_of)
    assert not _same(_priced(load_device(with_it, {path: value}), tables), _priced(load_device(with_it), tables))
    where, rest = one_line_error(lambda: load_device(without, {path: value}))
    assert where.endswith(f"{without}.yaml")
    assert rest.startswith(f"device.{path}: not a what-if knob: read only ")
    assert path not in what_if_fields(without) and path in what_if_fields(with_it)


def test_a_device_file_that_switches_off_on_chip_decode_may_not_set_its_buffer(tmp_path, one_line_error, trace_of):
    """An FPGA whose decode activations do not stay on chip never reads the activation buffer's size or bandwidth."""
    tables = _tables(trace_of)
    off = tmp_path / "u280-off.yaml"
    off.write_text("base: alveo-u280\nonchip:\n  always_on_chip_decode: false\n")
    changed = tmp_path / "u280-off-buffer.yaml"
    changed.write_text("base: alveo-u280\nonchip:\n  always_on_chip_decode: false\n  bandwidth_GBps: 100\n")
    assert not _same(_priced(load_device("alveo-u280", {"onchip.bandwidth_GBps": 100}), tables),
                     _priced(load_device("alveo-u280"), tables))
    assert load_device(str(off)).spec.onchip.always_on_chip_decode is False
    where, rest = one_line_error(lambda: load_device(str(changed)))
    assert where == f"{changed}:4" and rest.startswith("onchip.bandwidth_GBps: not a what-if knob: read only "
                                                      "with onchip.always_on_chip_decode: true (the device: false)")
