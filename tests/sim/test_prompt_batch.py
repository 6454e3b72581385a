"""A cap on the prompt tokens prefilled together (SchedulerLimits.prompt_batch_tokens, Splitwise's 2,048), and the
handing over of prefilled requests to decode replicas under whole-request schedulers (orca, static)."""

from __future__ import annotations

import pytest

from sim.kv_cache import PagedKVCache
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler
from sim.serving_spec import ServingSpec
from workloads.errors import InputError


def _state(*prompts: int) -> EngineState:
    state = EngineState(kv=PagedKVCache(capacity_blocks=10_000, block_tokens=16))
    for index, prompt in enumerate(prompts):
        state.waiting.append(Sequence(index=index, arrival_s=0.0, prompt=prompt, output=4))
    return state


@pytest.mark.parametrize("scheduler", ["continuous", "orca", "static"])
def test_prompts_batch_up_to_the_cap_and_a_longer_one_runs_alone(scheduler):
    """Prompts of 1,500, 500, 100 and 3,000 tokens under a 2,048-token cap (8,192 per iteration): 1,500 + 500 fit
    (2,000), the 100 would make 2,100; later the 3,000-token prompt, over the cap, runs alone."""
    limits = SchedulerLimits(max_batched_tokens=8192, prompt_batch_tokens=2048)
    state = _state(1500, 500, 100, 3000)
    batch = make_scheduler(scheduler, limits).schedule(state)
    assert [q for _, q in batch.prefills] == [1500, 500]
    state = _state(3000, 100)
    assert [q for _, q in make_scheduler(scheduler, limits).schedule(state).prefills] == [3000]


def test_without_a_cap_prompts_fill_the_iteration():
    scheduler = make_scheduler("continuous", SchedulerLimits(max_batched_tokens=8192))
    batch = scheduler.schedule(_state(1500, 500, 100, 3000))
    assert [q for _, q in batch.prefills] == [1500, 500, 100, 3000]


@pytest.mark.parametrize("scheduler", ["orca", "static"])
def test_a_handed_over_request_decodes_in_the_next_iteration_and_holds_its_whole_request(scheduler):
    """A decode replica under a scheduler that reserves whole requests admits a prefilled request (prompt 10, 4
    outputs, its first token sampled) holding KV for all 13 tokens it will cache, and decodes it at once (before, an
    iteration with nothing else to run came out empty and the replica stopped)."""
    state = _state()
    seq = Sequence(index=0, arrival_s=0.0, prompt=10, output=4)
    seq.computed, seq.generated = 10, 1
    state.waiting.append(seq)
    batch = make_scheduler(scheduler, SchedulerLimits()).schedule(state)
    assert batch.decodes == [seq] and not batch.prefills
    assert state.kv.used_blocks == 1  # 13 tokens in 16-token blocks


@pytest.mark.parametrize("value", [0, 2.5, True])
def test_bad_prompt_batch_tokens_is_one_line(value):
    with pytest.raises(InputError, match=f"prompt_batch_tokens: found {value!r}, allowed: an integer >= 1"):
        ServingSpec(prompt_batch_tokens=value)
