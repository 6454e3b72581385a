"""Pipelined serving replicas (sim/replica.py engines sharing stages, sim/costs.py stage prices, sim/serving.py
pools of stages) against hand sums and the laws of a two-stage pipeline.

The tiny Llama (2 layers, hidden 64) on two H100s joined by NVLink 4, one layer a stage: the first stage runs the
embedding and layer 0, the second layer 1, the final norm and the LM head. Expected values are hand sums of the
one-stage prices and the link's send times, or bounds that any two-stage pipeline obeys whatever its stage times:
one batch never crosses the stages faster than their sum, and two engines' batches alternating over them take, per
iteration each, at most twice the slower stage.
"""

from __future__ import annotations

import numpy as np
import pytest

from hw_models.link import load_link_model
from hw_models.registry import load_device
from hw_models.system import SystemModel
from kernels.shapes import step_shape
from sim.costs import IterationCostModel
from sim.schedulers import SchedulerLimits, make_scheduler
from sim.serving import Pool, serve_pools, serving_memory, serving_memory_reason
from workloads.requests import RequestSet

BLOCK = 16
KV_PER_TOKEN_B = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama)
HIDDEN = 64


@pytest.fixture(scope="module")
def link():
    return load_link_model("nvlink4")


@pytest.fixture(scope="module")
def one_stage(costs):
    """The tiny Llama's iterations on one stage of the same system (its kernels priced as on one H100)."""
    system = SystemModel(load_device("h100-sxm"), 1, load_link_model("nvlink4"), 1)
    return IterationCostModel(system, costs.template, execution="graphs")


@pytest.fixture(scope="module")
def two_stages(costs):
    system = SystemModel(load_device("h100-sxm"), 1, load_link_model("nvlink4"), 2)
    return IterationCostModel(system, costs.template, execution="graphs", stages=2, send_B_per_token=HIDDEN * 2.0)


def _send_s(link, tokens: int) -> float:
    """One stage's send of `tokens` tokens' 16-bit hidden state to the next, by the link's own model."""
    return float(link.collective_time_s("send_recv", np.array([tokens * HIDDEN * 2.0]), 2)[0])


SHAPES = {"prefill 3 x 40": step_shape([(40, 0)] * 3, sampled=3),
          "decode 8 at 100": step_shape(decode_kv=[101] * 8, sampled=8),
          "mixed": step_shape([(64, 128)], decode_kv=[30, 300], sampled=2)}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_two_stages_cost_one_stage_plus_a_send(one_stage, two_stages, link, name):
    """Split over two stages an iteration runs the same kernels, plus one send of its tokens' hidden state: the
    stages' times sum to the one-stage time and the send, and its energy is the one stage's."""
    shape = SHAPES[name]
    whole, split = one_stage.price(shape), two_stages.price(shape)
    assert len(split.stage_time_s) == 2 and min(split.stage_time_s) > 0
    assert split.time_s == pytest.approx(sum(split.stage_time_s), rel=1e-12)
    assert split.time_s == pytest.approx(whole.time_s + _send_s(link, shape.tokens), rel=1e-9)
    assert split.compute_J + split.memory_J == pytest.approx(whole.compute_J + whole.memory_J, rel=1e-9)
    assert split.class_time_s.sum() == pytest.approx(split.time_s, rel=1e-9)
    # The second stage holds the LM head on top of a layer like the first's: it is the longer.
    assert split.stage_time_s[1] > split.stage_time_s[0] - _send_s(link, shape.tokens)


def _pool(costs, stages: int, blocks: int = 100_000, max_seqs: int = 64) -> Pool:
    memory = serving_memory(capacity_B=blocks * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    return Pool(name="serve", role="serve", replicas=1, costs=costs, scheduler="continuous",
                limits=SchedulerLimits(max_seqs=max_seqs), memory=memory, idle_power_W=costs.device.idle_power_W,
                stages=stages)


def _together(count: int, prompt: int, output: int) -> RequestSet:
    return RequestSet(arrival_s=np.zeros(count), prompt_tokens=np.full(count, prompt),
                      output_tokens=np.full(count, output))


def test_one_request_alone_gains_nothing_from_stages_but_pays_the_sends(one_stage, two_stages, link):
    """A request alone crosses both stages every iteration: its latency is the one-stage latency plus a send per
    iteration (its prompt's hidden state once, then one token's per decode step)."""
    prompt, output = 48, 12
    alone = serve_pools([_pool(one_stage, 1)], _together(1, prompt, output)).records
    staged = serve_pools([_pool(two_stages, 2)], _together(1, prompt, output)).records
    sends_s = _send_s(link, prompt) + (output - 1) * _send_s(link, 1)
    assert staged.first_token_s[0] == pytest.approx(alone.first_token_s[0] + _send_s(link, prompt), rel=1e-9)
    assert staged.finish_s[0] == pytest.approx(alone.finish_s[0] + sends_s, rel=1e-9)


def test_two_engines_alternate_over_the_stages(two_stages):
    """2m requests at once on two stages: the router gives each engine m, and their batches alternate. Each engine's
    iterations take at least their stages' sum (no batch crosses faster), and each stage runs both engines'
    batches one at a time; in the steady state an iteration takes at most twice the slower stage (the other
    engine's batch holds it once per iteration), so the run ends between those floors and the sum over one
    engine's iterations of 2 max(s0, s1), plus the first stage the second engine waits for."""
    m, prompt, output = 6, 32, 20
    result = serve_pools([_pool(two_stages, 2)], _together(2 * m, prompt, output))
    # One engine's iterations, by hand: its m prompts prefilled together, then output - 1 decode steps of m.
    shapes = [step_shape([(prompt, 0)] * m, sampled=m)]
    shapes += [step_shape(decode_kv=[prompt + step + 1] * m, sampled=m) for step in range(output - 1)]
    stage_s = np.array([two_stages.price(shape).stage_time_s for shape in shapes])
    # A stage runs one batch at a time: it is busy with both engines' batches for the whole run at least.
    lower = max(stage_s.sum(), 2 * stage_s.sum(axis=0).max())
    upper = (2 * stage_s.max(axis=1)).sum() + stage_s[0, 0]
    assert lower < upper
    assert lower <= result.makespan_s <= upper * (1 + 1e-9)
    assert set(result.iterations.replica.tolist()) == {0.0, 1.0}


def test_each_engine_holds_its_share_of_the_kv_blocks():
    """vLLM gives each of a pipelined replica's engines an even share of its KV blocks: a request needing more than
    the share cannot be served on two stages, though the replica's blocks would hold it on one."""
    blocks = 40
    memory = serving_memory(capacity_B=blocks * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    requests = _together(1, 25 * BLOCK, 1)  # 25 blocks: more than half of 40 (less its watermark)
    scheduler = make_scheduler("continuous", SchedulerLimits(max_batched_tokens=1024))
    assert serving_memory_reason(memory, requests, scheduler) == ""
    reason = serving_memory_reason(memory, requests, scheduler, engines=2)
    assert "needs 25 KV blocks" in reason and "each of 2 engines' share" in reason


def test_a_pool_refuses_costs_of_other_stages(costs):
    with pytest.raises(ValueError, match="stages: found 2 with costs of 1 stages"):
        _pool(costs, 2)


def test_kv_utilization_is_of_an_engines_share(one_stage, two_stages):
    """A request alone on two stages holds its blocks in one engine, whose share is half the replica's: its peak
    utilization is twice the one-stage replica's, and never below the mean over the iterations."""
    requests = _together(1, 48, 12)
    whole = serve_pools([_pool(one_stage, 1, blocks=400)], requests).metrics()
    split = serve_pools([_pool(two_stages, 2, blocks=400)], requests).metrics()
    assert split["kv_utilization_max"] == pytest.approx(2 * whole["kv_utilization_max"], rel=1e-12)
    assert split["kv_utilization_max"] >= split["kv_utilization_mean"]
    assert whole["kv_utilization_max"] >= whole["kv_utilization_mean"]


def test_each_stage_swaps_its_share_before_it_computes():
    """An iteration bringing 100 swapped tokens back at 0.01 s a token (the replica's devices' links together) on two
    stages of 1 s and 2 s: each stage moves its layers' share over its own links in that 1 s from the iteration's
    start, as each vLLM worker swaps before it waits for the previous stage, so the second stage's swap overlaps the
    first's compute: 1 + 1 + 2 = 4 s (5 s with each stage swapping only when its turn comes)."""
    import simpy

    from sim.costs import IterationCost
    from sim.kv_cache import PagedKVCache
    from sim.replica import Replica
    from sim.schedulers import Batch, EngineState, Sequence

    class Costs:
        template = type("T", (), {"sliding_window": None, "layer_window": None})()

        def price(self, shape):
            return IterationCost(time_s=3.0, compute_J=0.0, memory_J=0.0, class_time_s=np.zeros(1),
                                 stage_time_s=(1.0, 2.0))

    seq = Sequence(index=0, arrival_s=0.0, prompt=4, output=1)

    class Once:
        limits = SchedulerLimits()

        def __init__(self):
            self.done = False

        def next_batch(self, state):
            if self.done:
                return Batch()
            self.done = True
            state.running.append(seq)
            return Batch(prefills=[(seq, 4)], swapped_tokens=100)

    env = simpy.Environment()
    state = EngineState(kv=PagedKVCache(capacity_blocks=10, block_tokens=16))
    state.kv.hold(0, 4)
    replica = Replica(env, Costs(), Once(), state, window=None, swap_s_per_token=0.01, on_finish=lambda s: None,
                      stages=[simpy.Resource(env), simpy.Resource(env)])
    env.process(replica.run())
    env.run(until=50)
    assert replica.log[0][1] == pytest.approx(4.0)
    assert seq.finish_s == pytest.approx(4.0)


def test_two_engines_copy_over_their_stages_links_in_turn():
    """Two engines on two stages of 0.5 s each, both bringing 100 swapped tokens back at 0.01 s a token at once: the
    first copies in 0-1 s and runs its stages in 1-2 s; the second's copy waits for the first's (each stage's worker
    runs its engines' cache operations in turn), 1-2 s, then its stages run in 2-3 s. Copying at once over links
    each engine had alone, it would finish at 2.5 s."""
    import simpy

    from sim.costs import IterationCost
    from sim.kv_cache import PagedKVCache
    from sim.replica import CopyQueue, Replica
    from sim.schedulers import Batch, EngineState, Sequence

    class Costs:
        template = type("T", (), {"sliding_window": None, "layer_window": None})()

        def price(self, shape):
            return IterationCost(time_s=1.0, compute_J=0.0, memory_J=0.0, class_time_s=np.zeros(1),
                                 stage_time_s=(0.5, 0.5))

    class Once:
        limits = SchedulerLimits()

        def __init__(self, seq):
            self.seq, self.done = seq, False

        def next_batch(self, state):
            if self.done:
                return Batch()
            self.done = True
            state.running.append(self.seq)
            return Batch(prefills=[(self.seq, 4)], swapped_tokens=100)

    env = simpy.Environment()
    stages, copies = [simpy.Resource(env), simpy.Resource(env)], CopyQueue()
    seqs = [Sequence(index=i, arrival_s=0.0, prompt=4, output=1) for i in range(2)]
    engines = []
    for seq in seqs:
        state = EngineState(kv=PagedKVCache(capacity_blocks=10, block_tokens=16))
        state.kv.hold(seq.index, 4)
        engines.append(Replica(env, Costs(), Once(seq), state, window=None, swap_s_per_token=0.01,
                               on_finish=lambda s: None, stages=stages, copies=copies))
    for engine in engines:
        env.process(engine.run())
    env.run(until=50)
    assert [seq.finish_s for seq in seqs] == pytest.approx([2.0, 3.0])
