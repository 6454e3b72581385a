"""check_keys: unknown keys are named with a did-you-mean, including inside a mapping of named specs."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import AfterValidator
from pydantic.dataclasses import dataclass

from hw_models.registry import load_device
from hw_models.spec_common import SPEC_CONFIG
from hw_models.validation import check_keys
from workloads.errors import InputError


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class Level:
    size_KB: float
    bandwidth_GBps: float


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class Chip:
    caches: dict[str, Level]


def test_names_of_a_mapping_are_not_fields():
    check_keys({"caches": {"l1": {"size_KB": 64, "bandwidth_GBps": 100}}}, Chip, "chip.yaml")


def test_unknown_key_inside_a_named_spec():
    with pytest.raises(InputError, match=r"chip.yaml: caches.l2.size_kb: unknown key \(did you mean 'size_KB'\?\)"):
        check_keys({"caches": {"l2": {"size_kb": 64, "bandwidth_GBps": 100}}}, Chip, "chip.yaml")


def test_annotated_values_are_not_specs():
    names = dict[str, Annotated[str, AfterValidator(str.strip)]]
    check_keys({"a": "x"}, names, "f.yaml")  # AfterValidator is a dataclass instance, not a spec class


@pytest.mark.parametrize("section", ["5", "[1]", "fast"])
def test_a_section_given_a_value_allows_a_mapping_in_words(tmp_path, one_line_error, section):
    """A device file's section (memory:) given a number or a list: 'allowed: a mapping of its keys', as a sweep's
    sections say, not pydantic's 'a dictionary or an instance of MemorySpec' (a Python class name)."""
    path = tmp_path / "device.yaml"
    path.write_text(f"base: h100-sxm\nmemory: {section}\n")
    where, message = one_line_error(lambda: load_device(str(path)))
    assert where == f"{path}:2" and message.startswith("memory: found ")
    assert message.endswith(" (key: value, ...)") and "MemorySpec" not in message
    # Its keys named: the four the H100 preset's memory: section gives, among the fields a section may have.
    assert all(key in message.split("allowed: a mapping of its keys ")[1].split(" (")[0].split(", ")
               for key in ("type", "capacity_GB", "bandwidth_GBps", "source")), message


def test_a_cpu_s_dequantizing_slots_given_one_number_name_the_formats(tmp_path, one_line_error):
    """compute.dequant_lane_ops_per_weight is a section of llama.cpp formats (ampere-altra.yaml: q2_k, q3_k, q4_0, q5_0,
    q6_k and their source): one number there is refused naming them, not 'a mapping of its keys' alone."""
    path = tmp_path / "cpu.yaml"
    path.write_text("base: ampere-altra\ncompute:\n  dequant_lane_ops_per_weight: 4.5\n")
    where, message = one_line_error(lambda: load_device(str(path)))
    assert where == f"{path}:3"
    assert message == ("compute.dequant_lane_ops_per_weight: found 4.5, allowed: a mapping of its keys q2_k, q3_k, "
                       "q4_0, q5_0, q6_k, source (key: value, ...)"), message
