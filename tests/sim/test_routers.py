"""The cache-aware router (sim/routers.py CacheAware) against hand cases, and served: with more prefixes than one
replica's cache holds, routing each request to the replica that caches its prefix finds more of them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from sim.kv_cache import PagedKVCache
from sim.routers import CacheAware, Routed
from sim.schedulers import SchedulerLimits
from sim.serving import Pool, serve_pools, serving_memory
from workloads.requests import RequestSet

BLOCK = 16
KV_PER_TOKEN_B = 2 * 2 * 16 * 2 * 2  # the tiny Llama's (tests/sim/conftest.py)


def _replica(outstanding: int, cached_groups: dict[int, int], capacity_blocks: int = 40):
    """A stand-in replica holding `outstanding` requests, whose cache holds `cached_groups` (group -> blocks)."""
    kv = PagedKVCache(capacity_blocks=capacity_blocks, block_tokens=BLOCK)
    for group, blocks in cached_groups.items():
        kv._cache(group, blocks)  # an idle chain, as a finished request leaves it
    return SimpleNamespace(outstanding=outstanding, state=SimpleNamespace(kv=kv))


def test_the_replica_caching_the_prefix_takes_the_request_while_the_load_is_balanced():
    request = Routed(group=3, shareable_tokens=64, prompt_tokens=100)  # a 64-token prefix: 4 blocks
    cold, warm = _replica(2, {}), _replica(5, {3: 4})
    assert CacheAware().choose([cold, warm], request) is warm  # 64 of 100 tokens found, above the 0.3 threshold
    # A request that shares little (under 30% of its prompt) goes where the most cache space is free.
    assert CacheAware().choose([cold, warm], Routed(group=3, shareable_tokens=16, prompt_tokens=100)) is cold
    # Out of balance (70 against 2: more than 64 apart and 1.5 times), the fewest requests win whatever is cached.
    assert CacheAware().choose([_replica(2, {}), _replica(72, {3: 4})], request).outstanding == 2
    # 64 apart but within 1.5 times (130 against 194): still balanced, the cache decides.
    assert CacheAware().choose([_replica(130, {}), _replica(194, {3: 4})], request).outstanding == 194


def _served(costs, router: str) -> tuple[int, int]:
    """120 requests of 12 groups' 64-token prefixes (96-token prompts) arriving together on two replicas whose 30
    blocks each hold a few prefixes beside the running requests: the prefix blocks found and sought."""
    groups = np.random.default_rng(7).integers(12, size=120)
    requests = RequestSet(arrival_s=np.zeros(120), prompt_tokens=np.full(120, 96), output_tokens=np.full(120, 4),
                          prefix_group=groups)
    memory = serving_memory(capacity_B=30 * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    pool = Pool(name="serve", role="serve", replicas=2, costs=costs, scheduler="chunked",
                limits=SchedulerLimits(max_seqs=4), memory=memory, idle_power_W=costs.device.idle_power_W,
                router=router, prefix_tokens=64, prefix_groups=12)
    result = serve_pools([pool], requests)
    return result.prefix_found_tokens // BLOCK, result.prefix_sought_tokens // BLOCK


def test_routing_by_cache_finds_more_prefixes_than_routing_by_load(costs):
    cache, load = _served(costs, "cache_aware"), _served(costs, "least_requests")
    assert cache[1] == load[1] == 120 * 4
    assert cache[0] > load[0]
