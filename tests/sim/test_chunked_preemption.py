"""The chunked scheduler under KV pressure, worked by hand against vLLM v1's scheduler (vllm/v1/core/sched/scheduler.py
schedule(), commit 00024d31 of vllm-project/vllm): a replica with a KV cache of a few 16-token blocks, where a decode's
next token needs a block none is free for."""

from __future__ import annotations

from sim.kv_cache import PagedKVCache
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler


def _decoding(state: EngineState, index: int, context: int, held: int, priority: int = 0) -> Sequence:
    """A running sequence past its prompt of `context` tokens, one token generated, holding KV for `held` tokens."""
    seq = Sequence(index=index, arrival_s=float(index), prompt=context, output=20, priority=priority)
    seq.computed, seq.generated = context, 1
    state.kv.hold(index, held)
    state.running.append(seq)
    return seq


def _prefilling(state: EngineState, index: int, prompt: int, computed: int) -> Sequence:
    """A running sequence `computed` tokens into its prompt of `prompt`, holding KV for those."""
    seq = Sequence(index=index, arrival_s=float(index), prompt=prompt, output=20)
    seq.computed = computed
    state.kv.hold(index, computed)
    state.running.append(seq)
    return seq


def test_an_iteration_that_preempts_admits_no_waiting_request():
    """Three blocks, all held: 0 (16 tokens, one full block) must grow a block for its next token, 1 holds two (25
    tokens). Budget 8. vLLM v1 by hand: 0 cannot grow, so under fcfs the newest running request, 1, is preempted (two
    blocks free) and 0 grows into one of them; preempted_reqs is not empty, so no waiting request is scheduled: the
    iteration decodes 0 alone and 1 waits, though a 7-token chunk of it would fit the block left. Before, 1 was admitted
    again in the same iteration with that chunk (prefills [(1, 7)])."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=3, block_tokens=16))
    _decoding(state, 0, context=16, held=16)
    _decoding(state, 1, context=24, held=25)
    limits = SchedulerLimits(max_seqs=8, chunk_tokens=8, watermark=0.0)
    batch = make_scheduler("chunked", limits).next_batch(state)
    assert [seq.index for seq in batch.decodes] == [0]
    assert batch.prefills == []
    assert [seq.index for seq in state.waiting] == [1] and state.kv.in_use_blocks == 2


def test_an_iteration_left_empty_by_a_preemption_is_scheduled_again_at_once():
    """Two blocks, held by 0, 20 tokens into its 40-token prompt; budget 16. Its next chunk of 16 needs a third block: 0
    is the only running request, so it preempts itself, and vLLM v1 schedules nothing else that step (no waiting request
    after a preemption); its whole block stays cached, its partial second is freed. Its engine then schedules again: 0,
    waiting, is admitted, finds the 16 tokens of its cached block and takes a chunk of 16 more (a block found, one new).
    The batch is that chunk, not an empty one (which the replica takes for an unschedulable request)."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=2, block_tokens=16))
    seq = _prefilling(state, 0, prompt=40, computed=20)
    batch = make_scheduler("chunked", SchedulerLimits(max_seqs=8, chunk_tokens=16, watermark=0.0)).next_batch(state)
    assert batch.decodes == [] and [(seq.index, tokens) for seq, tokens in batch.prefills] == [(0, 16)]
    assert seq.preemptions == 1 and seq.computed == 16


def test_under_the_priority_policy_the_running_requests_stop_where_one_is_preempted_itself():
    """Four blocks, all held, running in this order: decode 0 (9 tokens), decode 1 (16 tokens, its next needs a block;
    priority 1, the least urgent), decode 2 (9 tokens), and 3 prefilling its 32-token prompt (16 done). Budget 8.
    vLLM v1 by hand: 0 is scheduled; 1 cannot grow, the least urgent running request is 1 itself, so it is preempted
    and the loop over running requests breaks: 2 and 3 sit out, and no waiting request is scheduled (a preemption).
    The iteration decodes 0 alone. Before, 2 decoded too and 3 took a 6-token chunk into the block 1 freed."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=4, block_tokens=16))
    _decoding(state, 0, context=8, held=9)
    _decoding(state, 1, context=16, held=16, priority=1)
    _decoding(state, 2, context=8, held=9)
    _prefilling(state, 3, prompt=32, computed=16)
    limits = SchedulerLimits(max_seqs=8, chunk_tokens=8, watermark=0.0, queue_policy="priority")
    batch = make_scheduler("chunked", limits).next_batch(state)
    assert [seq.index for seq in batch.decodes] == [0]
    assert batch.prefills == []
    assert [seq.index for seq in state.running] == [0, 2, 3] and [seq.index for seq in state.waiting] == [1]


def test_a_running_prefill_whose_chunk_does_not_fit_preempts_as_vllm_v1_allocates_it():
    """Three blocks: decode 0 (9 tokens, one block, room for its next), 1 prefilling its 64-token prompt (16 done, one
    block), one block free; 2, an 8-token prompt, waiting. Budget 32. vLLM v1 by hand, walking its running requests:
    0 takes a token; 1's chunk, min(48, 31) = 31 tokens, needs 47 tokens of KV (three blocks, two more than it holds,
    one free), so allocate_slots fails and under fcfs the newest running request, 1 itself, is preempted, and the loop
    breaks; preempted_reqs is not empty, so 2 is not scheduled. The iteration decodes 0 alone; 1 waits at the front,
    to recompute its prompt, before 2. Before, 1 sat out holding its block and 2 was admitted with its 8 tokens
    (prefills [(2, 8)]): the next iteration would have decoded 2 before 1's chunk, an order vLLM v1's loop, which takes
    its running requests in the order they were admitted, cannot form."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=3, block_tokens=16))
    _decoding(state, 0, context=8, held=9)
    prefilling = _prefilling(state, 1, prompt=64, computed=16)
    state.waiting.append(Sequence(index=2, arrival_s=2.0, prompt=8, output=20))
    batch = make_scheduler("chunked", SchedulerLimits(max_seqs=8, chunk_tokens=32, watermark=0.0)).next_batch(state)
    assert [seq.index for seq in batch.decodes] == [0]
    assert batch.prefills == []
    assert [seq.index for seq in state.running] == [0] and [seq.index for seq in state.waiting] == [1, 2]
    assert prefilling.preemptions == 1 and state.kv.in_use_blocks == 1


def test_under_the_priority_policy_a_running_prefill_preempts_a_less_urgent_decode_for_its_chunk():
    """The blocks above, decode 0 now the least urgent (priority 1) and 1 more urgent: vLLM v1 by hand, 0 takes a
    token; 1's 31-token chunk does not fit, and the least urgent running request, 0, is preempted: already scheduled,
    it leaves the step and gives its token back (its block freed, two free), and 1's chunk is allocated. The iteration
    is that chunk alone; 0 waits (no waiting request is scheduled after a preemption). Before, 1 sat out and 0
    decoded alone."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=3, block_tokens=16))
    _decoding(state, 0, context=8, held=9, priority=1)
    _prefilling(state, 1, prompt=64, computed=16)
    limits = SchedulerLimits(max_seqs=8, chunk_tokens=32, watermark=0.0, queue_policy="priority")
    batch = make_scheduler("chunked", limits).next_batch(state)
    assert batch.decodes == [] and [(seq.index, tokens) for seq, tokens in batch.prefills] == [(1, 31)]
    assert [seq.index for seq in state.running] == [1] and [seq.index for seq in state.waiting] == [0]
