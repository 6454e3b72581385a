"""Load shedding as a user runs it: `explore run --busy-prefill-tokens N` says so in its header, rejects requests
under overload and counts them against the SLO; a sweep writes the rejection column; bad settings are one line."""

from __future__ import annotations

import csv
import json

import pytest

from explore.cli import main
from tests.explore.tiny_sweep import write_sweep, write_tiny_model, write_tiny_serving_sweep

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

# One H100 serving Llama-3-8B at 60 req/s, past what it prefills (about 47 req/s of these prompts).
RUN = ["run", "--model", "llama-3-8b", "--device", "h100-sxm", "--execution", "engine", "--serving", "--arrival",
       "poisson", "--rate", "60", "--requests", "1500", "--prompt", "512", "--output", "128", "--slo-ttft", "2",
       "--slo-tpot", "0.1"]


def _run(capsys, *flags: str) -> dict:
    assert main([*RUN, *flags, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_an_overloaded_replica_sheds_requests_and_counts_them_as_misses(capsys):
    """Busy past 8,192 prompt tokens to prefill, some requests are rejected; the attainment is the requests served
    within the SLO over every request, rejected ones included (goodput x makespan / requests), and the requests served
    a second are the rejected share's complement of those that arrived."""
    admitted, shed = _run(capsys), _run(capsys, "--busy-prefill-tokens", "8192")
    assert "rejected_share" not in admitted
    assert 0.0 < shed["rejected_share"] < 1.0
    served = 1500 * (1 - shed["rejected_share"])
    makespan_s = served / shed["requests_per_s"]
    assert shed["slo_attainment"] == pytest.approx(shed["goodput_rps"] * makespan_s / 1500)
    assert shed["slo_attainment"] < 1 - shed["rejected_share"] + 1e-9
    assert main([*RUN, "--requests", "20", "--busy-prefill-tokens", "8192", "--busy-kv-usage", "0.9"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert ("rejecting a request that finds every replica busy (over 90% of its KV blocks in use or 8,192 prompt "
            "tokens to prefill)") in header, header


def test_a_sweep_writes_the_rejection_column(tmp_path):
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: shed\nmodel: {model}\ndevice: h100-sxm\nexecution: graphs\nserving:\n"
                                 f"  requests: 6\n  prompt: 32\n  output: 4\n  rate: 50\n"
                                 f"  busy_prefill_tokens: [0, 4096]\n")
    out = tmp_path / "out"
    assert main(["--quiet", path, "--out", str(out)]) == 0
    with open(out / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted(row["busy_prefill_tokens"] for row in rows) == ["0", "4096"]
    assert all(0.0 <= float(row["rejected_share"]) < 1.0 for row in rows)
    assert "| rejected |" in (out / "report.md").read_text()  # the tables' column
    assert "| retried |" not in (out / "report.md").read_text()  # no client retries: the rejected share alone


def test_a_grid_crossing_reject_and_queue_beside_a_slowdown_slo_runs_its_queue_points(tmp_path, capsys):
    """Beside a slowdown SLO only the points that reject cannot be judged (a rejected request has no slowdown): the
    check says how many of the grid's points are not run, the queue points run and report their slowdowns, and the
    reject points' rows say why they were not run, with no timings."""
    said, found = _check_and_run(tmp_path, capsys, "  rate: 50\n  busy_waiting_requests: [0, 4]\n"
                                                   "  busy_action: [reject, queue]\n  slo: {slowdown: splitwise}\n")
    assert "2 of 4 points are not run" in said and "a rejected request has no slowdown" in said, said
    rows = {(row["busy_action"], row["busy_waiting_requests"]): row for row in found}
    assert len(rows) == 4
    for threshold in ("0", "4"):
        queued, rejected = rows["queue", threshold], rows["reject", threshold]
        assert not queued["infeasible_reason"] and float(queued["slowdown_ttft_p50"]) > 0.99
        assert "a rejected request has no slowdown" in rejected["infeasible_reason"]
        assert rejected["slowdown_ttft_p50"] in ("", "nan") and rejected["ttft_s"] in ("", "nan")


def test_a_sweep_whose_every_point_rejects_beside_a_slowdown_slo_is_refused_in_one_line(tmp_path, capsys):
    """Where no point of a grid can be judged (every one rejects beside a slowdown SLO) there is nothing to run: the
    sweep is refused as explore run refuses the point, naming the file, the key's line and the point."""
    path = write_tiny_serving_sweep(tmp_path, "  rate: 50\n  busy_waiting_requests: [2, 4]\n"
                                              "  slo: {slowdown: splitwise}\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"{path}:10: serving.busy_waiting_requests: found 2 with serving.slo.slowdown set" in err, err


@pytest.mark.parametrize(("flags", "words"), [
    (("--busy-kv-usage", "1.5"), "--busy-kv-usage: found 1.5, allowed: a share of a replica's KV blocks in (0, 1]"),
    (("--busy-prefill-tokens", "-3"), "--busy-prefill-tokens: found -3, allowed: prompt tokens >= 0"),
    (("--busy-kv-usage", "0.5", "--slo-slowdown", "splitwise"),
     "--busy-kv-usage: found 0.5 with --slo-slowdown set, allowed: left out beside a slowdown SLO"),
    (("--client-retries", "2"), "--client-retries: found 2 with no busy threshold, allowed: with a busy threshold"),
    (("--busy-kv-usage", "0.5", "--busy-action", "queue", "--client-retries", "2"),
     "--client-retries: found 2 with --busy-action queue, allowed: with a busy threshold"),
    (("--busy-kv-usage", "0.5", "--client-retry-s", "1"),
     "--client-retry-s: found 1 with no client retries, allowed: with --client-retries N (N >= 1"),
    (("--busy-kv-usage", "0.5", "--client-retries", "-1"), "--client-retries: found -1, allowed: retries >= 0"),
])
def test_bad_shedding_settings_are_one_line(capsys, flags, words):
    assert main([*RUN, *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err, err


def test_a_gateway_that_queues_serves_every_request_and_the_urgent_ones_first(capsys):
    """Busy past 4 waiting requests, queueing at the gateway (llm-d's flow control) instead of rejecting: every
    request is served (nothing rejected), the urgent fifth all within the SLO, and the header says so; the action
    without a threshold is refused in one line."""
    queued = _run(capsys, "--busy-waiting-requests", "4", "--busy-action", "queue", "--priority-fraction", "0.2")
    assert queued["rejected_share"] == 0.0 and queued["urgent_slo_attainment"] == 1.0
    assert queued["slo_attainment"] < 1.0  # the others wait out the overload at the gateway
    assert main([*RUN, "--requests", "20", "--busy-waiting-requests", "4", "--busy-action", "queue"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "queueing at the gateway a request that finds every replica busy (over 4 requests waiting)" in header
    assert main([*RUN, "--busy-action", "queue"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--busy-action: found 'queue' with no busy threshold" in err, err


def test_a_threshold_of_zero_is_a_threshold_beside_busy_action(capsys, tmp_path):
    """busy_waiting_requests 0 (busy while any request waits) and busy_prefill_tokens 0 are thresholds the knobs
    allow (counts >= 0): busy_action beside one is read, in explore run and in a sweep (which explore check had
    called valid), not refused as if no threshold were set."""
    assert main([*RUN, "--requests", "20", "--busy-waiting-requests", "0", "--busy-action", "queue"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "queueing at the gateway a request that finds every replica busy (over 0 requests waiting)" in header
    assert main([*RUN, "--requests", "20", "--busy-prefill-tokens", "0", "--busy-action", "reject"]) == 0
    capsys.readouterr()
    path = write_sweep(tmp_path, f"name: zero\nmodel: {write_tiny_model(tmp_path)}\ndevice: h100-sxm\nserving:\n"
                                 f"  requests: 6\n  prompt: 32\n  output: 4\n  rate: 50\n"
                                 f"  busy_waiting_requests: 0\n  busy_action: queue\n")
    assert main(["check", path]) == 0, capsys.readouterr().err
    assert main(["--quiet", path, "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    with open(tmp_path / "out" / "results.csv", newline="") as file:
        row, = csv.DictReader(file)
    assert (row["busy_waiting_requests"], row["busy_action"], row["rejected_share"]) == ("0", "queue", "0.0")


def test_the_header_gives_the_thresholds_as_set(capsys):
    """The header gives a KV share of 0.995 as 99.5% of the blocks, not the 100% it rounded to (no replica is ever over
    100%); one request or prompt token is singular."""
    assert main([*RUN, "--requests", "20", "--busy-kv-usage", "0.995", "--busy-waiting-requests", "1",
                 "--busy-prefill-tokens", "1", "--busy-action", "queue"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert ("(over 99.5% of its KV blocks in use or 1 prompt token to prefill or 1 request waiting)") in header, header


def test_clients_retrying_rejected_requests_lose_fewer_and_wait_longer(capsys):
    """Busy past 4 waiting requests at 60 req/s: with OpenAI's client's 2 retries, fewer requests are lost for good
    than with none, more were turned away at least once (a retried request is turned away at its first arrival like
    any other, and the retries add load), every rejected-for-good request was turned away, and the p99 TTFT grows:
    a retried request waits out its backoff (0.375 s at the least) before it queues as any other. The header says
    how the clients retry."""
    lost, retried = _run(capsys, "--busy-waiting-requests", "4"), _run(capsys, "--busy-waiting-requests", "4",
                                                                       "--client-retries", "2")
    assert lost["retried_share"] == lost["rejected_share"]  # no retries: turned away once is rejected for good
    assert retried["rejected_share"] < lost["rejected_share"] < retried["retried_share"]
    assert retried["ttft_p99_s"] > lost["ttft_p99_s"]
    assert main([*RUN, "--requests", "20", "--busy-waiting-requests", "4", "--client-retries", "2"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "its client retrying it 2 times, the first after 0.5 s" in header, header


def test_a_grid_crossing_client_retries_with_a_queueing_gateway_evaluates_its_queue_points_once(tmp_path, capsys):
    """busy_action [reject, queue] x client_retries [0, 2]: a gateway that queues rejects nothing, so its two points
    are one design: 3 of 4 evaluated, the note names client_retries, and results.csv has the 3 rows."""
    said, rows = _check_and_run(tmp_path, capsys, "  rate: 50\n  busy_waiting_requests: 0\n"
                                                  "  busy_action: [reject, queue]\n  client_retries: [0, 2]\n")
    assert "4 design points (3 distinct designs evaluated)" in said and "client_retries changes nothing" in said, said
    assert sorted((row["busy_action"], row["client_retries"]) for row in rows) == [
        ("queue", ""), ("reject", "0"), ("reject", "2")]
    assert "| rejected | retried |" in (tmp_path / "out" / "report.md").read_text()  # the tables' columns


def _check_and_run(tmp_path, capsys, serving: str) -> tuple[str, list[dict]]:
    """What `explore check` says of a tiny serving sweep (`serving`: its serving: lines), and its results' rows."""
    path = write_tiny_serving_sweep(tmp_path, serving)
    assert main(["check", path]) == 0
    said = capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["--quiet", path, "--out", str(out)]) == 0
    with open(out / "results.csv", newline="") as file:
        return said, list(csv.DictReader(file))
