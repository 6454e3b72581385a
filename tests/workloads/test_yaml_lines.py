"""The located-YAML reader: lines of keys, and its limits on nesting and alias expansion (one-line InputErrors)."""

from __future__ import annotations

import time

import pytest

from workloads.errors import InputError
from workloads.yaml_lines import MAX_YAML_DEPTH, MAX_YAML_VALUES, LocatedYAML


def test_lines_of_keys_and_items():
    located = LocatedYAML("f.yaml", "a: 1\nb:\n  c: [x,\n      y]\n")
    assert located.data == {"a": 1, "b": {"c": ["x", "y"]}}
    assert located.where(("b", "c", 1)) == "f.yaml:4"
    assert located.where(("b", "nope")) == "f.yaml:2"  # the deepest known key along the path


def test_an_alias_is_located_where_it_is_used_and_merges_are_no_duplicates():
    text = "base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 3\ne: *b\n"
    located = LocatedYAML("f.yaml", text)
    assert located.data["d"] == {"x": 3, "y": 2} and located.data["e"] == {"x": 1, "y": 2}
    assert located.line_of(("e", "x")) == 5


def test_a_recursive_alias_is_read_not_walked_forever():
    located = LocatedYAML("f.yaml", "a: &a [*a, 1]\n")  # used to raise RecursionError from the line walk
    assert located.data["a"][0] is located.data["a"]


def test_alias_bomb_is_refused_fast():
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]" for i in range(8)]
    start = time.monotonic()
    with pytest.raises(InputError, match=rf"^f.yaml:\d+: found more than {MAX_YAML_VALUES:,} values once aliases"):
        LocatedYAML("f.yaml", "\n".join(lines))
    assert time.monotonic() - start < 1


def test_aliases_within_the_limit_are_fine():
    text = "a: &a [1, 2, 3]\nb: [*a, *a, *a]\n"
    assert LocatedYAML("f.yaml", text).data["b"] == [[1, 2, 3]] * 3


@pytest.mark.parametrize("text", [
    "a: " + "[" * 3000 + "]" * 3000,
    '{"a": ' * 3000 + "1" + "}" * 3000,
    "".join(" " * i + "k:\n" for i in range(MAX_YAML_DEPTH + 1)) + " " * (MAX_YAML_DEPTH + 1) + "k: 1\n",
], ids=["flow lists", "JSON objects", "block mappings"])
def test_deep_nesting_is_one_error_not_a_recursion_error(text):
    with pytest.raises(InputError, match=rf"nested more than {MAX_YAML_DEPTH} levels deep"):
        LocatedYAML("f.yaml", text)


def test_nesting_up_to_the_limit_is_read():
    depth = MAX_YAML_DEPTH - 1
    assert LocatedYAML("f.yaml", "a: " + "[" * depth + "]" * depth).data is not None


def test_too_many_values_without_aliases():
    with pytest.raises(InputError, match=rf"found more than {MAX_YAML_VALUES:,} values, allowed"):
        LocatedYAML("f.yaml", "a: [" + "1," * MAX_YAML_VALUES + "1]")


def test_a_syntax_error_keeps_its_message():
    with pytest.raises(InputError, match=r"^f.yaml:1: not valid YAML: mapping values are not allowed here$"):
        LocatedYAML("f.yaml", "a: b: c\n")
