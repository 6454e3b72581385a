"""The prefix cache as a tree (sim/kv_cache.py assign_path): block counts against hand counts, leaves evicted before
the nodes they follow, and served from a trace of hash ids, the hit rate of a cache that never evicts equal to the
share of prompt blocks an earlier request had already named (counted here from the ids alone)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sim.kv_cache import PagedKVCache
from sim.schedulers import SchedulerLimits
from sim.serving import Pool, serve_pools, serving_memory
from workloads.requests import RequestSet

BLOCK = 16
KV_PER_TOKEN_B = 2 * 2 * 16 * 2 * 2  # the tiny Llama's (tests/sim/conftest.py)


def test_a_path_finds_the_nodes_it_shares_with_a_cached_path_and_no_more():
    kv = PagedKVCache(capacity_blocks=100, block_tokens=BLOCK)
    kv.assign_path(0, [(0, 64), (1, 128), (2, 160)])  # 4 + 4 + 2 blocks
    kv.hold(0, 160)
    kv.publish(0, 160)
    # Same first two nodes, then its own: it finds 8 blocks (128 tokens), and computes its last node itself.
    kv.assign_path(1, [(0, 64), (1, 128), (3, 192)])
    assert kv.cached_prefix(1, 192) == 128
    assert kv.extra_blocks(1, 192) == 4  # 12 blocks, 8 of them shared
    # A path that diverges at its first node finds nothing, even where a later node's id matches.
    kv.assign_path(2, [(5, 64), (1, 128)])
    assert kv.cached_prefix(2, 128) == 0
    # A prompt that ends inside a cached node finds the whole blocks of its part of it: 100 tokens, 6 blocks.
    kv.assign_path(3, [(0, 64), (1, 100)])
    assert kv.cached_prefix(3, 100) == 96
    assert (kv.prefix_found_blocks, kv.prefix_sought_blocks) == (0, 10)  # the first hold found nothing of its 10


def test_a_block_belongs_to_the_node_holding_its_last_token():
    """Nodes ending at 40 and 80 tokens with 16-token blocks: blocks 0-1 (tokens 0-31) lie in the first node, block 2
    (tokens 32-47) ends in the second, so the second holds blocks 2-4: a path of 2 + 3 blocks."""
    kv = PagedKVCache(capacity_blocks=100, block_tokens=BLOCK)
    kv.assign_path(0, [(0, 40), (1, 80)])
    kv.hold(0, 80)
    kv.publish(0, 80)
    kv.assign_path(1, [(0, 40), (9, 80)])  # shares the first node only: its 2 whole blocks
    assert kv.cached_prefix(1, 80) == 32
    kv.assign_path(2, [(0, 40), (1, 80)])
    assert kv.cached_prefix(2, 81) == 80


def test_idle_leaves_are_evicted_before_the_nodes_they_follow():
    """A system prompt node (4 blocks) with two branches (2 blocks each), all idle, the system prompt released before
    the second branch: a request needing 5 blocks of room takes both branches' 4 and one of the system prompt's tail,
    never the system prompt's blocks while a branch follows it."""
    kv = PagedKVCache(capacity_blocks=8, block_tokens=BLOCK)
    for seq, branch in ((0, 1), (1, 2)):
        kv.assign_path(seq, [(0, 64), (branch, 96)])
        kv.hold(seq, 96)
        kv.publish(seq, 96)
    kv.release(0)
    kv.release(1)
    assert kv.used_blocks == 8 and kv.evictable_blocks == 8
    kv.assign_path(2, [(0, 64), (1, 96)])
    assert kv.cached_prefix(2, 97) == 96  # all of its 96 cached tokens (its 97th it computes)
    kv.assign_path(3, [(7, 80)])  # an unrelated 5-block prompt
    kv.hold(3, 80)
    # Both branches (the leaves) went first, then one block of the system prompt's tail.
    assert kv.cached_prefix(2, 96) == 48
    assert kv.used_blocks == 8 and kv.evictable_blocks == 3


def test_a_shared_node_is_not_evicted_and_not_room():
    kv = PagedKVCache(capacity_blocks=8, block_tokens=BLOCK)
    kv.assign_path(0, [(0, 64)])
    kv.hold(0, 64)
    kv.publish(0, 64)  # 4 blocks, shared by sequence 0 while it runs
    assert kv.evictable_blocks == 0
    kv.assign_path(1, [(1, 80)])
    assert not kv.can_hold(1, 80)  # 5 blocks, 4 free
    kv.release(0)
    assert kv.can_hold(1, 80)  # the idle node gives up a block


def _ids_trace(paths: list[list[int]], *, gap_s: float, block_tokens: int) -> RequestSet:
    """Requests whose prompts are their hash ids' blocks (whole ones), `gap_s` apart."""
    nodes: dict[tuple[int, int], int] = {}
    interned = []
    for ids in paths:
        before, path = -1, []
        for hash_id in ids:
            before = nodes.setdefault((before, hash_id), len(nodes))
            path.append(before)
        interned.append(tuple(path))
    count = len(paths)
    return RequestSet(arrival_s=np.arange(count) * gap_s,
                      prompt_tokens=np.array([len(ids) * block_tokens for ids in paths]),
                      output_tokens=np.full(count, 3), prefix_nodes=tuple(interned), tree_block_tokens=block_tokens)


def _random_tree_paths(seed: int, count: int) -> list[list[int]]:
    """Sessions that grow by a few blocks a call (agents), behind one of three system prompts, and one-off prompts."""
    rng = np.random.default_rng(seed)
    fresh = iter(range(10**6))
    systems = [[next(fresh) for _ in range(3)] for _ in range(3)]
    sessions: list[list[int]] = []
    paths = []
    for _ in range(count):
        if sessions and rng.random() < 0.5:
            session = sessions[rng.integers(len(sessions))]
            session.extend(next(fresh) for _ in range(rng.integers(1, 3)))
        else:
            session = list(systems[rng.integers(3)]) + [next(fresh) for _ in range(rng.integers(1, 4))]
            sessions.append(session)
        paths.append(list(session))
    return paths


def never_evicted_tokens(paths: list[list[int]], block_tokens: int) -> tuple[int, int]:
    """Of requests with whole-block prompts, one at a time, the tokens a cache that never evicts finds, and those
    sought: request by request, its leading hash ids that some earlier request's ids already reached (the same ids in
    the same order from the start), times the ids' block of tokens; counted from the ids alone."""
    seen: set[tuple[int, ...]] = set()
    found = sought = 0
    for ids in paths:
        leading = 0
        while leading < len(ids) and tuple(ids[:leading + 1]) in seen:
            leading += 1
        found += leading * block_tokens
        sought += len(ids) * block_tokens
        seen.update(tuple(ids[:k + 1]) for k in range(len(ids)))
    return found, sought


def _serve(costs, requests: RequestSet, *, capacity_blocks: int, replicas: int = 1,
           router: str = "least_requests", caches: list[PagedKVCache] | None = None):
    memory = serving_memory(capacity_B=capacity_blocks * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    pool = Pool(name="serve", role="serve", replicas=replicas, costs=costs, scheduler="chunked",
                limits=SchedulerLimits(max_seqs=8), memory=memory, idle_power_W=costs.device.idle_power_W,
                router=router)
    return serve_pools([pool], requests, caches=None if caches is None else [caches])


def test_a_cache_that_never_evicts_finds_every_block_an_earlier_request_named(costs):
    """Requests one at a time (each done before the next arrives) into a cache larger than every prompt together:
    the tokens found are, request by request, its leading hash ids that some earlier request's ids already reached
    (the same ids in the same order from the start), times the ids' block of tokens: the 'infinite cache' hit rate
    of a trace's prefix analysis, counted from the ids alone."""
    block_tokens = 4 * BLOCK
    paths = _random_tree_paths(3, 60)
    found, sought = never_evicted_tokens(paths, block_tokens)
    assert 0.3 < found / sought < 0.9  # the trace shares a fair part, not all
    result = _serve(costs, _ids_trace(paths, gap_s=10.0, block_tokens=block_tokens), capacity_blocks=10_000)
    assert (result.prefix_found_tokens, result.prefix_sought_tokens) == (found, sought)


def test_sharing_a_tree_is_never_slower_than_sharing_nothing(costs):
    """The same prompts with every hash id made unique (nothing shared) against the tree: the tree's requests compute
    fewer prompt tokens, so their mean time to first token is no longer, and its run's hit rate is above 0."""
    block_tokens = 4 * BLOCK
    paths = _random_tree_paths(5, 80)
    fresh = iter(range(10**6, 2 * 10**6))
    unique = [[next(fresh) for _ in ids] for ids in paths]
    shared = _serve(costs, _ids_trace(paths, gap_s=0.002, block_tokens=block_tokens), capacity_blocks=400)
    alone = _serve(costs, _ids_trace(unique, gap_s=0.002, block_tokens=block_tokens), capacity_blocks=400)
    assert alone.prefix_found_tokens == 0 < shared.prefix_found_tokens
    assert shared.metrics()["ttft_mean_s"] <= alone.metrics()["ttft_mean_s"]


@pytest.mark.parametrize("capacity_blocks", [60, 120, 400])
def test_a_small_cache_evicts_and_leaks_no_block(costs, capacity_blocks):
    """Under eviction (a cache smaller than the tree) the run finishes every request, and the blocks left held at the
    end are only cached nodes nobody shares (no sequence's own block outlives it)."""
    block_tokens = 2 * BLOCK
    requests = _ids_trace(_random_tree_paths(11, 120), gap_s=0.001, block_tokens=block_tokens)
    kv = PagedKVCache(capacity_blocks=capacity_blocks, block_tokens=BLOCK)
    result = _serve(costs, requests, capacity_blocks=capacity_blocks, caches=[kv])
    assert len(result.records) == 120
    assert 0 < kv.used_blocks == kv.evictable_blocks <= capacity_blocks
    assert result.prefix_found_tokens < result.prefix_sought_tokens


def test_routing_by_cache_finds_more_of_a_tree_than_round_robin(costs):
    """Two disjoint trees' requests alternating over two replicas whose caches hold about one tree each: a router
    that reads the caches keeps each tree on one replica and finds more than one dealing the requests in turn."""
    block_tokens = 2 * BLOCK
    rng = np.random.default_rng(2)
    trees = ([0, 1, 2, 3, 4], [100, 101, 102, 103, 104])
    paths = [list(trees[i % 2]) + [1000 + i] for i in range(0, 80)]
    rng.shuffle(paths)
    requests = _ids_trace(paths, gap_s=0.01, block_tokens=block_tokens)
    cache = _serve(costs, requests, capacity_blocks=24, replicas=2, router="cache_aware")
    dealt = _serve(costs, requests, capacity_blocks=24, replicas=2, router="round_robin")
    assert cache.prefix_sought_tokens == dealt.prefix_sought_tokens
    assert cache.prefix_found_tokens > dealt.prefix_found_tokens


def test_a_recomputed_sequence_is_counted_once_at_its_first_admission():
    """A sequence preempted by recompute (released, then held again) finds its own published blocks the second time;
    the hit rate counts only its first admission, as vLLM v1 keeps a preempted request's hits apart
    (PrefixCacheStats.preempted_hits): 10 blocks sought, none found, whatever its readmission finds."""
    kv = PagedKVCache(capacity_blocks=100, block_tokens=BLOCK)
    path = [(0, 64), (1, 160)]  # 4 + 6 blocks
    kv.assign_path(0, path)
    kv.hold(0, 160)
    kv.publish(0, 160)
    kv.release(0)  # preempted: its KV dropped, its published blocks stay cached
    # Found again on readmission: the whole blocks before the token it samples from, 9 of 10.
    assert kv.cached_prefix(0, 160) == 144
    kv.hold(0, 161)
    assert (kv.prefix_found_blocks, kv.prefix_sought_blocks) == (0, 10)
    kv.assign_path(1, path)  # another request of the same prompt is a first admission: it finds all 10
    kv.hold(1, 160)
    assert (kv.prefix_found_blocks, kv.prefix_sought_blocks) == (10, 20)


def test_prompts_sharing_nothing_find_nothing_under_preemption(costs):
    """Every hash id unique, in a cache small enough that sequences are preempted and recomputed: no request finds
    anything another request computed, so the hit rate is 0 (a recompute finding its own blocks again is no hit)."""
    block_tokens = 2 * BLOCK
    fresh = iter(range(10**6))
    unique = [[next(fresh) for _ in ids] for ids in _random_tree_paths(11, 120)]
    requests = _ids_trace(unique, gap_s=0.001, block_tokens=block_tokens)
    requests = replace(requests, output_tokens=np.full(len(requests), 64))  # decodes that outgrow the cache
    result = _serve(costs, requests, capacity_blocks=60)
    assert result.records.preemptions.sum() > 0
    assert result.prefix_found_tokens == 0 < result.prefix_sought_tokens
