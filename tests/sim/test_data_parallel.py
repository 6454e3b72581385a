"""Data-parallel attention beside spread experts (sim/data_parallel.py, IterationCostModel.price_ranks, sim/replica.py
run_lockstep) against hand compositions of their parts and the laws of ranks in lockstep.

The tiny Mixtral (2 layers, hidden 64, 4 experts, 2 per token) on two H100s joined by NVLink 4: each rank runs every
row but the experts' for its own sequences, each device its 2 experts on the tokens of both ranks, and each MoE layer
two all-to-alls. Expected values are sums of parts priced by the public cost models and the link's own collective
model, with the dispatch's bytes counted by hand. Under CUDA graphs every rank runs as many tokens as the busiest, the
rest padding that reads no KV and samples nothing (vllm-project/vllm vllm/v1/worker/dp_utils.py at 0074614
coordinate_batch_across_dp pads every rank to the largest token count where the ranks' least graph mode is not none;
gpu_model_runner.py at 000fc94 execute_model feeds that count to every layer and computes logits for the real tokens).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hw_models.link import load_link_model
from hw_models.registry import load_device
from hw_models.system import SystemModel
from kernels.formats import NumericFormat
from kernels.parallel import shard_tensor_parallel
from kernels.shapes import SPAN_MODEL, StepShape, StepTemplate, step_shape
from sim.costs import IterationCost, IterationCostModel
from sim.data_parallel import ExpertRanks
from sim.schedulers import SchedulerLimits
from sim.serving import Pool, serve_pools, serving_memory
from workloads.requests import RequestSet

RANKS = 2
HIDDEN = 64
LAYERS = 2
# A token's top-2 of 4 experts, 2 on each device, lie on 2 (1 - C(2, 2) / C(4, 2)) = 5/3 devices on average (of the
# 6 pairs, only {0, 1} and {2, 3} stay on one device: (2 x 1 + 4 x 2) / 6 = 10/6). Each sends its 16-bit hidden state.
DISPATCH_B_PER_TOKEN = HIDDEN * 2.0 * 10 / 6


def _template(config, trace_of, ep: int | None = None) -> StepTemplate:
    """The tiny Mixtral's step template, whole (ep None) or one of two devices' with its experts split (ep 1) or spread
    (ep 2)."""
    def trace(phase: str, batch: int, prompt: int):
        if phase == "decode":
            return trace_of(config, "decode", batch, 1, prompt)
        return trace_of(config, "prefill", batch, prompt)

    shard = None if ep is None else (lambda table: shard_tensor_parallel(table, RANKS, config, ep))
    return StepTemplate.from_model(config, NumericFormat(), trace, shard=shard)


@pytest.fixture(scope="module")
def templates(tiny_mixtral, trace_of):
    """Each rank's rows (every row but the experts', whole) and the experts' rows spread over the two devices."""
    whole, spread = _template(tiny_mixtral, trace_of), _template(tiny_mixtral, trace_of, ep=RANKS)
    return whole.select_rows(~whole.expert_mask), spread.select_rows(spread.expert_mask)


@pytest.fixture(scope="module")
def split_experts(tiny_mixtral, trace_of):
    """The expert rows of every expert split over the two devices (ep 1: each a half of every expert)."""
    split = _template(tiny_mixtral, trace_of, ep=1)
    return split.select_rows(split.expert_mask)


def _system(bandwidth_GBps: float | None = None) -> SystemModel:
    link = load_link_model("nvlink4", None if bandwidth_GBps is None else {"bandwidth_GBps": bandwidth_GBps},
                           calibrated=bandwidth_GBps is None)
    return SystemModel(load_device("h100-sxm"), RANKS, link)


def _costs(templates, system: SystemModel | None = None, execution: str = "graphs") -> IterationCostModel:
    dense, experts = templates
    system = system or _system()
    return IterationCostModel(system, dense, execution=execution,
                              experts=ExpertRanks(system, experts, DISPATCH_B_PER_TOKEN, LAYERS))


def _dense_s(templates, shape: StepShape, execution: str = "graphs") -> float:
    """One rank's part alone: the rows but the experts' on one H100."""
    return IterationCostModel(load_device("h100-sxm"), templates[0], execution=execution).price(shape).time_s


def _experts_s(templates, tokens: int, execution: str = "graphs") -> float:
    """Every device's experts on `tokens` tokens of all ranks (2 of the 4 experts on each device)."""
    return IterationCostModel(_system(), templates[1], execution=execution).price(
        StepShape(prefill_tokens=tokens, positions=1)).time_s


def _padded(shapes: tuple[StepShape, ...]) -> tuple[StepShape, ...]:
    """Each rank's batch run as the busiest rank's token count, as vLLM pads them under CUDA graphs: the added tokens
    run every kernel outside attention, and attend to nothing and sample nothing."""
    tokens = max(shape.tokens for shape in shapes)
    return tuple(replace(shape, padding=tokens - shape.tokens) for shape in shapes)


def _exchange_s(tokens: int) -> float:
    """One all-to-all of the busiest rank's `tokens` tokens, by the link's own fitted model."""
    return float(load_link_model("nvlink4").collective_time_s("all_to_all", tokens * DISPATCH_B_PER_TOKEN, RANKS))


SHAPES = {"decodes": (step_shape(decode_kv=[100] * 6, sampled=6), step_shape(decode_kv=[300] * 2, sampled=2)),
          "prefill beside decodes": (step_shape([(48, 0)], sampled=1), step_shape(decode_kv=[80] * 4, sampled=4))}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_an_iteration_is_the_slowest_rank_then_the_experts_and_the_exchanges(templates, name):
    """Under CUDA graphs each rank runs the busiest rank's token count, and the experts every rank's padded tokens
    (2 x 48 beside the prefill, 2 x 6 of the decodes)."""
    shapes = SHAPES[name]
    cost = _costs(templates).price_ranks(shapes)
    tokens = [shape.tokens for shape in _padded(shapes)]
    assert tokens == ([48, 48] if name == "prefill beside decodes" else [6, 6])
    expected = (max(_dense_s(templates, shape) for shape in _padded(shapes)) + _experts_s(templates, sum(tokens))
                + 2 * LAYERS * _exchange_s(max(tokens)))
    assert cost.time_s == pytest.approx(expected, rel=1e-9)
    assert cost.class_time_s.sum() == pytest.approx(cost.time_s, rel=1e-9)  # the slowest rank's time by class


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_split_experts_gather_every_ranks_tokens_and_scatter_their_outputs(templates, split_experts, name):
    """Experts split over the devices (SGLang's DP attention beside a tensor-parallel MoE): every device runs its half
    of every expert on the tokens of both ranks, gathered by an all-gather and summed back by a reduce-scatter, each
    of the gathered tensor: both ranks' tokens, each padded to the busiest rank's, x 64 x 2 B. Under CUDA graphs each
    rank's part and the experts run the padded tokens too."""
    system = _system()
    costs = IterationCostModel(system, templates[0], execution="graphs",
                               experts=ExpertRanks(system, split_experts, HIDDEN * 2.0, LAYERS, exchange="gather"))
    shapes = _padded(SHAPES[name])
    tokens = [shape.tokens for shape in shapes]
    gathered_B = max(tokens) * RANKS * HIDDEN * 2.0
    link = load_link_model("nvlink4")
    exchange_s = float(link.collective_time_s("all_gather", gathered_B, RANKS)
                       + link.collective_time_s("reduce_scatter", gathered_B, RANKS))
    experts_s = IterationCostModel(system, split_experts, execution="graphs").price(
        StepShape(prefill_tokens=sum(tokens), positions=1)).time_s
    expected = max(_dense_s(templates, shape) for shape in shapes) + experts_s + LAYERS * exchange_s
    assert costs.price_ranks(SHAPES[name]).time_s == pytest.approx(expected, rel=1e-9)


def test_energy_is_every_ranks_part_and_every_devices_experts(templates):
    """Under CUDA graphs, of the ranks' padded batches: the 2-sequence rank runs 4 padding tokens."""
    cost = _costs(templates).price_ranks(SHAPES["decodes"])
    shapes = _padded(SHAPES["decodes"])
    assert [shape.tokens for shape in shapes] == [6, 6]
    dense = [IterationCostModel(load_device("h100-sxm"), templates[0], execution="graphs").price(s) for s in shapes]
    one_device = IterationCostModel(load_device("h100-sxm"), templates[1], execution="graphs").price(
        StepShape(prefill_tokens=sum(s.tokens for s in shapes), positions=1))
    expected = sum(d.compute_J + d.memory_J for d in dense) + RANKS * (one_device.compute_J + one_device.memory_J)
    assert cost.compute_J + cost.memory_J == pytest.approx(expected, rel=1e-9)


def _energy_J(cost: IterationCost) -> float:
    return cost.compute_J + cost.memory_J


# Under an engine (vLLM): the ranks' launch mode and the captured size every rank runs (sim/cuda_graphs.py: 1, 2, 4,
# then multiples of 8 below 256). Two decoding ranks of 6 and 2 sequences replay full graphs at 8 tokens; a
# rank's 48-token prefill runs piecewise at 48 (a captured size), and the least mode is the ranks' mode, so the
# decoding rank runs piecewise padded to 48 too.
ENGINE_RUNS = {"decodes": ("graphs", 8), "prefill beside decodes": ("piecewise", 48)}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_an_engine_pads_the_ranks_to_the_busiest_ranks_captured_size(templates, name):
    """vLLM's ranks take the least of their graph modes and pad to the largest of their captured sizes: the iteration
    is the slowest rank's part, then the experts on every rank's padded tokens, then the exchanges of the busiest
    rank's, each priced in the ranks' mode at the padded tokens. Energy: each rank's part and both devices' experts."""
    mode, tokens = ENGINE_RUNS[name]
    cost = _costs(templates, execution="engine").price_ranks(SHAPES[name])
    run = tuple(replace(shape, padding=tokens - shape.tokens) for shape in SHAPES[name])
    expected_s = (max(_dense_s(templates, shape, mode) for shape in run) + _experts_s(templates, RANKS * tokens, mode)
                  + 2 * LAYERS * _exchange_s(tokens))
    assert cost.time_s == pytest.approx(expected_s, rel=1e-9)
    device = load_device("h100-sxm")
    parts_J = sum(_energy_J(IterationCostModel(device, templates[0], execution=mode).price(s)) for s in run)
    experts = IterationCostModel(device, templates[1], execution=mode).price(
        StepShape(prefill_tokens=RANKS * tokens, positions=1))
    assert _energy_J(cost) == pytest.approx(parts_J + RANKS * _energy_J(experts), rel=1e-9)


def test_a_rank_past_the_largest_captured_size_launches_every_rank_from_its_host(templates):
    """A rank's 600-token prefill lies past vLLM's largest captured size (512): its pass runs without graphs, the ranks
    take that least mode, and no rank pads: each launched from its host at its own tokens, the other rank's 64 decodes
    too (over long contexts: the slower rank)."""
    shapes = (step_shape([(600, 0)], sampled=1), step_shape(decode_kv=[200_000] * 64, sampled=64))
    cost = _costs(templates, execution="engine").price_ranks(shapes)
    dense, experts = templates
    ranks_s = [_rows_s(load_device("h100-sxm"), dense, shape) for shape in shapes]
    assert ranks_s[1] > ranks_s[0]
    expected_s = (ranks_s[1] + _rows_s(_system(), experts, StepShape(prefill_tokens=664, positions=1))
                  + 2 * LAYERS * _exchange_s(600))
    assert cost.time_s == pytest.approx(expected_s, rel=1e-9)


def _rows_s(device, template: StepTemplate, shape: StepShape) -> float:
    """`template`'s rows of `shape` back to back on `device`, each launched from the host: their costs summed."""
    table, counts = template.stage_table(shape, 1)
    return float(device.cost_table(table, "engine").time_s @ counts[0])


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_padding_never_makes_a_step_faster_nor_cheaper(templates, name):
    """The ranks' padding adds tokens that read no KV and sample nothing: the step takes no less than the ranks run
    unpadded (the slowest rank's part, the experts on the real tokens, the exchanges), and costs more energy."""
    shapes = SHAPES[name]
    cost = _costs(templates).price_ranks(shapes)
    tokens = [shape.tokens for shape in shapes]
    unpadded_s = max(_dense_s(templates, shape) for shape in shapes) + _experts_s(templates, sum(tokens)) + \
        2 * LAYERS * _exchange_s(max(tokens))
    assert cost.time_s >= unpadded_s
    device = load_device("h100-sxm")
    unpadded_J = sum(_energy_J(IterationCostModel(device, templates[0], execution="graphs").price(s)) for s in shapes) \
        + RANKS * _energy_J(IterationCostModel(device, templates[1], execution="graphs").price(
            StepShape(prefill_tokens=sum(tokens), positions=1)))
    assert _energy_J(cost) > unpadded_J * (1 + 1e-6)


def test_spreading_sequences_over_the_ranks_is_never_slower_than_one_rank_holding_them(templates):
    costs = _costs(templates)
    together = costs.price_ranks((step_shape(decode_kv=[200] * 16, sampled=16),))
    spread = costs.price_ranks((step_shape(decode_kv=[200] * 8, sampled=8),) * 2)
    assert spread.time_s <= together.time_s


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_more_link_bandwidth_is_never_slower(templates, name):
    slow, fast = (_costs(templates, _system(bandwidth_GBps)).price_ranks(SHAPES[name]) for bandwidth_GBps in (50, 450))
    assert fast.time_s <= slow.time_s
    assert fast.class_time_s[-2] >= 0  # the host's wait stays a wait


def test_a_single_shape_is_one_rank_beside_idle_ranks(templates):
    costs = _costs(templates)
    shape = SHAPES["decodes"][0]
    assert costs.price(shape).time_s == pytest.approx(costs.price_ranks((shape,)).time_s, rel=1e-12)


def _dummy(templates, tokens: int) -> IterationCost:
    """An idle rank's dummy batch on one H100, as vLLM's DPEngineCoreProc runs it while another rank works
    (execute_dummy_batch: the worker's _dummy_run(1, uniform_decode=True), vllm-project/vllm
    vllm/v1/worker/gpu_worker.py at 35d5cda): one decode token that attends to no keys and samples nothing, padded
    under CUDA graphs to the busiest rank's `tokens` like it, through the rank's rows of every decoder layer; the
    model's rows after the layers (final norm, LM head, sampling: the template's whole-model rows past its first layer
    row) do not run, since the dummy forward returns hidden states."""
    dense = templates[0]
    past_layers = (dense.span == SPAN_MODEL) & (np.arange(len(dense.span)) > np.argmax(dense.span != SPAN_MODEL))
    assert past_layers.sum() >= 2  # at least the LM head and the final norm
    return IterationCostModel(load_device("h100-sxm"), dense.select_rows(~past_layers), execution="graphs").price(
        StepShape(decode_seqs=1, padding=tokens - 1))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_an_idle_rank_runs_a_one_token_dummy_batch_through_the_experts(templates, name):
    """One rank working beside an idle one: the idle rank's dummy forward is a rank of its own in the lockstep (never
    the slower here), padded under CUDA graphs to the working rank's tokens, which go through the experts with the
    working rank's, and the exchanges still wait for the working rank's tokens."""
    shape = SHAPES[name][0]
    cost = _costs(templates).price_ranks((shape,))
    assert _dummy(templates, shape.tokens).time_s < _dense_s(templates, shape)
    expected_s = _dense_s(templates, shape) + _experts_s(templates, 2 * shape.tokens) + \
        2 * LAYERS * _exchange_s(shape.tokens)
    assert cost.time_s == pytest.approx(expected_s, rel=1e-9)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_an_idle_ranks_dummy_batch_is_charged_its_energy(templates, name):
    """The step's energy beside an idle rank is the sum of the parts: the working rank's own, the dummy's (padded to
    the working rank's tokens), and both devices' experts on the tokens of both ranks."""
    shape = SHAPES[name][0]
    cost = _costs(templates).price_ranks((shape,))
    dummy = _dummy(templates, shape.tokens)
    device = load_device("h100-sxm")
    own = IterationCostModel(device, templates[0], execution="graphs").price(shape)
    one_device = IterationCostModel(device, templates[1], execution="graphs").price(
        StepShape(prefill_tokens=2 * shape.tokens, positions=1))
    expected_J = sum(part.compute_J + part.memory_J for part in (own, dummy)) + \
        RANKS * (one_device.compute_J + one_device.memory_J)
    assert cost.compute_J + cost.memory_J == pytest.approx(expected_J, rel=1e-9)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_dummy_batch_never_makes_a_step_faster_nor_costs_more_than_a_real_token(templates, name):
    """The idle rank's dummy batch adds work: the step takes at least the working rank's part, the experts on its
    tokens alone and their exchanges, and costs more energy than those parts; and it is a lighter batch than one real
    decode token (which also reads its KV, runs the LM head and samples), so giving the idle rank one real token never
    makes the step faster or cheaper."""
    shape = SHAPES[name][0]
    costs = _costs(templates)
    idle = costs.price_ranks((shape,))
    without_dummy_s = _dense_s(templates, shape) + _experts_s(templates, shape.tokens) + \
        2 * LAYERS * _exchange_s(shape.tokens)
    assert idle.time_s >= without_dummy_s
    device = load_device("h100-sxm")
    own = IterationCostModel(device, templates[0], execution="graphs").price(shape)
    one_device = IterationCostModel(device, templates[1], execution="graphs").price(
        StepShape(prefill_tokens=shape.tokens, positions=1))
    parts_J = own.compute_J + own.memory_J + RANKS * (one_device.compute_J + one_device.memory_J)
    assert idle.compute_J + idle.memory_J > parts_J * (1 + 1e-6)
    one_token = costs.price_ranks((shape, step_shape(decode_kv=[64], sampled=1)))
    assert one_token.time_s >= idle.time_s
    assert one_token.compute_J + one_token.memory_J > idle.compute_J + idle.memory_J


def test_each_rank_cascades_its_own_groups_where_that_is_the_faster(templates):
    """Two ranks, each decoding 32 sequences after 4,096-token prefixes: one rank's in two groups, the other's in
    sixteen. Each rank's part is the cheaper of its own groups' cascade and its paged reads (its priced part alone),
    so the lockstep iteration is the slower rank's, never slower than both ranks paged."""
    costs = _costs(templates)
    kv = [4096 + 60] * 32
    shapes = tuple(step_shape(decode_kv=kv, sampled=32, shared_prefix=4096,
                              prefix_groups=[i % groups for i in range(32)]) for groups in (2, 16))
    assert [shape.decode_shared_groups for shape in shapes] == [2, 16]
    cascade = costs.price_ranks(shapes)
    paged = costs.price_ranks(tuple(shape.paged() for shape in shapes))
    assert cascade.time_s <= paged.time_s
    for shape in shapes:  # a rank's part: the cheaper of its two ways, as the one-device cost model takes it
        one = IterationCostModel(load_device("h100-sxm"), templates[0], execution="graphs")
        assert _dense_s(templates, shape) == min(one._price_kernels(shape).time_s,
                                                 one._price_kernels(shape.paged()).time_s)
    expected = max(_dense_s(templates, shape) for shape in shapes) + _experts_s(templates, 64) + \
        2 * LAYERS * _exchange_s(32)
    assert cascade.time_s == pytest.approx(expected, rel=1e-9)


def _pool(templates, blocks: int = 4_000, max_seqs: int = 16) -> Pool:
    costs = _costs(templates)
    per_token_B = 2 * 2 * 16 * 2 * LAYERS  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers: held once, on its rank
    memory = serving_memory(capacity_B=blocks * 16 * per_token_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=per_token_B, block_tokens=16)
    return Pool(name="serve", role="serve", replicas=1, costs=costs, scheduler="continuous",
                limits=SchedulerLimits(max_seqs=max_seqs), memory=memory, idle_power_W=costs.device.idle_power_W,
                ranks=RANKS)


def _requests(count: int, prompt: int = 40, output: int = 12, gap_s: float = 1e-4) -> RequestSet:
    return RequestSet(arrival_s=np.arange(count) * gap_s, prompt_tokens=np.full(count, prompt),
                      output_tokens=np.full(count, output))


def test_ranks_run_their_iterations_in_lockstep(templates):
    result = serve_pools([_pool(templates)], _requests(24))
    log = result.iterations
    assert set(log.replica.tolist()) == {0.0, 1.0}  # the round-robin router fed both ranks
    starts = {}
    for start, duration, rank in zip(log.start_s, log.duration_s, log.replica, strict=True):
        starts.setdefault(start, []).append((rank, duration))
    # Every iteration starts when the last one ended, on every rank that has a batch, and lasts as long on each.
    assert all(len({d for _, d in rows}) == 1 for rows in starts.values())
    ordered = sorted(starts)
    ends = [start + starts[start][0][1] for start in ordered]
    assert all(later >= end - 1e-12 for end, later in zip(ends, ordered[1:], strict=False))
    assert sum(len(rows) == RANKS for rows in starts.values()) > len(starts) / 2
    assert len(result.records.finish_s) == 24 and np.isfinite(result.records.finish_s).all()


def test_each_rank_holds_an_even_share_of_the_blocks(templates):
    pool = _pool(templates, blocks=4_001)
    assert pool.engine_kv_blocks == 2_000


def test_the_same_seed_gives_the_same_run(templates):
    first, second = (serve_pools([_pool(templates)], _requests(16)) for _ in range(2))
    assert np.array_equal(first.records.finish_s, second.records.finish_s)
    assert first.energy_parts_J == second.energy_parts_J


def test_a_pool_refuses_ranks_its_costs_are_not_priced_on(templates):
    with pytest.raises(ValueError, match="ranks: found 1 with costs of 2 ranks"):
        replace(_pool(templates), ranks=1)
