"""An autoscaled pool as a user runs it: `explore run --max-replicas N --autoscale-target T` says how it scales, adds
the replicas it held, rents and idles only those; a sweep writes the autoscale columns and the report draws the
replicas held; bad or idle settings are one line, exit 2."""

from __future__ import annotations

import csv
import json

import pytest

from explore.cli import main
from explore.results import read_results
from hw_models.registry import load_device
from tests.explore.tiny_sweep import write_sweep, write_tiny_model, write_tiny_serving_sweep

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

# The first 1,000 requests of the Splitwise coding trace at their own times (bursts of 500 a minute between lulls).
RUN = ["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--execution", "engine", "--serving", "--trace",
       "splitwise-code", "--arrival", "trace", "--requests", "1000", "--slo-ttft", "2", "--slo-tpot", "0.1"]


def _run(capsys, *flags: str) -> dict:
    assert main([*RUN, *flags, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow  # a whole run of seconds: run with the slow checks
def test_an_autoscaled_pool_rents_the_replicas_it_held(capsys):
    """From one replica up to four on the batch size: it holds between one and four on average, serves more requests
    within the SLO than one replica alone, and rents (and idles) only what it held: its hourly price is the H100's
    times the mean replicas, below four replicas' for the peak."""
    one, four = _run(capsys), _run(capsys, "--replicas", "4")
    scaled = _run(capsys, "--max-replicas", "4", "--autoscale-target", "16", "--autoscale-metric", "running",
                  "--cold-start-s", "10")
    assert 1.0 < scaled["mean_replicas"] < 4.0 and 2 <= scaled["max_replicas_held"] <= 4
    assert scaled["slo_attainment"] > one["slo_attainment"]
    hourly = load_device("h100-sxm").price.usd_per_hour
    assert scaled["usd_per_hour"] == pytest.approx(hourly * scaled["mean_replicas"])
    assert scaled["usd_per_hour"] < four["usd_per_hour"] == pytest.approx(4 * hourly)
    assert "mean_replicas" not in one
    assert main([*RUN, "--max-replicas", "4", "--autoscale-target", "4"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert ("1 replica scaling up to 4 as the HPA does, on waiting requests near 4 a replica, each new one serving "
            "after its weights' read from a local NVMe SSD") in header, header
    # A rate profile whose requests all arrive in its first phase changes nothing, and says so.
    assert main([*RUN, "--requests", "50", "--arrival", "poisson", "--rate", "5", "--rate-profile", "60:1,60:3"]) == 0
    assert "notice: --rate-profile: every one of the 50 requests arrives within its first phase" in \
        capsys.readouterr().err
    # A pool whose most replicas are its least never scales, and says so.
    assert main([*RUN, "--requests", "50", "--max-replicas", "1", "--autoscale-target", "4"]) == 0
    assert "notice: --max-replicas 1 is the least the pool keeps: it never scales" in capsys.readouterr().err
    # One replica that may scale to more has replicas to route among.
    assert main([*RUN, "--requests", "50", "--max-replicas", "2", "--autoscale-target", "4", "--router",
                 "least_tokens"]) == 0
    capsys.readouterr()


def test_a_sweep_writes_the_autoscale_columns_and_draws_the_replicas_held(tmp_path):
    """A sweep of an autoscaled pool under a load in phases (the trace's lengths, Poisson arrivals)."""
    path = write_sweep(tmp_path, "name: scaled\nmodel: llama-2-7b\ndevice: h100-sxm\nexecution: engine\nserving:\n"
                                 "  trace: splitwise-code\n  arrival: poisson\n  rate: 2\n  requests: 400\n"
                                 "  rate_profile: [[60, 1], [30, 4]]\n  replicas: [1, 2]\n"
                                 "  max_replicas: 3\n  autoscale_target: 2\n  cold_start_s: 5\n")
    out = tmp_path / "out"
    assert main(["--quiet", path, "--out", str(out)]) == 0
    with open(out / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert {row["max_replicas"] for row in rows} == {"3"} and all(float(row["mean_replicas"]) >= 1 for row in rows)
    assert (out / "figures" / "serving_timeline.png").exists()
    assert "mean replicas" in (out / "report.md").read_text()  # the tables' column
    # The header names the phases the rate runs in (2 req/s is only the base), as `explore report` re-draws it too.
    phases = "poisson arrivals at 2 req/s (x1 for 60 s then x4 for 30 s, repeating)"
    assert phases in (out / "report.md").read_text()
    assert main(["report", str(out)]) == 0
    assert phases in (out / "report.md").read_text()


@pytest.mark.parametrize(("flags", "words"), [
    (("--max-replicas", "4"), "--autoscale-target: found none with --max-replicas 4, allowed: a number > 0"),
    (("--replicas", "3", "--max-replicas", "2", "--autoscale-target", "4"),
     "--max-replicas: found 2, allowed: an integer >= replicas (3)"),
    (("--max-replicas", "4", "--autoscaler", "load_planner", "--mixed-replicas", "1", "--mixed-device", "l4"),
     "--mixed-replicas: found 1 with --max-replicas 4, allowed: 0 (Dynamo's planners scale one kind of worker"),
    (("--autoscale-target", "4",), "--autoscale-target: found 4 with no autoscaling, allowed: with --max-replicas"),
    (("--max-replicas", "0", "--autoscale-target", "4"), "--max-replicas: found 0, allowed: an integer >= replicas"),
    # Every replica a pool may hold is built: 100,000 had built 100,000 simulated engines.
    (("--max-replicas", "100000", "--autoscale-target", "4"),
     "--max-replicas: found 100,000, allowed: at most 2,048 replicas in all the pools"),
    (("--max-replicas", "4", "--autoscale-target", "4", "--cold-start-s", "-1"), "--cold-start-s: found -1 with"),
    (("--rate-profile", "600:1"), "--rate-profile: found phases with --arrival 'trace', allowed: poisson or gamma"),
    (("--arrival", "poisson", "--rate", "2", "--rate-profile", "600-1"), "--rate-profile: found '600-1', allowed: "
                                                                          "phases S:X separated by commas"),
    (("--arrival", "poisson", "--rate", "2", "--rate-profile", "600:0"), "--rate-profile: found [[600, 0]], allowed: "
                                                                          "phases [duration_s > 0, multiplier >= 0]"),
])
def test_bad_or_idle_autoscale_settings_are_one_line(capsys, flags, words):
    assert main([*RUN, *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err, err


def test_a_prefill_and_a_decode_pool_scale_each_on_its_own_load(capsys):
    """Disaggregated, the prefill pool from one up to three and the decode pool from one up to four, each on its own
    requests running against the same target: together they hold between two and seven, and rent each pool's
    replica-hours (both H100s here: the H100's hourly price times the mean replicas of both)."""
    scaled = _run(capsys, "--arrival", "poisson", "--rate", "16", "--prefill-replicas", "1",
                  "--prefill-max-replicas", "3", "--max-replicas", "4", "--autoscale-target", "4",
                  "--autoscale-metric", "running", "--cold-start-s", "10")
    assert 2.0 < scaled["mean_replicas"] < 7.0
    hourly = load_device("h100-sxm").price.usd_per_hour
    assert scaled["usd_per_hour"] == pytest.approx(hourly * scaled["mean_replicas"])
    assert main([*RUN, "--prefill-replicas", "2", "--prefill-max-replicas", "1", "--max-replicas", "2",
                 "--autoscale-target", "4"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--prefill-max-replicas: found 1, allowed: an integer >= " in err, err
    assert main([*RUN, "--prefill-max-replicas", "2", "--autoscale-target", "4"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--prefill-max-replicas: found 2 with no prefill pool" in err, err


@pytest.mark.parametrize(("profile", "words"), [
    # Two profiles listed as if swept: pydantic said 'serving.rate_profile.0.0: found [600, 1], allowed: a number'.
    ("[[[600, 1], [300, 3]], [[600, 1], [300, 2]]]", "serving.rate_profile: found [[[600, 1], [300, 3]], [[600, 1], "
     "[300, 2]]], allowed: one profile, a list of phases [duration_s, multiplier], e.g. [[600, 1], [300, 3]] (a sweep "
     "has one profile: its list is the phases, not profiles to compare)"),
    # One phase without its list ('found 600, allowed: a valid tuple'), the flag's text, a mapping ('a valid list').
    ("[600, 1]", "serving.rate_profile: found [600, 1], allowed: one profile, a list of phases"),
    ("'600:1,300:3'", "serving.rate_profile: found '600:1,300:3', allowed: one profile, a list of phases"),
    ("{600: 1, 300: 3}", "serving.rate_profile: found {600: 1, 300: 3}, allowed: one profile, a list of phases"),
    # A phase without its multiplier ('serving.rate_profile.1.1: missing, allowed: a value (the key is required)').
    ("[[600, 1], [300]]", "serving.rate_profile: found [[600, 1], [300]], allowed: one profile, a list of phases"),
])
def test_a_sweep_rate_profile_of_the_wrong_shape_says_what_one_is(tmp_path, capsys, profile, words):
    path = write_sweep(tmp_path, "name: phased\nmodel: llama-2-7b\ndevice: h100-sxm\nserving:\n  prompt: 512\n"
                                 f"  output: 64\n  rate: 2\n  rate_profile: {profile}\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f":8: {words}" in err, err


def test_a_sweep_names_a_serving_setting_s_conflict_by_its_key(tmp_path, capsys):
    """A point's serving settings that conflict are named as the sweep writes them, at their line:
    'serving.max_replicas' (explore run names the flag), where the message had named the field alone."""
    path = write_sweep(tmp_path, "name: bad\nmodel: llama-2-7b\ndevice: h100-sxm\nserving:\n  prompt: 512\n"
                                 "  output: 64\n  rate: 2\n  replicas: 4\n  max_replicas: 3\n  autoscale_target: 2\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and ":9: serving.max_replicas: found 3, allowed: an integer >= " \
        "replicas (4)" in err, err


def test_a_pool_that_never_scales_is_the_fixed_pool_s_design_in_a_grid_and_its_check(tmp_path, capsys):
    """replicas 1 x max_replicas [1, 2] x autoscale_target [4, 8] x router [least_tokens, round_robin]: at max_replicas
    1 no replica is ever added and none is routed among, so its four points are one design, the fixed replica's (its
    key, as the sweep without autoscaling or a router has it); at max_replicas 2 each of the four is its own. By hand:
    5 of 8 designs, 3 of the 8 points evaluated again, which the check counts and names."""
    model = write_tiny_model(tmp_path)
    head = (f"name: scaled\nmodel: {model}\ndevice: h100-sxm\nexecution: graphs\nserving:\n  requests: 6\n"
            f"  prompt: 32\n  output: 4\n  rate: 50\n")
    assert main([write_sweep(tmp_path, head), "--out", str(tmp_path / "plain"), "--quiet"]) == 0
    (plain,) = read_results(tmp_path / "plain")
    path = write_sweep(tmp_path, head + "  max_replicas: [1, 2]\n  autoscale_target: [4, 8]\n"
                                        "  router: [least_tokens, round_robin]\n")
    capsys.readouterr()
    assert main(["check", path]) == 0
    said = capsys.readouterr().out
    assert "8 design points (5 distinct designs evaluated)" in said, said
    assert ("3 of 8 points are another point's design, run once: router changes nothing where one replica in each "
            "pool and one pipeline stage; autoscale_target changes nothing where max_replicas is replicas (no replica "
            "is ever added)") in said, said
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = read_results(tmp_path / "out")
    fixed = [row for row in rows if row.get("max_replicas") is None]
    assert [row["point_id"] for row in fixed] == [plain["point_id"]] and fixed[0].get("autoscale_target") is None
    assert len(rows) == 5 and {(row["autoscale_target"], row["router"]) for row in rows if row not in fixed} == {
        (4, "least_tokens"), (4, "round_robin"), (8, "least_tokens"), (8, "round_robin")}


def test_a_sweep_still_refuses_a_fleet_beside_a_planner_at_its_most_replicas(tmp_path, capsys):
    """A pool whose most replicas are its least is read as fixed only after its settings are checked as given: a fleet
    of mixed devices beside a Dynamo planner (which scales one kind of worker) stays one line, exit 2, as `explore
    run` refuses it."""
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: scaled\nmodel: {model}\ndevice: h100-sxm\nserving:\n  requests: 6\n"
                                 f"  prompt: 32\n  output: 4\n  rate: 50\n  mixed_device: l4\n  mixed_replicas: 1\n"
                                 f"  max_replicas: 1\n  autoscaler: load_planner\n  slo: {{ttft_s: 1, tpot_s: 0.1}}\n")
    capsys.readouterr()
    assert main(["check", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mixed_replicas" in err and "max_replicas" in err, err


def test_a_sweep_derives_an_autoscale_target_from_the_limits(tmp_path):
    """derived: autoscale_target = max_seqs / 4 over max_seqs 32 and 64: each point scales on its own target (8 and
    16 requests a replica), in a column of its own beside the autoscale columns."""
    path = write_sweep(tmp_path, "name: derived\nmodel: llama-2-7b\ndevice: h100-sxm\nexecution: engine\nserving:\n"
                                 "  prompt: 512\n  output: 64\n  rate: 8\n  requests: 100\n  max_seqs: [32, 64]\n"
                                 "  max_replicas: 3\nderived:\n  autoscale_target: \"max_seqs / 4\"\n")
    out = tmp_path / "out"
    assert main(["--quiet", path, "--out", str(out)]) == 0
    with open(out / "results.csv", newline="") as file:
        rows = {row["max_seqs"]: row for row in csv.DictReader(file)}
    assert (float(rows["32"]["autoscale_target"]), float(rows["64"]["autoscale_target"])) == (8.0, 16.0)
    assert all(float(row["mean_replicas"]) >= 1 for row in rows.values())


def test_the_sla_planner_scales_a_rising_load_and_rents_what_it_held(capsys):
    """Dynamo's SLA planner deciding every 60 s, the trace's lengths arriving at 10 req/s for 120 s then 40: it scales
    up once an interval has seen the busy phase (the trace's own minute-long bursts average out within an interval),
    holds between one and four replicas on average, rents the H100's hourly price times those, and the header says
    how it scales."""
    scaled = _run(capsys, "--arrival", "poisson", "--rate", "10", "--rate-profile", "120:1,240:4", "--requests", "4000",
                  "--max-replicas", "4", "--autoscaler", "sla_planner", "--autoscale-interval-s", "60",
                  "--cold-start-s", "10")
    assert 1.0 < scaled["mean_replicas"] < 4.0 and 2 <= scaled["max_replicas_held"] <= 4
    hourly = load_device("h100-sxm").price.usd_per_hour
    assert scaled["usd_per_hour"] == pytest.approx(hourly * scaled["mean_replicas"])
    assert main([*RUN, "--requests", "50", "--max-replicas", "4", "--autoscaler", "sla_planner"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert ("1 replica scaling up to 4 as Dynamo's SLA planner does, on the load it saw and a TPOT of 0.1 s, "
            "each new one serving after its weights' read") in header, header


@pytest.mark.parametrize(("flags", "words"), [
    (("--max-replicas", "4", "--autoscaler", "sla_planner"),
     "--slo-tpot: found none with --autoscaler 'sla_planner', allowed: the SLO's limit in seconds > 0"),
    (("--max-replicas", "4", "--autoscaler", "sla_planner", "--slo-tpot", "0.1", "--autoscale-target", "4"),
     "--autoscale-target: found 4 with --autoscaler sla_planner, allowed: with --autoscaler hpa"),
    (("--max-replicas", "4", "--autoscaler", "sla_planner", "--slo-tpot", "0.1", "--autoscale-interval-s", "0"),
     "--autoscale-interval-s: found 0 with --max-replicas 4, allowed: seconds > 0"),
    (("--max-replicas", "4", "--autoscaler", "load_planner", "--slo-tpot", "0.1"),
     "--slo-ttft: found none with --autoscaler 'load_planner', allowed: the SLO's limit"),
    (("--autoscaler", "sla_planner", "--slo-tpot", "0.1"),
     "--autoscaler: found 'sla_planner' with no autoscaling, allowed: with --max-replicas"),
])
def test_bad_or_idle_planner_settings_are_one_line(capsys, flags, words):
    assert main([*RUN[:-4], *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err, err


def test_a_grid_crossing_autoscalers_evaluates_the_planner_once_whatever_the_target(tmp_path, capsys):
    """autoscaler [hpa, sla_planner] x autoscale_target [4, 8]: the planner reads no target, so its two points are
    one design. By hand: 3 of 4 designs, 1 point evaluated again, and the planner's row has no target."""
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: planned\nmodel: {model}\ndevice: h100-sxm\nexecution: graphs\nserving:\n"
                                 f"  requests: 6\n  prompt: 32\n  output: 4\n  rate: 50\n  max_replicas: 2\n"
                                 f"  autoscaler: [hpa, sla_planner]\n  autoscale_target: [4, 8]\n"
                                 f"  slo: {{tpot_s: 0.1}}\n")
    assert main(["check", path]) == 0
    said = capsys.readouterr().out
    assert "4 design points (3 distinct designs evaluated)" in said, said
    assert "1 of 4 points are another point's design, run once: autoscale_target changes nothing where the " \
           "autoscaler is a Dynamo planner" in said, said
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = read_results(tmp_path / "out")
    assert sorted((row["autoscaler"], row.get("autoscale_target")) for row in rows) == [
        ("hpa", 4), ("hpa", 8), ("sla_planner", None)]


def test_the_sla_planner_s_kalman_forecast_is_named_and_refused_where_nothing_forecasts(capsys):
    assert main([*RUN, "--requests", "50", "--max-replicas", "4", "--autoscaler", "sla_planner",
                 "--autoscale-predictor", "kalman"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "as Dynamo's SLA planner does, on the load it saw forecast by a Kalman filter" in header, header
    assert main([*RUN, "--max-replicas", "4", "--autoscale-target", "4", "--autoscale-predictor", "kalman"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and ("--autoscale-predictor: found 'kalman' with the default "
                                                   "autoscaler, hpa, allowed: with --autoscaler sla_planner") in err


@pytest.mark.parametrize(("flags", "words"), [
    (("--autoscaler", "hpa", "--autoscale-target", "4"),
     "as the HPA does, on waiting requests near 4 a replica every 10 s, each new one"),
    (("--autoscaler", "sla_planner"),
     "as Dynamo's SLA planner does, on the load it saw and a TPOT of 0.1 s every 10 s, each new one"),
    (("--autoscaler", "load_planner"), "estimated TTFT and TPOT against the SLO every 10 s, each new one"),
    # Both modes: the interval set is the load-based adjustments'; the SLA planner's floor keeps its own 180 s.
    (("--autoscaler", "sla_load_planner"),
     "estimated TTFT and TPOT against the SLO every 10 s, above the SLA planner's replicas for the load it saw and a "
     "TPOT of 0.1 s every 180 s, each new one"),
])
def test_the_header_says_which_decisions_the_interval_times(tmp_path, capsys, flags, words):
    """autoscale_interval_s 10: the header puts it beside the decisions it times, never beside the floor that both
    of Dynamo's modes recompute every 180 s (sim/autoscalers/load_planner.py)."""
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--requests", "20", "--rate", "50",
                 "--prompt", "32", "--output", "4", "--slo-ttft", "1", "--slo-tpot", "0.1", "--max-replicas", "2",
                 "--autoscale-interval-s", "10", *flags]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("# "))
    assert words in header, header


@pytest.mark.parametrize(("flag", "value"), [("--autoscale-interval-s", "10"), ("--autoscale-predictor", "kalman")])
def test_a_pool_that_never_scales_names_each_autoscaling_flag_among_what_changes_nothing(tmp_path, capsys, flag,
                                                                                          value):
    """--max-replicas 1 beside the SLA planner's interval or its predictor: neither sizes a pool that never scales,
    and the notice lists the flag with the other autoscaling flags that change nothing (it named the autoscaler,
    target and cold start only)."""
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--requests", "20", "--rate", "50",
                 "--prompt", "32", "--output", "4", "--slo-tpot", "0.1", "--max-replicas", "1", "--autoscaler",
                 "sla_planner", flag, value]) == 0
    notice = next(line for line in capsys.readouterr().err.splitlines() if "never scales" in line)
    assert flag in notice, notice


def test_a_pool_that_never_scales_names_only_the_autoscaling_flags_given(tmp_path, capsys):
    """--max-replicas 1 with --autoscale-target 4 (the one autoscaling flag the default hpa needs): the notice says the
    target changes nothing and names none of the autoscaling flags the user did not give."""
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--requests", "20", "--rate", "50",
                 "--prompt", "32", "--output", "4", "--max-replicas", "1", "--autoscale-target", "4"]) == 0
    notice = next(line for line in capsys.readouterr().err.splitlines() if "never scales" in line)
    assert "--autoscale-target" in notice, notice
    for flag in ("--autoscaler", "--autoscale-interval-s", "--autoscale-predictor", "--autoscale-metric",
                 "--cold-start-s"):
        assert flag not in notice, notice


def test_a_fleet_s_mixed_pool_scales_by_its_own_hpa_and_rents_what_it_held(capsys):
    """One H100 fixed beside L4s scaling from one up to six on running requests: the header names the L4 pool's
    scaling, the fleet holds between two and seven replicas on average, and its hourly price is the H100's plus the
    L4's times the L4 replicas held on average (the mean replicas less the one H100)."""
    flags = ["--arrival", "poisson", "--rate", "10", "--rate-profile", "120:1,120:3", "--requests", "2000",
             "--mixed-device", "l4", "--mixed-replicas", "1", "--mixed-max-replicas", "6", "--autoscale-target", "8",
             "--autoscale-metric", "running", "--cold-start-s", "10"]
    scaled = _run(capsys, *flags)
    assert 2.0 < scaled["mean_replicas"] < 7.0 and scaled["max_replicas_held"] > 2
    h100, l4 = (load_device(name).price.usd_per_hour for name in ("h100-sxm", "l4"))
    assert scaled["usd_per_hour"] == pytest.approx(h100 + l4 * (scaled["mean_replicas"] - 1))
    assert main([*RUN, *flags, "--requests", "20"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "one router over them all, scaling the mixed l4 replicas up to 6 as the HPA does" in header, header
    assert main([*RUN, *flags[:-6], "--autoscaler", "sla_planner"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--mixed-replicas: found 1 with --mixed-max-replicas 6, allowed: 0 " \
        "(Dynamo's planners scale one kind of worker" in err, err


def test_a_pool_scaled_to_zero_rents_less_and_keeps_its_first_requests_waiting(capsys):
    """A request every 8 minutes or so (Poisson at 0.002 req/s, 100 requests): a pool of none up to two rents less
    than the one replica held throughout, never more than one replica at once; its requests arriving while it holds
    none wait for KEDA's poll and a cold start, so some miss a 2 s TTFT that the held replica meets for all; the
    header says it scales from zero."""
    flags = ["--arrival", "poisson", "--rate", "0.002", "--requests", "100", "--max-replicas", "2",
             "--autoscale-target", "4"]
    held, zero = _run(capsys, *flags), _run(capsys, *flags, "--replicas", "0")
    assert zero["usd_per_hour"] < held["usd_per_hour"] == pytest.approx(load_device("h100-sxm").price.usd_per_hour)
    assert 0.0 < zero["mean_replicas"] < 1.0 and zero["max_replicas_held"] == 1.0
    assert zero["slo_attainment"] < held["slo_attainment"] == 1.0
    assert zero["ttft_p99_s"] > 2.0
    assert main([*RUN, *flags, "--replicas", "0", "--requests", "5"]) == 0
    assert "scaling up to 2 from zero (KEDA starts one at its 30 s poll" in capsys.readouterr().out.splitlines()[0]


@pytest.mark.parametrize(("flags", "words"), [
    (("--replicas", "0"), "--replicas: found 0, allowed: an integer >= 1 (0 with max_replicas: a pool that scales"),
    (("--replicas", "0", "--max-replicas", "2", "--autoscaler", "sla_planner"),
     "--autoscaler: found 'sla_planner' with --replicas 0, allowed: hpa"),
    (("--replicas", "0", "--max-replicas", "2", "--autoscale-target", "2", "--prefill-replicas", "1"),
     "--prefill-replicas: found 1 with --replicas 0, allowed: 0"),
])
def test_bad_scale_to_zero_settings_are_one_line(capsys, flags, words):
    assert main([*RUN, *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err, err


def test_a_capacity_search_from_zero_replicas_is_refused_alone_and_not_run_in_a_grid(tmp_path, capsys):
    """A pool scaled from zero keeps every rate's first requests waiting for KEDA's first poll and a cold start, so a
    capacity search would find the run's warm-up: explore run refuses it in one line, and a grid crossing replicas
    [0, 1] runs its search from one replica and records the point from zero as not run, saying why."""
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--requests", "6", "--prompt", "32",
                 "--output", "4", "--replicas", "0", "--max-replicas", "2", "--autoscale-target", "4",
                 "--slo-ttft", "2", "--capacity", "0.5", "16"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "--replicas: found 0 with --capacity set, allowed: an integer >= 1" in err, err
    path = write_tiny_serving_sweep(tmp_path, "  capacity: [0.5, 16]\n  replicas: [0, 1]\n  max_replicas: 2\n"
                                              "  autoscale_target: 4\n  slo: {ttft_s: 2}\n")
    assert main(["check", path]) == 0
    assert "1 of 2 points are not run" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["--quiet", path, "--out", str(out)]) == 0
    with open(out / "results.csv", newline="") as file:
        rows = {row["replicas"]: row for row in csv.DictReader(file)}
    assert not rows["1"]["infeasible_reason"] and float(rows["1"]["capacity_rps"]) >= 0.0
    assert rows["0"]["infeasible_reason"].startswith("replicas: found 0 with capacity set")
    assert rows["0"]["capacity_rps"] in ("", "nan")


def test_a_pool_from_zero_to_one_replica_reads_no_target(tmp_path, capsys):
    """From zero up to one replica KEDA alone scales (the HPA between one and one never does): explore run needs no
    --autoscale-target and says KEDA alone scales it; a grid replicas 0 x max_replicas [1, 2] x autoscale_target
    [2, 4] is 3 designs of 4, the check naming why."""
    model = write_tiny_model(tmp_path)
    head = (f"name: keda\nmodel: {model}\ndevice: h100-sxm\nexecution: graphs\nserving:\n  requests: 6\n"
            f"  prompt: 32\n  output: 4\n  rate: 0.1\n  replicas: 0\n")
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--requests", "6", "--rate", "0.1",
                 "--prompt", "32", "--output", "4", "--replicas", "0", "--max-replicas", "1"]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("# "))
    assert "scaling up to 1 from zero" in header and "by KEDA alone" in header, header
    path = write_sweep(tmp_path, head + "  max_replicas: [1, 2]\n  autoscale_target: [2, 4]\n")
    assert main(["check", path]) == 0
    said = capsys.readouterr().out
    assert "4 design points (3 distinct designs evaluated)" in said, said
    assert "autoscale_target changes nothing where the autoscaler is a Dynamo planner (it scales on the SLO, not on " \
           "a server metric) or scales from zero to one replica (KEDA alone)" in said, said


def test_conversations_on_an_autoscaled_pool_run_and_the_header_says_where_a_turn_goes(tmp_path, capsys):
    """Chats on a pool the HPA scales (sim/serving.py follow; tests/sim/test_autoscaled_conversations.py has a drained
    replica's turn by hand): they run, the header saying a turn whose replica was drained is routed afresh; without
    autoscaling the header says nothing of it."""
    chat = ["run", "--model", write_tiny_model(tmp_path), "--device", "h100-sxm", "--serving", "--requests", "40",
            "--prompt", "64", "--output", "8", "--conversation-turns", "4", "--think-s", "1", "--rate", "20"]
    assert main([*chat, "--max-replicas", "3", "--autoscale-target", "1"]) == 0
    drained = "a turn whose replica was drained meanwhile routed afresh, computing its whole prompt"
    assert drained in capsys.readouterr().out.splitlines()[0]
    assert main(chat) == 0
    assert drained not in capsys.readouterr().out
