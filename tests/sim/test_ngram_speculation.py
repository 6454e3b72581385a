"""N-gram speculation (sim/speculative.py NGRAM, vLLM's prompt lookup): a sequence's step has drafts with chance
`match` and yields E(a, k) tokens in expectation, else none and one token; a serving replica's decode without a match
verifies one token where the others verify k + 1. Figures by hand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import simpy

from sim.latency_prediction import decoded_batch, drafted_share
from sim.replica import Replica
from sim.schedulers import SchedulerLimits, Sequence, make_scheduler
from sim.speculative import ServingSpeculation, Speculation, expected_steps, step_token_odds
from tests.sim.decoding_state import decoding_state


def test_tokens_a_step_by_hand():
    """a = 0.5, k = 3: E = (1 - 0.5^4) / 0.5 = 1.875 with drafts; at match 0.6 a step yields 0.6 x 1.875 + 0.4 x 1 =
    1.525. Its odds: one token 0.4 + 0.6 x 0.5 = 0.7, two 0.6 x 0.25 = 0.15, three 0.075, four 0.075."""
    spec = Speculation(drafted=3, acceptance=0.5, match=0.6)
    assert spec.tokens_per_step == pytest.approx(1.525)
    assert step_token_odds(spec) == pytest.approx([0.7, 0.15, 0.075, 0.075])
    assert step_token_odds(spec) @ np.arange(1, 5) == pytest.approx(1.525)


def test_no_match_yields_one_token_a_step_as_no_speculation():
    """Match 0: every step yields one token, so 10 tokens take 10 steps, whatever the acceptance."""
    spec = Speculation(drafted=4, acceptance=0.9, match=0.0)
    assert spec.tokens_per_step == 1.0
    assert expected_steps(10, spec) == pytest.approx(10.0)


def test_a_match_share_outside_0_to_1_is_refused():
    with pytest.raises(ValueError, match="ngram_match: found 1.5, allowed: a fraction from 0 to 1"):
        Speculation(drafted=2, acceptance=0.5, match=1.5)


def _replica(match: float, decoding: int = 8) -> Replica:
    """A chunked replica whose budget never binds, holding `decoding` long sequences past a 4-token prompt, each with
    its first token sampled, speculating k = 2 tokens at the n-gram match share `match`, every draft accepted."""
    state = decoding_state(decoding, output=100_000, capacity_blocks=8000)
    speculation = ServingSpeculation(Speculation(drafted=2, acceptance=1.0, match=match), lookup=True)
    scheduler = make_scheduler("chunked", SchedulerLimits(max_seqs=decoding, chunk_tokens=4096))
    return Replica(simpy.Environment(), None, scheduler, state, window=None, swap_s_per_token=0.0,
                   on_finish=lambda seq: None, speculation=speculation, seed=(7,))


@pytest.mark.parametrize(("match", "tokens"), [(0.0, 1.0), (0.5, 2.0), (1.0, 3.0)])
def test_a_served_decode_verifies_k_plus_one_tokens_with_a_match_and_one_without(match, tokens):
    """k = 2: a decode with a match verifies 3 tokens and, every draft accepted, advances 3; one without verifies and
    advances 1. Over 300 iterations of 8 decodes the mean per decode is m x 3 + (1 - m) x 1: 1, 2 and 3 at m = 0,
    0.5 and 1 (the draws' standard error at 0.5: 1 / sqrt(2,400) = 0.02; the first iteration, before any lookup has
    run, verifies 3 each)."""
    replica = _replica(match)
    verified, advanced = [], []
    for step in range(1, 301):
        batch = replica.next_batch()
        before = sum(seq.generated for seq in batch.decodes)
        if step > 1:
            verified.append(batch.computed_tokens(3) / len(batch.decodes))
        replica._apply(batch, float(step))
        if step > 1:
            advanced.append((sum(seq.generated for seq in batch.decodes) - before) / len(batch.decodes))
    assert np.mean(verified) == pytest.approx(tokens, abs=0.08)
    assert np.mean(advanced) == pytest.approx(tokens, abs=0.08)


def _budgeted(decoding: int, unmatched: list[int], *, waiting_prompt: int = 20) -> Replica:
    """A chunked replica (a budget of 8 tokens) holding `decoding` sequences past a 4-token prompt, n-gram speculating
    k = 2 tokens (lookahead slots 2, as the evaluator sets them: the k it verifies), the sequences `unmatched` having
    found no match after their last pass, and a waiting prompt of `waiting_prompt` tokens (0: none)."""
    state = decoding_state(decoding, output=100, capacity_blocks=4000)
    if waiting_prompt:
        state.waiting.append(Sequence(index=decoding, arrival_s=0.0, prompt=waiting_prompt, output=4))
    state.no_drafts.update(unmatched)
    speculation = ServingSpeculation(Speculation(drafted=2, acceptance=1.0, match=0.5), lookup=True)
    scheduler = make_scheduler("chunked", SchedulerLimits(max_seqs=8, chunk_tokens=8, lookahead_slots=2))
    return Replica(simpy.Environment(), None, scheduler, state, window=None, swap_s_per_token=0.0,
                   on_finish=lambda seq: None, speculation=speculation, seed=(7,))


def test_unmatched_decodes_leave_their_budget_to_a_waiting_prompt():
    """vLLM v1 schedules a decode's 1 + len(spec_token_ids) tokens, one where the n-gram proposer found no match. Of
    a budget of 8, decode 0 with a match takes 3 and decodes 1 and 2 without one take 1 each: 3 + 1 + 1 = 5, leaving
    3 to the waiting 20-token prompt's chunk (before: each counted 3, 9 > 8, so decode 2 was cut to 2 and no chunk
    ran). The iteration computes 3 + 1 + 1 + 3 = 8 tokens, the unmatched decodes listed last verifying one each."""
    replica = _budgeted(3, unmatched=[1, 2])
    batch = replica.next_batch()
    assert [q for _, q in batch.prefills] == [3]
    assert [seq.index for seq in batch.decodes] == [0, 1, 2] and batch.short == (1, 1)
    assert batch.computed_tokens(3) == 8


def test_unmatched_decodes_let_more_decodes_into_the_budget():
    """Eight decodes, 1 to 7 unmatched: decode 0 takes 3 and seven unmatched take 1 each, 3 + 5 = 8 in the budget of
    8 before the last two: decodes 0 to 5 run (before: 3 + 3 + 2, decodes 0 to 2, the third cut)."""
    replica = _budgeted(8, unmatched=list(range(1, 8)))
    batch = replica.next_batch()
    assert [seq.index for seq in batch.decodes] == [0, 1, 2, 3, 4, 5] and batch.short == (1,) * 5
    assert not batch.prefills and batch.computed_tokens(3) == 8


def test_an_unmatched_decode_holds_kv_for_its_one_token():
    """vLLM v1 allocates num_new_tokens + num_lookahead_tokens slots, the lookahead none for the n-gram proposer: a
    decode with a match holds its 5 cached tokens and 3 more, 8 tokens in one block of 16; past a block's edge the
    difference shows. With 14 tokens cached (prompt 4 and 10 generated), the matched decode holds 14 + 3 = 17 tokens,
    2 blocks, the unmatched one 14 + 1 = 15, 1 block (before: 17, 2 blocks, as with a match)."""
    replica = _budgeted(2, unmatched=[1], waiting_prompt=0)
    for seq in replica.state.running:
        seq.computed, seq.generated = 14, 10
        replica.state.kv.hold(seq.index, 14)
    used = replica.state.kv.used_blocks
    replica.next_batch()
    assert replica.state.kv.used_blocks - used == 1  # the matched decode's second block only


def test_the_predictor_counts_the_expected_matches_against_the_budget():
    """k = 2 at match 0.5: a decode verifies 1 + 0.5 x 2 = 2 tokens in expectation, so a budget of 8 decodes 4 of 8
    held in an iteration (every other one, in the predictor's even spread, verifying 3: 1 + 3 + 1 + 3 = 8), and a held
    one waits 8 / 4 = 2 iterations between its tokens (counting k + 1 = 3 each: 3 + 3 + 2, three decoded, 8 / 3)."""
    replica = _budgeted(8, unmatched=[], waiting_prompt=0)
    assert drafted_share(replica) == 0.5
    assert replica.scheduler.decode_tokens(8, drafted_share(replica)) == [1, 3, 1, 3]
    assert decoded_batch(replica, [64] * 8) == ([64] * 4, 2.0)


def test_the_predicted_decodes_an_iteration_are_near_the_simulated_mean():
    """Against the scheduler drawing each decode's lookup: over 300 iterations of the 8 decodes the budget of 8
    decodes 4.4 of them an iteration in the mean (a random order of 1s and 3s leaves a decode cut short more often
    than the even spread, which fills the budget exactly), within 0.5 of the predicted 4 and nearer it than the 3
    counting k + 1 for every decode gives."""
    replica = _budgeted(8, unmatched=[], waiting_prompt=0)
    for seq in replica.state.running:
        seq.output = 100_000
    decoded = []
    for step in range(1, 301):
        batch = replica.next_batch()
        if step > 1:
            decoded.append(len(batch.decodes))
        replica._apply(batch, float(step))
    predicted = len(decoded_batch(replica, [64] * 8)[0])
    every = 3  # k + 1 = 3 tokens counted for every decode: 3 + 3 + 2 of the budget of 8, three decoded
    assert predicted == 4
    assert abs(np.mean(decoded) - predicted) <= 0.5
    assert abs(np.mean(decoded) - predicted) < abs(np.mean(decoded) - every)


def test_the_planners_count_the_expected_matches_against_the_budget(monkeypatch):
    """The autoscalers' planners predict the time between tokens as the latency predictor does: 8 held decodes at
    match 0.5 under a budget of 8 decode 4 an iteration, a held one waiting 2 of them (counting k + 1 = 3 a decode:
    8 / 3). An iteration priced at 1 s: Dynamo's SLA planner's decode time 2 s; its load planner holds the 8 under an
    ITL of 2.5 s (/ SCALE_DOWN_SENSITIVITY) and not under 1.9 s."""
    from sim.autoscalers import load_planner, sla_planner

    monkeypatch.setattr(sla_planner, "iteration_s", lambda *args: 1.0)
    monkeypatch.setattr(load_planner, "iteration_s", lambda *args: 1.0)
    replica = _budgeted(8, unmatched=[], waiting_prompt=0)
    planner = sla_planner.SLAPlanner.__new__(sla_planner.SLAPlanner)  # decode_s reads only its memo
    planner.memo = {}
    assert planner.decode_s(replica, 8, 64) == 2.0
    sensitivity = load_planner.SCALE_DOWN_SENSITIVITY
    holds = []
    for itl_s in (2.5, 1.9):
        loads = load_planner.LoadPlanner.__new__(load_planner.LoadPlanner)
        loads.memo, loads.scaling = {}, SimpleNamespace(tpot_s=itl_s / sensitivity)
        holds.append(loads._tokens_hold(replica, 1.0))
    assert holds == [True, False]
