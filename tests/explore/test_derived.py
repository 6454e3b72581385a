"""Derived knobs: safe expressions evaluated by hand, one-line errors, and sweeps whose rows carry derived values."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
from tiny_sweep import write_sweep, write_tiny_model

from explore.cli import main
from explore.derived import EvaluationError, Expression
from explore.runner import run_sweep
from explore.search import random_search
from explore.sweep import load_sweep
from workloads.errors import InputError

BANDWIDTH, CAPACITY = "device.memory.bandwidth_GBps", "device.memory.capacity_GB"


# ---- expressions -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,env,expected", [
    ("200 + 0.1 * device.memory.bandwidth_GBps", {BANDWIDTH: 2000}, 400.0),
    ("weight_bits if weight_bits >= 8 else 16", {"weight_bits": 4}, 16),
    ("weight_bits if weight_bits >= 8 else 16", {"weight_bits": 8}, 8),
    ("2 ** weight_bits // 3 % 5", {"weight_bits": 4}, 0),  # 16 // 3 = 5, 5 % 5 = 0
    ("-batch + max(prompt, 3 * output, 100) - min(1, 2)", {"batch": 2, "prompt": 64, "output": 30}, 97),
    ("round(sqrt(batch)) + abs(-3) + log2(prompt)", {"batch": 10, "prompt": 64}, 12.0),  # 3 + 3 + 6.0
    ("7 / 2 + 7 // 2 + -7 % 3", {}, 8.5),  # 3.5 + 3 + 2 (Python's modulo takes the divisor's sign)
    ("1 < batch <= 4", {"batch": 4}, True),
    ("1 < batch <= 4", {"batch": 5}, False),
    ("1 < batch <= 4", {"batch": 1}, False),
    ("batch == 2 != prompt", {"batch": 2, "prompt": 2}, False),
    ("2 ** -1", {}, 0.5),
    ("32 if attention_parallel == 'data' else 256", {"attention_parallel": "data"}, 32),
    ("32 if attention_parallel == 'data' else 256", {"attention_parallel": "tensor"}, 256),
    ("8 if 'engine' != execution else 4", {"execution": "engine"}, 4),
    # Quoted text as the result: a text knob's value.
    ("'nf4'", {}, "nf4"),
    ("'fp8_e4m3' if weight_bits == 8 else 'nf4' if weight_bits == 4 else 'int'", {"weight_bits": 4}, "nf4"),
    ("'fp8_e4m3' if weight_bits == 8 else 'nf4' if weight_bits == 4 else 'int'", {"weight_bits": 16}, "int"),
])
def test_expression_values(text, env, expected):
    value = Expression.parse(text)(env)
    assert value == pytest.approx(expected) and type(value) is type(expected)


def test_names_are_collected_once_in_order():
    assert Expression.parse("device.memory.bandwidth_GBps * batch + batch").names == (BANDWIDTH, "batch")


@pytest.mark.parametrize("text,named", [
    ("__import__('os').system('id')", "__import__('os').system"),
    ("batch.__class__", "'batch.__class__'"),
    ("'a' * 3", "\"'a'\""),
    ("batch < 'a'", "\"'a'\""),  # quoted text is only compared for (in)equality
    ("('a' if batch > 1 else 'b') * 2", "\"'a'\""),  # quoted text is a result, never an operand
    ("max('a', 'b')", "\"'a'\""),
    ("[1, 2][0]", "'[1, 2][0]'"),
    ("(lambda: 1)()", "'lambda: 1'"),
    ("batch and 1", "'batch and 1'"),
    ("not batch", "'not batch'"),
    ("batch ^ 2", "'batch ^ 2'"),
    ("batch in (1, 2)", "'batch in (1, 2)'"),
    ("True + 1", "'True'"),
    ("exec('1')", "'exec'"),
    ("min(1, key=abs)", "'min(1, key=abs)'"),
    ("round(1.5, 2)", "round() with 1 argument (not 2)"),
    ("max(batch)", "max() with 2 or more arguments (not 1)"),
    ("batch +", "invalid syntax"),
    ("batch = 2", "invalid syntax"),
])
def test_unsafe_or_unknown_constructs_are_rejected(text, named):
    with pytest.raises(ValueError) as err:
        Expression.parse(text)
    assert named in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text,env,reason", [
    ("1 / (batch - 1)", {"batch": 1}, "division by zero"),
    ("batch % 0", {"batch": 3}, "division by zero"),
    ("sqrt(batch - 2)", {"batch": 1}, "math domain error"),
    ("10 ** 10 ** 10", {}, "too large"),  # no ten-billion-digit integer is built
    ("(-8) ** 0.5", {}, "fractional power"),
])
def test_evaluation_errors(text, env, reason):
    start = time.monotonic()
    with pytest.raises(EvaluationError, match=reason):
        Expression.parse(text)(env)
    assert time.monotonic() - start < 1.0


# ---- sweep files -----------------------------------------------------------------------------------------------

def _sweep_text(model: str, derived: str, weight_bits: str = "[8, 4]") -> str:
    return (f"name: derived\nmodel: {model}\ndevice: h100-sxm\nworkload: {{prompt: 16, output: 4}}\n"
            f"format: {{weight_bits: {weight_bits}}}\n"
            f"overrides:\n  {BANDWIDTH}: [1000, 2000, 4000]\n"
            f"derived:\n{derived}")


DERIVED = (f"  {CAPACITY}: \"200 + 0.1 * {BANDWIDTH}\"\n"
           "  act_bits: \"weight_bits if weight_bits >= 8 else 16\"\n")


@pytest.fixture
def tiny_model(tmp_path: Path) -> str:
    return write_tiny_model(tmp_path)


_write = write_sweep


def test_derived_knobs_are_not_dimensions(tmp_path, tiny_model):
    sweep = load_sweep(_write(tmp_path, _sweep_text(tiny_model, DERIVED)))
    assert "act_bits" not in sweep.dimensions() and CAPACITY not in sweep.dimensions()
    assert sweep.size() == 3 * 2  # bandwidths x weight widths, as without the derived knobs
    points = sweep.points()
    assert len(points) == 6 and len({p.point_id for p in points}) == 6
    # (bandwidth, weight bits) -> (capacity = 200 + bandwidth / 10, act bits = weight bits if >= 8 else 16)
    got = {(dict(p.overrides)["memory.bandwidth_GBps"], p.weight_bits): (dict(p.overrides)["memory.capacity_GB"],
                                                                           p.act_bits) for p in points}
    assert got == {(1000, 8): (300, 8), (1000, 4): (300, 16), (2000, 8): (400, 8), (2000, 4): (400, 16),
                   (4000, 8): (600, 8), (4000, 4): (600, 16)}
    assert sweep.derived_values() == {CAPACITY: [300, 400, 600], "act_bits": [8, 16]}


def test_a_mixed_precision_knob_derived_from_the_weight_width(tmp_path, tiny_model):
    """Edge layers at 8 bits fit only under narrower weights (a 16-bit model has no edge layers to keep higher), so a
    mix crossed with a weight_bits list that holds 16 is refused, and derived from it is one sweep."""
    text = (f"name: mix\nmodel: {tiny_model}\ndevice: h100-sxm\nworkload: {{batch: 1, prompt: 16, output: 2}}\n"
            "format: {weight_bits: [16, 4], edge_layer_bits: 8}\n")
    with pytest.raises(InputError, match="edge_layer_bits: found 8"):
        load_sweep(_write(tmp_path, text))
    rule = "derived:\n  edge_layer_bits: \"8 if weight_bits < 8 else 0\"\n"
    derived = text.replace(", edge_layer_bits: 8", "") + rule
    points = load_sweep(_write(tmp_path, derived)).points()
    assert sorted((p.weight_bits, p.numeric_format.edge_layer_bits) for p in points) == [(4, 8), (16, 0)]


def test_point_id_covers_derived_values(tmp_path, tiny_model):
    one = load_sweep(_write(tmp_path, _sweep_text(tiny_model, f"  {CAPACITY}: \"200 + 0.1 * {BANDWIDTH}\"\n")))
    other = load_sweep(_write(tmp_path, _sweep_text(tiny_model, f"  {CAPACITY}: \"300 + 0.1 * {BANDWIDTH}\"\n")))
    assert {p.point_id for p in one.points()}.isdisjoint(p.point_id for p in other.points())


def test_derived_may_read_knobs_derived_above(tmp_path, tiny_model):
    text = _sweep_text(tiny_model, f"  batch: \"2 * weight_bits\"\n  {CAPACITY}: \"batch * 10 + {BANDWIDTH} / 100\"\n")
    points = load_sweep(_write(tmp_path, text)).points()
    # weight 8 -> batch 16 -> capacity 160 + bandwidth / 100; weight 4 -> batch 8 -> 80 + bandwidth / 100
    got = {(p.weight_bits, dict(p.overrides)["memory.bandwidth_GBps"]):
           (p.batch, dict(p.overrides)["memory.capacity_GB"]) for p in points}
    assert got[(8, 1000)] == (16, 170) and got[(4, 4000)] == (8, 120) and len(got) == 6


def test_random_search_points_carry_derived_values(tmp_path, tiny_model):
    text = _sweep_text(tiny_model, DERIVED) + "search: {strategy: random, budget: 4, seed: 3, batch: 2}\n"
    sweep = load_sweep(_write(tmp_path, text))
    asked = []

    def evaluate(points):
        asked.extend(points)
        return [{} for _ in points]

    random_search(sweep, evaluate)
    assert len({p.point_id for p in asked}) == 4
    for p in asked:
        overrides = dict(p.overrides)
        assert overrides["memory.capacity_GB"] == 200 + overrides["memory.bandwidth_GBps"] // 10
        assert p.act_bits == (8 if p.weight_bits == 8 else 16)


class _NoEvaluator:
    def evaluate(self, point):
        raise AssertionError(f"{point} was evaluated again instead of resumed")


def test_sweep_rows_carry_derived_columns_and_resume(tmp_path, tiny_model):
    sweep = load_sweep(_write(tmp_path, _sweep_text(tiny_model, DERIVED)))
    rows = run_sweep(sweep, tmp_path / "out")
    assert [(r[BANDWIDTH], r["weight_bits"], r[CAPACITY], r["act_bits"]) for r in rows] == [
        (1000, 8, 300, 8), (2000, 8, 400, 8), (4000, 8, 600, 8),  # device what-ifs vary fastest
        (1000, 4, 300, 16), (2000, 4, 400, 16), (4000, 4, 600, 16)]
    assert all(r["fits_in_memory"] for r in rows)
    with (tmp_path / "out" / "results.csv").open() as f:
        reader = csv.DictReader(f)
        header, stored = reader.fieldnames, list(reader)
    assert header.index(CAPACITY) == header.index(BANDWIDTH) + 1
    assert [float(r[CAPACITY]) for r in stored] == [300, 400, 600, 300, 400, 600]
    again = run_sweep(load_sweep(sweep.path), tmp_path / "out", evaluator=_NoEvaluator())
    assert [r["point_id"] for r in again] == [r["point_id"] for r in rows]


def test_check_counts_points_and_lists_derived_values(tmp_path, tiny_model, capsys):
    path = _write(tmp_path, _sweep_text(tiny_model, DERIVED))
    code = main(["check", path])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "6 design points (all evaluated)" in out
    assert f"derived {CAPACITY} = 200 + 0.1 * {BANDWIDTH}: 3 values (300, 400, 600)" in out
    assert "derived act_bits = weight_bits if weight_bits >= 8 else 16: 2 values (8, 16)" in out


# Each: the derived block, the key named, and what the one line must say. The derived block starts on line 9.
BAD_DERIVED = {
    "unsafe call": (f"  {CAPACITY}: \"__import__('os').system('ls')\"", CAPACITY, "calls of min, max"),
    "unknown knob": (f"  {CAPACITY}: \"2 * device.memory.bandwith_GBps\"", CAPACITY, f"did you mean '{BANDWIDTH}'"),
    "unswept device field": (f"  {CAPACITY}: \"device.power.idle_W * 2\"", CAPACITY, "must be swept under overrides"),
    "typo in a knob": ("  kv_bits: \"weight_bit\"", "kv_bits", "did you mean 'weight_bits'"),
    "text knob": (f"  {CAPACITY}: \"model\"", CAPACITY, "'model' is text (compare it with quoted text"),
    "text knob in arithmetic": (f"  {CAPACITY}: \"2 * execution if execution == 'eager' else 300\"", CAPACITY,
                                "at execution=eager: found 'eagereager', allowed: a finite number"),
    "derived below": (f"  {CAPACITY}: \"batch * 2\"\n  batch: \"weight_bits\"", CAPACITY,
                      "'batch' is derived at or below"),
    "itself": ("  batch: \"batch + 1\"", "derived.batch", "'batch' is derived at or below"),
    "also swept": (f"  {BANDWIDTH}: \"1000 * weight_bits\"", BANDWIDTH, "also swept at {path}:7"),
    "also set": ("  weight_bits: \"4\"", "derived.weight_bits", "also set at {path}:5"),
    "not a knob": ("  batchsize: \"4\"", "derived.batchsize", "did you mean 'batch'"),
    "number for a text knob": ("  sparsity: \"4\"", "derived.sparsity", "found 4, allowed: quoted text, dense or N:M"),
    "text for a number": ("  kv_bits: \"'eight'\"", "derived.kv_bits", "found 'eight', allowed: a finite number"),
    "unknown text": ("  weight_type: \"'fp9' if weight_bits == 8 else 'int'\"", "derived.weight_type",
                     "at weight_bits=8: found 'fp9', allowed: int, fp8_e4m3"),
    "format part the width cannot take": ("  weight_type: \"'fp8_e4m3'\"", "derived.weight_type", "fp8_e4m3"),
    "not a derivable knob": ("  execution: \"'engine'\"", "derived.execution", "allowed: batch, prompt, output"),
    "bad bit width": ("  kv_bits: \"weight_bits - 2\"", "derived.kv_bits",
                      "at weight_bits=8: found 6, allowed: 16, 8, 4"),
    "fractional batch": ("  batch: \"weight_bits / 3\"", "derived.batch",
                         "at weight_bits=8: found 2.6666666666666665, allowed: an integer from 1 to 1,048,576"),
    "division by zero": (f"  {CAPACITY}: \"1 / (weight_bits - 4)\"", CAPACITY, "at weight_bits=4: division by zero"),
    "device rejects value": (f"  {CAPACITY}: \"1000 - {BANDWIDTH} / 4\"", CAPACITY,
                             f"value 0.0 at {BANDWIDTH}=4000 on h100-sxm: "),
    "number, not text": (f"  {CAPACITY}: 300", CAPACITY, "found 300, allowed: an expression in quotes"),
    "bad syntax": (f"  {CAPACITY}: \"2 *\"", CAPACITY, "invalid syntax"),
    # A number compared with quoted text is never equal to it: refused, a swept knob's or a derived one's alike.
    "number compared with text": ("  act_bits: \"8 if weight_bits == '8' else 16\"", "derived.act_bits",
                                  "found the number weight_bits compared with quoted text '8', allowed: a number "
                                  "(weight_bits == 8, unquoted)"),
    # Compared with quoted text as asked, but the sweep never sets it: the message must not ask for quoted text.
    "text knob the sweep does not set": ("  batch: \"8 if node_link == 'roce-400g' else 2\"", "derived.batch",
                                         "'node_link' is not set in the sweep"),
}


@pytest.mark.parametrize("case", BAD_DERIVED, ids=list(BAD_DERIVED))
def test_bad_derived_is_one_line_with_file_line_key(tmp_path, tiny_model, case):
    block, key, detail = BAD_DERIVED[case]
    path = _write(tmp_path, _sweep_text(tiny_model, block + "\n"))
    with pytest.raises(InputError) as err:
        load_sweep(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}:9: derived.")
    assert key in message and detail.format(path=path) in message


def test_a_derived_number_compared_with_text_is_one_line(tmp_path, tiny_model):
    """A number derived above, compared with quoted text below: refused on the comparing line."""
    path = _write(tmp_path, _sweep_text(tiny_model, "  kv_bits: \"weight_bits\"\n"
                                                    "  act_bits: \"8 if kv_bits != 'x' else 16\"\n"))
    with pytest.raises(InputError) as err:
        load_sweep(path)
    assert str(err.value) == (f"{path}:10: derived.act_bits: found the number kv_bits compared with quoted text "
                              f"'x', allowed: a number (kv_bits == ..., unquoted)")


@pytest.mark.parametrize("expression", ["16 if weight_type == 8 else 8", "16 if weight_type else 8",
                                        "max(weight_type, 8)", "weight_type * 2"])
def test_a_text_knob_derived_above_is_read_only_by_comparing_it_with_text(tmp_path, tiny_model, expression):
    """weight_type derived on line 9 is text, as a swept one is: compared with a number it is never equal (a silent
    constant), as a condition always true, in arithmetic no number; each is refused on the reading line, and a
    comparison with quoted text reads it."""
    above = "  weight_type: \"'fp8_e4m3' if weight_bits == 8 else 'int'\"\n"
    path = _write(tmp_path, _sweep_text(tiny_model, above + f"  kv_bits: \"{expression}\"\n"))
    with pytest.raises(InputError) as err:
        load_sweep(path)
    assert str(err.value).startswith(f"{path}:10: derived.kv_bits: 'weight_type' is text (compare it with quoted "
                                     f"text: weight_type == '...')")
    path = _write(tmp_path, _sweep_text(tiny_model, above + "  kv_bits: \"8 if weight_type == 'fp8_e4m3' else 16\"\n"))
    assert sorted({point.kv_bits for point in load_sweep(path).points()}) == [8, 16]


def test_cli_bad_derived_exits_2_without_traceback(tmp_path, tiny_model, capsys):
    path = _write(tmp_path, _sweep_text(tiny_model, f"  {CAPACITY}: \"open('/etc/passwd')\"\n"))
    code = main(["check", path])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [f"explore: error: {path}:9: derived.{CAPACITY}: found "
                                                f"\"open('/etc/passwd')\", allowed: calls of min, max, round, abs, "
                                                f"log2, sqrt (not 'open')"]


def test_format_parts_derived_from_the_width_pair_them(tmp_path, tiny_model):
    """fp8 at 8 bits, nf4 at 4, integers at 16, 8-bit activations beside the fp8 weights: three points where a grid
    of the parts would be nine (and refused: nf4 has no 8-bit form), each with its parts as its columns."""
    text = (f"name: pairs\nmodel: {tiny_model}\ndevice: h100-sxm\nworkload: {{prompt: 16, output: 4}}\n"
            "format: {weight_bits: [16, 8, 4]}\n"
            "derived:\n"
            "  weight_type: \"'fp8_e4m3' if weight_bits == 8 else 'nf4' if weight_bits == 4 else 'int'\"\n"
            "  act_bits: \"8 if weight_type == 'fp8_e4m3' else 16\"\n"
            "  act_type: \"'fp8_e4m3' if weight_bits == 8 else 'int'\"\n")
    sweep = load_sweep(_write(tmp_path, text))
    assert sweep.size() == 3 and "weight_type" not in sweep.dimensions()
    # A point's generic knobs hold those away from their defaults (int elements).
    parts = {p.weight_bits: (dict(p.knobs).get("weight_type", "int"), p.act_bits, dict(p.knobs).get("act_type", "int"))
             for p in sweep.points()}
    assert parts == {16: ("int", 16, "int"), 8: ("fp8_e4m3", 8, "fp8_e4m3"), 4: ("nf4", 16, "int")}
    assert sweep.derived_values()["weight_type"] == ["int", "fp8_e4m3", "nf4"]


def test_an_engine_limit_derived_from_a_text_knob(tmp_path, tiny_model):
    """Each serving engine's limits may follow its layout: a text knob compared with quoted text picks them."""
    text = (f"name: limits\nmodel: {tiny_model}\ndevice: h100-sxm\nexecution: [eager, engine]\n"
            "serving: {requests: 4, rate: 10, prompt: {dist: fixed, tokens: 16}, output: {dist: fixed, tokens: 2}}\n"
            "derived: {max_seqs: \"8 if execution == 'engine' else 2\"}\n")
    sweep = load_sweep(_write(tmp_path, text))
    assert "max_seqs" not in sweep.dimensions()
    assert {p.execution: p.serving.max_seqs for p in sweep.points()} == {"eager": 2, "engine": 8}


def test_a_text_knob_compared_with_a_value_it_never_takes_is_refused(tmp_path, tiny_model):
    """'engin' for 'engine': the comparison would be false at every point, the limit one value throughout."""
    text = (f"name: limits\nmodel: {tiny_model}\ndevice: h100-sxm\nexecution: [eager, engine]\n"
            "serving: {requests: 4, rate: 10, prompt: {dist: fixed, tokens: 16}, output: {dist: fixed, tokens: 2}}\n"
            "derived: {max_seqs: \"8 if execution == 'engin' else 2\"}\n")
    path = _write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_sweep(path)
    assert str(err.value) == (f"{path}:6: derived.max_seqs: execution == 'engin': found 'engin' (did you mean "
                              "'engine'?), allowed: a value of execution (eager, graphs, engine)")
