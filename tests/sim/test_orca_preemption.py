"""Orca with new prompts preempting running decodes (SchedulerLimits.max_decode_preemptions), as splitwise-sim's
baseline machines schedule: an iteration's token budget goes to prompts first, decodes past it sit out with their KV
kept, and a decode that has sat out the cap's iterations goes first."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.shapes import step_shape
from sim.kv_cache import PagedKVCache
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler
from sim.serving import serve, serving_memory
from sim.serving_spec import ServingSpec
from workloads.errors import InputError
from workloads.requests import RequestSet

BLOCK = 16


def _decoding(index: int) -> Sequence:
    """A running request past its 4-token prefill (first token sampled), with many tokens still to go."""
    seq = Sequence(index=index, arrival_s=0.0, prompt=4, output=1000)
    seq.computed, seq.generated = 4, 1
    return seq


def _state(running: int) -> EngineState:
    state = EngineState(kv=PagedKVCache(capacity_blocks=10_000, block_tokens=BLOCK))
    for index in range(running):
        seq = _decoding(index)
        state.kv.hold(index, seq.final_tokens)
        state.running.append(seq)
    return state


def _prefilled(batch) -> None:
    """What a replica does with the iteration's prompts: each is computed whole and samples its first token."""
    for seq, chunk in batch.prefills:
        seq.computed += chunk
        seq.generated = 1


def test_without_a_waiting_prompt_every_decode_runs_as_today():
    state = _state(5)
    for cap in (None, 2):
        batch = make_scheduler("orca", SchedulerLimits(prompt_batch_tokens=8, max_decode_preemptions=cap)).schedule(
            state)
        assert [seq.index for seq in batch.decodes] == [0, 1, 2, 3, 4] and not batch.prefills
    assert all(seq.preemptions == 0 for seq in state.running)


def test_by_default_a_prompt_joins_every_running_decode():
    """Unset, orca decodes all 5 running sequences beside a 7-token prompt, whatever the 8-token prompt budget."""
    state = _state(5)
    state.waiting.append(Sequence(index=5, arrival_s=0.0, prompt=7, output=1000))
    batch = make_scheduler("orca", SchedulerLimits(prompt_batch_tokens=8)).schedule(state)
    assert [seq.index for seq in batch.decodes] == [0, 1, 2, 3, 4] and [q for _, q in batch.prefills] == [7]
    assert all(seq.preemptions == 0 for seq in state.running)


def test_prompts_preempt_decodes_past_the_budget_and_the_cap_holds():
    """An 8-token budget, a cap of 2, 5 running decodes (0-4) and a 7-token prompt arriving before every iteration, by
    hand: (1) prompt 5 + decode 0 (8 tokens); 1-4 sit out. (2) prompt 6 + decode 1, the first of those that sat out;
    2, 3, 4 (now twice), 0 and 5 sit out. (3) 2, 3 and 4 reached the cap and go first, then prompt 7 (the first prompt
    always runs): 10 tokens, no room, so 0, 5, 1 and 6 sit out. From then on no decode sits out more than twice, and
    one that has runs in every iteration."""
    scheduler = make_scheduler("orca", SchedulerLimits(prompt_batch_tokens=8, max_decode_preemptions=2))
    state = _state(5)
    expected = {1: [0], 2: [1], 3: [2, 3, 4]}
    for iteration in range(1, 13):
        state.waiting.append(Sequence(index=4 + iteration, arrival_s=0.0, prompt=7, output=1000))
        overdue = {seq.index for seq in state.running if seq.preemptions == 2}
        batch = scheduler.schedule(state)
        decodes = [seq.index for seq in batch.decodes]
        assert [seq.index for seq, _ in batch.prefills] == [4 + iteration]
        if iteration in expected:
            assert decodes == expected[iteration], iteration
        if iteration == 3:
            assert {seq.index: seq.preemptions for seq in state.running} == {0: 2, 1: 2, 2: 2, 3: 2, 4: 2, 5: 2,
                                                                             6: 1, 7: 0}
        assert max(seq.preemptions for seq in state.running) <= 2
        assert overdue <= set(decodes)
        _prefilled(batch)


def _serve(costs, requests: RequestSet, **limits):
    kv_per_token = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama)
    blocks = 1000
    memory = serving_memory(capacity_B=blocks * BLOCK * kv_per_token, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=kv_per_token, block_tokens=BLOCK)
    kv = PagedKVCache(capacity_blocks=blocks, block_tokens=BLOCK)
    policy = make_scheduler("orca", SchedulerLimits(**limits))
    return serve(costs, requests, policy, kv, memory, costs.device.idle_power_W).records


def test_a_decode_preempted_by_a_prompt_waits_exactly_that_prompts_iteration(costs):
    """Request A (32-token prompt, 4 outputs) is prefilled alone and decodes once (33 keys); request B (32 tokens)
    arrives during that decode. With a 32-token budget B's prompt takes the next iteration whole and A sits it out, so
    A's third token comes one prefill of B and one decode step of both (34 and 33 keys) after its second, and its last
    after a step of 35 and 34 keys; B's first token comes with the prefill that preempted A."""
    prefill = costs.price(step_shape([(32, 0)], sampled=1)).time_s
    decode_a = costs.price(step_shape(decode_kv=[33], sampled=1)).time_s
    both = [costs.price(step_shape(decode_kv=[34 + step, 33 + step], sampled=2)).time_s for step in range(2)]
    arrival_b = prefill + decode_a / 2
    requests = RequestSet(arrival_s=np.array([0.0, arrival_b]), prompt_tokens=np.array([32, 32]),
                          output_tokens=np.array([4, 4]))
    records = _serve(costs, requests, prompt_batch_tokens=32, max_decode_preemptions=4)
    assert records.e2e_s[0] == pytest.approx(prefill + decode_a + prefill + both[0] + both[1], rel=1e-9)
    assert records.ttft_s[1] == pytest.approx(prefill + decode_a + prefill - arrival_b, rel=1e-9)
    assert list(records.preemptions) == [1, 0]
    # Unset, B's prompt and A's decode share the iteration (as orca always did): nothing sits out.
    assert list(_serve(costs, requests, prompt_batch_tokens=32).preemptions) == [0, 0]


@pytest.mark.parametrize("value", [-1, 2.5, True])
def test_bad_max_decode_preemptions_is_one_line(value):
    with pytest.raises(InputError, match=f"max_decode_preemptions: found {value!r}, allowed: an integer >= 0"):
        ServingSpec(scheduler="orca", max_decode_preemptions=value)


def test_the_knob_reaches_the_scheduler_and_leaves_keys_at_its_default():
    assert ServingSpec(scheduler="orca", max_decode_preemptions=4).limits().max_decode_preemptions == 4
    assert "max_decode_preemptions" not in ServingSpec(scheduler="orca").key_text("h100-sxm")
    assert ServingSpec(scheduler="orca").limits() == SchedulerLimits(max_seqs=256)
