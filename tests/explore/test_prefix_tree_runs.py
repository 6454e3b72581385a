"""A Mooncake trace served as a user runs it: `explore run --trace FILE.jsonl` says it caches a prefix tree and
finds what a hand count of the ids says, admits longest prefix first when asked (SGLang's lpm), refuses a prefix of
its flags beside the trace's own, and a bad line is one line, exit 2."""

from __future__ import annotations

import json

from explore.cli import main

RUN = ["run", "--model", "llama-3-8b", "--device", "h100-sxm", "--serving", "--execution", "engine"]


def _trace(tmp_path, lines):
    path = tmp_path / "agents.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _calls(count: int) -> list[dict]:
    """One system prompt of 2 blocks, then calls that each resend the one before and add a block."""
    return [{"timestamp": 100 * i, "input_length": 512 * (3 + i), "output_length": 20,
             "hash_ids": [0, 1, *range(2, 3 + i)]} for i in range(count)]


def test_a_trace_of_hash_ids_is_served_as_a_prefix_tree(tmp_path, capsys):
    path = _trace(tmp_path, _calls(8))
    assert main([*RUN, "--trace", str(path), "--arrival", "trace", "--queue-policy", "lpm"]) == 0
    out = capsys.readouterr().out
    assert "cached as a prefix tree" in out.splitlines()[0]
    assert main([*RUN, "--trace", str(path), "--arrival", "trace", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    # Call i (a prompt of 3 + i blocks of 512) finds the 2 + i blocks of the call before it (all of which that call
    # cached), the first call nothing: of the 8 calls' 3 + 4 + ... + 10 = 52 blocks, 3 + 4 + ... + 9 = 42 found.
    assert abs(metrics["prefix_hit_rate"] - 42 / 52) < 1e-9


def test_a_prefix_of_the_flags_is_refused_beside_a_tree(tmp_path, capsys):
    path = str(_trace(tmp_path, _calls(3)))
    assert main([*RUN, "--trace", path, "--rate", "2", "--prefix-tokens", "64"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "--prefix-tokens: found 64 with --trace" in err, err
    assert "hash_ids give each request's shared prefix, allowed: 0" in err, err


def test_a_bad_line_is_one_line_exit_2(tmp_path, capsys):
    lines = _calls(3)
    lines[1]["hash_ids"] = [0, 1]  # 2 ids for a 2,048-token prompt: 4 are due
    assert main([*RUN, "--trace", str(_trace(tmp_path, lines)), "--rate", "2"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "line 2, key hash_ids: found 2 ids, allowed: 4" in err, err


def test_a_timed_trace_without_a_rate_is_offered_its_own_times(tmp_path, capsys):
    assert main([*RUN, "--trace", str(_trace(tmp_path, _calls(3)))]) == 2
    err = capsys.readouterr().err
    assert "--rate: found poisson arrivals without a rate, allowed: a rate > 0 req/s, " in err, err
    assert "(or with --arrival 'trace': the trace's own times)" in err, err


def test_an_explicit_request_count_beyond_the_trace_is_one_line(tmp_path, capsys):
    """--requests 1000 on a three-call trace was read as the default and served three calls silently."""
    path = str(_trace(tmp_path, _calls(3)))
    assert main([*RUN, "--trace", path, "--rate", "2", "--requests", "1000"]) == 2
    err = capsys.readouterr().err
    assert "--requests: found 1000, allowed: at most 3, the requests in trace" in err and len(err.splitlines()) == 1
    assert main([*RUN, "--trace", path, "--rate", "2", "--json"]) == 0  # left out: all three
    assert json.loads(capsys.readouterr().out)["requests_per_s"] > 0
