"""A pool's shared KV store (sim/kv_store.py): what one replica computes another finds there and fetches instead of
computing it. Hand counts of two caches sharing a store, and served: two replicas dealt requests in turn, beside a
store that keeps everything, find exactly what one cache that never evicts finds (counted from the hash ids alone),
and the fetches take their bytes over the store's bandwidth."""

from __future__ import annotations

import pytest

from hw_models.registry import load_device
from sim.costs import IterationCostModel
from sim.kv_cache import PagedKVCache
from sim.kv_store import KVStore
from sim.schedulers import SchedulerLimits
from sim.serving import Pool, serve_pools, serving_memory
from tests.sim.test_prefix_tree import (
    BLOCK,
    KV_PER_TOKEN_B,
    _ids_trace,
    _random_tree_paths,
    never_evicted_tokens,
)

PATH = [(0, 64), (1, 96)]  # 4 blocks, then 2


def _compute(kv: PagedKVCache, seq: int, path, tokens: int) -> None:
    kv.assign_path(seq, path)
    kv.hold(seq, tokens)
    kv.publish(seq, tokens)
    kv.release(seq)


@pytest.mark.parametrize(("store_blocks", "found"), [(100, 96), (5, 80), (3, 48)])
def test_what_one_replica_computes_another_fetches_from_the_store(store_blocks, found):
    """Replica A computes a 96-token prompt (4 + 2 blocks); replica B, which never saw it, finds what the store kept
    of it: all 6 blocks, or in a store of 5 the first node's 4 and 1 of the second's (room made for none: the first
    node is the second's parent), or in a store of 3, 3 of the first node's."""
    store = KVStore(store_blocks)
    a = PagedKVCache(capacity_blocks=50, block_tokens=BLOCK, store=store)
    b = PagedKVCache(capacity_blocks=50, block_tokens=BLOCK, store=store)
    _compute(a, 0, PATH, 96)
    b.assign_path(1, PATH)
    assert b.cached_prefix(1, 97) == found
    b.hold(1, 97)
    assert b.take_fetched_tokens() == found and b.take_loaded_tokens() == 0
    assert (b.prefix_found_blocks, b.prefix_store_blocks) == (found // BLOCK, found // BLOCK)
    assert b.used_blocks == 7  # the fetched blocks and its own: ceil(97 / 16)
    assert store.used_blocks <= store_blocks


def test_the_store_evicts_a_leaf_before_its_parent_and_never_holds_an_orphan():
    store = KVStore(6)
    kv = PagedKVCache(capacity_blocks=50, block_tokens=BLOCK, store=store)
    _compute(kv, 0, PATH, 96)  # nodes 0 (4 blocks) and 1 (2): the store is full
    _compute(kv, 1, [(0, 64), (2, 80)], 80)  # a sibling's block: node 1, the least recently used leaf, gives one up
    assert (store.blocks(-2), store.blocks(-3), store.blocks(-4)) == (4, 1, 1)
    store.write("orphan", "missing", 3)  # behind a node the store does not hold: not kept
    assert store.blocks("orphan") == 0 and store.used_blocks == 6


def _serve(costs, requests, *, store_blocks: int, store_Bps: float = 25e9):
    """Two replicas of 60 blocks dealt requests in turn, beside a store of `store_blocks` (0: none): the result and
    the replicas' caches."""
    memory = serving_memory(capacity_B=60 * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    pool = Pool(name="serve", role="serve", replicas=2, costs=costs, scheduler="chunked",
                limits=SchedulerLimits(max_seqs=8), memory=memory, idle_power_W=costs.device.idle_power_W,
                router="round_robin", kv_store_blocks=store_blocks, kv_store_Bps=store_Bps if store_blocks else None)
    store = KVStore(store_blocks) if store_blocks else None
    caches = [PagedKVCache(capacity_blocks=pool.engine_kv_blocks, block_tokens=BLOCK, store=store) for _ in range(2)]
    return serve_pools([pool], requests, caches=[caches]), caches


def test_two_replicas_beside_a_store_find_what_one_cache_that_never_evicts_finds(costs):
    """Requests one at a time, dealt to two replicas of 60 blocks in turn: alone they find less than the ids allow;
    beside a store larger than every prompt together they find each request's leading ids an earlier request named."""
    block_tokens = 4 * BLOCK
    paths = _random_tree_paths(3, 60)
    found, _ = never_evicted_tokens(paths, block_tokens)
    requests = _ids_trace(paths, gap_s=10.0, block_tokens=block_tokens)
    alone, _ = _serve(costs, requests, store_blocks=0)
    shared, caches = _serve(costs, requests, store_blocks=100_000)
    assert alone.prefix_found_tokens < found == shared.prefix_found_tokens
    assert all(kv.prefix_store_blocks > 0 for kv in caches)


def test_fetches_take_their_bytes_over_the_store_bandwidth(costs):
    """Nothing else crosses a link here (recompute preemption, no host cache): the time copied in is the tokens
    fetched times a token's KV bytes over the store's bandwidth."""
    requests = _ids_trace(_random_tree_paths(7, 60), gap_s=0.05, block_tokens=2 * BLOCK)
    result, caches = _serve(costs, requests, store_blocks=100_000, store_Bps=5e9)
    fetched_tokens = sum(kv.prefix_store_blocks for kv in caches) * BLOCK
    assert fetched_tokens > 0
    assert result.swap_s == pytest.approx(fetched_tokens * KV_PER_TOKEN_B / 5e9)


def test_a_fleet_s_pools_share_one_store(costs):
    """The two replicas as a fleet of two devices' pools (an H100's and an L4's, one replica each, dealt requests in
    turn), each pool given a store: they share one, as a cluster's store is, and find what one cache that never
    evicts finds, as two replicas of one pool do."""
    other = IterationCostModel(load_device("l4"), costs.template, execution="graphs")
    block_tokens = 4 * BLOCK
    paths = _random_tree_paths(3, 60)
    found, _ = never_evicted_tokens(paths, block_tokens)
    requests = _ids_trace(paths, gap_s=10.0, block_tokens=block_tokens)
    memory = serving_memory(capacity_B=60 * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    pools = [Pool(name=f"serve {name}", role="serve", replicas=1, costs=model, scheduler="chunked",
                  limits=SchedulerLimits(max_seqs=8), memory=memory, idle_power_W=0.0, router="round_robin",
                  kv_store_blocks=100_000, kv_store_Bps=25e9) for name, model in (("h100", costs), ("l4", other))]
    assert serve_pools(pools, requests).prefix_found_tokens == found
