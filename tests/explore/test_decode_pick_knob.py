"""The serving knob `decode_pick` (sim/serving.py serve_pools): a sweep's serving.decode_pick, read with a prefill pool,
its column only in sweeps that set it, the keys of points that leave it out, and its one-line refusals."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.results import read_results
from explore.sweep import load_sweep
from sim.serving_spec import ServingSpec
from tests.explore.test_serving_sweep import _serving_sweep as _sweep
from tests.explore.tiny_sweep import write_tiny_model
from workloads.errors import InputError

# The claims here are about rows, columns, messages and keys, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

# Two 48-token requests arriving together at one prefill replica, two decode replicas under least requests.
SERVING = """  requests: 2
  prompt: {dist: fixed, tokens: 48}
  output: {dist: fixed, tokens: 2}
  arrival: gamma
  cv: 0.01
  rate: 1000000
  scheduler: chunked
  max_seqs: 8
  replicas: 2
  prefill_replicas: 1
"""


def test_a_point_that_leaves_decode_pick_out_keeps_its_key_and_one_that_sets_it_gets_its_own():
    spec = ServingSpec(scheduler="chunked", requests=200, rate_per_s=4.0, replicas=2, prefill_replicas=1)
    point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=256, prompt=0, output=0, serving=spec)
    assert "decode_pick" not in spec.key_text("h100-sxm") and "decode_pick" not in spec.columns()
    picked = replace(point, serving=replace(spec, decode_pick="arrival"))
    assert picked.point_id != point.point_id and picked.serving.columns()["decode_pick"] == "arrival"


def test_a_sweep_crosses_the_picks_with_a_column_only_where_a_prefill_pool_reads_it(tmp_path, capsys):
    path = _sweep(tmp_path, SERVING.replace("  prefill_replicas: 1\n", "  prefill_replicas: [0, 1]\n")
                  + "  decode_pick: [prefill_done, arrival]\n")
    points = load_sweep(path).points()
    picks = sorted((p.serving.prefill_replicas, str(p.serving.decode_pick)) for p in points)
    # Without a prefill pool nothing is picked after a prefill: both points are the one without the knob.
    assert sorted(set(picks)) == [(0, "None"), (1, "arrival"), (1, "prefill_done")], picks
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = {str(r.get("decode_pick") or ""): r for r in read_results(tmp_path / "out")
            if str(r["prefill_replicas"]) == "1"}
    assert sorted(rows) == ["arrival", "prefill_done"]
    # Picked at arrival both requests decode on one replica, which runs both where each had one of its own: a slower
    # TPOT at the tail (tests/sim/test_decode_pick.py has the replicas' iterations by hand).
    assert float(rows["arrival"]["tpot_p99_s"]) > float(rows["prefill_done"]["tpot_p99_s"])
    capsys.readouterr()


@pytest.mark.parametrize("serving, found", [
    (SERVING + "  decode_pick: first\n", "'first'"),
    (SERVING.replace("  prefill_replicas: 1\n", "") + "  decode_pick: arrival\n", "no prefill pool")],
    ids=["unknown pick", "no prefill pool"])
def test_a_decode_pick_not_read_is_one_line_naming_the_key(tmp_path, capsys, serving, found):
    assert main(["check", _sweep(tmp_path, serving)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "decode_pick" in err and found in err, err


def test_a_pick_at_arrival_beside_a_scaled_decode_pool_is_refused_by_name():
    """A decode replica picked at arrival may be drained before the prefill is done: not modeled, so the spec says
    why in one line (a sweep records the point unevaluated with it) and the run refuses it."""
    spec = ServingSpec(scheduler="chunked", requests=20, rate_per_s=4.0, replicas=1, prefill_replicas=1,
                       max_replicas=3, autoscale_target=2.0, decode_pick="arrival")
    assert spec.unjudged() == ("decode_pick: found 'arrival' with max_replicas 3, allowed: prefill_done (a decode "
                               "replica picked at arrival may be drained before the prefill is done)")
    assert replace(spec, decode_pick="prefill_done").unjudged() == ""
    with pytest.raises(InputError, match="^decode_pick: found 'arrival' with prefill_replicas 0, allowed: "):
        ServingSpec(scheduler="chunked", requests=20, rate_per_s=4.0, decode_pick="arrival")


def test_explore_run_takes_the_pick_as_a_flag_and_its_header_names_a_pick_at_arrival(tmp_path, capsys):
    """--decode-pick as the sweep's key: the same two requests pile onto one decode replica at arrival (a slower tail
    TPOT than split after the prefill, as in the sweep above), and the header names only the pick that is not the
    default."""
    model = write_tiny_model(tmp_path)
    run = ["run", "--model", model, "--device", "h100-sxm", "--serving", "--requests", "2", "--prompt", "48",
           "--output", "2", "--arrival", "gamma", "--cv", "0.01", "--rate", "1000000", "--scheduler", "chunked",
           "--max-seqs", "8", "--replicas", "2", "--prefill-replicas", "1", "--json"]
    runs = {}
    for pick in ("prefill_done", "arrival"):
        assert main([*run, "--decode-pick", pick]) == 0
        out = capsys.readouterr().out
        runs[pick] = json.loads(out[out.index("{"):])
    assert runs["arrival"]["tpot_p99_s"] > runs["prefill_done"]["tpot_p99_s"]
    assert main([*run[:-1], "--decode-pick", "arrival"]) == 0
    assert "each decode replica picked at the request's arrival (llm-d)" in capsys.readouterr().out
    assert main(run[:-1]) == 0
    assert "picked at the request's arrival" not in capsys.readouterr().out
