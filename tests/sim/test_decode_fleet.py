"""A fleet of decode pools beside a prefill pool (sim/serving.py serve_pools over a 'prefill' pool and several 'decode'
pools): the first decode pool's router picks among every decode pool's replicas, and each request's KV crosses at
its target pool's link and bytes a token, against a hand case."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hw_models.registry import load_device
from kernels.shapes import step_shape
from sim.autoscalers import Autoscaling
from sim.autoscalers.hpa import SYNC_PERIOD_S
from sim.costs import IterationCostModel
from sim.schedulers import SCHEDULERS, SchedulerLimits
from sim.serving import Pool, serve_pools, serving_memory
from tests.sim.autoscaled_pool import Slower
from workloads.requests import RequestSet

BLOCK = 16
KV_PER_TOKEN_B = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama, 16 bits)
# The slow pool's KV at 8 bits (half the bytes a token) over a quarter of the fast pool's link.
FAST_LINK_Bps, SLOW_LINK_Bps = 1e6, 0.25e6


@pytest.fixture(scope="module")
def l4(costs) -> IterationCostModel:
    """The same model's iterations on an L4, priced apart from the H100's."""
    return IterationCostModel(load_device("l4"), costs.template, execution="graphs")


def _pool(name: str, role: str, costs, scheduler: str, kv_bytes_per_token: float) -> Pool:
    memory = serving_memory(capacity_B=1000 * BLOCK * kv_bytes_per_token, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=kv_bytes_per_token, block_tokens=BLOCK)
    return Pool(name=name, role=role, replicas=1, costs=costs, scheduler=scheduler,
                limits=SchedulerLimits(max_seqs=8, chunk_tokens=64), memory=memory,
                idle_power_W=costs.device.idle_power_W, router="round_robin")


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_each_request_crosses_at_its_decode_pool_s_link_and_decodes_there(costs, l4, scheduler):
    """One H100 prefill replica, a decode fleet of one H100 (16-bit KV, 1 MB/s) and one L4 (8-bit KV, 0.25 MB/s) under
    round robin (each replica in turn: the H100's, then the L4's), two 48-token requests a second apart. By hand:
    request 0's KV is 48 x 256 B = 12,288 B, 12.288 ms over the H100's link; request 1's 48 x 128 B = 6,144 B,
    24.576 ms over the L4's; each then decodes its 7 further tokens alone on its target's device."""
    prompt, output = 48, 8
    pools = [_pool("prefill", "prefill", costs, scheduler, KV_PER_TOKEN_B),
             _pool("decode (h100)", "decode", costs, scheduler, KV_PER_TOKEN_B),
             _pool("decode (l4)", "decode", l4, scheduler, KV_PER_TOKEN_B / 2)]
    requests = RequestSet(arrival_s=np.array([0.0, 1.0]), prompt_tokens=np.full(2, prompt),
                          output_tokens=np.full(2, output))
    result = serve_pools(pools, requests, kv_transfer_s=[lambda message_B: message_B / FAST_LINK_Bps,
                                                         lambda message_B: message_B / SLOW_LINK_Bps])
    records = result.records
    np.testing.assert_allclose(records.decode_admitted_s - records.first_token_s, [12.288e-3, 24.576e-3], rtol=1e-9)
    ttft_s = costs.price(step_shape([(prompt, 0)], sampled=1)).time_s
    np.testing.assert_allclose(records.ttft_s, [ttft_s, ttft_s], rtol=1e-9)

    def decodes_s(on: IterationCostModel) -> float:
        return sum(on.price(step_shape(decode_kv=[prompt + 1 + step], sampled=1)).time_s for step in range(output - 1))

    np.testing.assert_allclose(records.finish_s - records.decode_admitted_s, [decodes_s(costs), decodes_s(l4)],
                               rtol=1e-9)
    # Each decode pool's replica ran its request's decodes, and every pool's hours are held.
    names = result.iterations.replica_names
    for name in ("decode (h100) replica 0", "decode (l4) replica 0"):
        assert int((result.iterations.replica == names.index(name)).sum()) == output - 1, name
    assert set(result.held_replica_s) == {"prefill", "decode (h100)", "decode (l4)"}
    # Each request's pool is the decode pool it decoded in, by place among the run's pools (the prefill pool's 0).
    np.testing.assert_array_equal(records.pool, [1, 2])
    assert [pool["requests"] for pool in result.pool_figures().values()] == [0, 1, 1]


def test_a_decode_fleet_s_router_picks_among_every_decode_pool(costs, l4):
    """Least requests (the fewest held, ties the first) over a fleet: four requests arriving together on two prefill
    replicas, prefilled together and handed over at once; the H100 decode replica, first, takes the first, the L4 the
    second (the H100 holds one then, its KV still crossing), the H100 the third (both hold one), the L4 the fourth:
    each decodes two at once, and every request is served once."""
    pools = [replace_router(_pool("prefill", "prefill", costs, "continuous", KV_PER_TOKEN_B), 2, "least_requests"),
             replace_router(_pool("decode (h100)", "decode", costs, "continuous", KV_PER_TOKEN_B), 1,
                            "least_requests"),
             replace_router(_pool("decode (l4)", "decode", l4, "continuous", KV_PER_TOKEN_B), 1, "least_requests")]
    requests = RequestSet(arrival_s=np.zeros(4), prompt_tokens=np.full(4, 32), output_tokens=np.full(4, 64))
    result = serve_pools(pools, requests, kv_transfer_s=lambda message_B: 0.0)
    assert len(result.records) == 4
    names = result.iterations.replica_names
    decoded = {name: int(result.iterations.batch_size[result.iterations.replica == names.index(name)].max())
               for name in ("decode (h100) replica 0", "decode (l4) replica 0")}
    assert decoded == {"decode (h100) replica 0": 2, "decode (l4) replica 0": 2}, decoded


def _stepping(costs, decode_step_s: float) -> Slower:
    """`costs` stretched so that a lone decode step of a 16-token prompt takes `decode_step_s`."""
    return Slower(costs, decode_step_s / costs.price(step_shape(decode_kv=[16], sampled=1)).time_s)


def replace_router(pool: Pool, replicas: int, router: str) -> Pool:
    return replace(pool, replicas=replicas, router=router)


def test_a_prefill_pool_beside_serving_pools_is_refused(costs):
    requests = RequestSet(arrival_s=np.zeros(1), prompt_tokens=np.full(1, 16), output_tokens=np.full(1, 2))
    pools = [_pool("prefill", "prefill", costs, "continuous", KV_PER_TOKEN_B),
             _pool("serve", "serve", costs, "continuous", KV_PER_TOKEN_B)]
    with pytest.raises(ValueError, match=r"pools: found roles \['prefill', 'serve'\], allowed: 'serve' pools"):
        serve_pools(pools, requests)


def test_a_decode_fleet_s_pool_scales_by_its_own_hpa_at_each_sync(costs, l4):
    """A prefill pool (HPA, one up to two replicas), a fixed decode L4 and a decode H100 pool scaling by an HPA from one
    up to six on requests waiting against 2 a replica (a 10 s cold start), least requests over every decode pool's
    serving replicas, a request arriving every second from 0.5 s (the step from none). Prefills take microseconds; a
    decode step about 1,000 s, one request at a time a replica, so nothing finishes within the first minute and a
    replica's waiting requests are those it was handed less the one it runs. By the HPA's formula at each 15 s sync:
    - 15 s: 15 requests handed over, alternately to the L4 (first, on ties) and the H100: 8 and 7, the H100's 6
      waiting against 2 a replica wants ceil(6 / 2) = 3 (within the step limit, 1 + max(4, 1));
    - 25 s: its two new replicas serve; meanwhile 10 more, 5 each to the L4 (13) and the first H100 (12);
    - 30 s: 5 more to the new replicas (3 and 2, ties to the first): 11 + 2 + 1 = 14 waiting over 3 replicas, read
      14 / 6 of the target, wants ceil(14 / 6 x 3) = 7, held at the most, 6;
    - the prefill pool waits on nothing: its HPA keeps its one replica.
    The fleet holds 1 + 1 + 1, then 1 + 1 + 3, then 1 + 1 + 6 (the syncs count from the run's start, 0 s)."""
    scaling = Autoscaling(max_replicas=6, target=2.0, cold_start_s=10.0)
    prefill = replace(_pool("prefill", "prefill", costs, "continuous", KV_PER_TOKEN_B), router="least_requests",
                      autoscaling=replace(scaling, max_replicas=2))
    fixed = replace(_pool("decode (l4)", "decode", _stepping(l4, 1000.0), "continuous", KV_PER_TOKEN_B),
                    router="least_requests")
    scaled = replace(_pool("decode (h100)", "decode", _stepping(costs, 1000.0), "continuous", KV_PER_TOKEN_B),
                     router="least_requests", autoscaling=scaling)
    fixed, scaled = (replace(p, limits=replace(p.limits, max_seqs=1)) for p in (fixed, scaled))
    count = 45
    requests = RequestSet(arrival_s=0.5 + np.arange(float(count)), prompt_tokens=np.full(count, 16),
                          output_tokens=np.full(count, 2))
    result = serve_pools([prefill, fixed, scaled], requests, kv_transfer_s=lambda message_B: 0.0)
    assert result.scaled[:3] == ((0.5, 3), (SYNC_PERIOD_S, 5), (2 * SYNC_PERIOD_S, 8))
    log, names = result.iterations, result.iterations.replica_names
    for replica in range(1, 6):  # the H100 pool's new replicas serve a cold start after their sync asked for them
        starts = log.start_s[log.replica == names.index(f"decode (h100) replica {replica}")]
        assert len(starts) and starts.min() >= (SYNC_PERIOD_S if replica < 3 else 2 * SYNC_PERIOD_S) + 10.0, replica


def test_a_draining_decode_replica_of_a_fleet_is_handed_nothing_new(costs, l4):
    """A decode H100 pool scaling by its HPA from one up to four beside a fixed decode L4, round robin over every
    decode pool's serving replicas, each request 2 s of decode alone: a 20 s burst of 4 req/s scales the H100 pool to
    four, then a request every 5 s for ten minutes leaves them idle, and once the 300 s window has passed the pool gives
    three back. From then on the requests still coming go round the H100 it keeps and the L4 only: no iteration of the
    three starts after they were given back (each was handed a request every 25 s or so while it served)."""
    prefill = _pool("prefill", "prefill", costs, "continuous", KV_PER_TOKEN_B)
    scaled = replace(_pool("decode (h100)", "decode", _stepping(costs, 2.0), "continuous", KV_PER_TOKEN_B),
                     autoscaling=Autoscaling(max_replicas=4, target=1.0, cold_start_s=5.0))
    fixed = _pool("decode (l4)", "decode", _stepping(l4, 2.0), "continuous", KV_PER_TOKEN_B)
    scaled, fixed = (replace(p, limits=replace(p.limits, max_seqs=1)) for p in (scaled, fixed))
    arrivals = np.concatenate([0.25 * np.arange(80), 20.0 + 5.0 * np.arange(120)])
    requests = RequestSet(arrival_s=arrivals, prompt_tokens=np.full(len(arrivals), 16),
                          output_tokens=np.full(len(arrivals), 2))
    result = serve_pools([prefill, scaled, fixed], requests, kv_transfer_s=lambda message_B: 0.0)
    held = dict(result.scaled)
    assert max(held.values()) == 1 + 4 + 1
    given_back_s = min(time_s for time_s, count in held.items() if count == 1 + 1 + 1 and time_s > SYNC_PERIOD_S)
    assert given_back_s < arrivals[-1] - 100.0
    log, names = result.iterations, result.iterations.replica_names
    for replica in range(1, 4):
        starts = log.start_s[log.replica == names.index(f"decode (h100) replica {replica}")]
        assert len(starts) and starts.max() < given_back_s, replica
    kept = log.start_s[log.replica == names.index("decode (h100) replica 0")]
    assert (kept > given_back_s).sum() >= 10
