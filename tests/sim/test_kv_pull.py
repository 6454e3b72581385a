"""A decode engine allocating a handed-over request's blocks before its KV is pulled into them (sim/serving.py _pull,
sim/schedulers/base.py Scheduler._pull), worked by hand against vLLM v1's decode instance with a KV connector: its
loop over waiting requests allocates the request's blocks (allocate_slots) and only then has the connector read the KV
into them (update_state_after_alloc), the request in WAITING_FOR_REMOTE_KVS till it lands, then scheduled to decode
(vllm/v1/core/sched/scheduler.py schedule(), commit 00024d31 of vllm-project/vllm).

The tiny Llama on an H100 (tests/sim/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from sim.kv_cache import PagedKVCache
from sim.kv_sends import ABORT_TIMEOUT_S
from sim.replica import Replica
from sim.schedulers import SCHEDULERS, EngineState, SchedulerLimits, Sequence, make_scheduler
from sim.serving import Pool, serve_pools, serving_memory
from workloads.requests import RequestSet

BLOCK = 16
KV_PER_TOKEN_B = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama)
TRANSFER_S = 1e-3  # each request's KV transfer


def _served_pair(costs, scheduler: str, *, prefill_blocks: int, decode_blocks: int, arrival_s=(0.0, 0.0),
                 transfer_s: float = TRANSFER_S):
    """The records of requests of 24 prompt and 6 output tokens arriving at `arrival_s` (two together by default) at
    a prefill engine of `prefill_blocks` 16-token blocks handing them over to a decode engine of `decode_blocks`, each
    transfer `transfer_s` (1 ms)."""
    pools = [Pool(name=role, role=role, replicas=1, costs=costs, scheduler=scheduler,
                  limits=SchedulerLimits(max_seqs=8, chunk_tokens=64, watermark=0.0),
                  memory=serving_memory(capacity_B=blocks * BLOCK * KV_PER_TOKEN_B, weights_B=0.0,
                                        activations_B=0.0, kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK),
                  idle_power_W=costs.device.idle_power_W)
             for role, blocks in (("prefill", prefill_blocks), ("decode", decode_blocks))]
    count = len(arrival_s)
    requests = RequestSet(arrival_s=np.array(arrival_s), prompt_tokens=np.full(count, 24),
                          output_tokens=np.full(count, 6))
    return serve_pools(pools, requests, kv_transfer_s=lambda message_B: transfer_s).records


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_a_hand_over_waits_for_blocks_before_its_kv_crosses(costs, scheduler):
    """Two requests of 24 prompt and 6 output tokens (at most 29 tokens of KV: two 16-token blocks each) arrive
    together, prefilled in one iteration; the decode engine has three blocks, so it holds one request at a time. Each
    transfer takes 1 ms over the prefill replica's ports. By hand, vLLM v1's order (chunked): at the first token both
    reach the decode engine; it allocates 0's two blocks and pulls its KV (lands 1 ms later); 1's two do not fit the
    one left, so 1 waits, its KV still at the prefill replica. 0 decodes its 5 tokens and frees its blocks; only then
    are 1's allocated and its KV pulled: 1 decodes 1 ms after 0 finishes (before, it decoded as 0 finished). The other
    schedulers admit a request once its KV has crossed: 1's lands 2 ms after the first token, before 0 finishes (1 ms
    and 5 decode steps of about 0.35 ms after it), and 1 decodes as 0 finishes."""
    records = _served_pair(costs, scheduler, prefill_blocks=100, decode_blocks=3)
    assert records.first_token_s[0] == records.first_token_s[1]  # one prefill iteration
    assert records.decode_admitted_s[0] == pytest.approx(records.first_token_s[0] + TRANSFER_S, rel=1e-12)
    assert records.finish_s[0] > records.first_token_s[1] + 2 * TRANSFER_S  # 0 decodes past 1's old landing
    waits_s = TRANSFER_S if scheduler == "chunked" else 0.0  # vLLM v1's order under chunked only
    assert records.decode_admitted_s[1] == pytest.approx(records.finish_s[0] + waits_s, rel=1e-12)


def test_a_pulled_request_holds_its_blocks_apart_until_its_kv_lands_then_waits_first():
    """Budget 16: 1, handed over with 20 tokens of context, its blocks not yet allocated, waits before 2, a 12-token
    prompt. By hand, vLLM v1: the waiting loop allocates 1's blocks for its context and next token (21 tokens: two
    16-token blocks) without taking budget and leaves it in WAITING_FOR_REMOTE_KVS, then schedules 2's 12 tokens (one
    more block). 3, a 12-token prompt, arrives; then 1's KV lands, ahead of 3 in the waiting queue. The next step:
    the running loop decodes 2 (1 token), the waiting loop schedules 1 (1 token, its blocks held already) and 3 (12
    tokens, a fourth block)."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=100, block_tokens=16))
    pulled: list[Sequence] = []
    state.pull = pulled.append
    handed = Sequence(index=1, arrival_s=1.0, prompt=20, output=20)
    handed.computed, handed.generated, handed.kv_pull = 20, 1, "due"
    first, second = (Sequence(index=i, arrival_s=float(i), prompt=12, output=20) for i in (2, 3))
    state.waiting.extend([handed, first])
    scheduler = make_scheduler("chunked", SchedulerLimits(max_seqs=8, chunk_tokens=16, watermark=0.0))
    batch = scheduler.next_batch(state)
    assert batch.decodes == [] and batch.prefills == [(first, 12)]
    assert pulled == [handed] and state.pulling == [handed] and state.kv.in_use_blocks == 2 + 1
    replica = Replica(simpy.Environment(), None, scheduler, state, window=None, swap_s_per_token=0.0,
                      on_finish=lambda seq: None)
    replica._apply(batch, 1.0)
    replica.accept(second)
    replica.land(handed)
    assert state.pulling == [] and list(state.waiting) == [handed, second]
    batch = scheduler.next_batch(state)
    assert batch.decodes == [first, handed] and batch.prefills == [(second, 12)]
    assert state.kv.in_use_blocks == 2 + 1 + 1 and handed.kv_pull == ""


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_a_prefill_replica_holds_a_handed_over_requests_blocks_until_its_kv_has_crossed(costs, scheduler):
    """Two requests of 24 prompt and 6 output tokens (two 16-token blocks each, whether a scheduler holds the prompt
    or the whole request) arrive together at a prefill engine of three blocks, so it prefills one at a time; the
    decode engine has room for both, and each transfer takes 1 ms. Both prefills have one shape and so one time, t.
    By hand, vLLM v1's order (chunked): 0's first token at t; its blocks stay held (the NIXL connector delays their
    free until the decode side has read them), the decode engine allocates 0's blocks at once and pulls its KV, which
    has crossed at t + 1 ms; only then are 0's blocks freed and 1 admitted: its first token at 2 t + 1 ms. The other
    schedulers free 0's blocks at its first token: 1's first token at 2 t."""
    records = _served_pair(costs, scheduler, prefill_blocks=3, decode_blocks=100)
    prefill_s = records.first_token_s[0]
    assert records.decode_admitted_s[0] == pytest.approx(prefill_s + TRANSFER_S, rel=1e-12)  # 0's KV crossed at once
    held_s = TRANSFER_S if scheduler == "chunked" else 0.0  # vLLM v1's order under chunked only
    assert records.first_token_s[1] == pytest.approx(2 * prefill_s + held_s, rel=1e-12)


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_an_idle_prefill_engine_frees_a_read_sends_blocks_at_the_end_of_its_next_step(costs, scheduler):
    """A prefill engine of four blocks: request 0 (two blocks) arrives alone and its first token comes at t; the
    decode side has read its KV 1 ms later. Requests 1 and 2 (two blocks each) arrive together at 0.1 s. By hand,
    vLLM v1's order (chunked): the engine held nothing but 0's send, so it stopped stepping (EngineCore.step runs only
    while the scheduler has requests; a request finished for a send is neither waiting nor running), and its NIXL
    worker's get_finished, which reports the read, runs within a step: 0's two blocks are still held at 0.1 s, so
    only 1 fits, prefilled alone as 0 was, its first token at 0.1 s + t; that step's output frees 0's blocks
    (_update_from_kv_xfer_finished), so 2 follows, its first token at 0.1 s + 2 t. Before, 0's blocks were freed as
    its KV crossed, and 1 and 2 were prefilled together. The other schedulers free 0's blocks at its first token: 1
    and 2 prefilled together."""
    arrived_s = 0.1
    records = _served_pair(costs, scheduler, prefill_blocks=4, decode_blocks=100,
                           arrival_s=(0.0, arrived_s, arrived_s))
    prefill_s = records.first_token_s[0]
    assert records.decode_admitted_s[0] == pytest.approx(prefill_s + TRANSFER_S, rel=1e-12)  # read long before 0.1 s
    if scheduler == "chunked":
        assert records.first_token_s[1] == pytest.approx(arrived_s + prefill_s, rel=1e-12)
        assert records.first_token_s[2] == pytest.approx(arrived_s + 2 * prefill_s, rel=1e-12)
    else:
        assert records.first_token_s[1] == records.first_token_s[2] > arrived_s


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_a_send_unread_past_nixls_abort_timeout_frees_its_blocks(costs, scheduler):
    """As test_a_prefill_replica_holds_a_handed_over_requests_blocks_until_its_kv_has_crossed, each transfer taking
    500 s. By hand, vLLM v1's order (chunked): 0's first token at t; its blocks stay held, and 1 waits for them, the
    engine stepping without a forward pass; NIXL's deadline for the read, 480 s after 0 finished
    (VLLM_NIXL_ABORT_REQUEST_TIMEOUT's default), passes first: get_finished reports 0 done and its blocks are freed at
    t + 480 s, 1's first token at 2 t + 480 s. The decode side's read is unchanged: 0 decodes from t + 500 s. The other
    schedulers free 0's blocks at its first token: 1's first token at 2 t."""
    transfer_s = 500.0
    records = _served_pair(costs, scheduler, prefill_blocks=3, decode_blocks=100, transfer_s=transfer_s)
    prefill_s = records.first_token_s[0]
    assert records.decode_admitted_s[0] == pytest.approx(prefill_s + transfer_s, rel=1e-12)
    held_s = ABORT_TIMEOUT_S if scheduler == "chunked" else 0.0
    assert ABORT_TIMEOUT_S == 480.0
    assert records.first_token_s[1] == pytest.approx(2 * prefill_s + held_s, rel=1e-12)
