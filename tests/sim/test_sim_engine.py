"""The event simulation of serial kernels equals the sum of their costs; it agrees with the analytic path."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hw_models.device import dispatch_s
from hw_models.registry import load_device
from kernels.lowering import lower_trace
from kernels.table import KernelTable
from sim.analytic import evaluate
from sim.chrome_trace import chrome_trace_events, write_chrome_trace
from sim.engine import simulate
from sim.memory import batch_footprint
from sim.result import RESULT_METRICS
from sim.step_costs import with_host
from sim.workload import BatchWorkload, PassTables

PROMPT, OUTPUT = 64, 4


def _table(trace) -> KernelTable:
    return KernelTable.from_kernels(lower_trace(trace))


def _setup(trace_of, model, batch: int, prompt: int, output: int, device: str = "h100-sxm", window=None):
    prefill = trace_of(model, "prefill", batch, prompt)
    decode = trace_of(model, "decode", batch, 1, prompt)
    tables = PassTables(prefill=_table(prefill), decode=_table(decode), attention_window=window)
    workload = BatchWorkload(batch=batch, prompt_len=prompt, output_len=output)
    memory = batch_footprint(weight_bytes=prefill.param_bytes, kv_bytes_per_token=1.0, batch=batch,
                             tokens_per_sequence=prompt + output, activation_bytes=prefill.peak_activation_bytes)
    return load_device(device), tables, workload, memory


@pytest.fixture(scope="module")
def llama(trace_of):
    """Llama-2-7B on an H100 SXM, batch 1, prompt 64, 4 output tokens (3 decode steps)."""
    device, tables, workload, memory = _setup(trace_of, "llama-2-7b", 1, PROMPT, OUTPUT)
    return device, tables, workload, memory, simulate(device, tables, workload, memory)


def _priced(device, table: KernelTable):
    """A pass's costs by hand: its kernels, and the device's wait on PyTorch eager's host dispatch where that is
    longer (a pass takes max(host, device), sim/step_costs.py)."""
    return with_host(device.cost_table(table), dispatch_s(device, "eager"))


@pytest.fixture(scope="module")
def independent(trace_of, llama):
    """Costs by hand from the device: the prefill table, and each decode step traced afresh at its own context."""
    device = llama[0]
    prefill = _priced(device, _table(trace_of("llama-2-7b", "prefill", 1, PROMPT)))
    # Decode step s (s = 0, 1, 2) processes the output token s + 1 after PROMPT + s cached tokens.
    steps = [_priced(device, _table(trace_of("llama-2-7b", "decode", 1, 1, PROMPT + s))) for s in range(OUTPUT - 1)]
    return prefill, steps


def test_ttft_is_prefill_time_sum(llama, independent):
    result = llama[4]
    prefill, _ = independent
    assert result.metrics()["ttft_s"] == pytest.approx(float(prefill.time_s.sum()), rel=1e-9)
    assert all(r.first_token_s == result.requests[0].first_token_s for r in result.requests)


def test_e2e_is_sum_of_all_kernel_times(llama, independent):
    result = llama[4]
    prefill, steps = independent
    total = float(prefill.time_s.sum()) + sum(float(s.time_s.sum()) for s in steps)
    assert result.metrics()["e2e_s"] == pytest.approx(total, rel=1e-9)
    assert result.makespan_s == pytest.approx(total, rel=1e-9)
    # TPOT: the decode time over the OUTPUT - 1 tokens after the first.
    decode_s = sum(float(s.time_s.sum()) for s in steps)
    assert result.metrics()["tpot_s"] == pytest.approx(decode_s / (OUTPUT - 1), rel=1e-9)


def test_energy_is_sum_of_kernel_energies(llama, independent):
    result = llama[4]
    prefill, steps = independent
    costs = [prefill, *steps]
    for part in ("compute_J", "memory_J", "static_J"):
        expected = sum(float(getattr(c, part).sum()) for c in costs)
        assert result.energy_parts_J[part] == pytest.approx(expected, rel=1e-9), part
    assert result.energy_J == pytest.approx(sum(float(c.energy_J.sum()) for c in costs), rel=1e-9)
    assert result.energy_J == pytest.approx(sum(result.energy_parts_J.values()), rel=1e-12)


def test_time_by_class_adds_up(llama):
    result = llama[4]
    assert sum(result.time_by_class_s.values()) == pytest.approx(result.makespan_s, rel=1e-9)
    assert {"gemm", "attention"} <= set(result.time_by_class_s)


def test_simulate_agrees_with_analytic(llama):
    device, tables, workload, memory, sim = llama
    analytic = evaluate(device, tables, workload, memory)
    a, b = sim.metrics(), analytic.metrics()
    for key in ("ttft_s", "tpot_s", "e2e_s", "energy_per_token_J", "tokens_per_s", "avg_power_W"):
        assert a[key] == pytest.approx(b[key], rel=1e-9), key
    assert sim.energy_J == pytest.approx(analytic.energy_J, rel=1e-9)
    for label, seconds in analytic.time_by_class_s.items():
        assert sim.time_by_class_s[label] == pytest.approx(seconds, rel=1e-9), label


@pytest.mark.parametrize("device_name", ["h100-sxm", "a100-sxm-80gb"])  # fitted, and the datasheet roofline
@pytest.mark.parametrize("execution", ["eager", "graphs", "engine", "device"])
@pytest.mark.parametrize("output", [1, 2, OUTPUT])
def test_analytic_totals_agree_with_step_costs(trace_of, device_name, execution, output):
    """The analytic path sums a batch decoded whole straight from its passes' costs (sim/step_costs.py
    whole_batch_totals: one stacked call where the passes launch alike, each pass apart for an engine's prefill); the
    event simulation prices the same passes through price_passes. Both agree, with and without decode steps."""
    device, tables, workload, memory = _setup(trace_of, "llama-2-7b", 1, PROMPT, output, device=device_name)
    sim = simulate(device, tables, workload, memory, execution=execution)
    analytic = evaluate(device, tables, workload, memory, execution=execution)
    a, b = sim.metrics(), analytic.metrics()
    for key in RESULT_METRICS:
        assert a[key] == pytest.approx(b[key], rel=1e-12, nan_ok=True), key
    assert analytic.energy_parts_J == pytest.approx(sim.energy_parts_J, rel=1e-12)
    assert analytic.time_by_class_s == pytest.approx(sim.time_by_class_s, rel=1e-12)


@pytest.fixture(scope="module")
def tiny_batch(trace_of, tiny_llama):
    """tiny-llama, batch 3, prompt 16, 5 outputs, on an A100 80GB."""
    device, tables, workload, memory = _setup(trace_of, tiny_llama, 3, 16, 5, device="a100-sxm-80gb")
    return device, tables, workload, memory, simulate(device, tables, workload, memory)


def test_throughput_and_energy_per_token(tiny_batch):
    *_, result = tiny_batch
    metrics = result.metrics()
    batch, output = 3, 5
    assert metrics["tokens_per_s"] == pytest.approx(batch * output / metrics["e2e_s"], rel=1e-12)
    assert metrics["energy_per_token_J"] == pytest.approx(result.energy_J / (batch * output), rel=1e-12)
    assert metrics["avg_power_W"] == pytest.approx(result.energy_J / metrics["e2e_s"], rel=1e-12)
    assert metrics["e2e_s"] == pytest.approx(metrics["ttft_s"] + (output - 1) * metrics["tpot_s"], rel=1e-12)
    assert len(result.requests) == batch and result.output_tokens == batch * output


def test_deterministic(tiny_llama, tiny_batch):
    # Same inputs, traced afresh (not from the cache), give identical results.
    from workloads.capture import trace_model

    device, _, workload, memory, first = tiny_batch
    tables = PassTables(
        prefill=_table(trace_model(tiny_llama, phase="prefill", batch=3, seq_len=16)),
        decode=_table(trace_model(tiny_llama, phase="decode", batch=3, seq_len=1, context_len=16)),
    )
    second = simulate(load_device("a100-sxm-80gb"), tables, workload, memory)
    assert second.metrics() == first.metrics()
    assert second.energy_parts_J == first.energy_parts_J
    np.testing.assert_array_equal(second.timeline.start_s, first.timeline.start_s)
    assert evaluate(device, tables, workload, memory).metrics() == evaluate(device, tables, workload, memory).metrics()


def test_single_output_token_has_no_decode(trace_of, tiny_llama):
    device, tables, _, memory = _setup(trace_of, tiny_llama, 1, 16, 2)
    workload = BatchWorkload(batch=1, prompt_len=16, output_len=1)
    result = simulate(device, tables, workload, memory)
    prefill_s = float(_priced(device, tables.prefill).time_s.sum())
    assert result.metrics()["e2e_s"] == pytest.approx(prefill_s, rel=1e-12)
    assert math.isnan(result.metrics()["tpot_s"])


def test_sliding_window_steps_match_retraced_steps(trace_of, tiny_llama):
    # A window of 8 keys: every decode step attends to the last 8 positions, whatever the context.
    import dataclasses

    windowed = dataclasses.replace(tiny_llama, name="tiny-window", sliding_window=8)
    device, tables, workload, memory = _setup(trace_of, windowed, 2, 16, 4, window=8)
    result = simulate(device, tables, workload, memory)
    expected_J = float(_priced(device, tables.prefill).energy_J.sum())
    expected_s = float(_priced(device, tables.prefill).time_s.sum())
    for s in range(3):
        step = _priced(device, _table(trace_of(windowed, "decode", 2, 1, 16 + s)))
        expected_J += float(step.energy_J.sum())
        expected_s += float(step.time_s.sum())
    assert result.makespan_s == pytest.approx(expected_s, rel=1e-9)
    assert result.energy_J == pytest.approx(expected_J, rel=1e-9)


def test_chrome_trace(llama, tmp_path):
    _, tables, workload, _, result = llama
    path = tmp_path / "trace.json"
    write_chrome_trace(result, "h100-sxm", path)
    data = json.loads(path.read_text())
    assert data["traceEvents"] == json.loads(json.dumps(chrome_trace_events(result, "h100-sxm")))
    complete = [e for e in data["traceEvents"] if e["ph"] == "X"]
    # One event per kernel executed: the prefill kernels once, the decode kernels in each of OUTPUT - 1 steps.
    assert len(complete) == len(tables.prefill) + len(tables.decode) * (workload.output_len - 1)
    assert sum(e["args"]["step"] == -1 for e in complete) == len(tables.prefill)
    # Ordered, non-overlapping, back to back from t = 0 to the end (microseconds).
    starts = np.array([e["ts"] for e in complete])
    ends = starts + np.array([e["dur"] for e in complete])
    assert starts[0] == 0
    assert np.all(np.diff(starts) > 0)
    assert np.all(ends[:-1] <= starts[1:] + 1e-6)
    assert ends[-1] == pytest.approx(result.makespan_s * 1e6, rel=1e-9)
    assert all(e["dur"] > 0 and isinstance(e["name"], str) and e["name"] for e in complete)


def test_chrome_trace_needs_timeline(llama):
    device, tables, workload, memory, _ = llama
    result = simulate(device, tables, workload, memory, record_timeline=False)
    with pytest.raises(ValueError):
        chrome_trace_events(result, "h100-sxm")


@pytest.mark.parametrize("run", ["analytic", "event"])
def test_the_wait_on_the_host_is_apart_from_the_kernel_classes(trace_of, run):
    """An eager batch-1 decode of Llama-2-7B waits on its host: each kernel class keeps the busy time it has on a host
    that dispatches for free, and the wait is its own entry, the run's time less those busy times. A host-bound step
    takes the host's dispatch of its kernels (1,000 us / 1,000 per kernel here, far above any kernel)."""
    device, tables, workload, memory = _setup(trace_of, "llama-2-7b", 1, PROMPT, OUTPUT)
    slow_host = load_device("h100-sxm", {"overhead.framework_dispatch_us": 1000.0})
    free_host = load_device("h100-sxm", {"overhead.framework_dispatch_us": 0.0})
    price = evaluate if run == "analytic" else simulate
    waiting, unhindered = (price(d, tables, workload, memory) for d in (slow_host, free_host))
    assert unhindered.time_by_class_s["host_wait"] == 0.0
    busy = {label: s for label, s in waiting.time_by_class_s.items() if label != "host_wait"}
    assert busy == pytest.approx({k: v for k, v in unhindered.time_by_class_s.items() if k != "host_wait"}, rel=1e-9)
    wait = waiting.time_by_class_s["host_wait"]
    assert wait == pytest.approx(waiting.makespan_s - sum(busy.values()), rel=1e-9)
    passes = len(tables.prefill) + len(tables.decode) * (OUTPUT - 1)  # each host-bound: its kernels' dispatch
    assert waiting.makespan_s == pytest.approx(passes * 1e-3, rel=1e-9)
    assert wait == pytest.approx(passes * 1e-3 - unhindered.makespan_s, rel=1e-9)
