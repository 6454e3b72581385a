"""Priority scheduling as a user runs it: `explore run --priority-fraction F --queue-policy priority` says so and adds
the urgent requests' metrics; a sweep crossing the policies writes the urgent columns; a trace's priority column is
read; bad or idle settings are one line, exit 2."""

from __future__ import annotations

import csv
import json

import pytest

from explore.cli import main
from explore.metrics import metric_names
from tests.explore.tiny_sweep import write_sweep

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

# Llama-3-8B on an L4 at about its capacity: 1,024-token prompts and 256-token answers arriving at 1.6 req/s.
RUN = ["run", "--model", "llama-3-8b", "--device", "l4", "--execution", "engine", "--serving", "--requests", "150",
       "--rate", "1.6", "--prompt", "1024", "--output", "256", "--slo-ttft", "2", "--slo-tpot", "0.15"]


def _run(capsys, *flags: str) -> dict:
    assert main([*RUN, *flags, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_urgent_requests_served_first_meet_their_slo_more_often(capsys):
    """A fifth of the requests urgent: under the priority policy their p99 TTFT falls below half fcfs's and more of
    them meet the SLO; the header says what ran; without priorities no urgent metric is printed."""
    plain = _run(capsys, "--priority-fraction", "0.2")
    first = _run(capsys, "--priority-fraction", "0.2", "--queue-policy", "priority")
    assert set(metric_names("urgent")) <= set(first)
    assert first["urgent_ttft_p99_s"] < 0.5 * plain["urgent_ttft_p99_s"]
    assert first["urgent_slo_attainment"] > plain["urgent_slo_attainment"]
    assert main([*RUN, "--priority-fraction", "0.2", "--queue-policy", "priority"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "priority admission, 0.2 of the requests urgent" in header, header
    assert not set(metric_names("urgent")) & set(_run(capsys))


def test_urgent_requests_are_held_to_their_own_limits(capsys):
    """The urgent requests' own TTFT limit moves only the SLO's verdicts, not the run: under 0.3 s fewer urgent
    requests meet it than under the others' 2 s, and under 30 s no fewer; so does the attainment of all."""
    flags = ("--priority-fraction", "0.2", "--queue-policy", "priority")
    base, tight, loose = (_run(capsys, *flags, *limit) for limit in ((), ("--slo-urgent-ttft", "0.3"),
                                                                      ("--slo-urgent-ttft", "30")))
    assert tight["urgent_ttft_p99_s"] == base["urgent_ttft_p99_s"] == loose["urgent_ttft_p99_s"]
    assert tight["urgent_slo_attainment"] < base["urgent_slo_attainment"] <= loose["urgent_slo_attainment"]
    assert tight["slo_attainment"] < base["slo_attainment"] <= loose["slo_attainment"]


def test_bad_or_idle_priority_settings_are_one_line(capsys, tmp_path):
    for flags, words in (
            (("--priority-fraction", "1.5"), "--priority-fraction: found 1.5, allowed: a fraction in [0, 1]"),
            (("--queue-policy", "priority"), "--queue-policy: found 'priority' with every request of one priority, "
                                             "allowed: with --priority-fraction"),
            (("--slo-urgent-ttft", "0.5"), "--slo-urgent-ttft: found 0.5 with every request of one priority"),
            (("--priority-fraction", "0.2", "--slo-urgent-tpot", "-1"), "--slo-urgent-tpot: found -1")):
        assert main([*RUN, *flags]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and words in err, err
    trace = tmp_path / "tiers.csv"
    trace.write_text("prompt_tokens,output_tokens,priority\n100,10,0\n200,10,1\n")
    assert main(["run", "--model", "llama-3-8b", "--device", "l4", "--serving", "--trace", str(trace), "--rate", "1",
                 "--priority-fraction", "0.5"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "whose priority column gives each request's priority" in err, err


def test_a_sweep_over_policies_writes_the_urgent_columns(tmp_path):
    """A trace whose requests name their priorities (the second of every three urgent), served fcfs and by priority:
    the results carry the urgent columns, and the urgent requests wait less by priority."""
    trace = tmp_path / "tiers.csv"
    rows = "".join(f"{0.3 * i:.1f},1024,256,{0 if i % 3 == 1 else 1}\n" for i in range(60))
    trace.write_text("arrival_s,prompt_tokens,output_tokens,priority\n" + rows)
    path = write_sweep(tmp_path, f"name: tiers\nmodel: llama-3-8b\ndevice: l4\nexecution: engine\nserving:\n"
                                 f"  trace: {trace}\n  arrival: trace\n  queue_policy: [fcfs, priority]\n")
    out = tmp_path / "out"
    assert main(["--quiet", path, "--out", str(out)]) == 0
    with open(out / "results.csv", newline="") as file:
        rows = {row["queue_policy"]: row for row in csv.DictReader(file)}
    assert set(metric_names("urgent")) <= set(rows["fcfs"])
    assert float(rows["priority"]["urgent_ttft_p99_s"]) < float(rows["fcfs"]["urgent_ttft_p99_s"])
    assert "urgent p99 TTFT (ms)" in (out / "report.md").read_text()  # the tables' column


def test_the_report_draws_the_urgent_requests_p99_ttft_and_says_what_its_markers_judge(tmp_path):
    path = write_sweep(tmp_path, "name: urgent\nmodel: llama-3-8b\ndevice: l4\nexecution: engine\nserving:\n"
                                 "  requests: 60\n  prompt: 1024\n  output: 64\n  rate: [1, 2]\n"
                                 "  priority_fraction: 0.2\n  queue_policy: priority\n"
                                 "  slo: {ttft_s: 2.0, tpot_s: 0.15, urgent_ttft_s: 1.0}\n")
    assert main(["--quiet", path, "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "The urgent requests' panel marks each point as the other panels do" in report
    # The urgent limit is kept with the folder's goals, which the report's panels read.
    assert json.loads((tmp_path / "out" / "objectives.json").read_text())["slo"]["urgent_ttft_s"] == 1.0


def test_a_trace_with_a_bad_cell_is_refused_for_the_cell_not_the_policy(capsys, tmp_path):
    """A policy that reads the trace (priority: its priority column; lpm: its shared prefixes) beside a trace with a
    bad cell: the one line names the trace's row, column and value, not the policy as if the column were missing."""
    tiers = tmp_path / "tiers.csv"
    tiers.write_text("arrival_s,prompt_tokens,output_tokens,priority\n0,100,10,0\n0.1,100,10,1.5\n")
    shares = tmp_path / "shares.csv"
    shares.write_text("arrival_s,prompt_tokens,output_tokens,prefix_group,shared_tokens\n0,100,10,0,0\n"
                      "0.1,100,10,0,many\n")
    for trace, policy, words in ((tiers, "priority", "row 2, column priority: found '1.5'"),
                                 (shares, "lpm", "row 2, column shared_tokens: found 'many'")):
        assert main(["run", "--model", "llama-3-8b", "--device", "l4", "--serving", "--trace", str(trace),
                     "--arrival", "trace", "--queue-policy", policy]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and words in err and "queue-policy" not in err, err
