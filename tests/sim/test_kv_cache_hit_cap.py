"""A prompt whose every token is cached still computes its last token, from which it samples; vLLM v1 looks up at
most num_tokens - 1 tokens and keeps the whole blocks of those (vllm/v1/core/kv_cache_manager.py get_computed_blocks,
vllm/v1/core/single_type_kv_cache_manager.py find_longest_cache_hit: max_length // block_size blocks), so it
recomputes the whole last block, and drops a block for an eagle-type draft after that cap. Hand counts in blocks of
16 tokens: sim/kv_cache.py PagedKVCache.cached_prefix."""

from __future__ import annotations

import pytest

from sim.kv_cache import PagedKVCache
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler


def _cache(drops: bool = False) -> PagedKVCache:
    """A warm cache holding a 64-token shared prefix: 4 whole blocks."""
    return PagedKVCache(capacity_blocks=100, block_tokens=16, prefix_tokens=64, drops_last_hit=drops)


@pytest.mark.parametrize(("prompt", "hit"), [(64, 48), (65, 64), (63, 48), (49, 48), (48, 32), (17, 16), (16, 0)])
def test_a_hit_keeps_the_whole_blocks_before_the_last_token(prompt, hit):
    """A 64-token prompt, all cached: of its first 63 tokens 3 whole blocks (48 tokens), not 63; a 65-token one
    looks up 64 tokens, 4 blocks; a 48-token one 47 tokens, 2 blocks; a 16-token one none."""
    assert _cache().cached_prefix(0, prompt) == hit


@pytest.mark.parametrize(("prompt", "hit"), [(64, 32), (65, 48), (200, 48)])
def test_an_eagle_draft_drops_a_block_after_the_cap(prompt, hit):
    """Capped first, then the last block dropped: a 64-token prompt keeps 3 - 1 = 2 blocks (32 tokens; dropping from
    the 4 cached first would leave 48); a longer one 4 - 1 = 3."""
    assert _cache(drops=True).cached_prefix(0, prompt) == hit


@pytest.mark.parametrize(("drops", "chunk", "found"), [(False, 16, 3), (True, 32, 2)])
def test_the_scheduler_recomputes_the_last_block_and_counts_the_kept_hit(drops, chunk, found):
    """A waiting 64-token prompt, fully cached: the chunked scheduler prefills its last block (16 tokens), or two
    where an eagle draft drops one, and the cache counts the 3 (2) blocks kept of the 4 sought, as vLLM's
    record_prefix_cache_stats counts the hit get_computed_blocks returns."""
    state = EngineState(kv=_cache(drops))
    state.waiting.append(Sequence(index=0, arrival_s=0.0, prompt=64, output=4))
    batch = make_scheduler("chunked", SchedulerLimits(chunk_tokens=512)).next_batch(state)
    assert [q for _, q in batch.prefills] == [chunk]
    assert (state.kv.prefix_found_blocks, state.kv.prefix_sought_blocks) == (found, 4)
