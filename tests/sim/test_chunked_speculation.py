"""A chunked replica that decodes speculatively counts each decode's verified tokens against its token budget, as vLLM
v1's scheduler does (vllm/v1/core/sched/scheduler.py schedule(): a running request schedules num_tokens_with_spec -
num_computed_tokens, 1 + its drafts, cut to the budget left, its drafts trimmed to fit): figures by hand for a budget
of 8 tokens; and without speculation the iteration is what it was, its decodes one token each."""

from __future__ import annotations

import numpy as np
import simpy

from sim.costs import TIME_CLASS_NAMES, IterationCost
from sim.kv_cache import PagedKVCache
from sim.latency_prediction import decoded_batch
from sim.replica import Replica
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler
from sim.speculative import ServingSpeculation, Speculation
from tests.sim.decoding_state import decoding_state

BUDGET = 8


def _replica(decoding: int, *, drafted: int = 0, waiting_prompt: int = 0) -> Replica:
    """A chunked replica (max_seqs 8, a budget of 8 tokens) holding `decoding` sequences past a 4-token prompt, each
    with its first token sampled, and a waiting prompt of `waiting_prompt` tokens (0: none); speculating `drafted`
    tokens (0: not), every draft accepted."""
    state = decoding_state(decoding, output=20, capacity_blocks=4000)
    if waiting_prompt:
        state.waiting.append(Sequence(index=decoding, arrival_s=0.0, prompt=waiting_prompt, output=4))
    speculation = None
    if drafted:
        speculation = ServingSpeculation(Speculation(drafted=drafted, acceptance=1.0))
    scheduler = make_scheduler("chunked", SchedulerLimits(max_seqs=8, chunk_tokens=BUDGET))
    return Replica(simpy.Environment(), None, scheduler, state, window=None, swap_s_per_token=0.0,
                   on_finish=lambda seq: None, speculation=speculation)


def _verified_tokens(batch, decode_query: int) -> int:
    """The query tokens of the iteration's shape as the replica prices it: chunks' and decodes' verified ones."""
    shape = batch.shape(None, decode_query)
    return shape.prefill_tokens + shape.decode_seqs * shape.decode_query


def test_eight_speculating_decodes_take_the_budget_two_whole_and_one_cut():
    """k = 2: each decode verifies 3 tokens. Of 8 running, the first two take 3 + 3 = 6 of the 8 tokens, the third the
    2 left (its next token and 1 draft: vLLM trims its spec_token_ids to the budget), the other five sit out: 8 tokens,
    not 8 x 3 = 24 (before: every one of the 8 verified 3). With every draft accepted the whole two advance 3 tokens,
    the cut one 2."""
    replica = _replica(8, drafted=2)
    batch = replica.scheduler.next_batch(replica.state)
    assert [seq.index for seq in batch.decodes] == [0, 1, 2]
    assert batch.short == (2,)
    assert _verified_tokens(batch, 3) == 3 + 3 + 2 == BUDGET
    replica._apply(batch, 1.0)
    assert [seq.generated for seq in replica.state.running] == [1 + 3, 1 + 3, 1 + 2] + [1] * 5


def test_speculating_decodes_leave_a_prompt_what_their_verified_tokens_do_not_take():
    """Two decodes verifying 3 tokens each leave 8 - 6 = 2 of the budget to a waiting 20-token prompt's chunk."""
    replica = _replica(2, drafted=2, waiting_prompt=20)
    batch = replica.scheduler.next_batch(replica.state)
    assert len(batch.decodes) == 2 and [q for _, q in batch.prefills] == [2]
    assert _verified_tokens(batch, 3) == BUDGET


def test_without_speculation_decodes_take_one_token_each_and_a_prompt_the_rest():
    """The invariant: 5 decodes of one token each and a 3-token chunk of a waiting 20-token prompt (5 + 3 = 8); 8
    decodes take the whole budget, nothing cut."""
    replica = _replica(5, waiting_prompt=20)
    batch = replica.scheduler.next_batch(replica.state)
    assert len(batch.decodes) == 5 and [q for _, q in batch.prefills] == [3] and batch.tokens == BUDGET
    assert _verified_tokens(batch, 1) == BUDGET and batch.short == ()
    full = _replica(8, waiting_prompt=20)
    batch = full.scheduler.next_batch(full.state)
    assert len(batch.decodes) == 8 and not batch.prefills and batch.short == ()


def test_the_predictor_decodes_as_many_as_the_speculating_budget_lets():
    """The predictor reads the scheduler's rule: of 8 held decodes verifying 3 tokens each, an iteration decodes 3
    (two whole and one cut), so a held one waits 8 / 3 iterations between its tokens (before: 8 decoded, 1)."""
    replica = _replica(8, drafted=2)
    assert decoded_batch(replica, [64] * 8) == ([64] * 3, 8 / 3)
    assert decoded_batch(_replica(8), [64] * 8) == ([64] * 8, 1.0)


def test_medusa_heads_run_over_the_rows_a_cut_decode_verifies_too(costs, monkeypatch):
    """Medusa heads (k = 2) run over every verified row: the batch of the first test above verifies 3 + 3 + 2 = 8 rows,
    the cut decode's 2 among them (before: 2 x 3 = 6, the cut decode's rows left out)."""
    rows = []

    def heads_cost(self, count):
        rows.append(count)
        return IterationCost(time_s=0.0, compute_J=0.0, memory_J=0.0, class_time_s=np.zeros(len(TIME_CLASS_NAMES)))

    monkeypatch.setattr(ServingSpeculation, "_heads_cost", heads_cost)
    replica = _replica(8, drafted=2)
    replica.costs = costs
    batch = replica.scheduler.next_batch(replica.state)
    assert batch.short == (2,)
    replica._price(batch)
    assert rows == [3 + 3 + 2]


def test_a_draft_s_first_step_runs_a_cut_decode_on_its_verified_tokens_and_slot():
    """A draft model's first step (k = 2: 3 verified tokens and 1 slot, 4 a decode) over the first test's batch: two
    whole decodes of 4 tokens and the cut one's 2 verified and its slot, 4 + 4 + 3 = 11 query tokens (before: 12, the
    cut decode counted whole), the cut one's attending to its cached keys as a chunk's do."""
    replica = _replica(8, drafted=2)
    batch = replica.scheduler.next_batch(replica.state)
    first, _ = batch.draft_shapes(None, first_query=4, chunk_slots=1)
    assert first.prefill_tokens + first.decode_seqs * first.decode_query == 4 + 4 + 3
    assert first.decode_seqs == 2 and first.sampled == 3


def test_under_the_priority_policy_a_preempted_decode_s_budget_goes_to_the_decodes_past_it():
    """A budget of 2 tokens, four decodes (indices 0-3) in a full cache, only 1 needing a new block for its next token,
    0 the least urgent. vLLM v1 by hand (scheduler.py schedule()): 0 is scheduled (1 token left), 1 cannot grow, so the
    least urgent running request, 0, is preempted and gives its token back, 1 grows (1 left) and 2 takes the last; 3
    sits out. Before, the budget was spent on 0 and 1 alone and 2 sat out (decodes [1], a token unused)."""
    kv = PagedKVCache(capacity_blocks=2 + 3, block_tokens=16)  # every block held
    state = EngineState(kv=kv)
    for index in range(4):
        computed = 32 if index == 1 else 8  # 1 holds two full blocks; the others 9 tokens of one
        seq = Sequence(index=index, arrival_s=float(index), prompt=computed, output=20, priority=int(index == 0))
        seq.computed, seq.generated = computed, 1
        kv.hold(index, computed if index == 1 else computed + 1)
        state.running.append(seq)
    limits = SchedulerLimits(max_seqs=8, chunk_tokens=2, watermark=0.0, queue_policy="priority")
    batch = make_scheduler("chunked", limits).next_batch(state)
    assert [seq.index for seq in batch.decodes] == [1, 2]
    assert [seq.index for seq in state.waiting] == [0]
