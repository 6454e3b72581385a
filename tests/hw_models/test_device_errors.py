"""Bad device input: one-line InputError naming the file, the key, what was found and what is allowed."""

from __future__ import annotations

import pytest
import yaml

from hw_models.registry import load_device, preset_names, read_device_yaml
from workloads.errors import InputError


def _message(call) -> str:
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    return message


def _write(tmp_path, data, name="device.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def _h100() -> dict:
    data, _ = read_device_yaml("h100-sxm")
    return data


def test_unknown_preset_lists_allowed_names():
    message = _message(lambda: load_device("tpu-v5"))
    assert "tpu-v5" in message and "device" in message
    for name in preset_names():
        assert name in message


def test_close_preset_name_suggests():
    message = _message(lambda: load_device("h100-sxm5"))
    assert "did you mean 'h100-sxm'" in message


def test_typo_in_key_did_you_mean(tmp_path):
    data = _h100()
    data["memory"]["bandwith_GBps"] = data["memory"].pop("bandwidth_GBps")
    path = _write(tmp_path, data)
    message = _message(lambda: load_device(path))
    assert path in message
    assert "memory.bandwith_GBps" in message
    assert "did you mean 'bandwidth_GBps'" in message


def test_typo_in_top_level_key(tmp_path):
    data = _h100()
    data["powr"] = data.pop("power")
    path = _write(tmp_path, data)
    message = _message(lambda: load_device(path))
    assert path in message and "powr" in message and "'power'" in message


def test_negative_bandwidth(tmp_path):
    data = _h100()
    data["memory"]["bandwidth_GBps"] = -100
    path = _write(tmp_path, data)
    message = _message(lambda: load_device(path))
    assert path in message and "memory.bandwidth_GBps" in message and "-100" in message


def test_negative_bandwidth_override():
    message = _message(lambda: load_device("h100-sxm", {"memory.bandwidth_GBps": -1}))
    assert "h100-sxm" in message and "memory.bandwidth_GBps" in message


def test_unknown_kind(tmp_path):
    data = _h100()
    data["kind"] = "tpu"
    path = _write(tmp_path, data)
    message = _message(lambda: load_device(path))
    assert path in message and "kind" in message and "'tpu'" in message and "gpu" in message


def test_missing_section(tmp_path):
    data = _h100()
    del data["energy"]
    path = _write(tmp_path, data)
    message = _message(lambda: load_device(path))
    assert path in message and "energy" in message


def test_missing_source(tmp_path):
    # "Every number has a source": a section without one is rejected.
    data = _h100()
    del data["memory"]["source"]
    path = _write(tmp_path, data)
    message = _message(lambda: load_device(path))
    assert path in message and "memory.source" in message


def test_unknown_override_path_did_you_mean():
    message = _message(lambda: load_device("h100-sxm", {"memory.bandwith_GBps": 4000}))
    assert "memory.bandwith_GBps" in message and "did you mean 'bandwidth_GBps'" in message


def test_invalid_yaml_and_missing_file(tmp_path):
    path = _write(tmp_path, "name: x\nmemory: [unclosed\n")
    message = _message(lambda: load_device(path))
    assert path in message
    message = _message(lambda: load_device(str(tmp_path / "absent.yaml")))
    assert "absent.yaml" in message
    path = _write(tmp_path, "- just\n- a list\n", name="list.yaml")
    assert path in _message(lambda: load_device(path))
