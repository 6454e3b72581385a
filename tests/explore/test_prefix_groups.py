"""Several cached prefixes and the lpm admission order as a user runs them: `explore run --serving` and a sweep's
serving: section (prefix_groups, queue_policy), their results columns and their one-line errors."""

from __future__ import annotations

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.results import read_results
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import write_sweep, write_tiny_model
from workloads.errors import InputError
from workloads.requests import Fixed

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")


def _served(evaluator, device: str, prompt: int, output: int, **spec) -> dict:
    """The metrics of Llama-3-8B served as an engine on `device`, with the ServingSpec fields `spec`."""
    serving = ServingSpec(prompt=Fixed(tokens=prompt), output=Fixed(tokens=output), **spec)
    point = DesignPoint(model="llama-3-8b", device=device, batch=serving.max_seqs, prompt=0, output=0,
                        serving=serving, execution="engine")
    return evaluator.evaluate(point).metrics


def _documents(evaluator, groups: int | None, policy: str | None, attention: str | None = None) -> dict:
    return _served(evaluator, "l4", 2112, 16, requests=160, rate_per_s=1000.0, prefix_tokens=2048,
                   prefix_groups=groups, queue_policy=policy, seed=3, prefix_attention=attention)


def test_more_prefixes_than_memory_holds_cost_prefill_that_lpm_wins_back(evaluator):
    """Llama-3-8B on a 24 GB L4 holds about 100K tokens of KV beside its weights: 96 prefixes of 2,048 tokens do not
    all fit. An offline batch of 160 requests, each with one of them, in arrival order evicts prefixes that later
    requests need; lpm keeps a group's requests together while its prefix is cached, so it finds more of them and
    computes fewer prefill tokens: its throughput is higher. One shared prefix is always found."""
    one, fcfs, lpm = (_documents(evaluator, *setting) for setting in ((1, None), (96, "fcfs"), (96, "lpm")))
    assert one["prefix_hit_rate"] == 1.0
    assert fcfs["prefix_hit_rate"] < lpm["prefix_hit_rate"] < 1.0
    assert fcfs["output_tokens_per_s"] < lpm["output_tokens_per_s"] < one["output_tokens_per_s"]
    assert fcfs["time_gemm_s"] > lpm["time_gemm_s"] > one["time_gemm_s"]


@pytest.mark.parametrize("groups", [4, 48])
def test_cascade_over_several_groups_never_slows_a_token(evaluator, groups):
    """96 Llama-3-8B requests arriving together on an H100, each after one of `groups` 2,048-token prefixes (every
    one cached) and 64 tokens of its own: cascade attention reads each group's prefix once a step for its sequences,
    so its attention takes longer than with one prefix for all (more prefixes read, fewer queries each) and less
    than paged attention's (a copy per sequence); its mean time per output token is never longer than paged's, and
    the memory held and prefixes found are the same."""
    def run(count: int, attention: str) -> dict:
        return _served(evaluator, "h100-sxm", 2112, 64, requests=96, rate_per_s=1000.0, prefix_tokens=2048,
                       prefix_groups=count, prefix_attention=attention, seed=3)

    one, paged, cascade = run(1, "cascade"), run(groups, "paged"), run(groups, "cascade")
    assert cascade["tpot_mean_s"] <= paged["tpot_mean_s"]
    assert one["time_attention_s"] < cascade["time_attention_s"] < paged["time_attention_s"]
    assert cascade["prefix_hit_rate"] == paged["prefix_hit_rate"] == 1.0
    assert cascade["peak_memory_B"] == paged["peak_memory_B"]
    again = run(groups, "cascade")  # the same seed, the same numbers (NaN where no SLO or price is set)
    assert {name: repr(value) for name, value in again.items()} == {
        name: repr(value) for name, value in cascade.items()}


def test_cascade_where_prefixes_are_evicted_never_slows_a_token(evaluator):
    """The L4 of 96 prefixes above, which do not all fit: lpm keeps a group's requests together, so cascade reads
    their prefix once and cuts the attention time; arrival order mixes the groups, so fewer decode beside another of
    their group. Either way the mean time per output token is never longer than paged's, and the same prefixes are
    found (cascade changes no admission)."""
    for policy in ("fcfs", "lpm"):
        paged, cascade = (_documents(evaluator, 96, policy, attention) for attention in ("paged", "cascade"))
        assert cascade["tpot_mean_s"] <= paged["tpot_mean_s"]
        assert cascade["time_attention_s"] < paged["time_attention_s"]
        assert cascade["prefix_hit_rate"] == paged["prefix_hit_rate"]


def test_no_prefix_reports_no_hit_rate(evaluator):
    metrics = _served(evaluator, "h100-sxm", 64, 4, requests=8, rate_per_s=10.0)
    assert metrics["prefix_hit_rate"] != metrics["prefix_hit_rate"]  # NaN: nothing to find


def _swept(folder, serving: str) -> list[dict]:
    """The results rows of a serving sweep of the tiny model on an H100, 24 requests at 100/s, with `serving` lines."""
    path = write_sweep(folder, f"name: swept\nmodel: {write_tiny_model(folder)}\ndevice: h100-sxm\nexecution: engine\n"
                               f"serving:\n  requests: 24\n  rate: 100\n{serving}")
    assert main([path, "--out", str(folder / "out"), "--quiet"]) == 0
    return read_results(folder / "out")


def test_a_sweep_compares_groups_and_orders(tmp_path, capsys):
    rows = _swept(tmp_path, "  prompt: 96\n  output: 8\n  prefix_tokens: 64\n  prefix_groups: [1, 6]\n"
                            "  queue_policy: [fcfs, lpm]\n")
    assert sorted((row["prefix_groups"], row["queue_policy"]) for row in rows) == [
        (1, "fcfs"), (1, "lpm"), (6, "fcfs"), (6, "lpm")]
    assert all(0 < row["prefix_hit_rate"] <= 1 for row in rows)
    capsys.readouterr()


def test_explore_run_says_what_it_caches(tmp_path, capsys):
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "50", "--requests", "12",
                 "--prompt", "96", "--output", "4", "--prefix-tokens", "64", "--prefix-groups", "4",
                 "--queue-policy", "lpm"]) == 0
    out = capsys.readouterr().out
    assert "a 64-token shared prefix of 4 groups, least recently used evicted" in out and "lpm admission" in out
    assert "prefix_hit_rate" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--prefix-groups", "4"], "--prefix-groups: found 4 with no shared prefix, allowed: with --prefix-tokens N"),
    (["--queue-policy", "lpm"], "--queue-policy: found 'lpm' with no shared prefix, allowed: with --prefix-tokens N"),
    (["--prefix-tokens", "32", "--prefix-groups", "0"], "--prefix-groups: found 0, allowed: an integer >= 1"),
    (["--prefix-tokens", "32", "--prefix-groups", "3", "--attention-device", "ampere-altra",
      "--attention-placement", "hybrid"],
     "--attention-placement: found 'hybrid' with --prefix-groups 3, allowed: apart"),
    (["--think-s", "5"], "--think-s: found 5 with no conversations, allowed: with --conversation-turns N"),
    (["--conversation-turns", "3", "--prefix-groups", "2"],
     "--prefix-groups: found 2 with no shared prefix"),
    (["--conversation-turns", "0"], "--conversation-turns: found 0, allowed: an integer from 1 to 1,000,000"),
    (["--conversation-turns", "3", "--think-s", "-1"], "--think-s: found -1, allowed: seconds >= 0"),
    (["--conversation-turns", "3", "--prefill-replicas", "1", "--prefix-tokens", "32", "--prefix-attention",
      "cascade"],
     "--prefix-attention: found 'cascade' with --conversation-turns 3, allowed: paged (behind a prefill pool"),
])
def test_groups_orders_and_conversations_that_cannot_run_are_one_line(tmp_path, capsys, args, message):
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "5", "--requests", "4",
                 "--prompt", "64", "--output", "4", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_sweep_s_groups_with_no_prefix_is_one_line(tmp_path, capsys):
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: groups\nmodel: {model}\ndevice: h100-sxm\nserving:\n"
                                 "  requests: 4\n  rate: 5\n  prompt: 64\n  output: 4\n  prefix_groups: [2, 4]\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err
    assert "serving.prefix_groups: found" in err and "with no shared prefix" in err
    assert len(err.strip().splitlines()) == 1


def test_a_bad_queue_policy_is_refused():
    with pytest.raises(InputError, match="queue_policy: found 'sjf', allowed: fcfs, lpm"):
        ServingSpec(prefix_tokens=32, queue_policy="sjf")


def _trace_with_groups(folder) -> str:
    """Twelve requests over three documents (trace labels 10, 20, 30), 96-token prompts of a 64-token prefix."""
    path = folder / "questions.csv"
    rows = "".join(f"{i * 0.01:.2f},96,8,{(10, 20, 30)[i % 3]}\n" for i in range(12))
    path.write_text("arrival_s,prompt_tokens,output_tokens,prefix_group\n" + rows)
    return str(path)


def _run_trace(folder, trace: str, *args: str) -> int:
    """`explore run --serving` of the tiny model on an H100 replaying `trace` at its own arrival times."""
    return main(["run", "--model", write_tiny_model(folder), "--device", "h100-sxm", "--serving", "--trace", trace,
                 "--arrival", "trace", *args])


def test_a_trace_s_prefix_groups_serve_as_its_groups(tmp_path, capsys):
    assert _run_trace(tmp_path, _trace_with_groups(tmp_path), "--prefix-tokens", "64") == 0
    out = capsys.readouterr().out
    assert "a 64-token shared prefix of 3 groups" in out
    assert "prefix_hit_rate       1" in out  # the three documents fit beside the requests: each is found


def test_a_trace_s_groups_without_a_prefix_length_are_said_unused(tmp_path, capsys):
    assert _run_trace(tmp_path, _trace_with_groups(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "the trace's 3 prefix groups unused (no --prefix-tokens: nothing is shared)" in out


def test_a_trace_s_groups_beside_prefix_groups_is_one_line(tmp_path, capsys):
    assert _run_trace(tmp_path, _trace_with_groups(tmp_path), "--prefix-tokens", "64", "--prefix-groups", "4") == 2
    err = capsys.readouterr().err
    assert "--prefix-groups: found 4 with --trace" in err and "prefix_group column" in err
    assert len(err.strip().splitlines()) == 1


def test_conversations_find_their_context_where_memory_keeps_it(evaluator):
    """Llama-3-8B, 400 requests as conversations of 4 turns, 10 s of thought between them, 300-token messages and
    200-token answers, 3 requests/s: an A100 keeps every conversation's context, an L4 (24 GB, about 8 GB of it left
    for KV) evicts much of it and recomputes it, so its hit rate and throughput are lower; as independent requests of
    the same lengths nothing is shared."""
    def run(device: str, turns: int | None) -> dict:
        return _served(evaluator, device, 300, 200, requests=400, rate_per_s=3.0, scheduler="chunked",
                       conversation_turns=turns, think_s=10.0 if turns else None)
    a100, l4 = run("a100-sxm-80gb", 4), run("l4", 4)
    assert a100["prefix_hit_rate"] == 1.0 and 0 < l4["prefix_hit_rate"] < 0.8
    assert l4["output_tokens_per_s"] < a100["output_tokens_per_s"]
    independent = run("a100-sxm-80gb", None)["prefix_hit_rate"]
    assert independent != independent  # NaN


def test_conversations_after_a_system_prompt_find_it_and_cascade_over_it(evaluator):
    """The same chats after a 1,024-token system prompt every conversation starts with, on the A100: every first turn
    finds the system prompt (held once, the root of every conversation's chain) and every later turn its
    conversation, so the hit rate stays 1. Read once for all sequences by cascade attention, which an engine runs
    only where it is the faster, the system prompt's decode attention never makes a token slower."""
    def run(attention: str | None) -> dict:
        return _served(evaluator, "a100-sxm-80gb", 300, 200, requests=400, rate_per_s=3.0, scheduler="chunked",
                       conversation_turns=4, think_s=10.0, prefix_tokens=1024, prefix_attention=attention)
    paged, cascade = run(None), run("cascade")
    assert paged["prefix_hit_rate"] == cascade["prefix_hit_rate"] == 1.0
    assert cascade["tpot_mean_s"] <= paged["tpot_mean_s"]


def test_a_sweep_compares_conversations_and_independent_requests(tmp_path, capsys):
    rows = sorted(_swept(tmp_path, "  prompt: 40\n  output: 8\n  conversation_turns: [1, 3]\n  think_s: 0.5\n"),
                  key=lambda row: row["conversation_turns"])
    assert [row["conversation_turns"] for row in rows] == [1, 3]
    assert rows[0]["think_s"] in (None, "") and rows[1]["think_s"] == 0.5  # one turn reads no think time
    assert rows[0]["prefix_hit_rate"] != rows[0]["prefix_hit_rate"] and rows[1]["prefix_hit_rate"] == 1.0
    capsys.readouterr()


def _trace_of_conversations(folder) -> str:
    """Two conversations of three turns, 40-token messages and 8-token answers, each turn 0.5 s after the previous
    answer: the prompts carry the conversation so far and share the previous turn's cached tokens."""
    path = folder / "chat.csv"
    rows = []
    for conversation, start in ((0, 0.0), (1, 0.1)):
        context = 0
        for turn in range(3):
            prompt = context + 40
            rows.append(f"{start},{prompt},8,{conversation},{max(context - 1, 0)},{'' if turn == 0 else 0.5}")
            context = prompt + 8
    rows.sort(key=lambda row: float(row.split(",")[0]))
    path.write_text("arrival_s,prompt_tokens,output_tokens,prefix_group,shared_tokens,after_previous_s\n"
                    + "\n".join(rows) + "\n")
    return str(path)


def test_a_trace_of_conversations_serves_as_conversations(tmp_path, capsys):
    trace = _trace_of_conversations(tmp_path)
    assert _run_trace(tmp_path, trace, "--execution", "engine") == 0
    out = capsys.readouterr().out
    assert "2 prefix groups sharing the trace's shared_tokens" in out
    assert "prefix_hit_rate       1" in out  # every later turn finds the whole blocks of the turn before
    assert _run_trace(tmp_path, trace, "--prefix-tokens", "16") == 2
    err = capsys.readouterr().err
    assert "--prefix-tokens: found 16 with --trace" in err and "shared_tokens column" in err


def test_a_prefill_pool_caches_the_groups_prefixes_and_hands_each_request_s_whole_kv_over(evaluator):
    """Four document prefixes, a prefill pool of two L40S and a decode pool of two: the prefill pool finds every
    prefix (they fit), and the decode pool, which caches no prefix when there are several, receives and holds each
    request's whole KV, so its decode holds more blocks than with one shared prefix (held there once)."""
    def run(groups: int | None) -> dict:
        return _served(evaluator, "l40s", 2112, 32, requests=60, rate_per_s=20.0, scheduler="chunked",
                       prefix_tokens=2048, prefix_groups=groups, prefill_replicas=2, replicas=2, router="cache_aware")
    one, four = run(None), run(4)
    assert one["prefix_hit_rate"] == four["prefix_hit_rate"] == 1.0
    assert four["peak_memory_B"] > one["peak_memory_B"]


def test_a_system_prompt_is_in_front_of_every_conversation_of_one_turn_or_more(tmp_path, capsys):
    """With conversation_turns set, prefix_tokens is a system prompt in front of each conversation's first message,
    one turn included: 40-token messages behind a 64-token system prompt sweep across 1 and 3 turns (the prompt is no
    longer required to hold the prefix), and with memory to spare every admission finds what it shares."""
    rows = sorted(_swept(tmp_path, "  prompt: 40\n  output: 8\n  prefix_tokens: 64\n  conversation_turns: [1, 3]\n"),
                  key=lambda row: row["conversation_turns"])
    assert [row["conversation_turns"] for row in rows] == [1, 3]
    assert all(row["prefix_hit_rate"] == 1.0 for row in rows)
    capsys.readouterr()
    one_turn = ServingSpec(prompt=Fixed(tokens=40), output=Fixed(tokens=8), requests=6, rate_per_s=10.0,
                           prefix_tokens=64, conversation_turns=1)
    requests = one_turn.request_set()
    assert (requests.prompt_tokens == 64 + 40).all() and (requests.shared_tokens == 64).all()


def test_conversations_behind_several_system_prompts(evaluator, capsys):
    """Conversations each drawing one of 4 system prompts of 1,024 tokens (Llama-3-8B on an H100, every prompt
    cached): cascade attention reads each system prompt once for the conversations behind it, so its attention takes
    longer than behind one system prompt (more prefixes read, fewer queries each) and less than paged attention's; every
    turn still finds its context. explore run says what it caches."""
    def run(prompts: int, attention: str) -> dict:
        return _served(evaluator, "h100-sxm", 300, 64, requests=256, rate_per_s=200.0, prefix_tokens=1024,
                       conversation_turns=2, think_s=0.5, prefix_groups=prompts, prefix_attention=attention, seed=3)

    one, paged, cascade = run(1, "cascade"), run(4, "paged"), run(4, "cascade")
    assert one["time_attention_s"] < cascade["time_attention_s"] < paged["time_attention_s"]
    assert one["prefix_hit_rate"] == paged["prefix_hit_rate"] == cascade["prefix_hit_rate"] == 1.0
    argv = ["run", "--model", "llama-3-8b", "--device", "h100-sxm", "--serving", "--execution", "engine", "--requests",
            "16", "--rate", "4", "--prompt", "64", "--output", "4", "--conversation-turns", "2", "--prefix-tokens",
            "512", "--prefix-groups", "4"]
    assert main(argv) == 0
    assert "4 512-token system prompts, each conversation drawing one" in capsys.readouterr().out
