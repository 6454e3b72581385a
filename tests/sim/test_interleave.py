"""Sub-batch interleaving: a hand-computed schedule, engine = analytic, bounds, and static energy over the makespan."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hw_models.gpu import GPUModel
from hw_models.registry import load_device
from kernels.lowering import lower_trace
from kernels.table import KernelTable
from sim.analytic import evaluate
from sim.engine import simulate
from sim.interleave import interleaved_schedule
from sim.memory import batch_footprint
from sim.step_costs import price_passes, sub_batch_sizes
from sim.workload import BatchWorkload, PassTables

# Long contexts at batch 32: decode attention (KV reads) outweighs the weights, so splitting pays.
BATCH, PROMPT, OUTPUT = 32, 2048, 4


def test_two_chains_by_hand():
    # Each chain: NPU 2, PIM 1, NPU 2, PIM 1. A gets the NPU first (tie at t=0 goes to the lower chain):
    # A: NPU [0,2] PIM [2,3] NPU [4,6] PIM [6,7]; B: NPU [2,4] PIM [4,5] NPU [6,8] PIM [8,9].
    durations = [np.array([2.0, 1, 2, 1])] * 2
    units = [np.array([0, 1, 0, 1])] * 2
    a, b = interleaved_schedule(durations, units, unit_count=2)
    assert a.tolist() == [0, 2, 4, 6] and b.tolist() == [2, 4, 6, 8]
    # Serially the same work takes 12; interleaved it ends at 9.
    finish = max(float((starts + d)[-1]) for starts, d in zip((a, b), durations, strict=True))
    assert sum(float(d.sum()) for d in durations) == 12 and finish == 9


def test_sub_batch_sizes():
    assert sub_batch_sizes(8, 2) == (4, 4)
    assert sub_batch_sizes(7, 2) == (4, 3)
    assert sub_batch_sizes(1, 2) == (1,)
    assert sub_batch_sizes(5, 1) == (5,)


class TwoUnitGPU(GPUModel):
    """A GPU whose decode attention runs on a second unit: the placement of an NPU beside PIM banks."""

    units = ("main", "side")
    kind = "npu"  # placed like an NPU beside PIM banks: driven by its own controller, not PyTorch eager

    def _cost_table(self, table, execution):
        costs = super()._cost_table(table, execution)
        return dataclasses.replace(costs, unit=table.decode_attention_mask.astype(int))


def _table(trace) -> KernelTable:
    return KernelTable.from_kernels(lower_trace(trace))


@pytest.fixture(scope="module")
def interleaved(trace_of):
    spec = load_device("h100-sxm").spec
    device = TwoUnitGPU(spec)
    prefill = trace_of("llama-2-7b", "prefill", BATCH, PROMPT)
    parts = tuple((size, _table(trace_of("llama-2-7b", "decode", size, 1, PROMPT)))
                  for size in sub_batch_sizes(BATCH, 2))
    tables = PassTables(prefill=_table(prefill), decode=_table(trace_of("llama-2-7b", "decode", BATCH, 1, PROMPT)),
                        sub_batch_decode=parts)
    workload = BatchWorkload(batch=BATCH, prompt_len=PROMPT, output_len=OUTPUT)
    memory = batch_footprint(weight_bytes=prefill.param_bytes, kv_bytes_per_token=1.0, batch=BATCH,
                             tokens_per_sequence=PROMPT + OUTPUT, activation_bytes=prefill.peak_activation_bytes)
    return device, tables, workload, memory


def test_engine_equals_analytic(interleaved):
    device, tables, workload, memory = interleaved
    sim = simulate(device, tables, workload, memory)
    fast = evaluate(device, tables, workload, memory)
    assert sim.makespan_s == pytest.approx(fast.makespan_s, rel=1e-12)
    for a, b in zip(sim.requests, fast.requests, strict=True):
        assert a.finish_s == pytest.approx(b.finish_s, rel=1e-12)
    assert sim.energy_parts_J == pytest.approx(fast.energy_parts_J, rel=1e-12)
    # Both units appear in the timeline, and kernels on one unit never overlap.
    timeline = sim.timeline
    assert set(timeline.unit.tolist()) == {0, 1} and set(timeline.sub_batch.tolist()) == {0, 1}
    for unit in (0, 1):
        on = timeline.unit == unit
        order = np.argsort(timeline.start_s[on])
        starts, ends = timeline.start_s[on][order], (timeline.start_s + timeline.duration_s)[on][order]
        assert np.all(starts[1:] >= ends[:-1] - 1e-15)


def test_overlap_bounds(interleaved):
    """Decode takes at least the busiest unit's work and at most all work back to back; the units overlap."""
    device, tables, workload, memory = interleaved
    result = evaluate(device, tables, workload, memory)
    costs = price_passes(device, tables, workload)
    assert costs.interleaved  # here splitting pays: the scheduler chose it
    decode_s = result.makespan_s - float(costs.prefill.time_s.sum())
    busy = [sum(part.total("time_s", part.base.unit_index == u) for part in costs.decode) for u in (0, 1)]
    assert max(busy) <= decode_s * (1 + 1e-12)
    assert decode_s < sum(busy)


def test_split_only_when_faster(interleaved):
    """The chosen decode is never slower than the batch decoded whole; a split that does not pay is not taken."""
    device, tables, workload, memory = interleaved
    whole = dataclasses.replace(tables, sub_batch_decode=())
    chosen, unsplit = evaluate(device, tables, workload, memory), evaluate(device, whole, workload, memory)
    assert chosen.makespan_s <= unsplit.makespan_s
    # On one unit nothing overlaps, so two sub-batches only add work: the whole batch is kept.
    one_unit = GPUModel(device.spec)
    assert not price_passes(one_unit, tables, workload).interleaved


def test_static_energy_over_makespan_and_parts_sum(interleaved):
    device, tables, workload, memory = interleaved
    result = evaluate(device, tables, workload, memory)
    assert result.energy_parts_J["static_J"] == pytest.approx(device.idle_power_W * result.makespan_s, rel=1e-12)
    assert result.energy_J == pytest.approx(sum(result.energy_parts_J.values()), rel=1e-12)


class SlowSideGPU(TwoUnitGPU):
    """TwoUnitGPU whose side unit is 200 times slower: decode attention dominates, so splitting pays."""

    def _cost_table(self, table, execution):
        costs = super()._cost_table(table, execution)
        f = np.where(costs.unit == 1, 200.0, 1.0)
        return dataclasses.replace(costs, time_s=costs.time_s * f, compute_s=costs.compute_s * f,
                                   memory_s=costs.memory_s * f, overhead_s=costs.overhead_s * f,
                                   static_J=costs.static_J * f)


@pytest.mark.slow  # a Mixtral trace, about 7 s
def test_moe_sub_batches_run_their_own_kernels(trace_of):
    """Mixtral decode of 4 sequences routes 8 token-expert pairs (all 8 experts busy); a sub-batch of 2 routes 4,
    so it launches fewer expert kernels. The event simulation must label and count each sub-batch's own kernels."""
    device = SlowSideGPU(load_device("h100-sxm").spec)
    whole = _table(trace_of("mixtral-8x7b", "decode", 4, 1, 64))
    parts = tuple((size, _table(trace_of("mixtral-8x7b", "decode", size, 1, 64))) for size in (2, 2))
    assert len(parts[0][1]) < len(whole)
    prefill = trace_of("mixtral-8x7b", "prefill", 4, 64)
    tables = PassTables(prefill=_table(prefill), decode=whole, sub_batch_decode=parts)
    workload = BatchWorkload(batch=4, prompt_len=64, output_len=3)
    memory = batch_footprint(weight_bytes=prefill.param_bytes, kv_bytes_per_token=1.0, batch=4,
                             tokens_per_sequence=67, activation_bytes=prefill.peak_activation_bytes)
    assert price_passes(device, tables, workload).interleaved
    sim, fast = simulate(device, tables, workload, memory), evaluate(device, tables, workload, memory)
    assert sim.makespan_s == pytest.approx(fast.makespan_s, rel=1e-12)
    assert sim.time_by_class_s == pytest.approx(fast.time_by_class_s, rel=1e-9)
    timeline = sim.timeline
    decode = timeline.phase == 1
    labels = [f"{k.op} {k.module}".strip() for k in parts[0][1].kernels]
    shown = [sim.kernel_names[1, s][i] for s, i in zip(timeline.sub_batch[decode], timeline.kernel_index[decode],
                                                        strict=True)]
    assert shown == [labels[i] for i in timeline.kernel_index[decode]]
