"""Multi-LoRA serving (sim/lora.py): the schedulers' max_loras limit on a hand-built queue and over a run, and the time
LoRA adds to iterations and requests (the tiny Llama on an H100, tests/sim/conftest.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hw_models.registry import load_device
from kernels.shapes import step_shape
from sim.costs import IterationCostModel
from sim.kv_cache import PagedKVCache
from sim.lora import activate
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler
from sim.serving import serve, serving_memory
from workloads.requests import RequestSet

BLOCK = 16
KV_PER_TOKEN = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama)


def _queue(adapters: list[int]) -> EngineState:
    state = EngineState(kv=PagedKVCache(capacity_blocks=1000, block_tokens=BLOCK))
    for index, adapter in enumerate(adapters):
        state.waiting.append(Sequence(index=index, arrival_s=0.1 * index, prompt=20, output=4, adapter=adapter))
    return state


@pytest.mark.parametrize("scheduler", ["continuous", "chunked", "static"])
def test_a_waiting_request_of_a_third_adapter_is_passed_over(scheduler):
    """Six requests wait, adapters 0, 1, 2, 0, 3, 1, under max_loras 2: as vLLM v1's loop over waiting requests, the
    first two adapters' requests are admitted (0, 1, 3, 5), those of adapters 2 and 3 passed over and back at the head
    of the queue in their order; without the limit (0) all six run."""
    limits = SchedulerLimits(max_seqs=16, max_batched_tokens=10_000, chunk_tokens=10_000, max_loras=2)
    state = _queue([0, 1, 2, 0, 3, 1])
    batch = make_scheduler(scheduler, limits).next_batch(state)
    assert [seq.index for seq, _ in batch.prefills] == [0, 1, 3, 5]
    assert [seq.index for seq in state.waiting] == [2, 4] and not state.passed_over
    unlimited = _queue([0, 1, 2, 0, 3, 1])
    batch = make_scheduler(scheduler, replace(limits, max_loras=0)).next_batch(unlimited)
    assert [seq.index for seq, _ in batch.prefills] == [0, 1, 2, 3, 4, 5]


def test_requests_of_the_running_adapters_are_admitted_past_one_passed_over():
    """Adapters 0 and 1 run; of the waiting 2, 1, 0 the first is passed over and the other two join (max_loras 2)."""
    state = _queue([2, 1, 0])
    for adapter in (0, 1):
        seq = Sequence(index=10 + adapter, arrival_s=0.0, prompt=4, output=50, adapter=adapter)
        seq.computed = 5
        state.kv.hold(seq.index, 5)
        state.running.append(seq)
    limits = SchedulerLimits(max_seqs=16, chunk_tokens=10_000, max_loras=2)
    batch = make_scheduler("chunked", limits).next_batch(state)
    assert [seq.index for seq, _ in batch.prefills] == [1, 2]
    assert [seq.index for seq in state.waiting] == [0]


def _lora_costs(costs: IterationCostModel) -> IterationCostModel:
    return IterationCostModel(costs.device, replace(costs.template, lora_rank=16), execution=costs.execution)


def _serve(costs, requests: RequestSet, max_loras: int, batches: list | None = None):
    blocks = 100_000
    memory = serving_memory(capacity_B=blocks * BLOCK * KV_PER_TOKEN, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN, block_tokens=BLOCK)
    scheduler = make_scheduler("chunked", SchedulerLimits(max_seqs=64, chunk_tokens=512, max_loras=max_loras))
    if batches is not None:
        schedule = scheduler.next_batch

        def recorded(state):
            batch = schedule(state)
            running = {seq.adapter for seq in state.running}
            batches.append(({seq.adapter for seq, _ in batch.prefills} | {seq.adapter for seq in batch.decodes},
                            running))
            return batch
        scheduler.next_batch = recorded
    kv = PagedKVCache(capacity_blocks=blocks, block_tokens=BLOCK)
    return serve(costs, requests, scheduler, kv, memory, costs.device.idle_power_W)


def _requests(count: int, adapters: int) -> RequestSet:
    rng = np.random.default_rng(3)
    plain = RequestSet(arrival_s=np.sort(rng.uniform(0, 0.05, count)), prompt_tokens=rng.integers(16, 200, count),
                       output_tokens=rng.integers(4, 40, count))
    return plain.with_adapters(adapters, 1.0, seed=1)


def test_no_iteration_runs_more_adapters_than_max_loras(costs):
    """80 requests over 12 adapters, max_loras 3: no iteration's sequences, nor the running ones, hold more than 3
    distinct adapters, some hold 3, and every request finishes."""
    batches: list = []
    result = _serve(_lora_costs(costs), _requests(80, 12), 3, batches)
    assert max(len(ran) for ran, _ in batches) == 3 and max(len(running) for _, running in batches) == 3
    assert np.isfinite(result.records.finish_s).all() and len(result.records.finish_s) == 80


@pytest.mark.parametrize(("tokens", "decodes"), [(0, 1), (0, 48), (300, 0), (120, 16)])
def test_lora_never_makes_an_iteration_faster(costs, tokens, decodes):
    """An iteration with adapters costs at least what it costs without, and more adapters (weights read) at least what
    fewer cost."""
    lora = _lora_costs(costs)
    shape = step_shape([(tokens, 0)] if tokens else [], [64] * decodes, sampled=decodes + bool(tokens))
    times = [lora.price(replace(shape, lora_adapters=a)).time_s for a in range(0, min(shape.tokens, 8) + 1)]
    assert times[0] == costs.price(shape).time_s
    assert all(later >= earlier for earlier, later in zip(times, times[1:], strict=False)) and times[1] > times[0]


def test_every_request_takes_at_least_as_long_with_adapters(costs):
    """The same requests arriving together, under a max_loras no batch reaches (the same batches): each request with
    its adapter finishes no sooner than without."""
    requests = _requests(40, 4)
    together = replace(requests, arrival_s=np.zeros(40))
    with_lora = _serve(_lora_costs(costs), together, 4).records
    without = _serve(costs, replace(together, adapter=None), 0).records
    assert (with_lora.finish_s >= without.finish_s).all() and with_lora.finish_s.max() > without.finish_s.max()


def test_adapters_take_the_least_recently_used_slot_by_hand():
    """Two slots; iterations using {0}, {1}, {0}, {2}, {1, 2}, {2}: 0 and 1 load into the empty slots, 0 is in one, 2
    takes 1's (the least recently used), 1 takes 0's, 2 stays: 1, 1, 0, 1, 1, 0 loads."""
    slots: list[int] = []
    loads = [activate(slots, used, 2) for used in ({0}, {1}, {0}, {2}, {1, 2}, {2})]
    assert loads == [1, 1, 0, 1, 1, 0] and slots == [1, 2]
    with pytest.raises(ValueError, match="found 3 adapters"):
        activate(slots, {0, 1, 3}, 2)


def test_an_iteration_carries_the_adapters_it_loads():
    """Adapters 0, 1, 0 admitted together under max_loras 2 load 2 adapters before their prefill; their decodes next
    load none; without LoRA (max_loras 0) nothing loads."""
    state = _queue([0, 1, 0])
    scheduler = make_scheduler("chunked", SchedulerLimits(max_seqs=16, chunk_tokens=10_000, max_loras=2))
    assert scheduler.next_batch(state).loaded_adapters == 2
    for seq in state.running:
        seq.computed = seq.target
    batch = scheduler.next_batch(state)
    assert len(batch.decodes) == 3 and batch.loaded_adapters == 0
    plain = make_scheduler("chunked", SchedulerLimits(max_seqs=16, chunk_tokens=10_000))
    assert plain.next_batch(_queue([0, 1, 0])).loaded_adapters == 0


@pytest.mark.parametrize("device", ["a100-sxm-80gb", "npu-only", "neupims", "ampere-altra", "m2-ultra-tmac",
                                    "versal-vhk158"])
def test_every_device_kind_prices_adapters_as_more_work(costs, device):
    """The rows go through each device kind's own cost model: on a GPU, an NPU, PIM, CPUs and an FPGA an iteration with
    adapters costs more than without, and more adapters no less."""
    plain = IterationCostModel(load_device(device), costs.template, execution="eager")
    lora = IterationCostModel(load_device(device), replace(costs.template, lora_rank=16), execution="eager")
    shape = step_shape([(64, 0)], [200] * 8, sampled=9)
    times = [lora.price(replace(shape, lora_adapters=a)).time_s for a in (0, 1, 4)]
    # More adapters read more weights; where that hides under the work the sum may round a last digit down.
    assert times[0] == plain.price(shape).time_s < times[1] <= times[2] * (1 + 1e-12)
