"""The serving capacity search in the explorer: its columns (only in sweeps that search capacity), the notice
when too few requests stopped it, and examples/splitwise-slowdown.yaml with few requests (sim/capacity.py,
sim/stability.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from explore.cli import main
from explore.metrics import metric_names
from explore.results import read_results
from explore.runner import columns_for
from explore.sweep import load_sweep
from sim.capacity import CAPACITY_METRICS
from tests.explore.tiny_sweep import write_sweep, write_tiny_model

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "splitwise-slowdown.yaml"


def test_the_capacity_columns_are_the_searchs():
    assert metric_names("capacity") == CAPACITY_METRICS


def _sweep(tmp_path, serving: str) -> str:
    model = write_tiny_model(tmp_path)
    return write_sweep(tmp_path, f"name: cap\nmodel: {model}\ndevice: h100-sxm\nserving:\n  prompt: {{dist: fixed, "
                                 f"tokens: 32}}\n  output: {{dist: fixed, tokens: 8}}\n  max_seqs: 8\n"
                                 f"  slo: {{ttft_s: 0.01}}\n{serving}")


def test_few_requests_give_a_capacity_marked_not_judged_and_a_notice(tmp_path, capsys):
    """30 requests can never be judged (50 must arrive past the warm-up): no rate is sustainable, and the results
    and the command line say that the requests, not the design, stopped the search. A serving sweep without a
    capacity search has no capacity columns (its folders written before them resume)."""
    path = _sweep(tmp_path, "  requests: 30\n  capacity: [1, 10000]\n")
    out = tmp_path / "out"
    assert main([path, "--out", str(out), "--quiet"]) == 0
    (row,) = read_results(out)
    assert row["capacity_rps"] == 0.0 and not row["capacity_judged"]
    assert "not judged" in row["capacity_note"]
    assert "capacities are not judged" in capsys.readouterr().err
    assert set(CAPACITY_METRICS) <= set(columns_for(load_sweep(path)))
    plain = tmp_path / "plain"
    plain.mkdir()
    assert not set(CAPACITY_METRICS) & set(columns_for(load_sweep(_sweep(plain, "  requests: 30\n  rate: 100\n"))))


def test_run_says_when_the_capacity_is_not_judged(tmp_path, capsys):
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--requests", "30", "--prompt", "32",
                 "--output", "8", "--slo-ttft", "0.01", "--capacity", "1", "10000", "--json"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert metrics["capacity_judged"] == 0.0
    assert "explore: notice: capacity not judged" in captured.err and "--requests" in captured.err


def test_a_capacity_at_the_top_of_its_range_is_said_to_be_a_lower_bound(tmp_path, capsys):
    """The tiny model on an H100 sustains far more than 1 req/s of 40-token requests (each is served in
    milliseconds), so a search in [0.5, 1] finds its top sustainable and reports 1: not the design's capacity. Two
    devices both reported the range's top as if equal, and nothing said so; the sweep and explore run now do."""
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: cap\nmodel: {model}\ndevice: h100-sxm\nserving:\n  prompt: {{dist: fixed, "
                                 f"tokens: 32}}\n  output: {{dist: fixed, tokens: 8}}\n  max_seqs: 8\n"
                                 f"  slo: {{ttft_s: 1}}\n  requests: 100\n  capacity: [0.5, 1]\n")
    out = tmp_path / "out"
    assert main([path, "--out", str(out), "--quiet"]) == 0
    (row,) = read_results(out)
    assert row["capacity_rps"] == 1.0 and row["capacity_judged"] and row["capacity_at_top"] == 1
    err = capsys.readouterr().err
    assert "notice: the capacity is the top of the searched range, 1 req/s (serving.capacity)" in err, err
    # The report marks it too: the table's cell reads at least 1, with a footnote, and so does the figure's caption.
    report = (out / "report.md").read_text()
    assert "| \u22651 |" in report and "\u2265 marks 1 capacity at the top of the searched range" in report
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--requests", "100", "--prompt", "32",
                 "--output", "8", "--slo-ttft", "1", "--capacity", "0.5", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["capacity_rps"] == 1.0
    err = [line for line in captured.err.splitlines() if "top of the searched range" in line]
    assert len(err) == 1 and err[0].startswith("explore: notice: the capacity is the top of the searched range, "
                                               "1 req/s (--capacity's HIGH)"), captured.err


def test_a_capacity_inside_its_range_gets_no_ceiling_notice(tmp_path, capsys):
    path = _sweep(tmp_path, "  requests: 30\n  capacity: [1, 10000]\n")
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "top of the searched range" not in capsys.readouterr().err


@pytest.mark.slow  # two capacity searches over 200 Llama-2-7B requests, about 10 s with tracing
def test_splitwise_example_with_200_requests_gives_two_replicas_about_twice_one(evaluator):
    """examples/splitwise-slowdown.yaml with 200 requests: the search on the SLO alone gave two mixed H100s
    15.2 req/s against 4.9 for one (3.1x). Two replicas, each fed half the arrivals by the router, sustain at most
    twice what one does; one replica's capacity here, 4.3-4.5 req/s over 400-2,000 requests (README), is judged
    by its SLO. So two report at most 2x one (to the bisection's 5% on each), and no less than one."""
    sweep = load_sweep(str(EXAMPLE))
    capacities = {}
    for point in sweep.points():
        spec = point.serving
        if spec.prefill_replicas == 0:
            metrics = evaluator.evaluate(replace(point, serving=replace(spec, requests=200))).metrics
            capacities[spec.replicas] = metrics["capacity_rps"]
            assert (metrics["capacity_judged"] == 1.0) == (metrics["capacity_note"] == ""), metrics
    assert capacities[1] <= capacities[2] <= 2 * 1.05**2 * capacities[1], capacities


def test_run_says_when_requests_are_cut_to_the_context(tmp_path, capsys):
    """Prompts of 3,000 tokens on a model of 2,048 positions are served cut (2,048 - 8 prompt tokens): the command
    line says so, not only the clipped_requests column."""
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--requests", "5", "--prompt", "3000",
                 "--output", "8", "--rate", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["clipped_requests"] == 5
    assert "explore: notice: 5 of 5 requests cut to tiny's context of 2,048 tokens" in captured.err, captured.err
