"""Prefix caching beside vLLM's hybrid KV groups (sim/hybrid_kv.py, sim/kv_cache.py), worked by hand from vLLM's rules:
HybridKVCacheCoordinator.find_longest_cache_hit (the full group's hit, then the sliding group's within it, the full
cut back to it), SlidingWindowManager.find_longest_cache_hit (right to left, the last point whose cdiv(w - 1, B)
blocks before it are cached) and remove_skipped_blocks / BlockPool (blocks freed highest first, evicted in the order
freed).

Throughout: a window of 32 tokens, blocks of 16, so a hit point needs cdiv(31, 16) = 2 sliding blocks before it; a
group's requests share their first 100 tokens, 6 whole blocks."""

from __future__ import annotations

import pytest

from sim.hybrid_kv import KVGroups, sliding_hit_blocks
from sim.kv_cache import PagedKVCache, SlidingBlock

GROUPS = KVGroups(windows=(32, None), layers=2)


@pytest.mark.parametrize("cached,hit", [
    ({0, 1, 2, 3, 4, 5}, 6),  # blocks 4 and 5 before point 6
    ({0, 1, 2, 3, 4}, 5),  # 5 gone: blocks 3 and 4 before point 5
    ({0, 1, 2, 4, 5}, 6),  # a hole before the last two does not matter
    ({0, 1, 3, 5}, 2),  # no two in a row but 0 and 1: point 2
    ({0, 2, 4}, 1),  # no two in a row: the cached blocks from the first, one
    ({1, 2, 3, 5}, 4),
    (set(), 0),
])
def test_the_sliding_hit_within_six_full_blocks(cached, hit):
    assert sliding_hit_blocks(6, cached.__contains__, 32, 16) == hit


def test_a_window_of_one_block_or_less_needs_one_cached_block_before_the_point():
    """cdiv(16 - 1, 16) = 1 (a 16-token window); cdiv(17 - 1, 16) = 1; cdiv(18 - 1, 16) = 2."""
    assert sliding_hit_blocks(6, {0, 5}.__contains__, 16, 16) == 6
    assert sliding_hit_blocks(6, {0, 4}.__contains__, 17, 16) == 5
    assert sliding_hit_blocks(6, {0, 4}.__contains__, 18, 16) == 1


def _first_request_done(capacity_blocks: int) -> PagedKVCache:
    """Request 0, a 200-token prompt in one chunk, then a decode step, then finished.

    Its chunk holds 13 blocks in each group (nothing computed before it), 26. Computed, its first 6 blocks' KV is the
    group's prefix: 6 full and 6 sliding blocks cached, held by it. Its decode step (201 tokens, 200 computed) skips
    200 - 32 + 1 = 169 tokens, 10 whole blocks, of the sliding group: blocks 9 to 0 freed in that order (6 to 9 its
    own, gone; 5 to 0 cached, waiting); it holds 13 full and 3 sliding blocks, 16 of the 22 taken. Finished, its own
    blocks are freed and the prefix's 6 full blocks wait behind the sliding ones: 12 taken, none in use."""
    kv = PagedKVCache(capacity_blocks=capacity_blocks, block_tokens=16, groups=GROUPS)
    kv.assign(0, 0, shareable_tokens=100)
    kv.computed_before(0, 0)
    kv.hold(0, 200)
    assert (kv.used_blocks, kv.in_use_blocks) == (26, 26)
    kv.publish(0, 200)
    assert (kv.used_blocks, kv.in_use_blocks) == (26, 26)
    assert kv.grow_each([(0, 201)]) == 1
    assert (kv.used_blocks, kv.in_use_blocks) == (22, 16)
    kv.release(0, computed=201)
    assert (kv.used_blocks, kv.in_use_blocks, kv.evictable_blocks) == (12, 0, 12)
    return kv


def test_a_second_request_hits_where_two_sliding_blocks_precede_the_point():
    """Request 1 shares the 100-token prefix, a 120-token prompt: the full group has 6 blocks, the sliding group
    blocks 4 and 5 before point 6, a hit of 96 tokens. Computed from there (96 computed: 65 tokens, 4 blocks, before
    the window), it holds 8 full blocks (6 shared) and sliding blocks 4 to 7 (4 and 5 shared): 2 + 2 of its own, 16
    taken, the sliding blocks 0 to 3 still waiting."""
    kv = _first_request_done(30)
    kv.assign(1, 0, shareable_tokens=100)
    assert kv.cached_prefix(1, 120) == 96 and kv.chain_tokens(0, 100) == 96
    kv.computed_before(1, 96)
    assert kv.extra_blocks(1, 120) == 4
    kv.hold(1, 120)
    assert (kv.used_blocks, kv.in_use_blocks, kv.evictable_blocks) == (16, 12, 4)
    assert (kv.prefix_found_blocks, kv.prefix_sought_blocks) == (0 + 6, 6 + 6)  # request 0's, then 1's


def test_evictions_of_a_sliding_block_move_the_hit_back_and_cut_the_full_group():
    """Capacity 30, 12 taken (18 free): a request handed over with 48 of 160 tokens computed takes 10 full and 10 - 1
    sliding blocks, 19, evicting the first waiting block, the sliding block 5 (freed first at request 0's decode step,
    highest first). The hit falls to point 5 (blocks 3 and 4 before it), 80 tokens, though the full group still holds
    6 blocks. Another of 2 blocks (16 tokens) evicts sliding blocks 4 and 3: the hit falls to point 3 (blocks 1 and 2),
    48 tokens. Request 1, once the first leaves, holds 8 full blocks (3 shared) and, 48 computed (17 tokens before the
    window: block 0 skipped), sliding blocks 1 to 7 (1 and 2 shared): 5 + 5 of its own."""
    kv = _first_request_done(30)
    kv.assign(1, 0, shareable_tokens=100)
    kv.computed_before(9, 48)
    assert kv.extra_blocks(9, 160) == 19
    kv.hold(9, 160)
    assert kv.used_blocks == 30 and kv.evictable_blocks == 11
    assert kv.cached_prefix(1, 120) == 80
    kv.computed_before(8, 0)
    kv.hold(8, 16)
    assert kv.cached_prefix(1, 120) == 48 and kv.chain_tokens(0, 100) == 48
    assert kv.evictable_blocks == 6 + 3  # the full blocks, and sliding blocks 0 to 2
    kv.release(9)
    kv.computed_before(1, 48)
    assert kv.extra_blocks(1, 120) == 10
    kv.hold(1, 120)
    assert kv.prefix_found_blocks == 3
    # 2 (request 8) + 6 full (shared) + sliding 0 to 2 + 10 of request 1's own; in use: all but sliding block 0.
    assert (kv.used_blocks, kv.in_use_blocks) == (21, 20)


def test_a_recomputing_request_caches_the_sliding_blocks_again():
    """After the hit fell to point 5 (sliding block 5 evicted), request 1 computes blocks 5 on from 80 tokens: its
    sliding block 5 joins the node (the full block 5 is cached already), so request 2 hits at point 6 again."""
    kv = _first_request_done(30)
    kv.computed_before(9, 48)
    kv.hold(9, 160)
    kv.release(9)
    kv.assign(1, 0, shareable_tokens=100)
    assert kv.cached_prefix(1, 120) == 80
    kv.computed_before(1, 80)
    kv.hold(1, 120)
    kv.publish(1, 120)
    kv.assign(2, 0, shareable_tokens=100)
    assert kv.cached_prefix(2, 120) == 96


def test_a_full_group_never_hits_past_the_sliding_groups_point():
    """Sliding blocks 5 to 0 evicted (the first six waiting), the full group's 6 blocks cached: no point has two
    sliding blocks before it and block 0 is gone, so nothing is found; evicting also the full blocks leaves the node
    forgotten and the cache empty."""
    kv = _first_request_done(30)
    kv.computed_before(9, 0)
    kv.hold(9, 192)  # 12 + 12 blocks: 18 free, 6 evicted
    assert [key for key in kv._idle] == [0]
    kv.assign(1, 0, shareable_tokens=100)
    assert kv.cached_prefix(1, 120) == 0 and kv.chain_tokens(0, 100) == 0
    kv.computed_before(8, 0)
    kv.hold(8, 48)  # 3 + 3: the full blocks go too
    assert kv.used_blocks == 30 and kv.evictable_blocks == 0 and not kv._slides


def test_a_warm_prefix_holds_its_last_window_of_sliding_blocks():
    """prefix_tokens 100 warm: 6 full blocks and sliding blocks 4 and 5 (the window at point 6), 8 blocks a group;
    a cache of 20 warms two groups (16), the sliding blocks idle before the full ones. A request of group 0 hits all
    96 tokens; evicting sliding block 5 (the first waiting) leaves group 0 no hit (block 4 alone, block 0 gone)."""
    kv = PagedKVCache(capacity_blocks=20, block_tokens=16, prefix_tokens=100, prefix_groups=3, groups=GROUPS)
    assert kv.used_blocks == 16 and kv.evictable_blocks == 16
    assert list(kv._idle)[:3] == [SlidingBlock(0, 5), SlidingBlock(0, 4), 0]
    kv.assign(1, 0)
    assert kv.cached_prefix(1, 120) == 96
    kv.assign(9, 7, shareable_tokens=0)
    kv.computed_before(9, 0)
    kv.hold(9, 48)  # 3 + 3: 4 free, 2 evicted (sliding blocks 5 and 4 of group 0)
    assert kv.cached_prefix(1, 120) == 0
    kv.assign(2, 1)
    assert kv.cached_prefix(2, 120) == 96


def test_groups_other_than_one_full_and_one_sliding_share_no_prefix():
    """Gemma-3-like groups (five sliding, one full) are not the layout whose hits are modeled."""
    with pytest.raises(ValueError, match="a shared prefix beside one full and one sliding group only"):
        PagedKVCache(capacity_blocks=20, block_tokens=16, prefix_tokens=32,
                     groups=KVGroups(windows=(1024,) * 5 + (None,), layers=6))


def _preempted_after_its_first_decode_step() -> PagedKVCache:
    """Request 0, 100 tokens of its own (nothing shared), prefilled in one chunk (7 + 7 blocks), then a decode step
    (101 tokens, 100 computed: 69 tokens, 4 blocks, before the window; 7 + 3 blocks), then preempted by recompute. vLLM
    frees its sliding blocks, then its full ones, each highest first, and keeps cached those of its 6 whole blocks:
    full blocks 0 to 5 and the sliding blocks 4 and 5 its window held; block 6, partly filled, is gone. 8 blocks
    cached, none in use."""
    kv = PagedKVCache(capacity_blocks=40, block_tokens=16, groups=GROUPS)
    kv.assign(0, 5, shareable_tokens=0)
    kv.computed_before(0, 0)
    kv.hold(0, 100)
    assert kv.grow_each([(0, 101)]) == 1 and kv.used_blocks == 10
    kv.release_preempted(0, 100)
    assert (kv.used_blocks, kv.in_use_blocks, kv.evictable_blocks) == (8, 0, 8)
    return kv


def test_a_preempted_request_finds_its_blocks_again():
    """Re-admitted (101 tokens), it finds 6 full blocks and the sliding blocks 4 and 5 before point 6: 96 tokens; it
    holds them as its own again and adds block 6 in each group (96 computed: sliding blocks 4 to 6), 10 in all, as
    before it was preempted. (Before: beside hybrid groups a preempted request kept nothing cached.)"""
    kv = _preempted_after_its_first_decode_step()
    assert kv.cached_prefix(0, 101) == 96
    kv.computed_before(0, 96)
    assert kv.extra_blocks(0, 101) == 2
    kv.hold(0, 101)
    assert (kv.used_blocks, kv.in_use_blocks, kv.evictable_blocks) == (10, 10, 0)
    kv.release(0)
    assert kv.used_blocks == 0


def test_a_preempted_request_whose_window_block_is_evicted_recomputes_all():
    """Another request taking 33 of the 32 free blocks evicts the first waiting block, sliding block 5: block 4 alone
    precedes no point with two cached, and block 0's sliding block is gone, so nothing is found (the 6 full blocks
    still cached); re-admitted, its node is freed and it holds its 7 + 7 blocks afresh."""
    kv = _preempted_after_its_first_decode_step()
    kv.assign(9, 6, shareable_tokens=0)
    kv.computed_before(9, 47)
    kv.hold(9, 272)  # 17 full blocks, 17 - 1 sliding ((47 - 31) // 16 = 1 before its window)
    assert kv.used_blocks == 40 and kv.evictable_blocks == 1 + 6
    assert kv.cached_prefix(0, 101) == 0
    kv.release(9)
    kv.computed_before(0, 0)
    kv.hold(0, 101)
    assert (kv.used_blocks, kv.in_use_blocks) == (14, 14)
