"""A sequence preempted by recompute leaves its whole blocks in the prefix cache, as vLLM v1 does
(vllm/v1/core/kv_cache_manager.py, commit 003df296 of vllm-project/vllm: KVCacheManager.free hands a request's blocks to
BlockPool.free_blocks in reverse order, "so that the tail blocks are evicted first", at the end of the free queue that
allocation takes blocks from the front of; get_computed_blocks then finds the whole blocks still cached, at most
num_tokens - 1 tokens). Worked by hand with 16-token blocks."""

from __future__ import annotations

import random

from sim.kv_cache import PagedKVCache
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler


def test_a_preempted_sequence_finds_its_whole_blocks_and_recomputes_past_them():
    """6 blocks: 0 holds 40 tokens (3 blocks, 2 whole), 1 holds 48 (3). 0 preempted with 40 computed: its 2 whole
    blocks stay cached (used, not in use), its partial third is freed. Admitted again at once to recompute its 41 tokens
    (40 and the token it generated last), it finds 32 and holds 3 blocks again: the 2 it left and 1 new."""
    kv = PagedKVCache(capacity_blocks=6, block_tokens=16)
    kv.hold(0, 40)
    kv.hold(1, 48)
    kv.release_preempted(0, 40)
    assert (kv.used_blocks, kv.in_use_blocks, kv.free_blocks) == (5, 3, 1)
    assert kv.cached_prefix(0, 41) == 32
    assert kv.can_hold(0, 48) and not kv.can_hold(0, 49)  # 2 found + 1 free, never a fourth
    kv.hold(0, 41)
    assert (kv.used_blocks, kv.in_use_blocks, kv.free_blocks) == (6, 6, 0)
    kv.release(0)  # finished: every block of its own is freed, none left cached
    assert kv.used_blocks == 3 and kv.cached_prefix(0, 100) == 0


def test_it_recomputes_at_least_its_last_token():
    """0 holds 32 tokens (2 whole blocks), preempted with all 32 computed and 32 to compute again (a prefill preempted
    with its prompt done): it finds the whole blocks of the 31 before its last, one (16 tokens), and recomputes the
    second to sample from its last token (vLLM v1's get_computed_blocks: whole blocks of num_tokens - 1); with 33 to
    compute, both (32)."""
    kv = PagedKVCache(capacity_blocks=4, block_tokens=16)
    kv.hold(0, 32)
    kv.release_preempted(0, 32)
    assert kv.cached_prefix(0, 32) == 16 and kv.cached_prefix(0, 33) == 32


def test_blocks_another_sequence_needs_in_between_are_evicted_least_recently_freed_first_tail_first():
    """6 blocks: 0, 1 and 2 hold 32 tokens each (2 whole blocks). 0 is preempted, then 1: their 4 blocks stay cached,
    0's freed first. 3, admitted with 16 tokens, takes 0's last block; grown to 48 tokens, 0's first and 1's last; to
    64, 1's first. What each finds shrinks accordingly: 0 from 32 to 16 to 0 tokens, 1 from 32 to 16 to 0."""
    kv = PagedKVCache(capacity_blocks=6, block_tokens=16)
    for seq in (0, 1, 2):
        kv.hold(seq, 32)
    kv.release_preempted(0, 32)
    kv.release_preempted(1, 32)
    assert [kv.cached_prefix(seq, 33) for seq in (0, 1)] == [32, 32]
    kv.hold(3, 16)
    assert [kv.cached_prefix(seq, 33) for seq in (0, 1)] == [16, 32]
    kv.hold(3, 48)
    assert [kv.cached_prefix(seq, 33) for seq in (0, 1)] == [0, 16]
    kv.hold(3, 64)
    assert [kv.cached_prefix(seq, 33) for seq in (0, 1)] == [0, 0]
    assert kv.used_blocks == 6 and kv.evictable_blocks == 0


def test_its_own_blocks_follow_its_groups_chain_and_go_before_it():
    """A 32-token group prefix (2 blocks) cached warm in 8 blocks; 0 of the group holds 60 tokens: the group's 2 blocks
    and 2 of its own (1 whole). Preempted with 60 computed: the chain and its whole block stay cached, the chain ahead
    of it, and it finds 48 tokens. 1, of no group's prefix, needs the free blocks and then 1 more: 0's own block goes
    first, though the chain was freed with it (a node gives up blocks only once none follows it), then the chain's
    tail. Admitted again, 0 shares the chain's one block left and computes the rest in its own."""
    kv = PagedKVCache(capacity_blocks=8, block_tokens=16, prefix_tokens=32)
    kv.assign(0, 0)
    kv.assign(1, 1, shareable_tokens=0)
    kv.hold(0, 60)
    assert (kv.prefix_sought_blocks, kv.prefix_found_blocks) == (2, 2)
    kv.release_preempted(0, 60)
    assert (kv.used_blocks, kv.in_use_blocks) == (3, 0) and kv.cached_prefix(0, 61) == 48
    kv.hold(1, 16 * 5)  # the 5 free blocks
    assert kv.cached_prefix(0, 61) == 48
    kv.hold(1, 16 * 6)  # 0's own block
    assert kv.cached_prefix(0, 61) == 32
    kv.hold(1, 16 * 7)  # the chain's tail
    assert kv.cached_prefix(0, 61) == 16
    kv.release(1)
    kv.hold(0, 61)  # the chain's first block shared, 3 of its own
    assert (kv.used_blocks, kv.in_use_blocks) == (4, 4)
    # A re-admission's hits are not a first admission's (vLLM v1 counts them apart, PrefixCacheStats.preempted_*).
    assert (kv.prefix_sought_blocks, kv.prefix_found_blocks) == (2, 2)
    kv.release(0)
    assert kv.used_blocks == 1 and kv.cached_prefix(0, 100) == 16  # the chain's block, idle; nothing of its own


def test_a_preempted_decode_is_admitted_again_past_what_it_finds():
    """The chunked scheduler (vLLM v1), 5 blocks, budget 8. Decode 0 (32 tokens, 2 blocks) needs a third block for its
    next token; decode 1 (40 tokens, 3 blocks) is the newest: it is preempted, its 2 whole blocks stay cached and its
    third goes to 0. Once 0 is done, 1 is admitted again to recompute its 41 tokens from the 32 it finds: a chunk of
    8, then 1. Before, it recomputed all 41 (its first chunk started at 0)."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=5, block_tokens=16))
    scheduler = make_scheduler("chunked", SchedulerLimits(max_seqs=8, chunk_tokens=8, watermark=0.0))
    decodes = []
    for index, context in ((0, 32), (1, 40)):
        seq = Sequence(index=index, arrival_s=float(index), prompt=context, output=20)
        seq.computed, seq.generated = context, 1
        state.kv.hold(index, context)
        state.running.append(seq)
        decodes.append(seq)
    first, newest = decodes
    batch = scheduler.next_batch(state)
    assert batch.decodes == [first] and list(state.waiting) == [newest]
    state.kv.release(first.index)  # 0 finishes
    state.running.remove(first)
    batch = scheduler.next_batch(state)
    assert [(seq.index, tokens) for seq, tokens in batch.prefills] == [(1, 8)]
    assert (newest.computed, newest.target) == (32, 41)


def test_a_larger_cache_never_finds_less_of_a_preempted_sequence():
    """An invariant: two caches, one with more blocks, under the same seeded admissions, growths, preemptions,
    re-admissions and finishes (each applied where both caches hold it): blocks are evicted only for room, the least
    recently freed first, so the larger cache keeps at least what the smaller keeps of every preempted sequence."""
    rng = random.Random(7)
    small, big = (PagedKVCache(capacity_blocks=blocks, block_tokens=16, prefix_tokens=32, prefix_groups=2)
                  for blocks in (12, 17))
    tokens: dict[int, int] = {}  # a sequence held -> its tokens
    preempted: dict[int, int] = {}  # a preempted sequence -> the tokens it recomputes
    found = [0, 0]

    def hold(seq: int, want: int) -> bool:
        """Hold `want` tokens of `seq` in both caches, where both can."""
        if not (small.can_hold(seq, want) and big.can_hold(seq, want)):
            return False
        small.hold(seq, want)
        big.hold(seq, want)
        tokens[seq] = want
        return True

    for step in range(3000):
        op = rng.choice(["admit", "grow", "preempt", "readmit", "finish"])
        if op == "admit":
            seq, group = step, rng.randint(0, 2)  # group 2's prefix is not cached warm
            small.assign(seq, group)
            big.assign(seq, group)
            hold(seq, rng.randint(1, 80))
        elif op == "grow" and tokens:
            seq = rng.choice(sorted(tokens))
            hold(seq, tokens[seq] + rng.randint(1, 24))
        elif op == "preempt" and tokens:
            seq = rng.choice(sorted(tokens))
            computed = tokens.pop(seq) - rng.randint(0, 1)  # a decode's last token may be held, not yet computed
            small.release_preempted(seq, computed)
            big.release_preempted(seq, computed)
            preempted[seq] = computed + 1
        elif op == "readmit" and preempted:
            seq = rng.choice(sorted(preempted))
            finds = [kv.cached_prefix(seq, preempted[seq]) for kv in (small, big)]
            if hold(seq, preempted[seq]):
                found = [total + more for total, more in zip(found, finds, strict=True)]
                del preempted[seq]
        elif op == "finish" and tokens:
            seq = rng.choice(sorted(tokens))
            del tokens[seq]
            small.release(seq)
            big.release(seq)
        for kv in (small, big):
            assert kv.in_use_blocks <= kv.used_blocks <= kv.capacity_blocks
        for seq, want in preempted.items():
            assert big.cached_prefix(seq, want) >= small.cached_prefix(seq, want)
    assert 0 < found[0] < found[1]  # the run preempted under pressure, and the larger cache found more
