"""Pools of replicas (sim/serving.py serve_pools, sim/replica.py) under every scheduler, serving requests whole or
split into a prefill and a decode pool, and the routers (sim/routers.py) that pick each request's replica.

The tiny Llama on an H100 (tests/sim/conftest.py: about half a millisecond an iteration). Expected values are hand
sums of IterationCostModel.price over the iterations a request must run, counts every correct run must give
(tokens sampled, requests held), or the replica a routing rule picks by hand.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kernels.shapes import step_shape
from sim.kv_cache import PagedKVCache
from sim.routers import ROUTERS, Router, make_router
from sim.schedulers import SCHEDULERS, SchedulerLimits
from sim.serving import Pool, serve_pools, serving_memory
from workloads.requests import Poisson, RequestSet, Uniform, sample_requests

BLOCK = 16
KV_PER_TOKEN_B = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama)
# Pool layouts: (role, replicas) of each pool.
LAYOUTS = {"whole x2": (("serve", 2),), "split 1+1": (("prefill", 1), ("decode", 1)),
           "split 1+2": (("prefill", 1), ("decode", 2)), "split 2+1": (("prefill", 2), ("decode", 1))}


class HeldBy(PagedKVCache):
    """A replica's KV cache that remembers every request it ever held blocks for."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.requests: set[int] = set()

    def hold(self, seq: int, tokens: int) -> None:
        super().hold(seq, tokens)
        self.requests.add(seq)


def _pools(costs, layout, scheduler: str, *, blocks: int = 100_000, router: str = "least_requests"):
    """The pools of a layout, each replica's KV cache of `blocks` blocks recording what it holds."""
    memory = serving_memory(capacity_B=blocks * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    pools = [Pool(name=role, role=role, replicas=replicas, costs=costs, scheduler=scheduler,
                  limits=SchedulerLimits(max_seqs=8, chunk_tokens=64), router=router, memory=memory,
                  idle_power_W=costs.device.idle_power_W) for role, replicas in layout]
    caches = [[HeldBy(capacity_blocks=blocks, block_tokens=BLOCK) for _ in range(pool.replicas)] for pool in pools]
    return pools, caches


def _serve(costs, requests, layout, scheduler: str, *, transfer_s: float = 0.0, **kw):
    pools, caches = _pools(costs, layout, scheduler, **kw)
    result = serve_pools(pools, requests, kv_transfer_s=lambda message_B: transfer_s, caches=caches)
    return result, caches


def _alone_e2e_s(costs, prompt: int, output: int) -> tuple[float, float]:
    """(TTFT, E2E) of a request alone, by hand: its prefill, then decode steps attending prompt + 1, prompt + 2, ..."""
    ttft = costs.price(step_shape([(prompt, 0)], sampled=1)).time_s
    decodes = [costs.price(step_shape(decode_kv=[prompt + 1 + step], sampled=1)).time_s for step in range(output - 1)]
    return ttft, ttft + sum(decodes)


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_a_handed_over_request_decodes_as_soon_as_its_kv_lands(costs, scheduler):
    """One request through a prefill and a decode replica: its prefill, the KV transfer, then one decode step per
    further token with nothing in between (the chunked scheduler once formed an empty batch here and crashed)."""
    prompt, output, transfer_s = 40, 6, 1e-3
    requests = RequestSet(arrival_s=np.zeros(1), prompt_tokens=np.array([prompt]), output_tokens=np.array([output]))
    result, _ = _serve(costs, requests, LAYOUTS["split 1+1"], scheduler, transfer_s=transfer_s)
    ttft, e2e = _alone_e2e_s(costs, prompt, output)
    assert result.records.ttft_s[0] == pytest.approx(ttft, rel=1e-9)
    assert result.records.e2e_s[0] == pytest.approx(e2e + transfer_s, rel=1e-9)
    assert len(result.iterations) == output  # one prefill, output - 1 decode steps


def test_a_chunked_decode_pool_decodes_no_more_than_its_token_budget(costs):
    """A decode pool under the chunked scheduler (max_seqs 32) decodes at most chunk_tokens (8) handed-over requests an
    iteration, one token each, the earliest admitted first (vLLM's scheduler takes its running requests in order while
    the token budget lasts, then admits waiting ones while budget is left); the others wait. 24 requests arriving
    together, each prefilled in 2 chunks of 8 tokens, reach the decode replica faster than it finishes them (63 decode
    steps each), so more than 8 are there at once: no iteration of either pool computes more than 8 tokens, the budget
    binds in the decode pool, and every request still samples its 64 tokens."""
    count, prompt, output, budget = 24, 16, 64, 8
    memory = serving_memory(capacity_B=100_000 * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    pools = [Pool(name=role, role=role, replicas=1, costs=costs, scheduler="chunked",
                  limits=SchedulerLimits(max_seqs=32, chunk_tokens=budget), memory=memory,
                  idle_power_W=costs.device.idle_power_W) for role in ("prefill", "decode")]
    requests = RequestSet(arrival_s=np.zeros(count), prompt_tokens=np.full(count, prompt),
                          output_tokens=np.full(count, output))
    result = serve_pools(pools, requests, kv_transfer_s=lambda message_B: 0.0)
    iterations = result.iterations
    decode = iterations.replica == iterations.replica_names.index("decode replica 0")
    assert iterations.tokens.max() <= budget
    assert iterations.tokens[decode].max() == budget
    np.testing.assert_array_equal(result.records.output_tokens, np.full(count, output))
    assert int(iterations.tokens[decode].sum()) == count * (output - 1)

def test_a_prefill_replica_sends_the_kv_of_requests_prefilled_together_one_after_another(costs):
    """Two requests prefilled in one iteration on one prefill replica leave it together; their KV crosses its ports in
    turn, 10 ms each: the first lands 10 ms after the first token, the second 20 ms after (both at once on a link of
    their own each, both would land at 10 ms), and the idle decode replica admits each as it lands."""
    transfer_s = 0.01
    requests = RequestSet(arrival_s=np.zeros(2), prompt_tokens=np.full(2, 40), output_tokens=np.full(2, 3))
    result, _ = _serve(costs, requests, LAYOUTS["split 1+1"], "continuous", transfer_s=transfer_s)
    records = result.records
    assert records.first_token_s[0] == records.first_token_s[1]  # one prefill iteration
    np.testing.assert_allclose(records.decode_admitted_s - records.first_token_s, [transfer_s, 2 * transfer_s],
                               rtol=1e-9)


class ClassRecording(Router):
    """Sends every request to the first replica, recording, per router, whether each request it routes is urgent."""

    name = "class_recording"
    seen: dict[int, list[bool]] = {}

    def choose(self, replicas, request):
        ClassRecording.seen.setdefault(id(self), []).append((request.urgent, request.prompt_tokens, request.prefilled))
        return replicas[0]


def test_a_hand_over_is_routed_with_the_request_s_slo_class(costs, monkeypatch):
    """Priorities 0, 1, 0, 1: requests 0 and 2 are urgent (the lowest priority), and both pools' routers see them so,
    arrivals and hand-overs alike: the decode pool's router is what holds an urgent request to its own limits there
    (sim/routers.py PredictedLatency). A hand-over carries its 24-token context, prefilled, so a latency-predicting
    router prices its decodes at their context."""
    monkeypatch.setitem(ROUTERS, ClassRecording.name, ClassRecording)
    ClassRecording.seen = {}
    requests = RequestSet(arrival_s=np.arange(4) * 0.1, prompt_tokens=np.full(4, 24), output_tokens=np.full(4, 3),
                          priority=np.array([0, 1, 0, 1]))
    _serve(costs, requests, LAYOUTS["split 1+1"], "continuous", router=ClassRecording.name)
    arrivals, hand_overs = ClassRecording.seen.values()
    for routed in (arrivals, hand_overs):
        assert [urgent for urgent, _, _ in routed] == [True, False, True, False]
    assert {(tokens, prefilled) for _, tokens, prefilled in arrivals} == {(24, False)}
    assert {(tokens, prefilled) for _, tokens, prefilled in hand_overs} == {(24, True)}


def _mixed_requests(count: int = 16, seed: int = 3) -> RequestSet:
    """Requests of varied lengths arriving faster than one replica serves them (batches form and overlap)."""
    return sample_requests(arrivals=Poisson(rate_per_s=2000.0), prompt=Uniform(low=4, high=120),
                           output=Uniform(low=1, high=40), count=count, seed=seed)


@pytest.mark.parametrize("blocks", [100_000, 24], ids=["roomy", "tight KV"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_every_scheduler_on_every_layout_serves_each_request_once(costs, scheduler, layout, blocks):
    """Every request finishes, once: each output token after the first is sampled once (one gap each), each pool
    holds each request it serves on exactly one replica (a decode pool: every request of more than one token), and
    with room for every KV block nothing is computed twice (prompt tokens plus one decode per further token)."""
    requests = _mixed_requests()
    result, caches = _serve(costs, requests, LAYOUTS[layout], scheduler, blocks=blocks)
    records = result.records
    np.testing.assert_array_equal(records.arrival_s, requests.arrival_s)
    np.testing.assert_array_equal(records.output_tokens, requests.output_tokens)
    assert np.all(records.first_token_s >= records.arrival_s) and np.all(records.finish_s >= records.first_token_s)
    assert len(result.token_gaps_s) == int((requests.output_tokens - 1).sum())
    everyone = set(range(len(requests)))
    for (role, _), pool_caches in zip(LAYOUTS[layout], caches, strict=True):
        expected = ({i for i in everyone if requests.output_tokens[i] > 1} if role == "decode" else everyone)
        held = [cache.requests for cache in pool_caches]
        assert set().union(*held) == expected, role
        assert sum(len(h) for h in held) == len(expected), f"{role}: a request held on two replicas"
    if blocks == 100_000:
        assert records.preemptions.sum() == 0
        assert result.iterations.tokens.sum() == requests.prompt_tokens.sum() + (requests.output_tokens - 1).sum()


@pytest.mark.parametrize("layout", ["whole x2", "split 1+2"])
def test_each_replica_runs_one_iteration_at_a_time_on_its_own_chrome_track(costs, layout):
    """The iteration log says which replica ran each row: one replica never runs two iterations at once, and the
    serving timeline gives each replica its own track, named by its pool, with no slices overlapping on a track."""
    from sim.chrome_trace import serving_trace_events

    result, _ = _serve(costs, _mixed_requests(), LAYOUTS[layout], "continuous")
    log = result.iterations
    assert len(log.replica_names) == 2 + (layout == "split 1+2") and set(log.replica.tolist()) == set(
        range(len(log.replica_names)))
    events = serving_trace_events(result, "tiny")
    tracks = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert sorted(tracks) == list(range(len(log.replica_names))) and len(set(tracks.values())) == len(tracks)
    for tid in tracks:
        spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e["ph"] == "X" and e["tid"] == tid)
        assert spans and all(later[0] >= earlier[1] - 1e-6 for earlier, later in itertools.pairwise(spans)), tid


def _at_once(prompts: list[int], output: int = 4) -> RequestSet:
    count = len(prompts)
    return RequestSet(arrival_s=np.zeros(count), prompt_tokens=np.array(prompts), output_tokens=np.full(count, output))


def test_least_tokens_and_least_requests_route_apart_and_the_latency_follows(costs):
    """A (200-token prompt), B and C (16 tokens) arrive together at two replicas. A goes to the first, B to the
    second; then each holds one request, so by requests C joins the first (ties: the first), while by pending
    tokens (201 against 17) it joins the second. C's first token comes from the prefill it shares with A or B."""
    requests = _at_once([200, 16, 16])
    by_requests, caches_r = _serve(costs, requests, LAYOUTS["whole x2"], "continuous", router="least_requests")
    by_tokens, caches_t = _serve(costs, requests, LAYOUTS["whole x2"], "continuous", router="least_tokens")
    assert [c.requests for c in caches_r[0]] == [{0, 2}, {1}]
    assert [c.requests for c in caches_t[0]] == [{0}, {1, 2}]
    with_a = costs.price(step_shape([(200, 0), (16, 0)], sampled=2)).time_s
    with_b = costs.price(step_shape([(16, 0), (16, 0)], sampled=2)).time_s
    assert with_a > with_b
    assert by_requests.records.ttft_s[2] == pytest.approx(with_a, rel=1e-9)
    assert by_tokens.records.ttft_s[2] == pytest.approx(with_b, rel=1e-9)


def test_round_robin_takes_each_replica_in_turn_for_arrivals_and_hand_overs(costs):
    """Requests far apart: each finds every replica idle, so least_requests always picks the first, and round robin
    takes the replicas in turn, in both pools."""
    prompt, output, count = 24, 3, 5
    _, e2e = _alone_e2e_s(costs, prompt, output)
    requests = RequestSet(arrival_s=10 * e2e * np.arange(count), prompt_tokens=np.full(count, prompt),
                          output_tokens=np.full(count, output))
    _, caches = _serve(costs, requests, (("prefill", 2), ("decode", 3)), "continuous", router="round_robin")
    assert [c.requests for c in caches[0]] == [{0, 2, 4}, {1, 3}]
    assert [c.requests for c in caches[1]] == [{0, 3}, {1, 4}, {2}]
    _, caches = _serve(costs, requests, (("prefill", 2), ("decode", 3)), "continuous", router="least_requests")
    assert [c.requests for c in caches[0]] == [set(range(count)), set()]
    assert [c.requests for c in caches[1]] == [set(range(count)), set(), set()]


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_same_requests_same_router_same_run(costs, router):
    requests = _mixed_requests(count=24, seed=11)
    first, _ = _serve(costs, requests, LAYOUTS["split 1+2"], "chunked", router=router)
    again, _ = _serve(costs, requests, LAYOUTS["split 1+2"], "chunked", router=router)
    for name in ("first_token_s", "finish_s", "scheduled_s"):
        np.testing.assert_array_equal(getattr(first.records, name), getattr(again.records, name))


def test_routers_are_found_by_name():
    assert {name: make_router(name).name for name in ROUTERS} == {name: name for name in ROUTERS}
    with pytest.raises(ValueError, match="router: found 'fastest', allowed: least_requests"):
        make_router("fastest")


def test_a_hand_over_sends_the_kv_past_the_shared_prefix_the_decode_pool_holds(costs):
    """Both pools hold a 32-token shared prefix (two whole blocks), so a 40-token prompt's hand-over carries its own
    8 tokens' KV, not the 40 the prefill pool's sequence attends to (vLLM's KV connectors load only the tokens a
    decode instance's prefix cache lacks)."""
    memory = serving_memory(capacity_B=1000 * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    pools = [Pool(name=role, role=role, replicas=1, costs=costs, scheduler="continuous", limits=SchedulerLimits(),
                  memory=memory, idle_power_W=costs.device.idle_power_W, prefix_tokens=32)
             for role in ("prefill", "decode")]
    sent: list[float] = []
    requests = RequestSet(arrival_s=np.zeros(1), prompt_tokens=np.array([40]), output_tokens=np.array([3]))
    serve_pools(pools, requests, kv_transfer_s=lambda message_B: sent.append(message_B) or 0.0)
    assert sent == [(40 - 32) * KV_PER_TOKEN_B]
