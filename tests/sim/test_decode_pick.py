"""When the decode replica of a prefill pool's request is picked (sim/serving.py serve_pools' decode_pick): once its
prefill is done (vLLM's proxies, Dynamo) or at its arrival (llm-d, whose decode pods report a request only once the
routing sidecar sends it after the prefill); against hand cases."""

from __future__ import annotations

import numpy as np
import pytest

from sim.autoscalers import Autoscaling
from sim.schedulers import SCHEDULERS, SchedulerLimits
from sim.serving import Pool, serve_pools, serving_memory
from workloads.requests import RequestSet

BLOCK = 16
KV_PER_TOKEN_B = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama, 16 bits)
LINK_Bps = 1e6


def _pool(name: str, role: str, costs, scheduler: str, replicas: int, **fields) -> Pool:
    memory = serving_memory(capacity_B=1000 * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    return Pool(name=name, role=role, replicas=replicas, costs=costs, scheduler=scheduler,
                limits=SchedulerLimits(max_seqs=8, chunk_tokens=128), memory=memory,
                idle_power_W=costs.device.idle_power_W, router="least_requests", **fields)


def _burst(costs, scheduler: str, **pick):
    """Two 48-token requests arriving together at one prefill replica, decoded by two replicas under least
    requests (the fewest held, ties the first); each decode replica's iterations."""
    pools = [_pool("prefill", "prefill", costs, scheduler, 1), _pool("decode", "decode", costs, scheduler, 2)]
    requests = RequestSet(arrival_s=np.zeros(2), prompt_tokens=np.full(2, 48), output_tokens=np.full(2, 2))
    result = serve_pools(pools, requests, kv_transfer_s=lambda message_B: message_B / LINK_Bps, **pick)
    names = result.iterations.replica_names
    ran = {name: int((result.iterations.replica == names.index(name)).sum())
           for name in ("decode replica 0", "decode replica 1")}
    return result, ran


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_a_burst_picked_at_arrival_piles_onto_one_decode_replica(costs, scheduler):
    """Picked at arrival, both requests see two idle decode replicas (neither counts a request still prefilling on
    the prefill pool, as llm-d's queue-scorer reads only a pod's own queue), so least requests sends both to replica
    0; picked once the prefill is done, the first is held by replica 0 while its KV crosses and the second goes to
    replica 1. The KV crosses one send after the other either way (48 x 256 B = 12,288 B at 1 MB/s: 12.288 ms each),
    so replica 0 decodes the first (its one further token, about half a millisecond) before the second lands: two
    iterations on replica 0 and none on replica 1 at arrival, one each after the prefill."""
    arrival, ran_arrival = _burst(costs, scheduler, decode_pick="arrival")
    assert ran_arrival == {"decode replica 0": 2, "decode replica 1": 0}, ran_arrival
    _, ran_done = _burst(costs, scheduler, decode_pick="prefill_done")
    assert ran_done == {"decode replica 0": 1, "decode replica 1": 1}, ran_done
    records = arrival.records
    np.testing.assert_allclose(records.decode_admitted_s - records.first_token_s, [12.288e-3, 24.576e-3], rtol=1e-9)


def test_prefill_done_is_the_default(costs):
    """Leaving decode_pick out is picking once the prefill is done: the same records, iteration by iteration."""
    default, ran_default = _burst(costs, "chunked")
    done, ran_done = _burst(costs, "chunked", decode_pick="prefill_done")
    assert ran_default == ran_done
    for name in ("first_token_s", "decode_admitted_s", "finish_s"):
        np.testing.assert_array_equal(getattr(default.records, name), getattr(done.records, name))


@pytest.mark.parametrize("pools, found", [
    ("serve", "'serve'"), ("autoscaled decode", "autoscaled decode pools ['decode']"), ("unknown pick", "'at_random'")])
def test_a_decode_pick_not_modeled_is_refused_by_name(costs, pools, found):
    """A pick at arrival needs a prefill pool, and one drained before the prefill is done is not modeled: refused, as
    an unknown pick is, in one line naming decode_pick."""
    serve = [_pool("serve", "serve", costs, "chunked", 2)]
    scaled = [_pool("prefill", "prefill", costs, "chunked", 1),
              _pool("decode", "decode", costs, "chunked", 1, autoscaling=Autoscaling(max_replicas=2, target=1.0))]
    plain = [_pool("prefill", "prefill", costs, "chunked", 1), _pool("decode", "decode", costs, "chunked", 2)]
    chosen, pick = {"serve": (serve, "arrival"), "autoscaled decode": (scaled, "arrival"),
                    "unknown pick": (plain, "at_random")}[pools]
    requests = RequestSet(arrival_s=np.zeros(1), prompt_tokens=np.full(1, 48), output_tokens=np.full(1, 2))
    with pytest.raises(ValueError, match="^decode_pick: found ") as error:
        serve_pools(chosen, requests, kv_transfer_s=lambda message_B: 0.0, decode_pick=pick)
    assert found in str(error.value) and "\n" not in str(error.value)
