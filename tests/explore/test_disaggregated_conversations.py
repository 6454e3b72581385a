"""Conversations behind a prefill pool (Splitwise / DistServe with multi-turn chat): each turn is prefilled on the
prefill replica that served its conversation so far, which holds the earlier turns' prompts but not their answers
(those were decoded on the decode pool), so a turn finds the previous turn's prompt and computes its answer again.
Checked against a hand count of the blocks each turn finds."""

from __future__ import annotations

import json

import pytest

from explore.cli import main

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

BLOCK = 16  # the serving default's KV block (ServingSpec.block_tokens)
SYSTEM, MESSAGE, ANSWER, TURNS = 1024, 300, 200, 4


def _hit_rate(capsys, *extra: str) -> float:
    argv = ["run", "--model", "llama-3-8b", "--device", "h100-sxm", "--serving", "--execution", "engine",
            "--prompt", str(MESSAGE), "--output", str(ANSWER), "--rate", "1", "--requests", str(3 * TURNS),
            "--conversation-turns", str(TURNS), "--think-s", "1", "--prefix-tokens", str(SYSTEM), "--json", *extra]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)["prefix_hit_rate"]


def _by_hand() -> tuple[int, int, int]:
    """Per conversation, the whole blocks its turns may share (the system prompt for the first, the conversation so
    far less its last answer token for a later one), and those found beside the decode (all of them) and behind a
    prefill pool (a later turn the previous turn's prompt only)."""
    sought = behind = SYSTEM // BLOCK  # the first turn: the system prompt
    prompts = [SYSTEM + MESSAGE + turn * (ANSWER + MESSAGE) for turn in range(TURNS)]
    for previous in prompts[:-1]:  # each later turn, after the turn before it
        sought += (previous + ANSWER - 1) // BLOCK
        behind += previous // BLOCK
    return sought, sought, behind


def test_a_turn_behind_a_prefill_pool_finds_the_previous_prompt_not_its_answer(capsys):
    sought, together, behind = _by_hand()
    assert (sought, behind) == (64 + 95 + 126 + 157, 64 + 82 + 114 + 145)
    assert _hit_rate(capsys) == pytest.approx(together / sought)
    assert _hit_rate(capsys, "--prefill-replicas", "1") == pytest.approx(behind / sought)


def test_a_trace_s_conversations_behind_a_prefill_pool_say_what_is_cached_where(tmp_path, capsys):
    chat = tmp_path / "chat.csv"  # two conversations of two turns (the second shares the first's 459 cached tokens)
    chat.write_text("arrival_s,prompt_tokens,output_tokens,prefix_group,shared_tokens,after_previous_s\n"
                    "0.0,400,60,0,0,\n0.5,400,60,1,0,\n0.5,900,60,0,459,2.0\n0.5,900,60,1,459,2.0\n")
    argv = ["run", "--model", "llama-3-8b", "--device", "h100-sxm", "--serving", "--execution", "engine", "--trace",
            str(chat), "--rate", "1", "--prefill-replicas", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "on the prefill replica that served it, which keeps their prompts cached" in out.splitlines()[0]
    # Each later turn finds the earlier prompt's 25 whole blocks of the 28 (459 tokens) it may share.
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prefix_hit_rate"] == pytest.approx(25 / 28)
