"""The serving knob `router` (sim/routers.py): a sweep's serving.router and `explore run --serving --router`, its
column only in sweeps that set it, the keys of points that leave it out, and its one-line errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.results import read_results
from explore.sweep import load_sweep
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import write_sweep, write_tiny_model

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

SERVING = """  requests: 20
  prompt: {dist: uniform, low: 8, high: 64}
  output: {dist: uniform, low: 2, high: 16}
  rate: 400
  scheduler: continuous
  max_seqs: 8
  replicas: 2
"""


def _sweep(tmp_path, serving: str) -> str:
    model = write_tiny_model(tmp_path)
    return write_sweep(tmp_path, f"name: route\nmodel: {model}\ndevice: h100-sxm\nserving:\n{serving}")


def test_a_point_that_leaves_the_router_out_keeps_its_key_and_one_that_sets_it_gets_its_own():
    spec = ServingSpec(scheduler="chunked", requests=200, rate_per_s=4.0)
    point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=256, prompt=0, output=0, serving=spec)
    assert point.point_id == "1975a0ffdaf012dc"  # as tests/explore/test_serving_sweep.py holds it
    assert "router" not in spec.key_text("h100-sxm") and spec.router is None  # least_requests: the pools' default
    routed = replace(point, serving=replace(spec, router="least_tokens"))
    assert routed.point_id != point.point_id


def test_router_is_a_serving_knob_with_a_column_only_where_set(tmp_path, capsys):
    path = _sweep(tmp_path, SERVING + "  router: [least_requests, least_tokens, round_robin]\n")
    assert sorted(p.serving.router for p in load_sweep(path).points()) == ["least_requests", "least_tokens",
                                                                            "round_robin"]
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = read_results(tmp_path / "out")
    assert sorted(r["router"] for r in rows) == ["least_requests", "least_tokens", "round_robin"]
    plain = _sweep(tmp_path, SERVING)
    assert main([plain, "--out", str(tmp_path / "plain"), "--quiet"]) == 0
    assert all("router" not in r for r in read_results(tmp_path / "plain"))
    capsys.readouterr()


def test_a_bad_router_is_one_line_naming_the_key_and_the_routers(tmp_path, capsys):
    bad = _sweep(tmp_path, SERVING + "  router: fastest\n")
    assert main(["check", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "serving.router" in err and "'fastest'" in err and "round_robin" in err, err
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "1", "--replicas", "2",
                 "--router", "fastest"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("explore: error: --router: found 'fastest', allowed: least_requests, least_tokens, least_kv_usage, "
                   "round_robin, cache_aware, predicted_latency, predicted_latency_most"), err


def test_run_routes_by_the_flag(tmp_path, capsys):
    """The hand case of tests/sim/test_pools.py through `explore run`: a 200-token prompt and two of 16 arrive together
    at two replicas; by requests the third shares the long prompt's prefill, by pending tokens the short one's, so
    the mean TTFT moves with the flag (and without it the run is least_requests'). Replayed from graphs: eager, the
    tiny model's every prefill would take its host dispatch alone, whatever its tokens."""
    model = write_tiny_model(tmp_path)
    trace = tmp_path / "three.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,200,4\n0,16,4\n0,16,4\n")
    ttft = {}
    for router in ("least_requests", "least_tokens", None):
        assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--trace", str(trace),
                     "--arrival", "trace", "--requests", "3", "--replicas", "2", "--execution", "graphs", "--json",
                     *(["--router", router] if router else [])]) == 0
        ttft[router] = json.loads(capsys.readouterr().out)["ttft_mean_s"]
    assert ttft[None] == ttft["least_requests"] != ttft["least_tokens"]


def test_a_fleet_s_mixed_replicas_are_routed_among_in_the_check_s_count(tmp_path, capsys):
    """One replica of the device and mixed_replicas [0, 2]: of routers [least_tokens, round_robin] x 2 fleets, only the
    two points without mixed replicas are one design (1 of 4 evaluated again); with mixed_replicas 2 alone every
    point routes, and the check says nothing is evaluated again."""
    for mixed, note in (("[0, 2]", "1 of 4 points are another point's design, run once: router changes nothing"),
                        ("2", None)):
        path = _sweep(tmp_path, f"  requests: 6\n  prompt: 32\n  output: 4\n  rate: 50\n  mixed_device: l4\n"
                                f"  mixed_replicas: {mixed}\n  router: [least_tokens, round_robin]\n")
        capsys.readouterr()
        assert main(["check", path]) == 0
        out = capsys.readouterr()
        said = out.out + out.err
        assert (note in said) if note else "another point's design, run once" not in said, said


def test_a_router_crossed_with_one_replica_is_the_design_without_one(tmp_path, capsys):
    """replicas [1, 2] x router [least_tokens, round_robin] x pp [1, 2]: a point with one replica and one stage has
    nothing to route, so its two routers are one design, the point without a router (its key), and the sweep says
    so; a point with two replicas or two stages keeps its router."""
    model = write_tiny_model(tmp_path)
    head = (f"name: route\nmodel: {model}\ndevice: h100-sxm\nexecution: graphs\nserving:\n  requests: 6\n"
            f"  prompt: 32\n  output: 4\n  rate: 50\n")
    assert main([write_sweep(tmp_path, head), "--out", str(tmp_path / "plain"), "--quiet"]) == 0
    (plain,) = read_results(tmp_path / "plain")
    path = write_sweep(tmp_path, head + "  replicas: [1, 2]\n  router: [least_tokens, round_robin]\n"
                                        "parallel: {pp: [1, 2]}\n")
    capsys.readouterr()
    assert main([path, "--out", str(tmp_path / "out")]) == 0
    assert "1 of 8 points are another point's design, run once: router changes nothing where one replica in each " \
           "pool and one pipeline stage" in capsys.readouterr().err
    rows = read_results(tmp_path / "out")
    alone = [row for row in rows if row["replicas"] == 1 and row["pp"] == 1]
    assert [row["point_id"] for row in alone] == [plain["point_id"]] and alone[0]["router"] is None
    assert len(rows) == 7 and {row["router"] for row in rows if row not in alone} == {"least_tokens", "round_robin"}
