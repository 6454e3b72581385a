"""long_prefill_tokens, the chunked scheduler's cap on one request's tokens an iteration (vLLM v1's
long_prefill_token_threshold), as a serving knob: a sweep's serving: section lists it, explore run takes
--long-prefill-tokens, a scheduler that does not read it runs its point once, and bad values are one line."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.results import read_results
from explore.sweep import load_sweep
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import write_tiny_model

pytestmark = pytest.mark.usefixtures("figures_undrawn")

SERVING = """  requests: 20
  prompt: {dist: uniform, low: 8, high: 64}
  output: {dist: uniform, low: 2, high: 16}
  rate: 400
  scheduler: [continuous, chunked]
  max_seqs: 8
  chunk_tokens: 32
"""


def _sweep(tmp_path, serving: str, name: str = "sweep") -> str:
    """A sweep of the tiny model (one file, whatever `name`, so that two sweeps' points share it) on an H100."""
    model = write_tiny_model(tmp_path)
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: lpt\nmodel: {model}\ndevice: h100-sxm\nserving:\n{serving}")
    return str(path)


def test_a_sweep_lists_it_and_the_scheduler_that_does_not_read_it_runs_once(tmp_path):
    """[continuous, chunked] x [0, 16]: the continuous point once (its point without the knob), the chunked one at each
    value; the column shows the chunked rows' values, 0 included, and nothing for the continuous row; the chunked point
    at 0 has the key of the sweep that leaves the knob out (stored results keep their keys)."""
    path = _sweep(tmp_path, SERVING + "  long_prefill_tokens: [0, 16]\n")
    points = load_sweep(path).points()
    ids = set(points.point_ids())
    assert len(ids) == 3
    plain_path = _sweep(tmp_path, SERVING, name="plain")
    plain = set(load_sweep(plain_path).points().point_ids())
    assert len(plain) == 2 and plain < ids
    out = tmp_path / "out"
    assert main([path, "--out", str(out), "--quiet"]) == 0
    rows = read_results(out)
    by = {(r["scheduler"], r["long_prefill_tokens"]) for r in rows}
    assert by == {("continuous", None), ("chunked", 0), ("chunked", 16)}, by
    plain_out = tmp_path / "plain_out"
    assert main([plain_path, "--out", str(plain_out), "--quiet"]) == 0
    assert all("long_prefill_tokens" not in r for r in read_results(plain_out))


def test_a_point_at_0_keeps_its_key_and_a_cap_gets_its_own():
    """0 is vLLM's default, no cap: the point's key is the key it had before the knob existed (computed by that code);
    a cap is another design."""
    spec = ServingSpec(scheduler="chunked", requests=200, rate_per_s=4.0)
    point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=256, prompt=0, output=0, serving=spec)
    assert point.point_id == "1975a0ffdaf012dc"
    assert replace(point, serving=replace(spec, long_prefill_tokens=0)).point_id == point.point_id
    assert replace(point, serving=replace(spec, long_prefill_tokens=2048)).point_id != point.point_id


@pytest.mark.parametrize("value, words", [("-1", "found -1"), ("1.5", "1.5"), ("[0, -16]", "-16")])
def test_a_bad_value_in_a_sweep_is_one_line(tmp_path, capsys, value, words):
    path = _sweep(tmp_path, SERVING + f"  long_prefill_tokens: {value}\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "long_prefill_tokens" in err and words in err, err


def test_a_sweep_whose_schedulers_do_not_read_it_is_refused_in_one_line(tmp_path, capsys):
    path = _sweep(tmp_path, SERVING.replace("[continuous, chunked]", "[static, continuous, orca]").replace(
        "  chunk_tokens: 32\n", "") + "  long_prefill_tokens: 16\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "long_prefill_tokens: found 16 with scheduler" in err and "chunked" in err, err


@pytest.mark.parametrize("flags, words", [
    (["--scheduler", "continuous", "--long-prefill-tokens", "16"], "--long-prefill-tokens: found 16 with --scheduler "
                                                                   "continuous, allowed: with --scheduler chunked"),
    (["--scheduler", "chunked", "--long-prefill-tokens", "-1"], "--long-prefill-tokens: found -1")])
def test_explore_run_refuses_a_bad_value_in_one_line(tmp_path, capsys, flags, words):
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "1", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err, err


def test_explore_run_caps_a_chunked_run(tmp_path, capsys):
    """A 64-token prompt under a 64-token budget: one prefill iteration without the cap, four of 16 with
    --long-prefill-tokens 16, so its TTFT is longer (the same iterations' costs, more of them)."""
    model = write_tiny_model(tmp_path)
    common = ["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "1", "--requests", "1",
              "--prompt", "64", "--output", "4", "--scheduler", "chunked", "--chunk-tokens", "64", "--max-seqs", "8",
              "--json"]
    ttft = {}
    for cap in ("0", "16"):
        assert main([*common, "--long-prefill-tokens", cap]) == 0
        ttft[cap] = json.loads(capsys.readouterr().out)["ttft_s"]
    assert ttft["16"] > ttft["0"]


@pytest.mark.parametrize("cap, unjudged", [(3, True), (5, True), (6, False), (0, False)])
def test_a_cap_below_a_speculating_decode_s_tokens_is_not_run(cap, unjudged):
    """k = 5 drafts: a decode verifies 6 tokens, which vLLM v1 cuts to a cap below them (every decode's drafts cut),
    what the iteration's pricing does not model: such a point is not run, naming why; a cap of 6 or none runs."""
    spec = ServingSpec(scheduler="chunked", requests=200, rate_per_s=4.0, long_prefill_tokens=cap)
    point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=256, prompt=0, output=0, serving=spec,
                        knobs=(("spec_draft", "medusa"), ("spec_tokens", 5)))
    reason = point.unjudged()
    assert bool(reason) is unjudged, reason
    if unjudged:
        assert reason.startswith(f"long_prefill_tokens: found {cap} with spec_draft 'medusa' verifying 6 tokens")
