"""A draft that reads the target's hidden states (vLLM's use_eagle: eagle, eagle3, mtp) makes vLLM v1 drop the last
block of each prefix hit, recomputing it (vllm/v1/core/single_type_kv_cache_manager.py find_longest_cache_hit:
computed_blocks.pop()): sim/kv_cache.py PagedKVCache(drops_last_hit), set for spec_draft mtp
(sim/speculative.py drops_last_hit). Hand counts in blocks of 16 tokens."""

from __future__ import annotations

import pytest

from sim.kv_cache import PagedKVCache
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler
from sim.speculative import MEDUSA, MTP, NGRAM, drops_last_hit


def _cache(drops: bool) -> PagedKVCache:
    """A warm cache holding a 100-token shared prefix's whole blocks: 6 blocks, 96 tokens."""
    return PagedKVCache(capacity_blocks=100, block_tokens=16, prefix_tokens=100, drops_last_hit=drops)


@pytest.mark.parametrize(("drops", "cached"), [(False, 96), (True, 80)])
def test_a_hit_of_six_blocks_keeps_five_where_the_draft_reads_hidden_states(drops, cached):
    """100 shared tokens in blocks of 16: 6 whole blocks (96 tokens) cached; dropping the last, 5 (80 tokens)."""
    kv = _cache(drops)
    assert kv.cached_prefix(0, 200) == cached


@pytest.mark.parametrize(("drops", "chunk", "found"), [(False, 200 - 96, 6), (True, 200 - 80, 5)])
def test_the_scheduler_prefills_past_the_kept_hit_and_counts_it(drops, chunk, found):
    """A waiting 200-token prompt behind the prefix: the chunked scheduler (budget 512) prefills 200 - 96 = 104
    tokens, or 200 - 80 = 120 where the hit's last block is dropped, and the cache counts the 6 or 5 blocks found
    (vLLM records the hit it keeps)."""
    state = EngineState(kv=_cache(drops))
    state.waiting.append(Sequence(index=0, arrival_s=0.0, prompt=200, output=4))
    batch = make_scheduler("chunked", SchedulerLimits(chunk_tokens=512)).next_batch(state)
    assert [q for _, q in batch.prefills] == [chunk]
    assert state.kv.prefix_found_blocks == found


def test_a_prompt_within_one_block_finds_nothing_to_drop():
    """No whole block cached (a 15-token prefix): nothing is found, nothing dropped."""
    kv = PagedKVCache(capacity_blocks=100, block_tokens=16, prefix_tokens=15, drops_last_hit=True)
    assert kv.cached_prefix(0, 200) == 0


def test_only_a_draft_on_the_targets_hidden_states_drops_it():
    """vLLM's use_eagle() names eagle, eagle3 and mtp: of ours the MTP module; not a draft model (vLLM's
    draft_model), Medusa heads or the n-gram lookup."""
    assert drops_last_hit(MTP)
    assert not any(drops_last_hit(draft) for draft in (MEDUSA, NGRAM, "llama-68m", ""))
