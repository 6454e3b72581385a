"""vLLM v1's hybrid KV cache groups (sim/hybrid_kv.py) and a paged cache holding blocks in each, by hand."""

from __future__ import annotations

import pytest

from sim.hybrid_kv import KVGroups, kv_groups
from sim.kv_cache import PagedKVCache
from workloads.model_config import load_model_config

GPT_OSS_20B = KVGroups(windows=(128, None), layers=12)


@pytest.mark.parametrize("windows,groups", [
    ((128, None) * 12, GPT_OSS_20B),  # gpt-oss-20b: 12 sliding, 12 full
    ((128, None) * 18, KVGroups(windows=(128, None), layers=18)),  # gpt-oss-120b
    # vLLM's docstring case, gpt-oss-20b with an EAGLE layer: 12 sliding + 13 full, under 1.5 x: two groups of 13.
    ((128, None) * 12 + (None,), KVGroups(windows=(128, None), layers=13)),
    # Gemma-3-like 5:1 (30 sliding, 6 full): groups of 6, five sliding.
    (((1024,) * 5 + (None,)) * 6, KVGroups(windows=(1024,) * 5 + (None,), layers=6)),
    ((None,) * 4, None), ((64,) * 4, None),  # one kind of layer: one group, paged as it is
])
def test_groups_as_vllm_splits_the_layers(windows, groups):
    """_get_kv_cache_groups_uniform_page_size (vllm/v1/core/kv_cache_utils.py): groups of the fewest layers of a kind,
    or of the most where that is under 1.5 x the fewest."""
    assert kv_groups(windows) == groups


def test_gpt_oss_20b_at_4096_tokens_by_hand():
    """Block 16: the full group holds 4,096 / 16 = 256 blocks; the sliding group skips the 4,096 - 128 = 3,968 tokens
    before the next token's window, 248 whole blocks, and holds 8. 264 blocks of 16 tokens x 12 layers x 2,048 B (8
    KV heads x 64 x K and V x 2 bytes) are the (12 x 4,096 + 12 x 128) x 2,048 B its config's KV takes. One token more:
    257 full blocks, 257 - 248 sliding. (A decode step's count: all tokens but the last computed.)"""
    assert GPT_OSS_20B.blocks(4096, 16) == 256 + 8
    assert GPT_OSS_20B.blocks(4097, 16) == 257 + 9
    assert GPT_OSS_20B.blocks(100, 16) == 2 * 7  # inside the window both groups hold every token
    # Prefilled in one chunk (nothing computed before it), the sliding group holds every block of the prompt too,
    # 248 of them given back at the first decode step.
    assert GPT_OSS_20B.blocks(4096, 16, computed=0) == 2 * 256
    assert GPT_OSS_20B.blocks(4097, 16, computed=4096) == 257 + 9
    config = load_model_config("gpt-oss-20b")
    assert kv_groups(config.layer_windows) == GPT_OSS_20B
    assert 264 * 16 * 12 * 2048 == config.kv_bytes_per_sequence(4096) == 103_809_024
    assert GPT_OSS_20B.tokens(4096) == 4096 + 128


def test_the_most_a_request_holds_at_once():
    """gpt-oss-20b, 4,096 tokens, chunks of 2,048: 256 full blocks and cdiv(127 + 2,048, 16) + 1 = 137 sliding ones
    (vLLM's SlidingWindowSpec.max_memory_usage_bytes); chunks of 8,192 reach every sliding block (256); a 100-token
    request holds its 7 blocks in each group."""
    assert GPT_OSS_20B.most_blocks(4096, 16, 2048) == 256 + 137
    assert GPT_OSS_20B.most_blocks(4096, 16, 8192) == 2 * 256
    assert GPT_OSS_20B.most_blocks(100, 16, 2048) == 2 * 7


def test_windowed_groups_never_hold_more_than_full_layers():
    """Bytes held (blocks x layers a block) never exceed those of every layer full, for any length, at a decode step
    or in a prefill chunk after any computed tokens."""
    for tokens in range(1, 5000):
        for computed in (0, tokens // 2, tokens - 1):
            assert GPT_OSS_20B.blocks(tokens, 16, computed) * 12 <= -(-tokens // 16) * 24


def test_a_paged_cache_holds_each_groups_blocks():
    """A cache of 40 blocks of 16 tokens, a full group and one of a 64-token window, a 300-token prompt in chunks of
    100: the first holds 7 + 7 blocks; the second, after 100 computed (37 tokens, 2 whole blocks, before the next
    token's window), 13 + 11; the third 19 + (19 - 8); its first decode step, after 300, 19 + (19 - 14) = 24, the
    sliding group giving back what the window has left. A request handed over with 300 tokens computed elsewhere takes
    24 blocks too and waits (24 + 24 > 40), a fresh 100-token prompt (14) fits; released, the first frees them all.
    Its KV moves as 301 + 64 tokens' worth of a group's layers."""
    kv = PagedKVCache(capacity_blocks=40, block_tokens=16, groups=KVGroups(windows=(64, None), layers=12))
    kv.hold(0, 100)
    assert kv.used_blocks == 14
    for tokens, used in ((200, 24), (300, 30), (301, 24), (302, 24)):
        assert kv.grow_each([(0, tokens)]) == 1 and kv.used_blocks == used, tokens
    assert kv.own_tokens(0, 301) == 301 + 64
    kv.computed_before(1, 300)
    assert kv.extra_blocks(1, 301) == 24 and not kv.can_hold(1, 301)
    assert kv.extra_blocks(2, 100) == 14 and kv.can_hold(2, 100)
    kv.release(0)
    assert kv.used_blocks == 0 and kv.can_hold(1, 301)

