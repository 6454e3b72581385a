"""The KV cache's host tier (sim/kv_cache.py host_blocks): blocks the device evicts wait in host memory and load back
when a request finds them. Hand counts of a small cache, and served: a host tier that keeps every evicted block lets a
small device cache find exactly what a cache that never evicts finds (counted from the hash ids alone), and the time
its loads take is their bytes over the host link."""

from __future__ import annotations

import pytest

from sim.kv_cache import PagedKVCache
from sim.schedulers import SchedulerLimits
from sim.serving import Pool, serve_pools, serving_memory
from tests.sim.test_prefix_tree import (
    BLOCK,
    KV_PER_TOKEN_B,
    _ids_trace,
    _random_tree_paths,
    never_evicted_tokens,
)


def _fill(kv: PagedKVCache, seq: int, node: int, tokens: int) -> None:
    """Sequence `seq` computes a one-node prompt of `tokens` tokens, caches it and finishes."""
    kv.assign_path(seq, [(node, tokens)])
    kv.hold(seq, tokens)
    kv.publish(seq, tokens)
    kv.release(seq)


@pytest.mark.parametrize("host_blocks", [0, 8])
def test_evicted_blocks_wait_in_host_memory_and_load_back(host_blocks):
    """8 device blocks of 16 tokens. A caches a 4-block node; B's 6-block prompt takes 2 of them from its tail (into
    host memory where there is one); C, sharing A's prompt, finds all 4 with the host tier (2 loaded) and 2 without."""
    kv = PagedKVCache(capacity_blocks=8, block_tokens=BLOCK, host_blocks=host_blocks)
    _fill(kv, 0, node=0, tokens=64)
    _fill(kv, 1, node=1, tokens=96)
    kv.assign_path(2, [(0, 64)])
    found = 64 if host_blocks else 32
    assert kv.cached_prefix(2, 65) == found
    kv.hold(2, 65)
    assert kv.take_loaded_tokens() == (32 if host_blocks else 0) and kv.take_loaded_tokens() == 0
    assert (kv.prefix_found_blocks, kv.prefix_host_blocks) == (found // BLOCK, 2 if host_blocks else 0)
    assert kv.used_blocks <= 8
    if host_blocks:
        # C's 4 shared and 1 own blocks took 3 of B's 6 from its tail, into host memory: B's prompt is all there.
        kv.assign_path(3, [(1, 96)])
        assert kv.cached_prefix(3, 97) == 96


def test_host_memory_evicts_leaves_first_and_stays_within_its_blocks():
    """A 2-block system prompt node with a 2-block branch, both evicted to a host tier of 3 blocks: the branch (the
    leaf) gives up its blocks there before the system prompt does."""
    kv = PagedKVCache(capacity_blocks=4, block_tokens=BLOCK, host_blocks=3)
    kv.assign_path(0, [(0, 32), (1, 64)])
    kv.hold(0, 64)
    kv.publish(0, 64)
    kv.release(0)
    _fill(kv, 1, node=9, tokens=64)  # takes all 4 device blocks: the branch's 2, then the system prompt's 2
    assert kv._host_used <= 3
    kv.assign_path(2, [(0, 32), (1, 64)])
    assert kv.cached_prefix(2, 65) == 48  # the system prompt's 2 blocks and 1 of the branch's
    kv.assign_path(3, [(0, 32)])
    assert kv.cached_prefix(3, 33) == 32


def _serve(costs, requests, *, capacity_blocks: int, host_blocks: int, host_link_Bps: float = 16e9):
    memory = serving_memory(capacity_B=capacity_blocks * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    pool = Pool(name="serve", role="serve", replicas=1, costs=costs, scheduler="chunked",
                limits=SchedulerLimits(max_seqs=8), memory=memory, idle_power_W=costs.device.idle_power_W,
                host_link_Bps=host_link_Bps, host_cache_blocks=host_blocks)
    kv = PagedKVCache(capacity_blocks=pool.engine_kv_blocks, block_tokens=BLOCK, host_blocks=host_blocks)
    return serve_pools([pool], requests, caches=[[kv]]), kv


def test_a_host_tier_that_keeps_everything_finds_what_a_cache_that_never_evicts_finds(costs):
    """Requests one at a time: a device cache of 60 blocks alone finds less than the ids allow; beside a host tier
    larger than every prompt together it finds exactly each request's leading ids an earlier request named."""
    block_tokens = 4 * BLOCK
    paths = _random_tree_paths(3, 60)
    found, _ = never_evicted_tokens(paths, block_tokens)
    requests = _ids_trace(paths, gap_s=10.0, block_tokens=block_tokens)
    alone, _ = _serve(costs, requests, capacity_blocks=60, host_blocks=0)
    tiered, kv = _serve(costs, requests, capacity_blocks=60, host_blocks=100_000)
    assert alone.prefix_found_tokens < found == tiered.prefix_found_tokens
    assert kv.prefix_host_blocks > 0


def test_loads_take_their_bytes_over_the_host_link(costs):
    """With recompute preemption nothing else crosses the host link: the run's host-link time is the blocks loaded
    times a block's bytes over the link's bandwidth."""
    requests = _ids_trace(_random_tree_paths(7, 80), gap_s=0.002, block_tokens=2 * BLOCK)
    result, kv = _serve(costs, requests, capacity_blocks=60, host_blocks=400, host_link_Bps=8e9)
    assert kv.prefix_host_blocks > 0
    assert result.swap_s == pytest.approx(kv.prefix_host_blocks * BLOCK * KV_PER_TOKEN_B / 8e9)
