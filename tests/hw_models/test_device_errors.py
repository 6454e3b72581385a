"""Bad device input: one-line InputError naming the file, the key, what was found and what is allowed."""

from __future__ import annotations

from pathlib import Path

import yaml

from hw_models.registry import load_device, preset_names, read_device_yaml


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
    assert path in where and "energy" in message


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
