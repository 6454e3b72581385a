"""The KV slots vLLM v1's scheduler allocates past a request's scheduled tokens (num_lookahead_tokens: k where a draft
model or an MTP module proposes, which writes its proposals' KV after the pass; none for the n-gram proposer or Medusa
heads), worked by hand in blocks of 16 tokens against vllm/v1/core/sched/scheduler.py schedule(), commit 00024d31 of
vllm-project/vllm: every running request's allocate_slots holds them, a prefill chunk's included; a waiting one's
only where num_computed_tokens > 0 (a handed-over request whose KV was pulled), not a new prompt's first chunk; and a
handed-over request, having no drafts yet, schedules one token (sim/schedulers/chunked.py)."""

from __future__ import annotations

import pytest

from sim.kv_cache import PagedKVCache
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler
from sim.speculative import ServingSpeculation, Speculation


def _limits(draft: bool, chunk_tokens: int = 16) -> SchedulerLimits:
    """k = 2, as the evaluator and the replica set them: the slots past a decode's next token (its 2 drafts, and a
    draft's 2 proposals) and the tokens it verifies (3)."""
    speculation = ServingSpeculation(Speculation(drafted=2, acceptance=1.0), draft=object() if draft else None)
    return SchedulerLimits(max_seqs=8, chunk_tokens=chunk_tokens, watermark=0.0,
                           lookahead_slots=speculation.lookahead_slots, verify_tokens=speculation.speculation.verified)


@pytest.mark.parametrize(("draft", "blocks"), [(True, 3), (False, 2)])
def test_a_prefill_chunk_under_way_holds_the_drafts_lookahead(draft, blocks):
    """A 40-token prompt with 16 computed, budget 16: its second chunk, 16 tokens, holds 16 + 16 + 2 = 34 slots, 3
    blocks, where a draft proposes (allocate_slots(..., num_lookahead_tokens=2)); 32, 2 blocks, for the n-gram
    proposer (num_lookahead_tokens 0)."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=100, block_tokens=16))
    seq = Sequence(index=0, arrival_s=0.0, prompt=40, output=8)
    seq.computed = 16
    state.kv.hold(0, 16)
    state.running.append(seq)
    batch = make_scheduler("chunked", _limits(draft)).next_batch(state)
    assert batch.prefills == [(seq, 16)]
    assert state.kv.in_use_blocks == blocks


def test_a_new_prompts_first_chunk_holds_no_lookahead():
    """A waiting 40-token prompt, budget 16, a draft proposing k = 2: num_computed_tokens is 0, so
    effective_lookahead_tokens is 0: its first chunk holds 16 slots, one block (not 18, two)."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=100, block_tokens=16))
    state.waiting.append(Sequence(index=0, arrival_s=0.0, prompt=40, output=8))
    batch = make_scheduler("chunked", _limits(draft=True)).next_batch(state)
    assert [q for _, q in batch.prefills] == [16]
    assert state.kv.in_use_blocks == 1


@pytest.mark.parametrize(("draft", "context"), [(True, 13), (False, 14)])
def test_a_handed_over_request_holds_its_next_token_and_the_lookahead_only(draft, context):
    """Handed over (its context computed elsewhere), it schedules 1 token, its spec_token_ids empty, and allocates
    the lookahead past it: with 13 tokens of context, 13 + 1 + 2 = 16 slots where a draft proposes; with 14, 14 + 1 =
    15 for the n-gram proposer: one block either way (slots for the 2 drafts it does not verify would make 18 and 17:
    two)."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=100, block_tokens=16))
    seq = Sequence(index=0, arrival_s=0.0, prompt=context, output=8)
    seq.computed, seq.generated, seq.scheduled_s, seq.first_token_s = context, 1, 0.0, 0.0
    state.waiting.append(seq)
    batch = make_scheduler("chunked", _limits(draft)).next_batch(state)
    assert batch.decodes == [seq]
    assert state.kv.in_use_blocks == 1
