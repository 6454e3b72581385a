"""What-ifs on the devices of a serving point's prefill pool alone (prefill_device.<field>: explore/pool_what_ifs.py).
The attention devices' (attention_device.<field>) are tested with them in test_attention_disaggregation.py."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.results import read_results
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import write_sweep, write_tiny_model
from workloads.requests import Fixed

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

H100_TDP_W, H100_USD_PER_HOUR = 700.0, 3.78  # hw_models/presets/h100-sxm.yaml: its datasheet TDP, Lambda's price


def _point(model: str, prefill_replicas: int = 1, **what_ifs) -> DesignPoint:
    spec = ServingSpec(requests=8, rate_per_s=50.0, prompt=Fixed(tokens=256), output=Fixed(tokens=8),
                       prefill_replicas=prefill_replicas)
    return DesignPoint(model=model, device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0, serving=spec,
                       execution="engine", **what_ifs)


@pytest.mark.parametrize(("what_ifs", "tdp_W"), [
    ({}, 2 * H100_TDP_W),
    # The prefill pool alone is capped: 400 W beside the decode replica's 700.
    ({"prefill_overrides": (("power.cap_W", 400.0),)}, 400.0 + H100_TDP_W),
    # A point's own what-if reaches a prefill pool of its device kind: both capped.
    ({"overrides": (("power.cap_W", 400.0),)}, 2 * 400.0),
    # The decode pool alone capped (Splitwise's HHcap): the prefill pool's own what-if wins over the point's.
    ({"overrides": (("power.cap_W", 400.0),), "prefill_overrides": (("power.cap_W", 700.0),)}, H100_TDP_W + 400.0),
])
def test_a_prefill_what_if_changes_the_prefill_pool_alone(evaluator, tmp_path, what_ifs, tdp_W):
    """The rated power of one prefill and one decode H100 under power limits, by hand (a capped GPU is rated at its
    cap, explore/metrics.py tdp_W)."""
    point = _point(write_tiny_model(tmp_path), **what_ifs)
    assert evaluator.evaluate(point).metrics["tdp_W"] == pytest.approx(tdp_W)


def test_a_prefill_pool_s_price_what_if(evaluator, tmp_path):
    """prefill_device.price.usd_per_hour prices the prefill replicas alone: 2 x $1.00 + $3.78 an hour."""
    point = _point(write_tiny_model(tmp_path), prefill_replicas=2,
                   prefill_overrides=(("price.usd_per_hour", 1.0),))
    assert evaluator.evaluate(point).metrics["usd_per_hour"] == pytest.approx(2 * 1.0 + H100_USD_PER_HOUR)


def test_a_slower_prefill_pool_is_never_faster_to_the_first_token(evaluator, tmp_path):
    """Halving the prefill devices' peaks and bandwidth lengthens the time to the first token (never shortens it)."""
    model = write_tiny_model(tmp_path)
    slow = (("compute.peak_TFLOPS.bf16", 494.5), ("memory.bandwidth_GBps", 1675.0))
    ttft = [evaluator.evaluate(_point(model, prefill_overrides=own)).metrics["ttft_s"] for own in ((), slow)]
    assert ttft[1] > ttft[0]


def test_a_point_without_a_prefill_pool_refuses_prefill_what_ifs(evaluator, tmp_path):
    point = _point(write_tiny_model(tmp_path), prefill_replicas=0, prefill_overrides=(("power.cap_W", 400.0),))
    with pytest.raises(Exception, match="prefill_overrides: found .* without the prefill pool"):
        evaluator.evaluate(point)
    assert replace(point, prefill_overrides=()).point_id != point.point_id


SERVING = """  requests: 6
  prompt: {dist: fixed, tokens: 32}
  output: {dist: fixed, tokens: 4}
  rate: 100
"""


@pytest.mark.parametrize(("switch", "what_if", "off", "pool_present"), [
    ("  prefill_replicas: [0, 1]\n", "prefill_device.power.cap_W: [300, 700]", "prefill_replicas is 0",
     lambda row: row["prefill_replicas"] == 1),
    ("  attention_device: [none, h20]\n", "attention_device.memory.bandwidth_GBps: [2000, 8000]",
     "attention_device is none", lambda row: row["attention_device"] == "h20"),
    ("  mixed_device: l4\n  mixed_replicas: [0, 1]\n", "mixed_device.memory.bandwidth_GBps: [300, 600]",
     "mixed_replicas is 0", lambda row: row["mixed_replicas"] == 1),
])
def test_a_sweep_sweeps_a_pool_s_fields(tmp_path, capsys, caplog, switch, what_if, off, pool_present):
    """A column each, a point per value where the pool is, and a point without it that is its plain design, whose key
    the plain sweep gives it (the sweep notes the repeat; a grid visits every point, so the one not stored is a
    repeat, not a search that ran out of proposals)."""
    model = write_tiny_model(tmp_path)
    head = f"name: pools\nmodel: {model}\ndevice: h100-sxm\nexecution: engine\nserving:\n{SERVING}"
    assert main([write_sweep(tmp_path, head), "--out", str(tmp_path / "plain")]) == 0
    (baseline,) = read_results(tmp_path / "plain")
    path = write_sweep(tmp_path, f"{head}{switch}overrides:\n  {what_if}\n")
    assert main([path, "--out", str(tmp_path / "out")]) == 0
    column = what_if.split(":")[0]
    assert f"{column} changes nothing where {off}" in capsys.readouterr().err
    assert "the grid's 4 points are 3 distinct designs" in caplog.text and "budget" not in caplog.text
    rows = read_results(tmp_path / "out")
    assert {row[column] for row in rows if pool_present(row)} == set(json.loads(what_if.split(": ")[1]))
    assert [row["point_id"] for row in rows if not pool_present(row)] == [baseline["point_id"]]


@pytest.mark.parametrize(("serving", "overrides", "found"), [
    ("", "  prefill_device.power.cap_W: 300\n",
     "overrides.prefill_device.power.cap_W: found without the prefill pool, allowed: with a serving: "
     "section's prefill pool"),
    ("  prefill_replicas: 1\n", "  prefill_device.power.cap_W: 5000\n",
     "value 5000 on h100-sxm: prefill_device.power"),
    ("  prefill_replicas: 1\n  prefill_device: l40s\n", "  prefill_device.memory.bandwith_GBps: 900\n",
     "on l40s: prefill_device.memory.bandwith_GBps: no such field to override"),
    ("", "  attention_device.memory.bandwidth_GBps: 8000\n",
     "overrides.attention_device.memory.bandwidth_GBps: found without the attention devices"),
    ("  attention_device: none\n", "  attention_device.memory.bandwidth_GBps: 8000\n",
     "overrides.attention_device.memory.bandwidth_GBps: found without the attention devices"),
    ("  attention_device: h20\n", "  attention_device.memory.bandwith_GBps: 8000\n",
     "attention_device.memory.bandwith_GBps: no such field to override (did you mean 'bandwidth_GBps'?)"),
    ("  attention_device: h20\n", "  attention_device.memory.bandwidth_GBps: [4000, -5]\n",
     "value -5 on h20: attention_device.memory.bandwidth_GBps: found -5"),
    ("  attention_device: h20\n", "  attention_device.power.cap_W: [100, 300]\n  attention_device.power.idle_W: 150\n",
     "the values attention_device.power.cap_W=100, attention_device.power.idle_W=150 together on h20"),
    ("  attention_device: h20\n", "  attention_device.memory: 8000\n", "(found 'attention_device.memory')"),
    ("", "  mixed_device.memory.bandwidth_GBps: 600\n",
     "overrides.mixed_device.memory.bandwidth_GBps: found without the mixed replicas, allowed: with a serving: "
     "section's mixed replicas"),
])
def test_a_sweep_s_pool_what_if_mistakes_get_one_line(tmp_path, capsys, serving, overrides, found):
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: pools\nmodel: {model}\ndevice: h100-sxm\nserving:\n{SERVING}{serving}"
                                 f"overrides:\n{overrides}")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and found in err, err


def test_explore_run_takes_prefill_what_ifs(tmp_path, capsys):
    """--set prefill_device.<field> needs a prefill pool; with one, the header and --json name it."""
    model = write_tiny_model(tmp_path)
    flags = ["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "10", "--requests", "4",
             "--prompt", "32", "--output", "4", "--set", "prefill_device.power.cap_W=400"]
    assert main(flags) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--set prefill_device.power.cap_W: found without the prefill pool" in err
    assert main([*flags, "--prefill-replicas", "1"]) == 0
    assert "what-if (--set): prefill_device.power.cap_W = 400" in capsys.readouterr().out
    assert main([*flags, "--prefill-replicas", "1", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["prefill_device.power.cap_W"] == 400 and metrics["tdp_W"] == pytest.approx(400.0 + H100_TDP_W)


def test_explore_run_names_a_power_limit_on_the_prefill_pool(tmp_path, capsys):
    """A cap on the prefill pool alone, from --set or from its device file, is named in the header beside the pools."""
    model = write_tiny_model(tmp_path)
    capped = tmp_path / "h100-400w.yaml"
    capped.write_text("base: h100-sxm\npower:\n  cap_W: 400\n")
    run = ["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "10", "--requests", "4",
           "--prompt", "32", "--output", "4", "--prefill-replicas", "1"]
    for flags in (["--set", "prefill_device.power.cap_W=400"], ["--prefill-device", str(capped)]):
        assert main([*run, *flags]) == 0
        header = capsys.readouterr().out.splitlines()[0]
        assert "power limit 400 W a device on the prefill pool" in header, header


def test_a_pool_s_field_may_be_derived_from_another(tmp_path, capsys):
    """derived: attention_device.memory.capacity_GB from the swept attention_device.memory.bandwidth_GBps, as a
    device's field is derived from another (more HBM stacks: both grow): a column of its own, 0.024 x each bandwidth
    on the H20 points, none on the point without attention devices; a derived pool field where no point has the pool,
    or one read but never swept, is one line."""
    model = write_tiny_model(tmp_path)
    head = f"name: pools\nmodel: {model}\ndevice: h100-sxm\nexecution: engine\nserving:\n{SERVING}"
    path = write_sweep(tmp_path, head + "  attention_device: [none, h20]\noverrides:\n"
                                        "  attention_device.memory.bandwidth_GBps: [4000, 8000]\nderived:\n"
                                        "  attention_device.memory.capacity_GB: '0.024 * "
                                        "attention_device.memory.bandwidth_GBps'\n")
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = read_results(tmp_path / "out")
    derived = {row["attention_device.memory.bandwidth_GBps"]: row["attention_device.memory.capacity_GB"]
               for row in rows if row["attention_device"] == "h20"}
    assert derived == {4000: pytest.approx(96.0), 8000: pytest.approx(192.0)}
    assert [row["attention_device.memory.capacity_GB"] for row in rows if row["attention_device"] == "none"] == [None]
    capsys.readouterr()
    for extra, found in (("derived:\n  prefill_device.power.cap_W: '300'\n",
                          "derived.prefill_device.power.cap_W: found without the prefill pool"),
                         ("  attention_device: h20\nderived:\n  attention_device.power.cap_W: "
                          "'attention_device.power.idle_W * 4'\n",
                          "unknown knob 'attention_device.power.idle_W'; a device field must be swept")):
        bad = write_sweep(tmp_path, head + extra)
        assert main(["check", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and found in err, err


def test_explore_check_counts_the_distinct_designs_it_evaluates(tmp_path, capsys):
    """A grid crossing prefill_replicas [0, 1] with two prefill caps holds 4 points and 3 designs: explore check says
    it evaluates the 3, as the run then does."""
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: pools\nmodel: {model}\ndevice: h100-sxm\nserving:\n{SERVING}"
                                 "  prefill_replicas: [0, 1]\noverrides:\n  prefill_device.power.cap_W: [300, 700]\n")
    assert main(["check", path]) == 0
    assert "4 design points (3 distinct designs evaluated)" in capsys.readouterr().out


@pytest.mark.parametrize("pool", [{"prefill_replicas": 1, "prefill_device": "l4"},
                                  {"mixed_device": "l4", "mixed_replicas": 1}])
def test_a_pool_of_another_device_runs_over_its_own_link(evaluator, tmp_path, pool):
    """The point's link joins the point's devices: a pool of another device (L4 pairs, which have no NVLink) keeps its
    own (PCIe 4), as it keeps its own fields. So naming the H100's own link, nvlink4, is the point with its link left
    to the default, and a what-if on the point's link leaves the other pool's all-reduces as they were."""
    spec = ServingSpec(requests=8, rate_per_s=50.0, prompt=Fixed(tokens=256), output=Fixed(tokens=8), **pool)
    point = DesignPoint(model=write_tiny_model(tmp_path), device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0,
                        serving=spec, execution="engine", tp=2)
    default = evaluator.evaluate(point).metrics
    named = evaluator.evaluate(replace(point, link="nvlink4")).metrics
    for key in ("ttft_s", "tpot_s", "time_communication_s"):
        assert named[key] == pytest.approx(default[key], rel=1e-12), key
    faster = evaluator.evaluate(replace(point, link_overrides=(("bandwidth_GBps", 9000.0),))).metrics
    assert faster["time_communication_s"] <= default["time_communication_s"]


@pytest.mark.parametrize("pool", [{"prefill_replicas": 1}, {"mixed_replicas": 1}])
def test_a_pool_of_a_device_without_a_link_of_its_own_takes_the_point_s(evaluator, tmp_path, pool):
    """A device file (an L4 on `base: l4`) names no link of its own: its pool's tp pairs run over the point's, the one
    link the design names, as the L4 preset's run over its own PCIe 4. So over a named pcie4-x16 the file, which
    changes nothing, is the preset."""
    copy = tmp_path / "l4-copy.yaml"
    copy.write_text("base: l4\n")
    device = "prefill_device" if "prefill_replicas" in pool else "mixed_device"
    metrics = []
    for name in ("l4", str(copy)):
        spec = ServingSpec(requests=8, rate_per_s=50.0, prompt=Fixed(tokens=256), output=Fixed(tokens=8),
                           **pool, **{device: name})
        point = DesignPoint(model=write_tiny_model(tmp_path), device="h100-sxm", batch=spec.max_seqs, prompt=0,
                            output=0, serving=spec, execution="engine", tp=2, link="pcie4-x16")
        metrics.append(evaluator.evaluate(point).metrics)
    for key in ("ttft_s", "tpot_s", "time_communication_s"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-9), key
