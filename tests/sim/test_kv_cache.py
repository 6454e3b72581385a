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
    # What a sequence need not compute: the shared tokens, but always its last prompt token (it samples from it), so
    # only the whole blocks before it (vLLM's get_computed_blocks: of num_tokens - 1 tokens, whole blocks).
    assert kv.cached_prefix(9, 100) == 32
    assert kv.cached_prefix(9, 33) == 32
    assert kv.cached_prefix(9, 32) == 16
    assert kv.cached_prefix(9, 1) == 0


def test_a_window_keeps_a_sharing_sequences_own_tokens_past_the_prefix():
    """A 64-token window beside a 64-token shared prefix (4 blocks of 16): a sequence of 96 tokens reads its last 64,
    of which its own 32 lie past the prefix (2 blocks); one of 200 tokens keeps 64 own tokens (4 blocks). The prefix
    shares only what the sequence would otherwise hold: never does sharing leave it holding none of its own tokens."""
    kv = PagedKVCache(capacity_blocks=20, block_tokens=16, prefix_tokens=64, window=64)
    assert [kv.blocks_for(t) for t in (64, 65, 96, 200)] == [0, 1, 2, 4]
    assert kv.blocks_for(200, shared=False) == 4  # a sequence not sharing it keeps its last 64 tokens
    kv.hold(0, 96)
    assert kv.used_blocks == 4 + 2
    kv.hold(0, 200)
    assert kv.used_blocks == 4 + 4 and kv.own_tokens(0, 200) == 64


def test_a_prefix_shorter_than_a_block_shares_nothing():
    kv = PagedKVCache(capacity_blocks=4, block_tokens=16, prefix_tokens=15)
    assert kv.prefix_blocks == 0 and kv.shared_tokens == 0 and kv.used_blocks == 0
    assert kv.cached_prefix(9, 100) == 0
    assert kv.blocks_for(17) == 2


@pytest.mark.parametrize("block_tokens", [0, -16])
def test_bad_block_size_is_refused(block_tokens):
    with pytest.raises(ValueError, match=f"block_tokens: found {block_tokens}, allowed: an integer >= 1"):
        PagedKVCache(capacity_blocks=10, block_tokens=block_tokens)


def test_a_prefix_larger_than_the_cache_is_refused():
    PagedKVCache(capacity_blocks=2, block_tokens=16, prefix_tokens=32)  # exactly the cache: allowed
    with pytest.raises(ValueError, match="prefix_tokens: found 48, allowed: at most the cache's 32 tokens"):
        PagedKVCache(capacity_blocks=2, block_tokens=16, prefix_tokens=48)


# ---- prefix groups: each group's prefix a chain of blocks, cached while it fits, idle chains evicted tail first ----

def test_a_warm_cache_holds_the_groups_prefixes_that_fit_in_group_order():
    """Three groups of 32-token prefixes (2 blocks each) in 5 blocks: groups 0 and 1 are cached (4 blocks), group 2's
    would need a sixth. Cached prefixes nobody shares are not in use, and are evictable."""
    kv = PagedKVCache(capacity_blocks=5, block_tokens=16, prefix_tokens=32, prefix_groups=3)
    for seq, group in enumerate((0, 1, 2)):
        kv.assign(seq, group)
    assert [kv.is_cached(seq) for seq in (0, 1, 2)] == [True, True, False]
    assert kv.used_blocks == 4 and kv.evictable_blocks == 4 and kv.in_use_blocks == 0 and kv.free_blocks == 1
    assert kv.cached_prefix(0, 100) == 32 and kv.cached_prefix(2, 100) == 0


def test_a_sequence_shares_its_groups_cached_prefix_and_leaves_it_cached():
    kv = PagedKVCache(capacity_blocks=10, block_tokens=16, prefix_tokens=32, prefix_groups=2)
    kv.assign(0, 1)
    kv.hold(0, 100)  # ceil(100 / 16) = 7 blocks, 2 of them group 1's prefix: 5 of its own
    assert kv.used_blocks == 4 + 5 and kv.in_use_blocks == 2 + 5
    assert (kv.prefix_sought_blocks, kv.prefix_found_blocks) == (2, 2)
    assert kv.own_tokens(0, 100) == 68
    kv.release(0)
    assert kv.used_blocks == 4 and kv.in_use_blocks == 0  # both prefixes still cached, neither shared


def test_room_is_made_from_the_least_recently_shared_chain_tail_first():
    """Groups 0 and 1 cached (4 of 5 blocks). Group 0 is shared and released after group 1 was, so group 1 is the least
    recently shared: a sequence of group 2 needing 3 blocks takes the free one, then group 1's two blocks, its last
    first; needing 2 it would take one, leaving group 1 its first block."""
    kv = PagedKVCache(capacity_blocks=5, block_tokens=16, prefix_tokens=32, prefix_groups=3)
    for seq, group in ((0, 1), (1, 0), (2, 2), (3, 2), (4, 1)):
        kv.assign(seq, group)
    kv.hold(0, 33)  # its prefix's 2 blocks and 1 of its own: the free one
    kv.release(0)
    kv.hold(1, 33)
    kv.release(1)
    assert kv.can_hold(2, 16 * 5) and not kv.can_hold(2, 16 * 5 + 1)  # 1 free + 4 evictable, never a sixth
    kv.hold(3, 32)  # 2 blocks: the free one and group 1's last
    assert kv.cached_prefix(4, 100) == 16 and kv.cached_prefix(1, 100) == 32
    kv.hold(2, 16)  # one more: group 1's first
    assert not kv.is_cached(4) and kv.is_cached(1) and kv.used_blocks == 2 + 3
    assert (kv.prefix_sought_blocks, kv.prefix_found_blocks) == (8, 4)


def test_the_blocks_a_sequence_computes_extend_its_groups_chain_block_by_block():
    """A miss computes its prompt in its own blocks; each whole block it computes within its 32 shareable tokens
    joins group 2's chain (no block is added or freed), which the next sequence of the group shares as far as it
    goes."""
    kv = PagedKVCache(capacity_blocks=5, block_tokens=16, prefix_tokens=32, prefix_groups=3)  # groups 0, 1 cached
    kv.assign(0, 2)
    kv.assign(1, 2)
    assert not kv.is_cached(0)
    kv.hold(0, 20)  # 2 blocks: the free one and group 0's last (group 0 the least recently cached)
    kv.publish(0, 20)  # one whole block computed
    assert kv.cached_prefix(1, 100) == 16 and kv.used_blocks == 5 and kv.own_tokens(0, 20) == 4
    kv.hold(0, 40)  # 3 blocks: 1 of them shared, 1 more needed: group 0's first
    kv.publish(0, 40)  # the second block joins the chain; the third lies past the shareable 32 tokens
    assert kv.cached_prefix(1, 100) == 32 and kv.own_tokens(0, 40) == 8 and kv.used_blocks == 2 + 2 + 1
    assert kv.extra_blocks(1, 40) == 1  # the next one holds only what lies past the chain


def test_a_finished_turn_leaves_its_whole_context_to_its_conversation():
    """A conversation's first turn (nothing to share) of 40 tokens, whose context the next turn continues: at its
    release its 2 whole blocks become the conversation's chain; the next turn, sharing its first 40 tokens, finds
    both."""
    kv = PagedKVCache(capacity_blocks=10, block_tokens=16)
    kv.assign(0, 5, shareable_tokens=0, continues=True)
    kv.assign(1, 5, shareable_tokens=40)
    kv.hold(0, 40)
    kv.release(0, computed=40)
    assert kv.used_blocks == 2 and kv.evictable_blocks == 2 and kv.cached_prefix(1, 60) == 32
    kv.hold(1, 60)
    assert kv.used_blocks == 2 + 2 and (kv.prefix_sought_blocks, kv.prefix_found_blocks) == (2, 2)


def test_a_swapped_out_sequence_keeps_its_prefix_cached():
    kv = PagedKVCache(capacity_blocks=5, block_tokens=16, prefix_tokens=32, prefix_groups=2)
    kv.assign(0, 0)
    kv.hold(0, 48)
    kv.release(0, keep_prefix=True)
    assert kv.evictable_blocks == 2  # group 1's only: group 0's is still shared by the swapped sequence
    kv.hold(0, 48)  # swapped back in: its own block again, sharing the prefix as before
    assert kv.used_blocks == 4 + 1 and kv.prefix_found_blocks == 2


def test_bad_group_count_is_refused():
    with pytest.raises(ValueError, match="prefix_groups: found 0, allowed: an integer >= 1"):
        PagedKVCache(capacity_blocks=10, block_tokens=16, prefix_tokens=32, prefix_groups=0)


# ---- a root every group's chain starts with: a system prompt every conversation shares ---------------------------

def _rooted(capacity_blocks: int = 20) -> PagedKVCache:
    """A 32-token system prompt (2 blocks) as the root, cached once however many conversations there are."""
    return PagedKVCache(capacity_blocks=capacity_blocks, block_tokens=16, prefix_tokens=32, root=True)


def _turn(kv: PagedKVCache, seq: int, conversation: int, shareable: int, tokens: int, continues: bool = True) -> None:
    """A turn of `tokens` tokens sharing `shareable` with its conversation, held and, where the next turn continues
    it, released with its context left cached."""
    kv.assign(seq, conversation, shareable_tokens=shareable, continues=continues)
    kv.hold(seq, tokens)
    kv.release(seq, computed=tokens)


def test_the_root_is_held_once_for_every_conversation():
    """Three first turns of 50 tokens each find the 2-block root (sought 2, found 2 each) and hold only their own 2
    blocks (tokens 33-50); the root is cached once: 2 + 3 x 2 blocks in use."""
    kv = _rooted()
    assert kv.used_blocks == 2 and kv.evictable_blocks == 2  # warm: the root alone, not a prefix a conversation
    for seq in range(3):
        kv.assign(seq, seq, shareable_tokens=32)
        kv.hold(seq, 50)
    assert kv.used_blocks == 2 + 3 * 2 and kv.in_use_blocks == 8
    assert (kv.prefix_sought_blocks, kv.prefix_found_blocks) == (6, 6)


def test_a_later_turn_finds_the_root_and_its_conversation_behind_it():
    """Conversation 7's first turn (50 tokens) leaves its 3 whole blocks, the root's 2 and 1 of its own; its next
    turn, sharing 49 tokens, finds all 3, and conversation 8's first turn the root's 2 only."""
    kv = _rooted()
    _turn(kv, 0, 7, shareable=32, tokens=50)
    assert kv.used_blocks == 3 and kv.cached_prefix(1, 100) == 32  # unassigned: it shares the system prompt
    kv.assign(1, 7, shareable_tokens=49)
    kv.assign(2, 8, shareable_tokens=32)
    assert kv.cached_prefix(1, 100) == 48 and kv.cached_prefix(2, 100) == 32
    kv.hold(1, 80)  # 5 blocks, 3 of them found
    assert kv.used_blocks == 3 + 2


def test_the_root_gives_up_blocks_only_once_no_conversation_follows_it():
    """Capacity 6: the root (2) and two conversations' blocks behind it (1 and 2), all idle. A new sequence of 5
    blocks of its own (no conversation, nothing shareable) needs 5 of the 6: the free one, then both conversations'
    blocks (least recently shared first), and only then 1 block of the root, its tail: conversation 8's next turn then
    finds nothing behind the half root, and the root's first block is still found."""
    kv = _rooted(capacity_blocks=6)
    _turn(kv, 0, 7, shareable=32, tokens=50)   # root + 1 block of conversation 7
    _turn(kv, 1, 8, shareable=32, tokens=66)   # root + 2 blocks of conversation 8 (the more recently shared)
    assert kv.used_blocks == 2 + 1 + 2 and kv.evictable_blocks == 5
    kv.assign(2, 99, shareable_tokens=0)
    kv.hold(2, 16 * 4)  # 4 blocks: the free one, conversation 7's, conversation 8's two; the root stays whole
    kv.assign(3, 8, shareable_tokens=65)
    assert kv.cached_prefix(3, 100) == 32 and kv.used_blocks == 6
    kv.assign(4, 99, shareable_tokens=0)
    kv.hold(4, 16)  # one more: only the root is left to give it, its tail
    kv.assign(5, 9, shareable_tokens=32)
    assert kv.cached_prefix(5, 100) == 16 and kv.used_blocks == 6


def test_a_missed_root_is_computed_again_and_its_conversation_grows_behind_it():
    """With the root evicted, a first turn computes the system prompt itself: its first 2 whole blocks rebuild the
    root, the ones after it within its context start its conversation, and the next turn finds both."""
    kv = _rooted(capacity_blocks=4)
    kv.assign(0, 99, shareable_tokens=0)
    kv.hold(0, 16 * 4)  # evicts the whole root
    kv.release(0)
    kv.assign(1, 3, shareable_tokens=32, continues=True)
    assert kv.cached_prefix(1, 100) == 0
    kv.hold(1, 50)
    kv.publish(1, 50)  # its 2 blocks within the system prompt rebuild the root
    kv.assign(2, 4, shareable_tokens=32)
    assert kv.cached_prefix(2, 100) == 32
    kv.release(1, computed=50)  # its third whole block is its conversation's, behind the root
    kv.assign(3, 3, shareable_tokens=49)
    assert kv.cached_prefix(3, 100) == 48 and kv.used_blocks == 3


# ---- which decoding sequences share which group's whole prefix (cascade attention's groups) -----------------------

def test_prefix_sharers_name_the_group_whose_whole_prefix_each_sequence_shares():
    """Three 2-block prefixes (32 tokens) cached warm: sequences of groups 0 and 1 share theirs whole. Group 4's is not
    cached: its first sequence computes it and then shares what it computed, while another of group 4 admitted before
    that computes its own copy (-1, read paged). A sequence that may share one block only (16 shareable tokens) shares
    less than the whole (-1); one never admitted shares nothing (-1)."""
    kv = PagedKVCache(capacity_blocks=60, block_tokens=16, prefix_tokens=32, prefix_groups=3)
    for seq, group in ((0, 0), (1, 0), (2, 1), (3, 4), (5, 4)):
        kv.assign(seq, group)
        kv.hold(seq, 100)
    kv.assign(6, 2, shareable_tokens=16)
    kv.hold(6, 100)
    assert kv.prefix_sharers([0, 1, 2, 3, 5, 6, 9]) == [0, 0, 1, -1, -1, -1, -1]
    kv.publish(3, 100)  # its first 2 blocks become group 4's chain, which it shares
    kv.publish(5, 100)  # group 4's chain was extended by another: its own copy stays its own
    kv.assign(7, 4)
    kv.hold(7, 100)  # admitted now, it finds group 4's whole chain
    assert kv.prefix_sharers([3, 5, 7]) == [4, -1, 4]
    kv.release(0)
    assert kv.prefix_sharers([0, 1]) == [-1, 0]


def test_prefix_sharers_under_a_root_are_one_group():
    """Conversations 3 and 8 both start with the 2-block system prompt: each shares the root whole, one prefix for
    both (group 0), whatever its conversation."""
    kv = _rooted()
    for seq, conversation in ((0, 3), (1, 8)):
        kv.assign(seq, conversation, shareable_tokens=32)
        kv.hold(seq, 50)
    assert kv.prefix_sharers([0, 1]) == [0, 0]


def test_no_prefix_has_no_sharers():
    kv = PagedKVCache(capacity_blocks=10, block_tokens=16)
    kv.hold(0, 20)
    assert kv.prefix_sharers([0]) == [-1]


def test_several_roots_each_hold_their_conversations_and_an_idle_one_goes_first():
    """Two 32-token system prompts (2 blocks each) cached warm in 6 blocks. Conversation 7, behind the second, leaves
    its first turn's 3 whole blocks (the root's 2 and 1 of its own). A 3-block sequence of no conversation then takes
    the free block and the first root, idle with nothing behind it, before anything of the second's: conversation 7's
    next turn still finds its 48 tokens, and a conversation behind the first root finds none."""
    kv = PagedKVCache(capacity_blocks=6, block_tokens=16, prefix_tokens=32, prefix_groups=2, root=True)
    assert kv.used_blocks == 4 and kv.evictable_blocks == 4
    kv.assign(0, 7, shareable_tokens=32, continues=True, root=1)
    assert kv.cached_prefix(0, 50) == 32
    kv.hold(0, 50)
    kv.release(0, computed=50)
    assert kv.used_blocks == 5
    kv.assign(1, 9, shareable_tokens=0)  # no conversation: nothing to share
    kv.hold(1, 48)
    kv.assign(2, 7, shareable_tokens=49, root=1)
    kv.assign(3, 8, shareable_tokens=32, root=0)
    assert kv.cached_prefix(2, 100) == 48 and kv.cached_prefix(3, 100) == 0


def _twins(**cache) -> tuple[PagedKVCache, PagedKVCache]:
    """Two caches alike: six sequences admitted (each a group's, sharing its group's cached prefix where one is)."""
    twins = [PagedKVCache(**cache) for _ in range(2)]
    for kv in twins:
        for seq in range(6):
            kv.assign(seq, seq % 2, shareable_tokens=8)
            kv.hold(seq, 9 + seq)
    return twins[0], twins[1]


@pytest.mark.parametrize("cache", [dict(capacity_blocks=40, block_tokens=4),
                                   dict(capacity_blocks=40, block_tokens=4, window=6),
                                   dict(capacity_blocks=44, block_tokens=4, prefix_tokens=8, prefix_groups=4)])
def test_grow_each_is_can_hold_then_hold_in_turn(cache):
    """grow_each(wants) grows each sequence as can_hold then hold do one by one, stopping at the first that cannot
    grow and changing nothing for it or those after it: a decode step's tokens for all six sequences, step by step
    until the cache runs out, match the two calls on a twin cache in blocks used and each sequence's own blocks, and
    the count it answers is the twin's. Cases: a plain cache, a window (its own blocks are not its tokens' blocks), and
    a cache whose idle cached prefixes of groups 2 and 3 are evicted for room, beside sequences sharing groups 0 and
    1's (their shared blocks are not their own)."""
    batched, single = _twins(**cache)
    tokens = {seq: 9 + seq for seq in range(6)}
    for step in range(60):
        wants = [(seq, tokens[seq] + 1) for seq in range(6)]
        expected = 0
        for seq, count in wants:
            if not single.can_hold(seq, count):
                break
            single.hold(seq, count)
            expected += 1
        grown = batched.grow_each(wants)
        assert grown == expected, (step, wants)
        assert batched.used_blocks == single.used_blocks and batched.in_use_blocks == single.in_use_blocks
        for seq in range(6):
            assert batched.extra_blocks(seq, 200) == single.extra_blocks(seq, 200), (step, seq)
        if grown < len(wants):
            break
        tokens.update(wants)
    # Without a window the cache runs out after a dozen steps, a new block every fourth token of each sequence.
    assert (grown < len(wants)) == ("window" not in cache) and step > 10
