"""The latency a router predicts for a request on a replica (sim/latency_prediction.py), against what the simulator
then makes of it: a burst's last request, a lone prompt in chunks and its decode; a wait for a seat by hand; and
invariants (more work ahead is never predicted sooner; a slower device, in proportion)."""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import numpy as np
import pytest
import simpy

from kernels.kv_eviction import D2O, eviction
from kernels.kv_policy import KVPolicy
from kernels.shapes import step_shape
from sim.costs import IterationCostModel
from sim.kv_cache import PagedKVCache
from sim.latency_prediction import predict_latency
from sim.replica import IterationRow, Replica
from sim.routers import ROUTERS, Router
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler
from sim.serving import Pool, serve_pools, serving_memory
from workloads.requests import RequestSet

BLOCK = 16
KV_PER_TOKEN_B = 2 * 2 * 16 * 2 * 2  # the tiny Llama's (tests/sim/conftest.py)


class Recording(Router):
    """Sends every request to the first replica, recording the latency predicted for it there."""

    name = "recording"
    predicted: list = []

    def choose(self, replicas, request):
        Recording.predicted.append(predict_latency(replicas[0], request.prompt_tokens))
        return replicas[0]


def _serve(costs, requests: RequestSet, scheduler: str, limits: SchedulerLimits, monkeypatch, window=None):
    monkeypatch.setitem(ROUTERS, Recording.name, Recording)
    Recording.predicted = []
    memory = serving_memory(capacity_B=4000 * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    pool = Pool(name="serve", role="serve", replicas=1, costs=costs, scheduler=scheduler, limits=limits,
                memory=memory, idle_power_W=0.0, router=Recording.name, window=window)
    return serve_pools([pool], requests), Recording.predicted


def test_a_burst_s_last_request_is_predicted_its_simulated_ttft(costs, monkeypatch):
    """Four 48-token prompts arrive at once at an idle replica that prefills whole prompts: the last finds the other
    three waiting, and all four are prefilled in one iteration, which the prediction prices as the simulator runs it
    (the earlier three could not know of the prompts arriving after them)."""
    requests = RequestSet(arrival_s=np.zeros(4), prompt_tokens=np.full(4, 48), output_tokens=np.full(4, 4))
    result, predicted = _serve(costs, requests, "continuous", SchedulerLimits(), monkeypatch)
    assert predicted[-1].ttft_s == pytest.approx(result.records.ttft_s[-1], rel=1e-9)
    assert predicted[0].ttft_s < result.records.ttft_s[0]


def test_a_burst_past_a_d2o_budget_is_predicted_with_the_merge_of_what_its_prefill_evicts(costs, monkeypatch):
    """The burst above under D2O at a 32-token budget: each 48-token prompt's prefill evicts 16 tokens and merges them
    (kernels/kv_eviction.py merge_table, a GEMM per sequence and KV head), in the iteration that prefills the four,
    which the prediction prices as the simulator runs it, merges included; without them the prediction is short by
    their time."""
    d2o = KVPolicy(window=32, eviction=eviction(D2O, heads=4, kv_heads=2, head_dim=16, kv_element_B=2.0))
    requests = RequestSet(arrival_s=np.zeros(4), prompt_tokens=np.full(4, 48), output_tokens=np.full(4, 4))
    result, predicted = _serve(costs, requests, "continuous", SchedulerLimits(), monkeypatch, window=d2o)
    assert predicted[-1].ttft_s == pytest.approx(result.records.ttft_s[-1], rel=1e-9)
    unmerged = costs.price(step_shape([(48, 0)] * 4, [], sampled=4, window=d2o)).time_s
    assert result.records.ttft_s[-1] > unmerged


def test_a_lone_prompt_in_chunks_and_its_decode_are_predicted_within_two_percent(costs, monkeypatch):
    """A 1,000-token prompt alone on a chunked replica of a 256-token budget: four chunks, which the prediction prices
    at their mean earlier context, and then its decode steps alone, priced at the prompt's context."""
    requests = RequestSet(arrival_s=np.zeros(1), prompt_tokens=np.full(1, 1000), output_tokens=np.full(1, 16))
    result, predicted = _serve(costs, requests, "chunked", SchedulerLimits(chunk_tokens=256), monkeypatch)
    assert predicted[0].ttft_s == pytest.approx(result.records.ttft_s[0], rel=0.02)
    assert predicted[0].tpot_s == pytest.approx(result.records.tpot_s[0], rel=0.02)


@pytest.mark.parametrize(("prompt", "together", "iterations"), [(48, 2, 2), (160, 1, 4)])
def test_a_burst_under_a_prompt_batch_cap_is_predicted_in_the_batches_the_scheduler_forms(costs, monkeypatch, prompt,
                                                                                          together, iterations):
    """Four prompts at once on an idle continuous replica capped at 100 prompt tokens an iteration
    (prompt_batch_tokens): 48-token ones go two together (96; a third would make 144), so the last's first token comes
    after two iterations of two prompts; 160-token ones, each over the cap, run alone, after four iterations of one. By
    hand: that many iterations of that batch, priced (0.7008 and 1.4086 ms); the simulator runs the same, and the
    prediction is it (before, it ignored the cap: one iteration of all four, 0.3515 and 0.3577 ms)."""
    requests = RequestSet(arrival_s=np.zeros(4), prompt_tokens=np.full(4, prompt), output_tokens=np.full(4, 4))
    result, predicted = _serve(costs, requests, "continuous", SchedulerLimits(prompt_batch_tokens=100), monkeypatch)
    by_hand = iterations * costs.price(step_shape([(prompt, 0)] * together, [], sampled=together,
                                                  finished=[prompt] * together)).time_s
    assert result.records.ttft_s[-1] == pytest.approx(by_hand, rel=1e-9)
    assert predicted[-1].ttft_s == pytest.approx(by_hand, rel=1e-9)


def test_an_orca_prompt_behind_one_under_a_prompt_batch_cap_is_predicted_an_iteration_each(costs):
    """Orca decoding 64 sequences at 4,000 tokens, its prompts capped at 96 tokens an iteration, one 64-token prompt
    waiting: a 64-token request joining it cannot share that prompt's iteration (128 > 96), and the scheduler runs
    one prompt an iteration beside every decode. By hand: two such iterations, priced at the decodes' present
    contexts (the prediction's), 0.7757 ms (before, one iteration of both prompts: 0.3886 ms)."""
    replica = _orca_decoding(costs)
    replica.scheduler = make_scheduler("orca", SchedulerLimits(prompt_batch_tokens=96))
    replica.state.waiting.append(Sequence(index=64, arrival_s=0.0, prompt=64, output=8))
    predicted = predict_latency(replica, 64).ttft_s
    replica.state.waiting.append(Sequence(index=65, arrival_s=0.0, prompt=64, output=8))
    batch = replica.scheduler.next_batch(replica.state)
    assert [q for _, q in batch.prefills] == [64] and len(batch.decodes) == 64
    by_hand = 2 * costs.price(step_shape([(64, 0)], [4000] * 64, sampled=65, finished=[64])).time_s
    assert predicted == pytest.approx(by_hand, rel=1e-9)


def _replica(costs, *, held: int = 0, prompt: int = 64, max_seqs: int = 256, left_s=()) -> Replica:
    """A replica of the continuous scheduler holding `held` waiting prompts of `prompt` tokens, its latest requests
    having left at `left_s`."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=4000, block_tokens=BLOCK))
    state.waiting.extend(Sequence(index=i, arrival_s=0.0, prompt=prompt, output=8) for i in range(held))
    replica = Replica(simpy.Environment(), costs, make_scheduler("continuous", SchedulerLimits(max_seqs=max_seqs)),
                      state, window=None, swap_s_per_token=0.0, on_finish=lambda seq: None)
    replica.left_s = deque(left_s)
    return replica


def test_short_of_seats_a_request_waits_for_as_many_to_leave_at_their_recent_rate(costs):
    """A replica holding its four seats' worth, whose latest requests left a second apart: a request joining it lacks
    one seat and waits a second for it, then its own prefill (the four held prompts are prefilled meanwhile)."""
    full = _replica(costs, held=4, max_seqs=4, left_s=(10.0, 11.0, 12.0, 13.0))
    alone = predict_latency(_replica(costs), 64)
    assert predict_latency(full, 64).ttft_s == pytest.approx(1.0 + alone.ttft_s, rel=1e-9)
    # Having seen none leave, it cannot tell the wait, and counts the prompts ahead alone.
    unseen = _replica(costs, held=4, max_seqs=4)
    assert predict_latency(unseen, 64).ttft_s == pytest.approx(predict_latency(_replica(costs, held=4), 64).ttft_s)


def test_more_work_ahead_is_never_predicted_sooner(costs):
    ttft = [predict_latency(_replica(costs, held=held), 64).ttft_s for held in range(0, 200, 7)]
    tpot = [predict_latency(_replica(costs, held=held), 64).tpot_s for held in range(0, 200, 7)]
    assert all(b >= a for a, b in zip(ttft, ttft[1:], strict=False)), ttft
    assert all(b >= a for a, b in zip(tpot, tpot[1:], strict=False)), tpot
    assert ttft[-1] > ttft[0] and tpot[-1] > tpot[0]


class _Slower:
    """Iteration costs `factor` times another's, every iteration alike."""

    def __init__(self, costs: IterationCostModel, factor: float):
        self.costs, self.factor, self.template = costs, factor, costs.template

    def price(self, shape):
        cost = self.costs.price(shape)
        return replace(cost, time_s=cost.time_s * self.factor)


def test_a_device_slower_in_every_iteration_is_predicted_as_much_slower(costs):
    """The same queue on a device whose every iteration takes 2.5 times as long: 2.5 times the TTFT and the TPOT
    (whatever the device, the prediction is its own iterations' times)."""
    for held in (0, 5, 50):
        fast = predict_latency(_replica(costs, held=held), 500)
        slow = predict_latency(_replica(_Slower(costs, 2.5), held=held), 500)
        assert slow.ttft_s == pytest.approx(2.5 * fast.ttft_s, rel=1e-12) and fast.ttft_s > 0, held
        assert slow.tpot_s == pytest.approx(2.5 * fast.tpot_s, rel=1e-12) and fast.tpot_s > 0, held


def test_a_handed_over_request_joins_the_decodes_at_its_context(costs):
    """Handed over by a prefill pool with 4,000 tokens of context, a request's first token is out (a TTFT of 0 there),
    and its decodes are an iteration of the held requests and its own at 4,000 tokens: longer than at 1."""
    replica = _replica(costs, held=3)
    handed = predict_latency(replica, 4000, prefilled=True)
    assert handed.ttft_s == 0.0
    assert handed.tpot_s == predict_latency(replica, 4000).tpot_s > predict_latency(replica, 1, prefilled=True).tpot_s


class DecodeRecording(Router):
    """Sends every request to the first replica, recording the latency predicted there for each hand-over."""

    name = "decode_recording"
    predicted: list = []

    def choose(self, replicas, request):
        if request.prefilled:
            DecodeRecording.predicted.append(predict_latency(replicas[0], request.prompt_tokens, prefilled=True))
        return replicas[0]


def test_a_chunked_decode_pool_s_last_hand_over_is_predicted_its_turn_behind_the_budget(costs, monkeypatch):
    """24 prompts of 16 tokens prefilled together in one iteration land at once on a chunked decode replica of max_seqs
    32 but a budget of 8 tokens: an iteration decodes the 8 earliest admitted (sim/schedulers/chunked.py), so the last
    hand-over decodes after two groups of 8 have sampled their 63 tokens, and its 63 tokens take 3 x 63 iterations of 8
    decodes: a TPOT of 3 such iterations. The prediction, made as it joins 23 held decodes, is 24 / 8 iterations of the
    8 decodes the scheduler runs (each iteration gives 8 of the 24 held sequences a token), within 2% of the simulated
    TPOT (the decodes' contexts rounded to 16 tokens); an iteration decoding all 24 at once (what the budget forbids)
    is 3 times short."""
    monkeypatch.setitem(ROUTERS, DecodeRecording.name, DecodeRecording)
    DecodeRecording.predicted = []
    count, prompt, output = 24, 16, 64
    memory = serving_memory(capacity_B=4000 * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    limits = {"prefill": SchedulerLimits(max_seqs=32, chunk_tokens=512),
              "decode": SchedulerLimits(max_seqs=32, chunk_tokens=8)}
    pools = [Pool(name=role, role=role, replicas=1, costs=costs, scheduler="chunked", limits=limits[role],
                  memory=memory, idle_power_W=0.0, router=DecodeRecording.name) for role in ("prefill", "decode")]
    requests = RequestSet(arrival_s=np.zeros(count), prompt_tokens=np.full(count, prompt),
                          output_tokens=np.full(count, output))
    result = serve_pools(pools, requests, kv_transfer_s=lambda message_B: 0.0)
    predicted = DecodeRecording.predicted
    assert len(predicted) == count
    measured = result.records.tpot_s[-1]
    assert result.records.tpot_s[0] < measured / 2.5  # the first group decodes at once: the budget binds
    assert predicted[-1].tpot_s == pytest.approx(measured, rel=0.02)


def test_a_chunked_replica_is_never_predicted_a_tpot_shorter_than_its_budget_allows(costs):
    """A chunked replica of a budget of 8 tokens holding 0 to 40 decodes at 64 tokens of context: a request joining them
    gets a token at most every held / 8 iterations of the 8 decodes an iteration runs (each gives 8 of the held
    sequences a token), so its predicted TPOT is never shorter than that many of the static decode step of 8 sequences
    at 64 tokens, priced by hand; nor than one step of all it decodes where they fit the budget."""
    budget = 8
    for held in range(0, 41, 3):
        state = EngineState(kv=PagedKVCache(capacity_blocks=4000, block_tokens=BLOCK))
        state.running.extend(Sequence(index=i, arrival_s=0.0, prompt=63, output=8, computed=63) for i in range(held))
        replica = Replica(simpy.Environment(), costs,
                          make_scheduler("chunked", SchedulerLimits(max_seqs=64, chunk_tokens=budget)), state,
                          window=None, swap_s_per_token=0.0, on_finish=lambda seq: None)
        tpot_s = predict_latency(replica, 64, prefilled=True).tpot_s
        decoded = min(held + 1, budget)
        step_s = costs.price(step_shape([], [64] * decoded, sampled=decoded)).time_s
        assert tpot_s >= max((held + 1) / budget, 1.0) * step_s * (1 - 1e-12), held


def test_the_prompts_ahead_are_counted_past_the_prefix_they_find_cached(costs):
    """A continuous replica caching a 512-token prefix, four 576-token prompts of its group waiting: admitted, each
    finds the 512 tokens cached (Scheduler.prefill_start) and computes 64 after them. A request of the same prompt,
    its 512 tokens cached too, is predicted the TTFT of the iteration the scheduler then runs, the five prompts' 64
    tokens each after 512 cached, priced by hand from that batch; counting the queue's whole prompts (2,304 tokens)
    would predict 8% more."""
    kv = PagedKVCache(capacity_blocks=4000, block_tokens=BLOCK, prefix_tokens=512)
    state = EngineState(kv=kv)
    state.waiting.extend(Sequence(index=i, arrival_s=0.0, prompt=576, output=8) for i in range(4))
    scheduler = make_scheduler("continuous", SchedulerLimits())
    replica = Replica(simpy.Environment(), costs, scheduler, state, window=None, swap_s_per_token=0.0,
                      on_finish=lambda seq: None)
    predicted = predict_latency(replica, 576, cached_tokens=512).ttft_s
    state.waiting.append(Sequence(index=4, arrival_s=0.0, prompt=576, output=8))
    batch = scheduler.next_batch(state)
    assert [(q, seq.computed) for seq, q in batch.prefills] == [(64, 512)] * 5
    assert predicted == pytest.approx(costs.price(batch.shape(None)).time_s, rel=1e-9)


def test_a_swapped_sequence_is_predicted_to_decode_at_its_context_as_a_running_one(costs):
    """64 sequences of 16-token prompts that have decoded to 4,000 tokens of context, running or swapped out to host
    memory: swapped, they come back before any admission and decode at the same context, so a request joining the
    replica is predicted the same TPOT either way (their prompts' 16 tokens would price their KV reads 250 times
    short)."""
    def replica(swapped: bool) -> Replica:
        state = EngineState(kv=PagedKVCache(capacity_blocks=40_000, block_tokens=BLOCK))
        seqs = [Sequence(index=i, arrival_s=0.0, prompt=16, output=4096, computed=3999, generated=3984)
                for i in range(64)]
        (state.swapped if swapped else state.running).extend(seqs)
        return Replica(simpy.Environment(), costs, make_scheduler("continuous", SchedulerLimits()), state,
                       window=None, swap_s_per_token=0.0, on_finish=lambda seq: None)

    running, swapped = (predict_latency(replica(flag), 64).tpot_s for flag in (False, True))
    assert swapped == pytest.approx(running, rel=1e-12)


def _orca_decoding(costs, count: int = 64, context: int = 4000) -> Replica:
    """An Orca replica decoding `count` sequences at `context` tokens each."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=40_000, block_tokens=BLOCK))
    state.running.extend(Sequence(index=i, arrival_s=0.0, prompt=16, output=8192, computed=context - 1,
                                  generated=context - 16) for i in range(count))
    return Replica(simpy.Environment(), costs, make_scheduler("orca", SchedulerLimits()), state, window=None,
                   swap_s_per_token=0.0, on_finish=lambda seq: None)


def test_an_orca_prompt_is_predicted_beside_the_decodes_it_shares_its_iteration_with(costs):
    """Orca prefills a new prompt in the iteration that decodes every running sequence (selective batching): a 64-token
    prompt joining 64 decodes at 4,000 tokens is predicted the TTFT of the iteration the scheduler then runs, priced by
    hand from that batch (the prompt alone would be 7% short)."""
    replica = _orca_decoding(costs)
    predicted = predict_latency(replica, 64).ttft_s
    replica.state.waiting.append(Sequence(index=64, arrival_s=0.0, prompt=64, output=8))
    batch = replica.scheduler.next_batch(replica.state)
    assert len(batch.prefills) == 1 and len(batch.decodes) == 64
    assert predicted == pytest.approx(costs.price(batch.shape(None)).time_s, rel=1e-9)


def _orca_preempting(costs, overdue: int = 0) -> Replica:
    """_orca_decoding's 64 sequences at 4,000 tokens under Orca whose prompts take a budget of 96 tokens first
    (max_decode_preemptions 4); the first `overdue` of them have sat out 4 iterations already."""
    replica = _orca_decoding(costs)
    replica.scheduler = make_scheduler("orca", SchedulerLimits(prompt_batch_tokens=96, max_decode_preemptions=4))
    for seq in replica.state.running[:overdue]:
        seq.preemptions = 4
    return replica


@pytest.mark.parametrize(("overdue", "decoded"), [(0, 32), (48, 48)])
def test_an_orca_prompt_preempting_decodes_is_predicted_beside_those_the_budget_leaves(costs, overdue, decoded):
    """Orca with max_decode_preemptions: a 64-token prompt takes the 96-token budget first, so of 64 decodes the
    iteration runs the 96 - 64 = 32 the budget has room for; where 48 have sat out 4 iterations they go first and no
    other fits (48 + 64 > 96). The request is predicted the TTFT of the iteration the scheduler then runs, priced from
    its batch, 0.3772 and 0.3825 ms (before, beside all 64 decodes: 0.3879 ms, +2.8% and +1.4%)."""
    replica = _orca_preempting(costs, overdue)
    predicted = predict_latency(replica, 64).ttft_s
    replica.state.waiting.append(Sequence(index=64, arrival_s=0.0, prompt=64, output=8))
    batch = replica.scheduler.next_batch(replica.state)
    assert len(batch.prefills) == 1 and len(batch.decodes) == decoded
    assert predicted == pytest.approx(costs.price(batch.shape(None)).time_s, rel=1e-9)


def test_an_orca_replica_preempting_decodes_is_predicted_a_tpot_of_its_prompts_iterations_as_it_runs_them(costs):
    """The replica of the test below under Orca with a 96-token budget its prompts take first (none of its decodes
    overdue): its iterations with a 64-token prompt run 32 of the 64 decodes beside it, so the TPOT is the mean of the
    decode step of 64 and the prompt beside 32 decodes, priced by hand: 0.3723 ms (before, beside all 64: 0.3776 ms)."""
    replica = _orca_preempting(costs)
    replica.state.running.pop()
    replica.log = [IterationRow(0.0, 0.0, 63, 63, 0, 0.0, 0, 0) if i % 2 else
                   IterationRow(0.0, 0.0, 33, 96, 0, 0.0, 64, 1) for i in range(64)]
    decode_s = costs.price(step_shape([], [4000] * 64, sampled=64)).time_s
    with_prompt_s = costs.price(step_shape([(64, 0)], [4000] * 32, sampled=33, finished=[64])).time_s
    assert predict_latency(replica, 4000).tpot_s == pytest.approx((decode_s + with_prompt_s) / 2, rel=1e-9)


def test_an_orca_replica_s_tpot_is_within_its_decode_step_and_an_iteration_with_a_prompt(costs):
    """An Orca replica whose last 64 iterations alternately decoded its 64 sequences alone and beside a 64-token prompt:
    every iteration decodes every running sequence, so a joining request gets a token each iteration, and its TPOT
    lies between the decode step of the 65 and that step beside a 64-token prompt, both priced by hand (counting the
    prompts as iterations of their own in between, as continuous batching runs them, gives nearly two steps)."""
    replica = _orca_decoding(costs, count=63)
    replica.log = [IterationRow(0.0, 0.0, 64, 64, 0, 0.0, 0, 0) if i % 2 else
                   IterationRow(0.0, 0.0, 65, 128, 0, 0.0, 64, 1) for i in range(64)]
    tpot_s = predict_latency(replica, 4000).tpot_s
    decode_s = costs.price(step_shape([], [4000] * 64, sampled=64)).time_s
    with_prompt_s = costs.price(step_shape([(64, 0)], [4000] * 64, sampled=65, finished=[64])).time_s
    assert decode_s * (1 - 1e-12) <= tpot_s <= with_prompt_s * (1 + 1e-12)


def _cached_prompt_decoding(costs, scheduler: str) -> tuple[Replica, Sequence]:
    """A replica of `scheduler` decoding 63 sequences at 4,000 tokens, a 512-token prefix cached, and a 513-token prompt
    of its group waiting: it finds all but its last token cached, the whole blocks before it
    (PagedKVCache.cached_prefix), and computes that one."""
    kv = PagedKVCache(capacity_blocks=40_000, block_tokens=BLOCK, prefix_tokens=512)
    state = EngineState(kv=kv)
    state.running.extend(Sequence(index=i, arrival_s=0.0, prompt=16, output=8192, computed=3999, generated=3984)
                         for i in range(63))
    for seq in state.running:
        kv.hold(seq.index, seq.computed + 1)
    prompt = Sequence(index=63, arrival_s=0.0, prompt=513, output=8)
    state.waiting.append(prompt)
    return Replica(simpy.Environment(), costs, make_scheduler(scheduler, SchedulerLimits(chunk_tokens=512)), state,
                   window=None, swap_s_per_token=0.0, on_finish=lambda seq: None), prompt


@pytest.mark.parametrize("scheduler", ["continuous", "chunked", "orca"])
def test_a_cached_prompt_s_last_token_is_counted_in_the_tpot_as_its_scheduler_runs_it(costs, scheduler):
    """A prompt found cached but its last token computes that token: continuous batching in an iteration of its own,
    the chunked and Orca schedulers as a one-token chunk beside the decodes (each samples from it). A replica whose
    last 64 iterations alternately decoded its 63 sequences and ran such a prompt is predicted, for a request joining
    it at 4,000 tokens, the decode step of 64 and, every other step, that prompt's iteration: an iteration of one token
    between two decode steps, or the decode step with the chunk, priced by hand from the batch the scheduler forms (its
    token after the prompt's 512 cached; the prediction prices it at no context and, as any chunk, rounded to 16
    tokens: within 1%): 0.7124 and 0.3755 ms (both beside: the same). Before, those iterations were left out, and the
    TPOT was the decode step's alone: 0.3674 ms (48% and 2.2% short)."""
    replica, prompt = _cached_prompt_decoding(costs, scheduler)
    batch = replica.scheduler.next_batch(replica.state)
    assert batch.prefills == [(prompt, 1)] and len(batch.decodes) == (0 if scheduler == "continuous" else 63)
    replica.state.running.remove(prompt)  # back to the 63 decodes alone
    replica.log = [IterationRow(0.0, 0.0, 63, 63, 0, 0.0, 0, 0) if i % 2 else
                   IterationRow(0.0, 0.0, batch.size, batch.computed_tokens(), 0, 0.0, 1, 1) for i in range(64)]
    decode_s = costs.price(step_shape([], [4000] * 64, sampled=64)).time_s
    if scheduler != "continuous":  # the step with the chunk every other iteration, beside the joining request's decode
        by_hand = (decode_s + costs.price(step_shape([(1, 512)], [4000] * 64, sampled=65, finished=[513])).time_s) / 2
    else:  # one prompt iteration between two decode steps
        by_hand = decode_s + costs.price(batch.shape(None)).time_s
    predicted = predict_latency(replica, 4000).tpot_s
    assert predicted == pytest.approx(by_hand, rel=0.01)
