"""A seed nothing reads is said so: a trace replayed at its own times draws nothing from it, so `explore run --seed`
and a sweep's serving.seed give the same run whatever they are (checked here by running both), unless something is
drawn beside the trace (urgent requests, prefix groups, a speculative decode, a router's picks)."""

from __future__ import annotations

import json

from tiny_sweep import write_sweep, write_tiny_model

from explore.cli import main


def _trace(tmp_path) -> str:
    path = tmp_path / "timed.csv"
    rows = "".join(f"{0.05 * i:.2f},{32 + 8 * (i % 5)},{4 + i % 3}\n" for i in range(40))
    path.write_text("arrival_s,prompt_tokens,output_tokens\n" + rows)
    return str(path)


def _run(capsys, tmp_path, *flags: str) -> tuple[dict, str]:
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--trace", _trace(tmp_path),
                 "--arrival", "trace", "--json", *flags]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_a_seed_a_timed_trace_never_reads_is_said_so(capsys, tmp_path):
    plain, quiet = _run(capsys, tmp_path)
    seeded, said = _run(capsys, tmp_path, "--seed", "7")
    assert seeded == plain and "--seed" not in quiet
    assert "notice: --seed: trace" in said and "every seed gives the same run" in said, said
    # Urgent requests are drawn from the seed (tests/workloads/test_requests.py): no notice.
    _, told = _run(capsys, tmp_path, "--priority-fraction", "0.5", "--seed", "2")
    assert "--seed" not in told
    # So are a predicted-latency router's picks: two seeds route the requests differently, and nothing is said.
    routed = [_run(capsys, tmp_path, "--replicas", "3", "--router", "predicted_latency", "--seed", seed)
              for seed in ("2", "5")]
    assert routed[0][0] != routed[1][0] and not any("--seed" in err for _, err in routed)


def test_a_sweep_says_so_before_it_runs(capsys, tmp_path):
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: seeded\nmodel: {model}\ndevice: h100-sxm\nserving:\n"
                                 f"  trace: {_trace(tmp_path)}\n  arrival: trace\n  seed: 3\n")
    assert main(["check", path]) == 0
    assert "note: serving.seed: trace" in capsys.readouterr().out
