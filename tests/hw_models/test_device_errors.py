"""Bad device input: one-line InputError naming the file, the key, what was found and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hw_models.registry import load_device, preset_names, read_device_yaml
from hw_models.validation import plausible_range


def _write(tmp_path, data, name="device.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def _h100() -> dict:
    data, _ = read_device_yaml("h100-sxm")
    return data


def test_unknown_preset_lists_allowed_names(one_line_error):
    where, message = one_line_error(lambda: load_device("tpu-v5"))
    assert where == "device" and "'tpu-v5'" in message
    for name in preset_names():
        assert name in message


def test_close_preset_name_suggests(one_line_error):
    where, message = one_line_error(lambda: load_device("h100-sxm5"))
    assert "did you mean 'h100-sxm'" in message


def test_typo_in_key_did_you_mean(tmp_path, one_line_error):
    data = _h100()
    data["memory"]["bandwith_GBps"] = data["memory"].pop("bandwidth_GBps")
    path = _write(tmp_path, data)
    where, message = one_line_error(lambda: load_device(path))
    assert where.startswith(path)
    assert "memory.bandwith_GBps" in message
    assert "did you mean 'bandwidth_GBps'" in message


def test_typo_in_top_level_key(tmp_path, one_line_error):
    data = _h100()
    data["powr"] = data.pop("power")
    path = _write(tmp_path, data)
    where, message = one_line_error(lambda: load_device(path))
    assert path in where and "powr" in message and "'power'" in message


def test_negative_bandwidth(tmp_path, one_line_error):
    data = _h100()
    data["memory"]["bandwidth_GBps"] = -100
    path = _write(tmp_path, data)
    where, message = one_line_error(lambda: load_device(path))
    assert path in where and "memory.bandwidth_GBps" in message and "-100" in message


def test_negative_bandwidth_override(one_line_error):
    where, message = one_line_error(lambda: load_device("h100-sxm", {"memory.bandwidth_GBps": -1}))
    assert "h100-sxm" in where and "memory.bandwidth_GBps" in message


def test_a_device_file_without_a_kind_says_it_is_missing(tmp_path, one_line_error):
    """A file of its own that names no kind: the key is missing (it read "kind: found None", Python's word)."""
    data = _h100()
    del data["kind"]
    path = _write(tmp_path, data)
    where, message = one_line_error(lambda: load_device(path))
    assert where == path and message == "kind: missing, allowed: gpu, npu, cpu, fpga", message


def test_unknown_kind(tmp_path, one_line_error):
    data = _h100()
    data["kind"] = "tpu"
    path = _write(tmp_path, data)
    where, message = one_line_error(lambda: load_device(path))
    assert path in where and "kind" in message and "'tpu'" in message and "gpu" in message


def test_missing_section(tmp_path, one_line_error):
    data = _h100()
    del data["energy"]
    path = _write(tmp_path, data)
    where, message = one_line_error(lambda: load_device(path))
    assert path in where and message == "energy: missing, allowed: a value (the key is required)"


def test_idle_power_at_or_above_the_tdp_says_what_was_found_and_allowed(tmp_path, one_line_error):
    data = _h100()
    data["power"]["idle_W"] = 800.0
    path = _write(tmp_path, data)
    where, message = one_line_error(lambda: load_device(path))
    assert path in where and message == "power: idle_W: found 800, allowed: below tdp_W (700 W)"


def test_missing_source(tmp_path, one_line_error):
    # "Every number has a source": a section without one is rejected.
    data = _h100()
    del data["memory"]["source"]
    path = _write(tmp_path, data)
    where, message = one_line_error(lambda: load_device(path))
    assert path in where and "memory.source" in message


def test_unknown_override_path_did_you_mean(one_line_error):
    where, message = one_line_error(lambda: load_device("h100-sxm", {"memory.bandwith_GBps": 4000}))
    assert "memory.bandwith_GBps" in message and "did you mean 'bandwidth_GBps'" in message


def test_invalid_yaml_and_missing_file(tmp_path, one_line_error):
    path = _write(tmp_path, "name: x\nmemory: [unclosed\n")
    where, message = one_line_error(lambda: load_device(path))
    assert where.startswith(path)
    where, message = one_line_error(lambda: load_device(str(tmp_path / "absent.yaml")))
    assert where.endswith("absent.yaml") and "no such" in message
    path = _write(tmp_path, "- just\n- a list\n", name="list.yaml")
    assert one_line_error(lambda: load_device(path))[0].startswith(path)


def test_a_device_file_error_names_the_line(tmp_path, one_line_error):
    text = (Path(__file__).resolve().parents[2] / "hw_models" / "presets" / "h100-sxm.yaml").read_text()
    lines = text.splitlines()
    line = next(i for i, t in enumerate(lines, 1) if t.strip().startswith("bandwidth_GBps:"))
    lines[line - 1] = lines[line - 1].replace("bandwidth_GBps: ", "bandwidth_GBps: -")
    path = _write(tmp_path, "\n".join(lines) + "\n")
    where, message = one_line_error(lambda: load_device(path))
    assert where == f"{path}:{line}" and message.startswith("memory.bandwidth_GBps: found -")


# ---- non-finite and implausible numbers (issue 17) -------------------------------------------------------------

def _numeric_leaves(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _numeric_leaves(value, (*path, key))
    elif isinstance(node, int | float) and not isinstance(node, bool):
        yield ".".join(map(str, path)), node


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_number_has_a_plausible_range_it_sits_well_inside(name):
    """A new field gets a range (a unit suffix or a count name in spec_common.PLAUSIBLE), and every shipped
    number leaves room for what-ifs: at least 4x below the ceiling."""
    data, _ = read_device_yaml(name)
    for path, value in _numeric_leaves(data):
        rule = plausible_range(path)
        assert rule is not None, f"{name}: {path} has no plausible range"
        if value > 0 and rule.high > 1:  # shares (<= 1) are bounded by their meaning, not by room
            assert rule.low <= value and value * 4 <= rule.high, f"{name}: {path} = {value}"


@pytest.mark.parametrize("path, value, message", [
    ("memory.bandwidth_GBps", float("inf"), "found .inf, allowed: a finite number (1 to 100,000 GB/s)"),
    ("memory.bandwidth_GBps", float("nan"), "found .nan, allowed: a finite number"),
    ("memory.bandwidth_GBps", 1e-300, "found 1e-300, allowed: 1 to 100,000 GB/s"),
    ("memory.bandwidth_GBps", 1e6, "found 1000000.0, allowed: 1 to 100,000 GB/s"),
    ("memory.bandwidth_GBps", True, "found true, allowed: a number (GB/s)"),
    ("memory.bandwidth_GBps", "8e9", "found '8e9', allowed: 1 to 100,000 GB/s"),
    ("compute.sm_count", 10**12, "found 1000000000000, allowed: 1 to 1,000,000"),
    ("compute.peak_TFLOPS.fp16", 1e9, "found 1000000000.0, allowed: 0.001 to 100,000 TFLOP/s"),
    ("memory.capacity_GB", 1e12, "allowed: 1e-09 to 100,000 GB"),
    ("power.idle_W", 1e7, "allowed: 0.001 to 100,000 W"),
    ("energy.dram_pJ_per_bit", 1e-9, "allowed: 0.0001 to 10,000 pJ"),
    ("compute.boost_clock_MHz", 1.98, "found 1.98, allowed: 10 to 100,000 MHz"),  # H100's 1,980 MHz in GHz
    ("overhead.kernel_launch_us", float("inf"), "found .inf, allowed: a finite number"),
])
def test_an_implausible_override_names_its_key_and_range(path, value, message, one_line_error):
    _, got = one_line_error(lambda: load_device("h100-sxm", {path: value}))
    assert got.startswith(f"{path}: found ") and message in got, got


@pytest.mark.parametrize("name, path, value", [("neupims", "npu.frequency_MHz", 1.0),  # 1 GHz written in GHz
                                               ("neupims", "pim.frequency_MHz", 1.0),
                                               ("alveo-u280", "compute.clock_MHz", 0.225),
                                               ("ampere-altra", "compute.frequency_GHz", 0.003)])  # 3 MHz
def test_a_clock_in_the_wrong_unit_is_refused(name, path, value, one_line_error):
    _, got = one_line_error(lambda: load_device(name, {path: value}))
    assert got.startswith(f"{path}: found {value}, allowed: ") and ("in GHz" in got or "in MHz" in got), got


def test_a_plausible_what_if_still_loads():
    device = load_device("h100-sxm", {"memory.bandwidth_GBps": "8e3", "memory.capacity_GB": 1e-6})
    assert device.spec.memory.bandwidth_GBps == 8000.0  # YAML reads 8e3 (no '.') as text; pydantic as a number


def test_a_negative_number_is_still_the_types_rule(one_line_error):
    _, message = one_line_error(lambda: load_device("h100-sxm", {"memory.bandwidth_GBps": -5}))
    assert message == "memory.bandwidth_GBps: found -5, allowed: greater than 0"


def test_a_full_device_file_blames_the_line_of_an_inf(tmp_path, one_line_error):
    text = (Path(__file__).resolve().parents[2] / "hw_models" / "presets" / "h100-sxm.yaml").read_text()
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.strip().startswith("capacity_GB:"))
    path = _write(tmp_path, text.replace("capacity_GB: 80", "capacity_GB: .inf"))
    where, message = one_line_error(lambda: load_device(path))
    assert where == f"{path}:{line}" and message.startswith("memory.capacity_GB: found .inf, allowed: a finite number")


def test_a_flag_given_as_text_is_refused(tmp_path, one_line_error):
    for name, key in (("neupims", "npu.double_buffered"), ("alveo-u280", "onchip.always_on_chip_decode")):
        data, _ = read_device_yaml(name)
        section, field = key.split(".")
        data[section][field] = "false"
        path = _write(tmp_path, data, name=f"{name}.yaml")
        _, message = one_line_error(lambda path=path: load_device(path))
        assert message == f"{key}: found 'false', allowed: true or false"
