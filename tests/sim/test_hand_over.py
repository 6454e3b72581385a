"""The hand-over of a prefilled request to one decode pool (sim/serving.py serve_pools over a 'prefill' and a 'decode'
pool): its decode replica is picked once the prefill is done, before its KV crosses, and counts it while it crosses,
as vLLM's proxies pick the decode instance once the prefill has answered; against hand cases."""

from __future__ import annotations

import numpy as np
import pytest

from sim.schedulers import SCHEDULERS, SchedulerLimits
from sim.serving import Pool, serve_pools, serving_memory
from workloads.requests import RequestSet

BLOCK = 16
KV_PER_TOKEN_B = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama, 16 bits)
LINK_Bps = 1e6


def _pool(name: str, role: str, costs, scheduler: str, replicas: int) -> Pool:
    memory = serving_memory(capacity_B=1000 * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    return Pool(name=name, role=role, replicas=replicas, costs=costs, scheduler=scheduler,
                limits=SchedulerLimits(max_seqs=8, chunk_tokens=128), memory=memory,
                idle_power_W=costs.device.idle_power_W, router="least_requests")


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_two_requests_handed_over_at_once_go_to_different_decode_replicas(costs, scheduler):
    """One prefill replica prefills two 48-token requests arriving together and hands both over at once to a decode
    pool of two replicas under least requests (the fewest held, ties the first). Their KV crosses one send after the
    other over the prefill replica's ports, by hand 48 x 256 B = 12,288 B in 12.288 ms each: the first lands at
    12.288 ms, the second at 24.576 ms. The first goes to replica 0, which holds it while it crosses, so the second goes
    to replica 1, though the first has decoded its one further token (about half a millisecond) and left before the
    second lands: each decode replica runs one iteration."""
    pools = [_pool("prefill", "prefill", costs, scheduler, 1), _pool("decode", "decode", costs, scheduler, 2)]
    requests = RequestSet(arrival_s=np.zeros(2), prompt_tokens=np.full(2, 48), output_tokens=np.full(2, 2))
    result = serve_pools(pools, requests, kv_transfer_s=lambda message_B: message_B / LINK_Bps)
    records = result.records
    np.testing.assert_allclose(records.first_token_s, records.first_token_s[0], rtol=1e-12)  # prefilled together
    np.testing.assert_allclose(records.decode_admitted_s - records.first_token_s, [12.288e-3, 24.576e-3], rtol=1e-9)
    assert records.finish_s[0] < records.decode_admitted_s[1]  # the first left before the second landed
    names = result.iterations.replica_names
    ran = {name: int((result.iterations.replica == names.index(name)).sum())
           for name in ("decode replica 0", "decode replica 1")}
    assert ran == {"decode replica 0": 1, "decode replica 1": 1}, ran
