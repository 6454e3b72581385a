"""Sweep files: every class of mistake is one clear line; a valid file expands to the full grid."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_sweep import write_sweep, write_tiny_model

from explore.sweep import load_sweep
from workloads.errors import InputError


@pytest.fixture
def tiny_model(tmp_path: Path) -> str:
    return write_tiny_model(tmp_path)


write = write_sweep


def test_grid_counts_every_combination(tmp_path):
    path = write(tmp_path, """
name: g
model: [llama-2-7b, llama-3-8b]
device: [h100-sxm, a100-sxm-80gb, l4]
workload: {batch: [1, 8], prompt: 128, output: [8, 16]}
format: {weight_bits: [16, 4], kv_bits: [16, 8, 4]}
overrides: {device.memory.bandwidth_GBps: {range: [1000, 3000], steps: 3}}
""")
    points = load_sweep(path).points()
    # 2 models x 3 devices x 3 bandwidths x 2 batches x 2 outputs x 2 weight widths x 3 KV widths
    assert len(points) == 2 * 3 * 3 * 2 * 2 * 2 * 3
    assert len({p.point_id for p in points}) == len(points)
    bandwidths = sorted({dict(p.overrides)["memory.bandwidth_GBps"] for p in points})
    assert bandwidths == [1000.0, 2000.0, 3000.0]


def test_log_range_is_geometric(tmp_path):
    path = write(tmp_path, "name: g\nmodel: llama-2-7b\ndevice: h100-sxm\n"
                           "overrides: {device.memory.bandwidth_GBps: {range: [100, 10000], steps: 3, scale: log}}\n")
    values = [dict(p.overrides)["memory.bandwidth_GBps"] for p in load_sweep(path).points()]
    assert values == pytest.approx([100, 1000, 10000])


def test_config_json_path_is_a_model(tmp_path, tiny_model):
    sweep = load_sweep(write(tmp_path, f"name: t\nmodel: {tiny_model}\ndevice: h100-sxm\n"))
    assert sweep.points()[0].model == tiny_model


BAD_SWEEPS = {
    "non-integer batch": ("workload: {batch: [1, 2.5]}", 4, "workload.batch.1", "2.5"),
    "string batch": ("workload: {batch: eight}", 4, "workload.batch", "'eight'"),
    "zero output": ("workload: {output: 0}", 4, "workload.output", "0"),
    "typo in nested key": ("workload:\n  batch: 1\n  promt: 64", 6, "workload.promt", "did you mean 'prompt'"),
    "typo in top key": ("workloads: {batch: 1}", 4, "workloads", "did you mean 'workload'"),
    "bad bit width": ("format: {kv_bits: 3}", 4, "format.kv_bits", "16, 8 or 4"),
    "bad weight bit width": ("format: {weight_bits: 7}", 4, "format.weight_bits", "16, 8, 6, 5, 4, 3 or 2"),
    # An integer knob is written as an integer, whether it takes any (batch) or one of a list (bit widths, group
    # sizes): 1.0 and 4.0 alike are refused, and so is a YAML boolean, which a list holding 0 would read as 0.
    "decimal batch": ("workload: {batch: 1.0}", 4, "workload.batch", "found 1.0, allowed: an integer"),
    "decimal bit width": ("format: {weight_bits: [4.0, 16]}", 4, "format.weight_bits.0",
                          "found 4.0, allowed: one of the integers 16, 8, 6, 5, 4, 3, 2"),
    "decimal group size": ("format: {weight_bits: 4, group_size: 32.0}", 4, "format.group_size",
                           "found 32.0, allowed: one of the integers"),
    "boolean bit width": ("format: {weight_bits: 4, head_bits: false}", 4, "format.head_bits",
                          "found false, allowed: one of the integers 0, 3"),
    # A mapping given for a value of a list of choices is quoted as any value (it was 'parallel.ep: 'split' or
    # 'spread'', as a rule over a section's fields reads).
    "mapping as a choice": ("parallel: {tp: 2, ep: {values: [split, spread]}}", 4, "parallel.ep",
                            "found {values: ['split', 'spread']}, allowed: 'split' or 'spread'"),
    "mapping as a bit width": ("format: {weight_bits: {four: 4}}", 4, "format.weight_bits",
                               "found {four: 4}, allowed: one of the integers 16, 8, 6, 5, 4, 3, 2"),
    "bad sparsity pattern": ("format: {sparsity: [dense, '3:4', '2:3']}", 4, "format.sparsity.2",
                             "'2:3', allowed: dense or N:M"),
    "negative bandwidth": ("overrides: {device.memory.bandwidth_GBps: [1000, -5]}", 4,
                           "overrides.device.memory.bandwidth_GBps", "greater than 0"),
    "unknown device field": ("overrides: {device.memory.bandwith_GBps: 1}", 4, "device.memory.bandwith_GBps",
                             "did you mean 'bandwidth_GBps'"),
    "override of an unread field": ("overrides: {device.memory.l2_cache_MB: [40, 80]}", 4,
                                    "device.memory.l2_cache_MB", "not a what-if knob"),
    "derived unread field": ("overrides: {device.memory.bandwidth_GBps: [1000, 2000]}\nderived:\n"
                             "  device.power.tdp_W: '0.2 * device.memory.bandwidth_GBps'", 6,
                             "derived.device.power.tdp_W", "cap a GPU's power with power.cap_W"),
    # Each value loads alone; the cap and the idle power are compared (idle below the cap) only together.
    "overrides compared together": ("overrides: {device.power.cap_W: [300], device.power.idle_W: [60, 400]}", 4,
                                    "power.cap_W=300, power.idle_W=400", "cap_W (300) must be above idle_W (400)"),
    "empty device list": ("workload: {batch: 1}\noverrides: {device.memory.bandwidth_GBps: []}", 5,
                          "overrides.device.memory.bandwidth_GBps", "found [], allowed: a list of at least 1"),
    "infinite override": ("overrides: {device.memory.bandwidth_GBps: [1000, .inf]}", 4,
                          "overrides.device.memory.bandwidth_GBps.1", "found .inf, allowed: a finite number"),
    "duplicate key": ("model: llama-3-8b", 4, "model", "duplicate key (first at line 2)"),
    "repeated value": ("workload: {batch: [1, 8, 1]}", 4, "workload.batch", "allowed: distinct values (1 is listed"),
    # The name is named where it stands, as a constraint's (it read 'found ['tpot'], ... (found 'tpot')').
    "unknown metric in objective": ("objectives: {minimize: [tpot_s, tpot]}", 4, "objectives.minimize.1",
                                    "found 'tpot', allowed: a metric name (did you mean 'tpot_s'?): one of ttft_s"),
    "malformed constraint": ("constraints: ['ttft_s below 3']", 4, "constraints", "METRIC OP NUMBER"),
    "unknown strategy": ("search: {strategy: annealing}", 4, "search.strategy", "'grid'"),
}


@pytest.mark.parametrize("case", BAD_SWEEPS, ids=list(BAD_SWEEPS))
def test_bad_sweep_names_file_line_key_and_value(tmp_path, case):
    extra, line, key, detail = BAD_SWEEPS[case]
    path = write(tmp_path, f"name: bad\nmodel: llama-2-7b\ndevice: h100-sxm\n{extra}\n")
    with pytest.raises(InputError) as err:
        load_sweep(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: ")
    assert key in message and detail in message


def test_a_key_given_no_values_allows_one_value_in_the_singular(tmp_path):
    """An empty grid (a key's list of no values) is refused allowing 'a list of at least 1 value' (it read
    'value(s)')."""
    path = write(tmp_path, "name: bad\nmodel: llama-2-7b\ndevice: h100-sxm\nworkload: {batch: []}\n")
    with pytest.raises(InputError) as err:
        load_sweep(path)
    assert str(err.value) == f"{path}:4: workload.batch: found [], allowed: a list of at least 1 value"


@pytest.mark.parametrize("field,value,allowed", [
    ("model", "llama-9-7b", "llama-2-7b"), ("device", "h100-sxn", "did you mean 'h100-sxm'"),
])
def test_unknown_preset_lists_what_exists(tmp_path, field, value, allowed):
    other = {"model": "device: h100-sxm", "device": "model: llama-2-7b"}[field]
    path = write(tmp_path, f"name: bad\n{field}: {value}\n{other}\n")
    with pytest.raises(InputError, match=allowed) as err:
        load_sweep(path)
    assert str(err.value).startswith(f"{path}:2: {field}: ")


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "name: x\nmodel: llama-2-7b\n  device: h100-sxm\n")
    with pytest.raises(InputError, match=r":3: not valid YAML"):
        load_sweep(path)


def test_missing_required_key(tmp_path):
    with pytest.raises(InputError, match="device: missing"):
        load_sweep(write(tmp_path, "name: x\nmodel: llama-2-7b\n"))


@pytest.mark.parametrize("constraints, line, expected", [
    # Each item is judged on its own: its index and line named, the value found quoted once.
    ("['ttft_s <= 2', 'tpot_x <= 1']", 4, "constraints.1: found 'tpot_x <= 1', allowed: a numeric metric (did you "
     "mean 'tpot_s'?) as METRIC in 'METRIC OP NUMBER'"),
    ("\n  - ttft_s <= 2\n  - tpot_s about 1", 6, "constraints.1: found 'tpot_s about 1', allowed: 'METRIC OP NUMBER' "
     "with OP one of <=, <, >=, >, == (e.g. 'tpot_s <= 0.1')"),
    # A guess at a mapping form, and a single text: what the key takes.
    ("{tpot_s: {max: -1}}", 4, "constraints: found {tpot_s: {max: -1}}, allowed: a list of constraints, each "
     "'METRIC OP NUMBER' with OP one of <=, <, >=, >, == (e.g. 'tpot_s <= 0.1')"),
    ("'tpot_s <= 1'", 4, "constraints: found 'tpot_s <= 1', allowed: a list of constraints, each 'METRIC OP NUMBER'"),
])
def test_a_bad_constraint_is_one_line_with_one_found(tmp_path, constraints, line, expected):
    path = write(tmp_path, f"name: bad\nmodel: llama-2-7b\ndevice: h100-sxm\nconstraints: {constraints}\n")
    with pytest.raises(InputError) as err:
        load_sweep(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: {expected}"), message
    assert message.count("found") == 1 and "\n" not in message


def test_the_links_of_a_point_on_one_device_are_one_design(tmp_path, tiny_model, tiny_evaluator, capsys):
    """link: [nvlink4, pcie5-x16] x tp: [1, 2]: at tp 1 (pp 1) no device pair, pool, replica or hand-off reads the link,
    so its two points are one design; by hand 2 links x tp 2 + 1 = 3 designs of 4 points, counted by explore check and
    evaluated once each."""
    from explore.cli import main
    from explore.runner import run_sweep

    path = write(tmp_path, f"name: links\nmodel: {tiny_model}\ndevice: h100-sxm\nexecution: engine\n"
                           f"workload: {{batch: 1, prompt: 16, output: 2}}\n"
                           f"parallel: {{tp: [1, 2], link: [nvlink4, pcie5-x16]}}\n")
    assert main(["check", path]) == 0
    assert "4 design points (3 distinct designs evaluated)" in capsys.readouterr().out
    rows = run_sweep(load_sweep(path), tmp_path / "out", evaluator=tiny_evaluator)
    assert len(rows) == 3
    assert sorted((row["tp"], row["link"]) for row in rows) == [(1, "default"), (2, "nvlink4"), (2, "pcie5-x16")]


@pytest.mark.parametrize("flag", ["--batch", "--weight-bits", "--head-bits", "--group-size"])
def test_an_integer_flag_written_as_a_decimal_is_refused_in_one_line(capsys, flag):
    """explore run reads every integer knob's flag as an integer, as the sweep file does: 4.0 is refused alike for a
    knob that takes any integer (--batch) and for one that takes integers from a list (bit widths, group sizes)."""
    from explore.cli import main

    assert main(["run", "--model", "llama-2-7b", "--device", "h100-sxm", flag, "4.0"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{flag}: found '4.0', allowed: an integer" in err, err
