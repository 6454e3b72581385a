"""The serving: section's rules (explore/sweep_serving.py Serving): a broken one is one line in the project's form,
'file:line: key: found X, allowed: Y', naming the keys involved and what each may be."""

from __future__ import annotations

import pytest

from explore.sweep import load_sweep
from tests.explore.tiny_sweep import write_sweep
from workloads.errors import InputError
from workloads.requests import SHIPPED_TRACES

HEAD = "name: s\nmodel: llama-2-7b\ndevice: h100-sxm\nserving:\n  requests: 20\n"
SLO = "  slo: {ttft_s: 2.0, tpot_s: 0.1}\n"
PROMPT, OUTPUT = "  prompt: {dist: fixed, tokens: 16}\n", "  output: {dist: fixed, tokens: 4}\n"


def _message(tmp_path, section: str) -> str:
    with pytest.raises(InputError) as err:
        load_sweep(write_sweep(tmp_path, HEAD + section))
    message = str(err.value)
    assert "\n" not in message and message.count("found") == 1, message
    return message


@pytest.mark.parametrize("capacity", ["[10, 5]", "[5, 5]"])
def test_a_capacity_that_does_not_rise_names_its_key_line_and_value(tmp_path, capacity):
    message = _message(tmp_path, f"  trace: splitwise-conv\n{SLO}  capacity: {capacity}\n")
    # Line 8: the capacity's own line, not the section's (line 4).
    assert message.endswith(f".yaml:8: serving.capacity: found {capacity}, allowed: [low, high] rates with "
                            f"0 < low < high (req/s)"), message


@pytest.mark.parametrize("given, found", [
    ("  rate: 2\n", "no trace, prompt or output"),
    ("  rate: 2\n" + PROMPT, "prompt without output"),
    ("  rate: 2\n" + OUTPUT, "output without prompt"),
])
def test_missing_lengths_say_what_was_found_and_name_the_keys_allowed(tmp_path, given, found):
    message = _message(tmp_path, given)
    assert f".yaml:4: serving: found {found}, allowed: trace (one of " in message, message
    assert all(name in message for name in SHIPPED_TRACES)
    assert message.endswith("a CSV path or a Mooncake .jsonl path), or both prompt and output (length "
                            "distributions, e.g. {dist: fixed, "
                            "tokens: 512})"), message


def test_a_trace_beside_lengths_names_both(tmp_path):
    message = _message(tmp_path, "  rate: 2\n  trace: splitwise-conv\n" + PROMPT + OUTPUT)
    assert ".yaml:4: serving: found trace 'splitwise-conv' with prompt and output, allowed: either trace" in message
    assert message.endswith("not both (a trace gives the lengths)"), message


@pytest.mark.parametrize("section, expected", [
    ("  trace: splitwise-conv\n  rate: 2\n  capacity: [1, 5]\n" + SLO,
     "serving: found rate 2 with capacity [1, 5], allowed: one of them (capacity searches the rate)"),
    ("  trace: splitwise-conv\n  capacity: [1, 5]\n", "serving: found capacity [1, 5] without an slo, allowed: an slo"),
    ("  trace: splitwise-conv\n", "serving: found poisson arrivals without a rate, allowed: a rate (requests per "
     "second) or a capacity search (capacity: [low, high])"),
    ("  arrival: trace\n" + PROMPT + OUTPUT, "serving: found arrival: trace without a trace, allowed: a trace to take "
     "arrival times from (trace: NAME), or poisson or gamma arrivals"),
])
def test_every_rule_over_several_keys_says_what_was_found_and_what_is_allowed(tmp_path, section, expected):
    assert f".yaml:4: {expected}" in _message(tmp_path, section)


def test_a_length_distribution_without_its_parameters_names_them(tmp_path):
    message = _message(tmp_path, "  rate: 2\n  prompt: {dist: uniform, low: 8}\n" + OUTPUT)
    assert ".yaml:7: serving.prompt: found dist: uniform without high, allowed: uniform with low and high" in message
