"""did_you_mean (workloads/errors.py), the hint of every unknown-name message: a short name that begins a few
choices is completed to them ('h100' once suggested 'h200', the closest spelling, though the user meant an H100)."""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from explore.cli import main
from workloads.errors import MAX_COMPLETIONS, did_you_mean, found_json, found_value

DEVICES = ["a100-sxm-40gb", "a100-sxm-80gb", "h100-pcie", "h100-sxm", "h200", "v100-sxm2", "v100s-pcie"]


@pytest.mark.parametrize("word, hint", [
    ("h100", " (did you mean 'h100-pcie' or 'h100-sxm'?)"),  # completions, not the closest spelling 'h200'
    ("a100", " (did you mean 'a100-sxm-40gb' or 'a100-sxm-80gb'?)"),
    ("h100-sxn", " (did you mean 'h100-sxm'?)"),  # a typo: the closest spelling, as before
    ("tpu-v5", ""),
    ("H100", " (did you mean 'h100-pcie' or 'h100-sxm'?)"),  # case is ignored: presets are lowercase
    ("H100-SXM", " (did you mean 'h100-sxm'?)"),
    ("H100-SXN", " (did you mean 'h100-sxm'?)"),
])
def test_hints(word, hint):
    assert did_you_mean(word, DEVICES) == hint


def test_one_letter_is_not_completed():
    """'h' begins three devices; one letter says too little to name them (difflib finds nothing close either)."""
    assert did_you_mean("h", DEVICES) == ""


def test_more_completions_than_the_cap_fall_back_to_the_closest_spelling():
    links = ["nvlink2", "nvlink3", "nvlink4", "nvlink5"]
    assert len(links) > MAX_COMPLETIONS
    assert did_you_mean("nvlink", links) == " (did you mean 'nvlink5'?)"


def test_a_device_name_missing_its_suffix_is_completed_on_the_command_line(capsys):
    assert main(["run", "--model", "llama-2-7b", "--device", "h100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "found 'h100' (did you mean 'h100-pcie' or 'h100-sxm'?), allowed:" in err[0], err


def test_a_device_name_in_capitals_is_named_on_the_command_line(capsys):
    """A model name in the wrong case was offered its preset, a device name in the wrong case nothing."""
    assert main(["run", "--model", "llama-2-7b", "--device", "H100-SXM"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "found 'H100-SXM' (did you mean 'h100-sxm'?), allowed:" in err[0], err


def test_choices_with_capitals_keep_their_spelling():
    hint = did_you_mean("energy_per_token_j", ["tpot_s", "energy_per_token_J"])
    assert hint == " (did you mean 'energy_per_token_J'?)"


@pytest.mark.parametrize("written, hint", [
    ("my-h10.yaml", " (did you mean 'my-h100.yaml'?)"),
    ("cluster.yaml", ""),  # nothing beside it is close
])
def test_a_missing_device_file_names_the_closest_file_beside_it(tmp_path, capsys, written, hint):
    (tmp_path / "my-h100.yaml").write_text("base: h100-sxm\n")
    missing = tmp_path / written
    assert main(["run", "--model", "llama-2-7b", "--device", str(missing)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"explore: error: {missing}: no such device YAML file{hint}"]


@pytest.mark.parametrize("value, yaml_text, json_text", [
    (None, "null", "null"), (True, "true", "true"), (False, "false", "false"),  # not Python's None, True, False
    (float("inf"), ".inf", "Infinity"), (float("-inf"), "-.inf", "-Infinity"), (float("nan"), ".nan", "NaN"),
    ([1, None, [True]], "[1, null, [true]]", "[1, null, [true]]"),
    ({"range": [0.5, 0.9], "steps": 3, "my key": "x"}, "{range: [0.5, 0.9], steps: 3, 'my key': 'x'}",
     "{range: [0.5, 0.9], steps: 3, 'my key': 'x'}"),
    ("split", "'split'", "'split'"),  # text stays quoted: 'found '4'' is text, 'found 4' a number
    (np.float64(2.5), "2.5", "2.5"), (datetime.date(2024, 1, 2), "2024-01-02", "2024-01-02"),
])
def test_a_found_value_is_spelled_as_its_file_spells_it(value, yaml_text, json_text):
    """found_value writes a value read from a YAML file as YAML writes it (a JSON file's numbers that are not finite
    as Python's json module writes them)."""
    assert found_value(value) == yaml_text and found_json(value) == json_text


def test_a_long_found_value_is_shown_by_its_start_and_length():
    shown = found_value(list(range(100)))  # '[0, 1, ..., 99]': 390 characters
    assert shown.startswith("[0, 1, 2, ") and shown.endswith("... (390 characters)") and len(shown) < 90
