"""The serving simulation (sim/serving.py with sim/schedulers, sim/kv_cache.py and sim/costs.py) against closed forms,
the static-batch path it generalizes, queueing laws and conservation invariants.

A tiny Llama (2 layers, hidden 64) on an H100 keeps every run to a fraction of a second: each iteration costs about
0.47 ms there (kernel launches dominate), whatever its shape, so runs of hundreds of requests take thousands of
iterations and still finish quickly. Expected values come from hand sums of IterationCostModel.price over the
iterations a request must run, from the existing static path (sim/analytic.py over traced passes), or from
invariants that hold whatever the costs are.
"""

from __future__ import annotations

import math
from collections import Counter, deque

import numpy as np
import pytest

from explore.design_point import DesignPoint
from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.lowering import lower_trace
from kernels.shapes import StepTemplate, step_shape
from kernels.table import KernelTable
from sim.analytic import evaluate as evaluate_analytic
from sim.costs import IterationCostModel
from sim.kv_cache import PagedKVCache
from sim.memory import batch_footprint
from sim.schedulers import SCHEDULERS, EngineState, SchedulerLimits, Sequence, make_scheduler
from sim.serving import serve, serving_infeasible_reason, serving_memory
from sim.serving_metrics import mean_in_system
from sim.step_costs import sub_batch_sizes
from sim.workload import BatchWorkload, PassTables
from workloads.requests import LogNormal, Poisson, RequestSet, Uniform, sample_requests

FMT = NumericFormat()
BLOCK = 16
STATIC_METRICS = ("ttft_s", "tpot_s", "e2e_s", "tokens_per_s", "energy_per_token_J")
# One preset of every device kind: a GPU, the NeuPIMs NPU (PIM units, sub-batch interleaving), a CPU, an FPGA.
DEVICES = ("h100-sxm", "neupims", "ampere-altra", "alveo-u280")


def _tracer(trace_of, config):
    def trace(phase: str, batch: int, prompt: int):
        if phase == "decode":
            return trace_of(config, "decode", batch, 1, prompt)
        return trace_of(config, "prefill", batch, prompt)
    return trace


@pytest.fixture(scope="module")
def template(tiny_llama, trace_of) -> StepTemplate:
    return StepTemplate.from_model(tiny_llama, FMT, _tracer(trace_of, tiny_llama))


@pytest.fixture(scope="module")
def gpu():
    return load_device("h100-sxm")


@pytest.fixture(scope="module")
def costs(gpu, template) -> IterationCostModel:
    # Replayed from graphs: in PyTorch eager the tiny model's every iteration would take its host dispatch alone.
    return IterationCostModel(gpu, template, execution="graphs")


class Recorder:
    """Records, for every iteration a scheduler forms (in the order of the iteration log), its prefill chunks and
    decodes as they were when scheduled, the KV blocks in use, and the tokens each preempted sequence had computed
    and lost: those it did not find cached when admitted again (its first chunk then starts at what it found). It wraps
    the scheduler's own `schedule` method, however the replica reaches it."""

    def __init__(self, scheduler):
        self.prefills: list[list[tuple[int, int, int, int]]] = []  # (request, chunk, computed, target)
        self.decodes: list[list[int]] = []
        self.used_blocks: list[int] = []
        self.lost_tokens = 0
        self.found_tokens = 0  # of the tokens preempted sequences had computed, those found cached again
        self.preemptions = 0
        preempted: dict[int, int] = {}  # a preempted sequence, until admitted again -> the tokens it had computed
        inner = scheduler.schedule

        def schedule(state):
            before = {seq.index: (seq.computed, seq.preemptions) for seq in state.running}
            batch = inner(state)
            for seq in [*state.running, *state.waiting]:
                if seq.index in before and seq.preemptions > before[seq.index][1]:
                    preempted[seq.index] = before[seq.index][0]
                    self.preemptions += seq.preemptions - before[seq.index][1]
            for seq, _ in batch.prefills:
                if seq.index in preempted:
                    self.lost_tokens += preempted[seq.index] - seq.computed
                    self.found_tokens += seq.computed
                    del preempted[seq.index]
            if batch:  # an empty batch is no iteration: the replica waits for an arrival
                self.prefills.append([(seq.index, chunk, seq.computed, seq.target) for seq, chunk in batch.prefills])
                self.decodes.append([seq.index for seq in batch.decodes])
                self.used_blocks.append(state.kv.used_blocks)
            return batch

        scheduler.schedule = schedule

    def samples(self) -> Counter:
        """Tokens each request sampled: one per decode, one per chunk that completes its prefill."""
        counts: Counter = Counter()
        for prefills, decodes in zip(self.prefills, self.decodes, strict=True):
            counts.update(index for index, chunk, computed, target in prefills if computed + chunk >= target)
            counts.update(decodes)
        return counts


def _serve(costs, requests, scheduler: str, *, blocks: int = 100_000, prefix: int = 0, record: bool = False,
           window: int | None = None, **limits):
    """Serve `requests` on a replica whose KV cache has `blocks` blocks of BLOCK tokens (nothing else in memory)."""
    kv_per_token = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama)
    memory = serving_memory(capacity_B=blocks * BLOCK * kv_per_token, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=kv_per_token, block_tokens=BLOCK)
    assert memory.kv_blocks == blocks
    kv = PagedKVCache(capacity_blocks=blocks, block_tokens=BLOCK, prefix_tokens=prefix)
    policy = make_scheduler(scheduler, SchedulerLimits(**limits))
    recorder = Recorder(policy) if record else None
    result = serve(costs, requests, policy, kv, memory, costs.device.idle_power_W, window=window)
    return (result, recorder) if record else result


def _together(count: int, prompt: int, output: int) -> RequestSet:
    return RequestSet(arrival_s=np.zeros(count), prompt_tokens=np.full(count, prompt),
                      output_tokens=np.full(count, output))


def assert_serves_as_static(evaluator, point) -> dict:
    """A static eager `point`'s batch served as that many requests at 0 on the static scheduler (the step template of
    its model, under its KV window) costs what the static batch costs (STATIC_METRICS, to 1e-9); the batch's
    metrics."""
    want = evaluator.evaluate(point).metrics
    costs = IterationCostModel(evaluator.point_device(point), evaluator.template(point.model, NumericFormat()))
    got = _serve(costs, _together(point.batch, point.prompt, point.output), "static", max_seqs=point.batch,
                 window=evaluator.kv_window(point)).metrics()
    for name in STATIC_METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-9), name
    return want


def _static_tables(trace_of, config, device, batch: int, prompt: int) -> PassTables:
    """Prefill and decode tables as explore/evaluate.py builds them (with its decode sub-batches where the device
    interleaves them)."""
    def table(phase: str, size: int) -> KernelTable:
        return KernelTable.from_kernels(lower_trace(_tracer(trace_of, config)(phase, size, prompt))).with_format(FMT)
    sizes = sub_batch_sizes(batch, device.sub_batches)
    return PassTables(prefill=table("prefill", batch), decode=table("decode", batch),
                      attention_window=config.sliding_window,
                      sub_batch_decode=tuple((size, table("decode", size)) for size in sizes if len(sizes) > 1))


@pytest.mark.parametrize("device_name", DEVICES)
def test_static_batch_reproduces_the_static_path(device_name, tiny_llama, trace_of, template):
    """B identical requests arriving at 0 on the static scheduler run one prefill and O - 1 decode steps, as the
    static closed form (sim/analytic.py over the traced prefill and decode) prices them."""
    batch, prompt, output = 4, 40, 9
    device = load_device(device_name)
    tables = _static_tables(trace_of, tiny_llama, device, batch, prompt)
    workload = BatchWorkload(batch=batch, prompt_len=prompt, output_len=output)
    footprint = batch_footprint(weight_bytes=0.0, kv_bytes_per_token=tiny_llama.kv_bytes_per_token(), batch=batch,
                                tokens_per_sequence=prompt + output - 1, activation_bytes=0.0)
    static = evaluate_analytic(device, tables, workload, footprint)
    want = static.metrics()
    result = _serve(IterationCostModel(device, template), _together(batch, prompt, output), "static", max_seqs=batch)
    got = result.metrics()
    assert len(result.iterations) == output  # one prefill and a decode step per further token
    for name in STATIC_METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-9), name
    # Busy time by kernel class, and the wait on the eager host (a tiny model's steps are host-bound on a GPU), alike.
    assert (static.time_by_class_s["host_wait"] > 0) == (device.kind == "gpu")
    for label in set(static.time_by_class_s) | set(result.time_by_class_s):
        assert result.time_by_class_s.get(label, 0.0) == pytest.approx(static.time_by_class_s.get(label, 0.0),
                                                                        rel=1e-9, abs=1e-15), label


def test_static_batch_reproduces_the_evaluator_at_full_size(evaluator):
    """Llama-2-7B on a calibrated H100: the serving path (step template, iteration prices) and the evaluator's
    static batch (traced passes) agree at full size."""
    point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=4, prompt=32, output=4)
    want = evaluator.evaluate(point).metrics
    costs = IterationCostModel(evaluator.device(point.device), evaluator.template(point.model, FMT))
    got = _serve(costs, _together(point.batch, point.prompt, point.output), "static", max_seqs=point.batch).metrics()
    for name in STATIC_METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-9), name


def _alone(costs, prompt: int, output: int) -> tuple[float, float, float]:
    """A request alone on the replica, by hand: its prefill, then decode steps attending prompt + 1, prompt + 2, ...
    keys. Returns (TTFT, E2E, dynamic energy)."""
    prefill = costs.price(step_shape([(prompt, 0)], sampled=1))
    decodes = [costs.price(step_shape(decode_kv=[prompt + 1 + step], sampled=1)) for step in range(output - 1)]
    energy = sum(c.compute_J + c.memory_J for c in [prefill, *decodes])
    return prefill.time_s, prefill.time_s + sum(c.time_s for c in decodes), energy


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_requests_far_apart_see_no_queue(costs, scheduler):
    """Low load (an M/D/1 queue far below saturation, here deterministic gaps): each request finds the replica
    idle, so TTFT is one prefill iteration, E2E adds its decode iterations, nothing queues; energy is the dynamic
    energy of those iterations plus idle power over the whole run, gaps included."""
    prompt, output, count = 32, 8, 5
    ttft, e2e, dynamic_J = _alone(costs, prompt, output)
    gap = 0.05
    assert gap > 10 * e2e
    requests = RequestSet(arrival_s=gap * np.arange(1, count + 1), prompt_tokens=np.full(count, prompt),
                          output_tokens=np.full(count, output))
    result = _serve(costs, requests, scheduler)
    records = result.records
    np.testing.assert_allclose(records.ttft_s, ttft, rtol=1e-9)
    np.testing.assert_allclose(records.e2e_s, e2e, rtol=1e-9)
    np.testing.assert_allclose(records.queue_s, 0.0, atol=1e-12)
    np.testing.assert_allclose(records.tpot_s, (e2e - ttft) / (output - 1), rtol=1e-9)
    makespan = gap * (count - 1) + e2e
    assert result.makespan_s == pytest.approx(makespan, rel=1e-9)
    energy = count * dynamic_J + costs.device.idle_power_W * makespan
    assert result.metrics()["energy_per_token_J"] == pytest.approx(energy / (count * output), rel=1e-9)
    assert len(result.iterations) == count * output


def test_a_sliding_window_caps_the_keys_decodes_read(costs):
    """With a 36-token window, a request of a 32-token prompt decodes with 33, 34, 35, 36, 36, ... keys."""
    prompt, output, window = 32, 10, 36
    prefill = costs.price(step_shape([(prompt, 0)], sampled=1)).time_s
    decodes = [costs.price(step_shape(decode_kv=[min(prompt + 1 + step, window)], sampled=1)).time_s
               for step in range(output - 1)]
    capped = _serve(costs, _together(1, prompt, output), "continuous", window=window).records
    assert capped.e2e_s[0] == pytest.approx(prefill + sum(decodes), rel=1e-9)
    _, uncapped, _ = _alone(costs, prompt, output)
    assert capped.e2e_s[0] < uncapped


def test_second_request_waits_the_first_ones_service(costs):
    """D/D/1: two requests arrive together at a replica that serves one at a time (static, max_seqs=1). The second
    queues for exactly the first one's service time, then is served in the same time."""
    prompt, output = 24, 6
    ttft, e2e, _ = _alone(costs, prompt, output)
    records = _serve(costs, _together(2, prompt, output), "static", max_seqs=1).records
    assert records.queue_s[0] == 0.0 and records.e2e_s[0] == pytest.approx(e2e, rel=1e-9)
    assert records.queue_s[1] == pytest.approx(e2e, rel=1e-9)
    assert records.ttft_s[1] == pytest.approx(e2e + ttft, rel=1e-9)
    assert records.e2e_s[1] == pytest.approx(2 * e2e, rel=1e-9)


def test_littles_law_at_moderate_load(costs):
    """L = lambda W: the time-average number of requests in the system (an event sweep over arrivals and finishes,
    sim/serving_metrics.mean_in_system) equals the arrival rate of the request set times the mean E2E. Over the
    arrival window (first to last arrival) the two differ only by edge effects, about 1% here; over the whole run
    they are the same sample-path identity."""
    requests = sample_requests(arrivals=Poisson(rate_per_s=150.0), prompt=Uniform(low=16, high=128),
                               output=Uniform(low=8, high=64), count=500, seed=3)
    result = _serve(costs, requests, "continuous", max_seqs=16)
    records = result.records
    busy = float(result.iterations.duration_s.sum()) / result.makespan_s
    assert 0.5 < busy < 0.97  # moderate load: busy most of the time, not saturated
    start, end = float(requests.arrival_s[0]), float(requests.arrival_s[-1])
    in_system = mean_in_system(records, start_s=start, end_s=end)
    assert in_system > 1.5
    assert in_system == pytest.approx(requests.rate_per_s * records.e2e_s.mean(), rel=0.02)
    whole = mean_in_system(records, start_s=start, end_s=float(records.finish_s.max()))
    assert whole == pytest.approx(len(records) / result.makespan_s * records.e2e_s.mean(), rel=1e-9)


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_every_request_finishes_once_with_its_tokens(costs, scheduler):
    """Conservation on a Poisson run with varied lengths and a KV cache small enough to matter: every request
    finishes exactly once, having sampled exactly its output tokens (counted from the batches the scheduler
    formed), is scheduled no earlier than it arrives and gets its first token no later than it finishes; every
    token computed is one of a prompt or output (less the last output), or recomputed after a preemption."""
    requests = sample_requests(arrivals=Poisson(rate_per_s=600.0), prompt=Uniform(low=8, high=96),
                               output=Uniform(low=1, high=48), count=120, seed=11)
    result, recorder = _serve(costs, requests, scheduler, blocks=45, record=True, max_seqs=24, chunk_tokens=64)
    records = result.records
    assert len(records) == len(requests)
    np.testing.assert_array_equal(records.arrival_s, requests.arrival_s)
    np.testing.assert_array_equal(records.output_tokens, requests.output_tokens)
    assert len(recorder.prefills) == len(result.iterations)
    samples = recorder.samples()
    assert [samples[i] for i in range(len(requests))] == requests.output_tokens.tolist()
    # Nothing of a request is scheduled once it has finished.
    last_seen = {}
    for iteration, (prefills, decodes) in enumerate(zip(recorder.prefills, recorder.decodes, strict=True)):
        for index in [p[0] for p in prefills] + decodes:
            last_seen[index] = iteration
    ends = result.iterations.start_s + result.iterations.duration_s  # iterations last ~0.5 ms: 1e-12 s is no doubt
    finish_iteration = np.searchsorted(ends, records.finish_s - 1e-12)
    assert all(last_seen[i] == finish_iteration[i] for i in range(len(requests)))
    assert np.all(records.scheduled_s >= records.arrival_s)
    assert np.all(records.first_token_s >= records.scheduled_s)
    assert np.all(records.first_token_s <= records.finish_s)
    assert int(records.preemptions.sum()) == recorder.preemptions
    expected_tokens = int((requests.prompt_tokens + requests.output_tokens - 1).sum()) + recorder.lost_tokens
    assert int(result.iterations.tokens.sum()) == expected_tokens


def _pressure() -> RequestSet:
    """30 requests arriving within ~15 ms that need up to 191 tokens (12 blocks) each: far more than 48 blocks."""
    return sample_requests(arrivals=Poisson(rate_per_s=2000.0), prompt=Uniform(low=32, high=64),
                           output=Uniform(low=64, high=128), count=30, seed=2)


@pytest.mark.parametrize("scheduler", ["continuous", "chunked"])
def test_kv_pressure_preempts_by_recompute_and_never_overflows(costs, scheduler):
    """With 48 blocks for 30 long requests the schedulers that grow the KV cache block by block run out and
    preempt the newest sequences by recompute: the cache never holds more than its blocks, every request still
    finishes with its tokens, and the iteration log shows the recomputation: the tokens computed exceed each
    request's prompt + output - 1 by exactly the cached tokens preempted sequences lost."""
    requests = _pressure()
    result, recorder = _serve(costs, requests, scheduler, blocks=48, record=True, max_seqs=32, chunk_tokens=48)
    records = result.records
    assert recorder.preemptions > 0 and int(records.preemptions.sum()) == recorder.preemptions
    assert result.metrics()["preemptions"] == recorder.preemptions
    assert np.all(result.iterations.kv_blocks_used <= result.iterations.kv_blocks_total)
    assert np.all(result.iterations.kv_blocks_total == 48)
    assert max(recorder.used_blocks) <= 48 and result.peak_kv_blocks <= 48
    assert max(recorder.used_blocks) >= 47  # it did fill up
    assert len(records) == len(requests)
    samples = recorder.samples()
    assert [samples[i] for i in range(len(requests))] == requests.output_tokens.tolist()
    needed = int((requests.prompt_tokens + requests.output_tokens - 1).sum())
    assert recorder.lost_tokens > 0
    assert int(result.iterations.tokens.sum()) == needed + recorder.lost_tokens
    # vLLM v1 (chunked) finds a preempted request's whole blocks still cached where no other allocation took them;
    # vLLM v0 (continuous, prefix caching off by default) recomputes from scratch.
    assert (recorder.found_tokens > 0) == (scheduler == "chunked")
    # Prefill tokens computed: every prompt once, plus each recompute (sequences recompute their prompt and the
    # tokens they generated before they were preempted).
    prefill_tokens = sum(chunk for prefills in recorder.prefills for _, chunk, _, _ in prefills)
    assert prefill_tokens > int(requests.prompt_tokens.sum())


@pytest.mark.parametrize("scheduler", ["static", "orca"])
def test_reserving_whole_requests_never_preempts(costs, scheduler):
    requests = _pressure()
    result = _serve(costs, requests, scheduler, blocks=48, max_seqs=32)
    assert int(result.records.preemptions.sum()) == 0
    assert np.all(result.iterations.kv_blocks_used <= 48)
    assert int(result.iterations.tokens.sum()) == int((requests.prompt_tokens + requests.output_tokens - 1).sum())


def test_a_request_a_recompute_could_not_prefill_whole_is_infeasible(costs):
    """Preempted by recompute, the continuous scheduler prefills a sequence's prompt and generated tokens whole:
    a limit below the longest request (here 99 tokens > 64) could strand it, so the point is refused up front
    (as vLLM refuses max_num_batched_tokens below the context length without chunked prefill); chunked prefill
    and swap preemption only ever prefill a prompt."""
    requests = _together(3, 40, 60)  # 40-token prompts within a 64-token limit; 99 tokens (7 blocks) each
    memory = serving_memory(capacity_B=14 * BLOCK * 256, weights_B=0.0, activations_B=0.0, kv_bytes_per_token=256,
                            block_tokens=BLOCK)
    limits = dict(max_batched_tokens=64, chunk_tokens=64)
    reason = serving_infeasible_reason(memory, requests, make_scheduler("continuous", SchedulerLimits(**limits)))
    assert "99-token request" in reason and "max_batched_tokens (64)" in reason
    for name, extra in (("chunked", {}), ("continuous", {"preemption": "swap"})):
        assert serving_infeasible_reason(memory, requests,
                                         make_scheduler(name, SchedulerLimits(**limits, **extra))) == ""


def test_a_cached_prefix_is_no_part_of_the_prefill_a_budget_must_hold(costs):
    """A request of 40 prompt and 60 output tokens whose first 40 tokens are a shared prefix (whole blocks, cached):
    recomputed, it prefills 99 - 32 = 67 tokens past the prefix's two 16-token blocks (its 8 more prompt tokens
    make a block of their own); a 64-token budget is refused, a 67-token one takes it; without the prefix it needs
    99 (as vLLM's prefix caching counts the tokens a prefill computes)."""
    requests = _together(3, 40, 60)
    memory = serving_memory(capacity_B=40 * BLOCK * 256, weights_B=0.0, activations_B=0.0, kv_bytes_per_token=256,
                            block_tokens=BLOCK)
    for budget, prefix, feasible in ((64, 40, False), (67, 40, True), (67, 0, False), (99, 0, True)):
        scheduler = make_scheduler("continuous", SchedulerLimits(max_batched_tokens=budget))
        reason = serving_infeasible_reason(memory, requests, scheduler, prefix_tokens=prefix)
        assert (reason == "") is feasible, (budget, prefix, reason)
    result = _serve(costs, requests, "continuous", max_batched_tokens=67, prefix=40)
    assert len(result.records) == 3


@pytest.mark.parametrize("scheduler", ["static", "orca"])
def test_the_feasibility_check_leaves_the_admission_watermark(costs, scheduler):
    """A request needing every KV block can never be admitted (admission leaves vLLM's watermark, ceil(1%) of
    the blocks, free): refused up front; with one block more it is served."""
    requests = _together(1, 40, 25)  # 40 + 25 - 1 = 64 tokens: 4 blocks of 16
    policy = make_scheduler(scheduler, SchedulerLimits())
    for blocks, feasible in ((4, False), (5, True)):
        memory = serving_memory(capacity_B=blocks * BLOCK * 256, weights_B=0.0, activations_B=0.0,
                                kv_bytes_per_token=256, block_tokens=BLOCK)
        assert memory.kv_blocks == blocks
        assert (serving_infeasible_reason(memory, requests, policy) == "") is feasible
    result = _serve(costs, requests, scheduler, blocks=5)
    assert len(result.records) == 1


def test_chunked_prefill_keeps_its_budget_and_piggybacks_decodes(costs):
    """Sarathi-style: no iteration computes more than chunk_tokens tokens, prompts longer than the budget are
    split over several iterations, and decodes ride along with prefill chunks in the same iteration."""
    budget = 64
    requests = sample_requests(arrivals=Poisson(rate_per_s=400.0), prompt=Uniform(low=40, high=300),
                               output=Uniform(low=4, high=64), count=60, seed=5)
    result, recorder = _serve(costs, requests, "chunked", record=True, chunk_tokens=budget, max_seqs=48)
    tokens = result.iterations.tokens
    assert tokens.max() <= budget
    assert tokens.max() == budget  # the budget binds
    assert len(result.records) == len(requests)
    mixed = [i for i, (prefills, decodes) in enumerate(zip(recorder.prefills, recorder.decodes, strict=True))
             if prefills and decodes]
    assert len(mixed) > 10
    assert any(tokens[i] > result.iterations.batch_size[i] for i in mixed)  # chunks of more than one token
    chunks_per_request = Counter(index for prefills in recorder.prefills for index, *_ in prefills)
    assert chunks_per_request[int(np.argmax(requests.prompt_tokens))] >= 2  # the longest prompt was split
    for prefills, decodes in zip(recorder.prefills, recorder.decodes, strict=True):
        assert sum(chunk for _, chunk, _, _ in prefills) + len(decodes) <= budget


def test_a_long_prompt_alone_is_prefilled_in_chunks(costs):
    """A 100-token prompt under a 48-token budget: chunks of 48, 48 and 4 tokens, each reading the keys computed
    before it; only the last samples (runs the LM head) and gives the first token."""
    ttft, e2e, _ = _alone(costs, 100, 3)
    chunks = [costs.price(step_shape([(48, 0)], sampled=0)), costs.price(step_shape([(48, 48)], sampled=0)),
              costs.price(step_shape([(4, 96)], sampled=1))]
    want_ttft = sum(c.time_s for c in chunks)
    result = _serve(costs, _together(1, 100, 3), "chunked", chunk_tokens=48)
    assert result.iterations.tokens.tolist() == [48, 48, 4, 1, 1]
    assert result.records.ttft_s[0] == pytest.approx(want_ttft, rel=1e-9)
    assert result.records.e2e_s[0] == pytest.approx(want_ttft + e2e - ttft, rel=1e-9)
    assert want_ttft > ttft  # three passes over the weights instead of one


def test_same_seed_same_run_other_seed_other_run(costs):
    def run(seed: int):
        requests = sample_requests(arrivals=Poisson(rate_per_s=300.0), prompt=Uniform(low=8, high=64),
                                   output=Uniform(low=1, high=32), count=80, seed=seed)
        return _serve(costs, requests, "chunked", blocks=80, chunk_tokens=48)

    first, again, other = run(1), run(1), run(2)
    for name in ("arrival_s", "scheduled_s", "first_token_s", "finish_s", "output_tokens", "preemptions"):
        np.testing.assert_array_equal(getattr(first.records, name), getattr(again.records, name))
    np.testing.assert_array_equal(first.iterations.start_s, again.iterations.start_s)
    assert first.metrics() == pytest.approx(again.metrics(), nan_ok=True)
    assert not np.array_equal(first.records.finish_s, other.records.finish_s)
    assert first.metrics()["e2e_s"] != other.metrics()["e2e_s"]


def test_continuous_batching_outserves_static_batching(costs):
    """Orca (Yu et al., OSDI 2022) schedules per iteration instead of per request: a finished sequence leaves the
    batch at once and a waiting one takes its place, where a static batch runs until its longest output is done
    (the paper reports up to 36.9x the throughput of FasterTransformer at the same latency, most of it from this
    and from memory reservation). With the same 32-sequence batch limit, output lengths spread log-normally
    (median 32, sigma 1) and requests arriving faster than either can serve them, continuous batching must give
    several times the throughput, at no worse mean latency. Bounds are generous: the gain depends on the length
    spread and the batch limit, not on the device."""
    requests = sample_requests(arrivals=Poisson(rate_per_s=2000.0), prompt=Uniform(low=16, high=64),
                               output=LogNormal(median=32, sigma=1.0, high=512), count=400, seed=1)
    static = _serve(costs, requests, "static", max_seqs=32).metrics()
    continuous = _serve(costs, requests, "continuous", max_seqs=32).metrics()
    ratio = continuous["tokens_per_s"] / static["tokens_per_s"]
    assert 2.0 < ratio < 50.0
    assert continuous["e2e_s"] < static["e2e_s"]


def test_a_shared_prefix_is_not_computed_again(template):
    """Every prompt starts with a 40-token system prompt whose 2 whole blocks (32 tokens) are cached: each request
    computes 32 fewer prefill tokens, and its first token comes sooner. Priced on the datasheet roofline: this
    checks the prefix cache, and on this 64-wide model the fitted attention's per-sequence terms make a prefill
    over 32 cached keys 0.3% slower than one without (a known inversion of the attention fit at toy sizes)."""
    costs = IterationCostModel(load_device("h100-sxm", calibrated=False), template, execution="graphs")
    count, prompt, output = 20, 100, 8
    requests = RequestSet(arrival_s=0.02 * np.arange(count), prompt_tokens=np.full(count, prompt),
                          output_tokens=np.full(count, output))
    plain, recorded = _serve(costs, requests, "continuous", record=True)
    shared, recorded_shared = _serve(costs, requests, "continuous", prefix=40, record=True)

    def prefill_tokens(recorder) -> int:
        return sum(chunk for prefills in recorder.prefills for _, chunk, _, _ in prefills)

    assert prefill_tokens(recorded) == count * prompt
    assert prefill_tokens(recorded_shared) == count * (prompt - 32)
    assert int(plain.iterations.tokens.sum() - shared.iterations.tokens.sum()) == count * 32
    assert np.all(shared.records.ttft_s < plain.records.ttft_s)
    assert [recorded_shared.samples()[i] for i in range(count)] == [output] * count
    assert shared.peak_kv_blocks >= 2  # the prefix blocks are held


def test_iteration_prices_are_memoized_and_bucketed(gpu, template):
    costs = IterationCostModel(gpu, template, execution="graphs")  # eager: every shape costs its host dispatch
    shape = step_shape(decode_kv=[100, 200], sampled=2)
    first = costs.price(shape)
    assert costs.price(step_shape(decode_kv=[200, 100], sampled=2)) is first  # the same shape summed
    assert costs.shapes_priced == 1
    assert first.time_s == pytest.approx(float(first.class_time_s.sum()), rel=1e-12)
    # With 16-token buckets, decodes whose mean KV length rounds to the same bucket are priced once, at the
    # bucket (mean 150 -> 9 x 16 = 144 keys per sequence).
    bucketed = IterationCostModel(gpu, template, execution="graphs", kv_bucket_tokens=16)
    priced = bucketed.price(shape)
    assert bucketed.price(step_shape(decode_kv=[140, 150], sampled=2)) is priced
    assert bucketed.shapes_priced == 1
    assert priced.time_s == pytest.approx(costs.price(step_shape(decode_kv=[144, 144], sampled=2)).time_s, rel=1e-12)
    with pytest.raises(ValueError, match="kv_bucket_tokens: found -1"):
        IterationCostModel(gpu, template, kv_bucket_tokens=-1)


def test_schedulers_are_found_by_name():
    assert set(SCHEDULERS) == {"static", "continuous", "orca", "chunked"}
    limits = SchedulerLimits(max_seqs=4)
    for name in SCHEDULERS:
        assert make_scheduler(name, limits).name == name
    with pytest.raises(ValueError, match="scheduler: found 'vllm', allowed: static, continuous"):
        make_scheduler("vllm", limits)


def test_a_one_token_request_has_no_tpot_and_leaves_after_its_prefill(costs):
    """A request of one output token gets it from the prefill and is done (no TPOT); its batch mate decodes on
    alone, and the mean TPOT is the mate's."""
    requests = RequestSet(arrival_s=[0.0, 0.0], prompt_tokens=[16, 16], output_tokens=[1, 5])
    result = _serve(costs, requests, "static", max_seqs=2)
    records = result.records
    assert math.isnan(records.tpot_s[0]) and records.tpot_s[1] > 0
    assert records.finish_s[0] == records.first_token_s[0] == records.first_token_s[1]
    assert result.metrics()["tpot_s"] == pytest.approx(records.tpot_s[1], rel=1e-12)
    assert result.iterations.batch_size.tolist() == [2, 1, 1, 1, 1]


def _decoding(index: int, kv: PagedKVCache, tokens: int = 16) -> Sequence:
    """A sequence that has computed `tokens` tokens of context (its prompt) and sampled its first token."""
    seq = Sequence(index=index, arrival_s=0.0, prompt=tokens, output=10)
    seq.computed, seq.generated = tokens, 1
    kv.hold(index, tokens)
    return seq


@pytest.mark.parametrize("scheduler", ["continuous", "chunked"])
def test_out_of_blocks_the_newest_sequences_are_preempted_to_the_front(scheduler):
    """vLLM's policy by hand: three sequences of 16 tokens fill a 3-block cache; each decode needs a second block.
    The oldest takes the newest one's block; the middle one then finds none and is preempted itself. Preempted
    sequences free their blocks, will recompute prompt and generated token past what they find cached, and wait ahead
    of new requests. vLLM v1 (chunked) keeps a preempted request's whole blocks cached: the newest's went to the
    oldest's next token, the middle's stays cached, so the middle will recompute its generated token only; vLLM v0
    (continuous, prefix caching off by default) keeps none."""
    kv = PagedKVCache(capacity_blocks=3, block_tokens=16)
    oldest, middle, newest = (_decoding(i, kv) for i in range(3))
    new = Sequence(index=3, arrival_s=0.0, prompt=8, output=4)
    state = EngineState(kv=kv, waiting=deque([new]), running=[oldest, middle, newest])
    batch = make_scheduler(scheduler, SchedulerLimits()).schedule(state)
    assert batch.decodes == [oldest] and batch.prefills == []
    assert state.running == [oldest]
    assert list(state.waiting)[-1] is new and set(list(state.waiting)[:2]) == {middle, newest}
    for seq in (middle, newest):
        assert (seq.preemptions, seq.target) == (1, 17)
    cached = 16 if scheduler == "chunked" else 0
    assert [kv.cached_prefix(seq.index, seq.target) for seq in (middle, newest)] == [cached, 0]
    assert kv.in_use_blocks == 2 and kv.used_blocks == 2 + cached // 16  # the oldest one's two blocks, and a cached one


@pytest.mark.parametrize("lookahead, blocks", [(0, 2), (5, 2), (17, 3)])
def test_a_speculative_decode_holds_its_lookahead_slots(lookahead, blocks):
    """vLLM's num_lookahead_slots: a sequence of 16 cached tokens that verifies 1 + lookahead tokens holds blocks of
    16 for 17, 22 and 34 tokens: 2, 2 and 3 blocks."""
    kv = PagedKVCache(capacity_blocks=10, block_tokens=16)
    seq = _decoding(0, kv)
    state = EngineState(kv=kv, running=[seq])
    batch = make_scheduler("continuous", SchedulerLimits(lookahead_slots=lookahead)).schedule(state)
    assert batch.decodes == [seq] and kv.used_blocks == blocks


def test_admission_leaves_the_watermark_free():
    """vLLM's watermark: a new prompt is admitted only if ceil(1% of the blocks) stay free after it. With 100
    blocks of 16 tokens, a prompt of 99 blocks is admitted and one of 100 is not."""
    def admits(prompt: int) -> bool:
        kv = PagedKVCache(capacity_blocks=100, block_tokens=16)
        state = EngineState(kv=kv, waiting=deque([Sequence(index=0, arrival_s=0.0, prompt=prompt, output=2)]))
        return bool(make_scheduler("continuous", SchedulerLimits(max_batched_tokens=4096)).schedule(state))

    assert admits(99 * 16)
    assert not admits(99 * 16 + 1)


def test_memory_utilization_shares_the_device_between_weights_activations_and_kv_blocks():
    """vLLM's gpu_memory_utilization: weights, activations and KV blocks fit in that share of the device. 80 GB at
    0.9 is 72 GB; less 13 GB of weights and 1 GB of activations leaves 58 GB, 58e9 / (16 x 2^17 B) = 27,656 blocks
    (27,656.5); at 0.2 (16 GB) 2 GB is left, 953 blocks (953.7). The messages name the share."""
    block_B = BLOCK * 2**17
    memory = serving_memory(capacity_B=80e9, weights_B=13e9, activations_B=1e9, kv_bytes_per_token=2**17,
                            block_tokens=BLOCK, utilization=0.9)
    assert memory.kv_blocks == 27_656 and memory.kv_block_B == block_B
    assert memory.total_B <= 72e9 < memory.total_B + block_B
    assert serving_memory(capacity_B=80e9, weights_B=13e9, activations_B=1e9, kv_bytes_per_token=2**17,
                          block_tokens=BLOCK, utilization=0.2).kv_blocks == 953
    policy = make_scheduler("continuous", SchedulerLimits())
    short = serving_memory(capacity_B=80e9, weights_B=13e9, activations_B=1e9, kv_bytes_per_token=2**17,
                           block_tokens=BLOCK, utilization=0.15)
    assert serving_infeasible_reason(short, _together(1, 40, 25), policy).endswith(
        "but 0.15 of the device's 80.0 GB is 12.0 GB")
    tight = serving_memory(capacity_B=80e9, weights_B=13e9, activations_B=1e9, kv_bytes_per_token=2**17,
                           block_tokens=BLOCK, utilization=0.1751)  # 0.008 GB left: 3 blocks of 2 MiB
    reason = serving_infeasible_reason(tight, _together(1, 40, 25), policy)
    assert "needs 4 KV blocks" in reason
    assert reason.endswith("of the 14.0 GB it may use, 0.1751 of the device's 80.0 GB")


def test_a_window_beside_a_shared_prefix_needs_the_prefix_and_the_windows_own_tokens():
    """A 64-token shared prefix (4 blocks of 16) and a 64-token window: the longest request, 96 + 40 - 1 = 135 tokens,
    holds the prefix's 4 blocks and its last 64 tokens past the prefix, 4 more: 8 blocks. 8 usable blocks serve it,
    7 do not (the watermark 0)."""
    policy = make_scheduler("continuous", SchedulerLimits(watermark=0.0))

    def memory(blocks: int):
        return serving_memory(capacity_B=blocks * BLOCK * 1000.0, weights_B=0.0, activations_B=0.0,
                              kv_bytes_per_token=1000.0, block_tokens=BLOCK)

    assert serving_infeasible_reason(memory(8), _together(1, 96, 40), policy, prefix_tokens=64, window=64) == ""
    reason = serving_infeasible_reason(memory(7), _together(1, 96, 40), policy, prefix_tokens=64, window=64)
    assert "needs 8 KV blocks" in reason and "but 7 fit" in reason


def test_attention_devices_split_every_kv_block_by_its_heads():
    """Attention devices split the heads, so each holds a quarter of every block and a sequence's cache spans all
    four. Blocks of 16 x 2^19 B (8 MiB; 2 MiB on each device) in 4 devices of 5 MiB each: 2 slices a device, 2
    blocks in all, where a device holding whole blocks would hold none. 4 devices of 2 GB: 8e9 / 2^23 = 953 blocks
    (953.7), of which a 3,999-token request needs 250, more than one device's quarter (238) holds; 4 devices of
    0.4 GB hold 190 (190.7), 188 past vLLM's 1% watermark."""
    per_token_B, block_B = 2**19, BLOCK * 2**19
    policy = make_scheduler("continuous", SchedulerLimits())

    def memory(device_B: float):
        return serving_memory(capacity_B=80e9, weights_B=13e9, activations_B=1e9, kv_bytes_per_token=per_token_B,
                              block_tokens=BLOCK, kv_devices=4, kv_capacity_B=4 * device_B)

    assert memory(5 * 2**20).kv_blocks == 2
    assert memory(2e9).kv_blocks == 953 and memory(2e9).kv_block_B == block_B
    assert serving_infeasible_reason(memory(2e9), _together(1, 3900, 100), policy) == ""
    reason = serving_infeasible_reason(memory(0.4e9), _together(1, 3900, 100), policy)
    assert "needs 250 KV blocks" in reason and "but 188 fit" in reason and "4 attention devices" in reason
    assert "attention devices" in serving_infeasible_reason(memory(2**20), _together(1, 40, 25), policy)


@pytest.mark.parametrize(("prefix", "window", "moved"), [(64, None, 90 - 64), (0, 32, 32), (0, None, 90),
                                                       (64, 32, 26), (64, 16, 16)],
                         ids=["shared prefix", "sliding window", "plain", "prefix and wider window",
                              "prefix and narrower window"])
def test_a_swap_moves_the_kv_a_sequence_holds_of_its_own(prefix, window, moved):
    """A decoding sequence of 90 cached tokens preempted by swap copies out, and later back in, the KV it holds of
    its own: past a 64-token shared prefix (four blocks every sequence shares, which stay cached) 26 tokens, under a
    32-token sliding window 32, under both the window's last tokens past the prefix (26 of 32, 16 of 16), otherwise
    all 90."""
    from sim.schedulers import EngineState, Sequence

    kv = PagedKVCache(capacity_blocks=20, block_tokens=BLOCK, prefix_tokens=prefix, window=window)
    state = EngineState(kv=kv)
    seq = Sequence(index=0, arrival_s=0.0, prompt=80, output=20)
    seq.computed, seq.generated = 90, 10
    kv.hold(seq.index, seq.computed)
    state.running.append(seq)
    policy = make_scheduler("continuous", SchedulerLimits(preemption="swap"))
    policy._preempt(state, seq)
    assert state.swapped == [seq] and state.swapped_tokens == moved
    assert policy._swap_in(state) == moved and state.running == [seq]

