"""PagedKVCache: block accounting checked against hand counts (a sequence of t tokens holds ceil(t / block) blocks)."""

from __future__ import annotations

import pytest

from sim.kv_cache import PagedKVCache


def test_blocks_are_the_ceiling_of_tokens_over_block_size():
    kv = PagedKVCache(capacity_blocks=10, block_tokens=16)
    # 0 tokens: none; 1..16: one block; 17: two; 48: three; 49: four.
    assert [kv.blocks_for(t) for t in (0, 1, 16, 17, 48, 49)] == [0, 1, 1, 2, 3, 4]
    assert kv.used_blocks == 0 and kv.free_blocks == 10 and kv.shared_tokens == 0


def test_hold_grows_by_the_missing_blocks_only_and_release_frees_them():
    kv = PagedKVCache(capacity_blocks=10, block_tokens=16)
    kv.hold(0, 20)  # ceil(20 / 16) = 2 blocks
    assert kv.used_blocks == 2 and kv.free_blocks == 8
    assert kv.extra_blocks(0, 32) == 0  # 32 tokens still fit in its 2 blocks
    assert kv.extra_blocks(0, 33) == 1
    kv.hold(0, 32)
    assert kv.used_blocks == 2
    kv.hold(0, 33)  # a third block
    kv.hold(1, 1)  # another sequence: one block
    assert kv.used_blocks == 4
    kv.hold(0, 10)  # holding fewer tokens than it has never shrinks a sequence
    assert kv.used_blocks == 4
    kv.release(0)
    assert kv.used_blocks == 1 and kv.free_blocks == 9
    kv.release(0)  # releasing again (or an unknown sequence) frees nothing
    kv.release(7)
    assert kv.used_blocks == 1
    kv.release(1)
    assert kv.used_blocks == 0


def test_can_hold_leaves_the_reserve_free():
    kv = PagedKVCache(capacity_blocks=10, block_tokens=16)
    kv.hold(0, 16 * 6)  # 6 blocks used, 4 free
    assert kv.can_hold(1, 16 * 4)  # exactly the 4 free blocks
    assert not kv.can_hold(1, 16 * 4 + 1)  # a fifth block
    assert kv.can_hold(1, 16 * 3, reserve_blocks=1)  # 3 blocks, leaving 1 free
    assert not kv.can_hold(1, 16 * 3 + 1, reserve_blocks=1)  # 4 blocks would leave none
    assert kv.can_hold(0, 16 * 10)  # sequence 0 grows by 4 to 10 blocks: the whole cache
    assert not kv.can_hold(0, 16 * 10, reserve_blocks=1)


def test_holding_past_the_free_blocks_is_refused():
    kv = PagedKVCache(capacity_blocks=3, block_tokens=16)
    kv.hold(0, 40)  # 3 blocks
    with pytest.raises(RuntimeError, match="needs 1 more blocks, 0 free"):
        kv.hold(1, 1)
    assert kv.used_blocks == 3  # nothing changed


def test_a_shared_prefix_is_held_once_in_whole_blocks():
    """A 40-token system prompt with 16-token blocks shares 2 whole blocks (32 tokens); its last 8 tokens are
    each sequence's own. The shared blocks count as used from the start, once for all sequences."""
    kv = PagedKVCache(capacity_blocks=12, block_tokens=16, prefix_tokens=40)
    assert kv.prefix_blocks == 2 and kv.shared_tokens == 32
    assert kv.used_blocks == 2 and kv.free_blocks == 10
    # A sequence of 100 tokens: ceil(100 / 16) = 7 blocks, 2 of them shared -> 5 of its own.
    assert kv.blocks_for(100) == 5
    assert kv.blocks_for(32) == 0 and kv.blocks_for(33) == 1
    kv.hold(0, 100)
    kv.hold(1, 100)
    assert kv.used_blocks == 2 + 5 + 5 and kv.free_blocks == 0
    kv.release(0)
    kv.release(1)
    assert kv.used_blocks == 2  # the prefix stays cached
    # What a sequence need not compute: the shared tokens, but always its last prompt token (it samples from it).
    assert kv.cached_prefix(100) == 32
    assert kv.cached_prefix(33) == 32
    assert kv.cached_prefix(32) == 31
    assert kv.cached_prefix(1) == 0


def test_a_prefix_shorter_than_a_block_shares_nothing():
    kv = PagedKVCache(capacity_blocks=4, block_tokens=16, prefix_tokens=15)
    assert kv.prefix_blocks == 0 and kv.shared_tokens == 0 and kv.used_blocks == 0
    assert kv.cached_prefix(100) == 0
    assert kv.blocks_for(17) == 2


@pytest.mark.parametrize("block_tokens", [0, -16])
def test_bad_block_size_is_refused(block_tokens):
    with pytest.raises(ValueError, match=f"block_tokens: found {block_tokens}, allowed: an integer >= 1"):
        PagedKVCache(capacity_blocks=10, block_tokens=block_tokens)


def test_a_prefix_larger_than_the_cache_is_refused():
    PagedKVCache(capacity_blocks=2, block_tokens=16, prefix_tokens=32)  # exactly the cache: allowed
    with pytest.raises(ValueError, match="prefix_tokens: found 48, allowed: at most the cache's 32 tokens"):
        PagedKVCache(capacity_blocks=2, block_tokens=16, prefix_tokens=48)
