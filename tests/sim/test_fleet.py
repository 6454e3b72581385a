"""A fleet of mixed devices (sim/serving.py serve_pools over several 'serve' pools, one router over their replicas) and
the KV-usage router (sim/routers.py LeastKVUsage), against hand cases: each request takes the time it takes alone on
the replica it was routed to, every request is served once, and the router picks the emptiest cache."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hw_models.registry import load_device
from kernels.shapes import step_shape
from sim.costs import IterationCostModel
from sim.kv_cache import PagedKVCache
from sim.routers import LeastKVUsage
from sim.schedulers import SchedulerLimits
from sim.serving import Pool, serve_pools, serving_memory
from sim.serving_metrics import SLO
from workloads.requests import RequestSet

BLOCK = 16
KV_PER_TOKEN_B = 2 * 2 * 16 * 2 * 2  # the tiny Llama's (tests/sim/conftest.py)


@pytest.fixture(scope="module")
def other(costs) -> IterationCostModel:
    """The same model's iterations on an L4 (the tiny model's iterations are bound by kernel latencies, which the L4's
    fits price apart from the H100's)."""
    return IterationCostModel(load_device("l4"), costs.template, execution="graphs")


def _pool(costs, replicas: int, router: str, blocks: int = 1000) -> Pool:
    memory = serving_memory(capacity_B=blocks * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    return Pool(name=f"serve ({costs.device.name})", role="serve", replicas=replicas, costs=costs,
                scheduler="continuous", limits=SchedulerLimits(max_seqs=8), memory=memory,
                idle_power_W=costs.device.idle_power_W, router=router)


def _alone_s(costs, prompt: int, output: int) -> float:
    """A request's end-to-end time alone on a replica: its prefill, then a decode step per further token."""
    return costs.price(step_shape([(prompt, 0)], sampled=1)).time_s + sum(
        costs.price(step_shape(decode_kv=[prompt + 1 + step], sampled=1)).time_s for step in range(output - 1))


def test_round_robin_over_a_fleet_gives_each_request_its_time_alone_on_the_replica_it_joins(costs, other):
    """Requests a second apart (each finds the fleet idle) taken in turn by an H100 and an L4 replica: their latencies
    alternate between the request's time alone on the H100 and alone on the L4, priced by hand."""
    prompt, output = 48, 8
    requests = RequestSet(arrival_s=np.arange(6.0), prompt_tokens=np.full(6, prompt), output_tokens=np.full(6, output))
    result = serve_pools([_pool(costs, 1, "round_robin"), _pool(other, 1, "round_robin")], requests)
    h100_s, l4_s = _alone_s(costs, prompt, output), _alone_s(other, prompt, output)
    assert abs(l4_s - h100_s) > 0.2 * h100_s  # the fleet is mixed indeed
    np.testing.assert_allclose(result.records.e2e_s, [h100_s, l4_s] * 3, rtol=1e-9)
    # Both pools' devices draw idle power throughout, and their iterations' energy is the fleet's.
    assert result.energy_parts_J["static_J"] == pytest.approx(
        (costs.device.idle_power_W + other.device.idle_power_W) * result.makespan_s)


def test_each_request_records_the_pool_that_served_it_and_each_pool_s_figures_are_its_requests_own(costs, other):
    """Round robin over one H100 and one L4 replica, requests a second apart: requests 0, 2, 4 are the H100 pool's and
    1, 3, 5 the L4's (the router's turn), three each, each pool's TTFT and TPOT its requests' time alone on its device
    (priced by hand); under a TPOT limit between the two devices' only the faster pool's requests meet it, and the
    pools' goodputs add up to the run's."""
    prompt, output = 48, 8
    requests = RequestSet(arrival_s=np.arange(6.0), prompt_tokens=np.full(6, prompt), output_tokens=np.full(6, output))
    pools = [_pool(costs, 1, "round_robin"), _pool(other, 1, "round_robin")]
    result = serve_pools(pools, requests)
    np.testing.assert_array_equal(result.records.pool, [0, 1, 0, 1, 0, 1])

    def alone(on: IterationCostModel) -> tuple[float, float]:
        """A request's TTFT and TPOT alone on a replica of `on`."""
        ttft_s = on.price(step_shape([(prompt, 0)], sampled=1)).time_s
        return ttft_s, (_alone_s(on, prompt, output) - ttft_s) / (output - 1)

    figures = result.pool_figures()
    assert list(figures) == ["serve (h100-sxm)", "serve (l4)"]
    for pool, on in zip(figures.values(), (costs, other), strict=True):
        ttft_s, tpot_s = alone(on)
        assert pool["requests"] == 3 and pool["replicas"] == pytest.approx(1.0)
        assert pool["ttft_p50_s"] == pytest.approx(ttft_s, rel=1e-9)
        assert pool["tpot_p50_s"] == pytest.approx(tpot_s, rel=1e-9)
    # A TPOT limit between the two devices' (the tiny model's steps are bound by kernel latencies, which each device's
    # fits price apart): the faster device's three requests alone meet it.
    (_, h100_tpot_s), (_, l4_tpot_s) = alone(costs), alone(other)
    assert abs(l4_tpot_s - h100_tpot_s) > 0.2 * min(l4_tpot_s, h100_tpot_s)  # the pools differ indeed
    judged = serve_pools(pools, requests, slo=SLO(tpot_s=(h100_tpot_s + l4_tpot_s) / 2))
    goodputs = [pool["goodput_rps"] for pool in judged.pool_figures().values()]
    assert [rps * judged.makespan_s for rps in goodputs] == pytest.approx(
        [3, 0] if h100_tpot_s < l4_tpot_s else [0, 3])
    assert sum(goodputs) == pytest.approx(judged.metrics()["goodput_rps"])


def test_every_request_is_served_once_by_some_replica_of_the_fleet(costs, other):
    rng = np.random.default_rng(3)
    count = 200
    requests = RequestSet(arrival_s=np.sort(rng.uniform(0, 0.5, count)), prompt_tokens=rng.integers(16, 96, count),
                          output_tokens=rng.integers(2, 24, count))
    for router in ("least_requests", "least_tokens", "least_kv_usage", "round_robin", "predicted_latency",
                   "predicted_latency_most"):
        result = serve_pools([_pool(costs, 2, router, blocks=60), _pool(other, 2, router, blocks=60)], requests)
        assert len(result.records) == count
        np.testing.assert_array_equal(result.records.output_tokens, requests.output_tokens)
        served = np.bincount(result.iterations.replica.astype(int), minlength=4)
        assert (served > 0).all(), (router, served)  # every replica of both devices ran iterations


def test_pools_sharing_a_name_are_refused(costs):
    """A run's busy time, replica-hours held and timeline rows are keyed by pool name: two pools of one name would
    count as one (a fleet of one device's two pools priced at the second's hours twice), so they are refused."""
    requests = RequestSet(arrival_s=np.zeros(1), prompt_tokens=np.full(1, 16), output_tokens=np.full(1, 2))
    with pytest.raises(ValueError, match=r"pools: found the name 'serve \(h100-sxm\)' twice"):
        serve_pools([_pool(costs, 1, "round_robin"), _pool(costs, 1, "round_robin")], requests)


def _replica(outstanding: int, in_use: int, capacity: int):
    """A stand-in replica holding `outstanding` requests and `in_use` of its `capacity` KV blocks."""
    kv = PagedKVCache(capacity_blocks=capacity, block_tokens=BLOCK)
    if in_use:
        kv.hold(0, in_use * BLOCK)
    return SimpleNamespace(outstanding=outstanding, state=SimpleNamespace(kv=kv))


def test_the_kv_usage_router_takes_the_emptiest_cache_whatever_its_size():
    """A small cache a quarter full loses to a big one a tenth full, though the big one holds more blocks and more
    requests; equal shares go to the fewest requests."""
    small, big = _replica(1, 10, 40), _replica(9, 100, 1000)
    assert LeastKVUsage().choose([small, big]) is big
    assert LeastKVUsage().choose([_replica(3, 10, 100), _replica(2, 20, 200)]).outstanding == 2
