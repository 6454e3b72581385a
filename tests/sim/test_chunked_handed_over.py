"""A decode pool's chunked scheduler admitting the requests a prefill pool hands over, worked by hand against vLLM v1's
scheduler with a KV connector (vllm/v1/core/sched/scheduler.py schedule(), commit 00024d31 of vllm-project/vllm): a
handed-over request waits in the waiting queue (WAITING_FOR_REMOTE_KVS until its KV has arrived) and is scheduled in
the loop over waiting requests, after the running ones, while token budget is left and nothing was preempted, its
blocks allocated there; its first step computes one token (its context's last) and samples."""

from __future__ import annotations

import simpy

from sim.kv_cache import PagedKVCache
from sim.replica import Replica
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler
from sim.speculative import ServingSpeculation, Speculation


def _decoding(state: EngineState, index: int, context: int, held: int) -> Sequence:
    """A running sequence past its prompt of `context` tokens, one token generated, holding KV for `held` tokens."""
    seq = Sequence(index=index, arrival_s=float(index), prompt=context, output=20)
    seq.computed, seq.generated = context, 1
    state.kv.hold(index, held)
    state.running.append(seq)
    return seq


def _handed_over(state: EngineState, index: int, context: int) -> Sequence:
    """A waiting sequence a prefill pool handed over: its prompt of `context` tokens computed, its first token out."""
    seq = Sequence(index=index, arrival_s=float(index), prompt=context, output=20)
    seq.computed, seq.generated, seq.scheduled_s, seq.first_token_s = context, 1, 0.0, 0.0
    state.waiting.append(seq)
    return seq


def _prompt(state: EngineState, index: int, prompt: int) -> Sequence:
    seq = Sequence(index=index, arrival_s=float(index), prompt=prompt, output=20)
    state.waiting.append(seq)
    return seq


def test_a_handed_over_request_whose_blocks_do_not_fit_waits_and_preempts_no_one():
    """Three 16-token blocks: decode 0 holds one full (16 tokens), so its next token needs a second; two are free.
    Handed over, 1 (20 tokens of context) needs two blocks for its context and next token. Budget 8. vLLM v1 by hand:
    the running loop first: 0's allocate_slots takes a free block (one left); then the waiting loop (budget 7, nothing
    preempted): 1's blocks do not fit the one left, allocate_slots fails, the loop breaks. The iteration decodes 0; 1
    waits, preempted by no one. Before, 1 was admitted first into both free blocks, and 0's growth then preempted the
    newest running request, 1, which had to recompute its 21 tokens."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=3, block_tokens=16))
    _decoding(state, 0, context=16, held=16)
    handed = _handed_over(state, 1, context=20)
    batch = make_scheduler("chunked", SchedulerLimits(max_seqs=8, chunk_tokens=8, watermark=0.0)).next_batch(state)
    assert [seq.index for seq in batch.decodes] == [0] and batch.prefills == []
    assert list(state.waiting) == [handed] and handed.preemptions == 0 and state.preemptions == 0
    assert not handed.in_prefill and state.kv.in_use_blocks == 2


def test_a_handed_over_request_waits_while_the_running_decodes_take_the_budget():
    """Budget 4, four running decodes with room for their next tokens, and 1 handed over waiting. vLLM v1 by hand: the
    running loop takes 4 tokens, token_budget is 0, so the loop over waiting requests does not start: 4 stays waiting,
    holding no blocks. Before, it was admitted (its blocks held, decode_admitted_s set) and sat out the iteration."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=100, block_tokens=16))
    for index in range(4):
        _decoding(state, index, context=8, held=9)
    handed = _handed_over(state, 4, context=8)
    batch = make_scheduler("chunked", SchedulerLimits(max_seqs=8, chunk_tokens=4, watermark=0.0)).next_batch(state)
    assert [seq.index for seq in batch.decodes] == [0, 1, 2, 3]
    assert list(state.waiting) == [handed] and handed not in state.running
    assert state.kv.in_use_blocks == 4


def test_a_handed_over_request_behind_a_prompt_decodes_in_the_iteration_that_admits_it():
    """Nothing running; waiting, in arrival order, a new 4-token prompt (0) and 1 handed over (8 tokens of context).
    Budget 8. vLLM v1 by hand, its waiting loop: 0 is scheduled whole (4 tokens, budget 4 left), then 1, one token
    (num_tokens - num_computed_tokens), budget 3 left: one step prefills 0 and decodes 1. Before, 1 was admitted
    behind the prompt but decoded only from the next iteration."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=100, block_tokens=16))
    prompt = _prompt(state, 0, prompt=4)
    handed = _handed_over(state, 1, context=8)
    batch = make_scheduler("chunked", SchedulerLimits(max_seqs=8, chunk_tokens=8, watermark=0.0)).next_batch(state)
    assert batch.prefills == [(prompt, 4)] and batch.decodes == [handed]
    assert batch.computed_tokens() == 5 and state.running == [prompt, handed] and not state.waiting


def test_a_handed_over_request_speculating_schedules_one_token_having_no_drafts_yet():
    """k = 2, every draft accepted, budget 8: decodes 0 and 1 running (their drafts ready), 2 handed over waiting (8
    tokens of context). vLLM v1 by hand: the running loop takes 1 + 2 tokens for each, 6, budget 2; the waiting loop
    schedules 2 with num_tokens - num_computed_tokens = 1 token, its spec_token_ids empty (the draft has not run over
    it), budget 1. The iteration computes 3 + 3 + 1 = 7 query tokens, 2's one as a chunk's beside the verifications;
    0 and 1 advance 3 tokens each, 2 one, and the draft then runs over all three. Before, 2 needed 3 tokens of budget
    and waited (decodes 0 and 1 alone); where it fitted, its first step verified 3 and advanced up to 3."""
    kv = PagedKVCache(capacity_blocks=100, block_tokens=16)
    state = EngineState(kv=kv)
    for index in range(2):
        _decoding(state, index, context=8, held=8 + 5)
    handed = _handed_over(state, 2, context=8)
    scheduler = make_scheduler("chunked", SchedulerLimits(max_seqs=8, chunk_tokens=8, watermark=0.0))
    speculation = ServingSpeculation(Speculation(drafted=2, acceptance=1.0))
    replica = Replica(simpy.Environment(), None, scheduler, state, window=None, swap_s_per_token=0.0,
                      on_finish=lambda seq: None, speculation=speculation)
    batch = scheduler.next_batch(state)
    assert [seq.index for seq in batch.decodes] == [0, 1, 2] and batch.short == (1,)
    assert batch.computed_tokens(3) == 7
    shape = batch.shape(None, 3)
    assert (shape.decode_seqs, shape.prefill_seqs, shape.prefill_tokens, shape.sampled) == (2, 1, 1, 7)
    replica._apply(batch, 1.0)
    assert [seq.generated for seq in state.running] == [4, 4, 2] and handed.computed == 9
