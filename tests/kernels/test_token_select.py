"""Dynamic top-k token selection (kernels/token_select.py) and layer skipping (kernels/early_exit.py): the prices by
hand, and the invariants (a smaller budget never reads more; selection never holds less; fewer layers never more
work)."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.early_exit import decode_kv_share, kept_layers, skip_layers
from kernels.kernel import Kernel, KernelKind
from kernels.kv_policy import KVPolicy, decode_reads, fetched_tokens, flops_per_read, kept_tokens
from kernels.table import KernelTable
from kernels.token_select import (
    DOUBLE_SPARSITY,
    QUEST,
    TIDAL_DECODE,
    TOKEN_SELECT,
    TokenSelection,
    token_selection,
)

# Llama-2-7B's attention: 32 layers, 32 query and 32 KV heads of 128 dims, a 16-bit cache.
LLAMA2 = dict(layers=32, heads=32, kv_heads=32, head_dim=128, kv_element_B=2.0)


def test_quest_by_hand():
    """Per cached token and layer the cache holds 2 x 128 x 2 B x 32 heads = 16,384 B. Quest's page summary is two
    key vectors per 16 tokens: 1/16 of it. Scores: one per page and query head, 32/16 = 2 per token, written once and
    read by 2 radix passes at 2 B: 12 B, 12/16384 of the cache. Scoring: 4 ops per channel and page against
    attention's 4 FLOPs per channel and token: 1/16; top-k: 2 scores x 2 passes per 4 x 128 x 32 FLOPs. Two of 32
    layers stay dense."""
    sel = token_selection(QUEST, 1 / 16, **LLAMA2)
    selecting = 1 / 16 + 1 / 16 + 12 / 16384
    assert sel.bytes_scale == pytest.approx(2 / 32 + 30 / 32 * selecting)
    assert sel.flops_scale == pytest.approx(2 / 32 + 30 / 32 * (1 / 16 + 1 / 16 + 4 / (4 * 128 * 32)))
    assert sel.held_scale == pytest.approx(1 + 1 / 16)


def test_double_sparsity_by_hand():
    """Labels of 16 of 128 key channels at 2 B: 32 B of a token's 512 B per head, 1/16. One score per token and
    query head: 32 x 2 B x (1 write + 2 reads) = 192 B per 16,384 B. Scoring: 2 x 16 FLOPs per 4 x 128 (1/16),
    top-k 32 x 2 per 4 x 128 x 32. Every layer selects. 4-bit labels of 8 channels: 8 x 0.5 B per 512 B, 1/128."""
    sel = token_selection(DOUBLE_SPARSITY, 1 / 16, **LLAMA2)
    assert sel.bytes_scale == pytest.approx(1 / 16 + 1 / 16 + 192 / 16384)
    assert sel.flops_scale == pytest.approx(1 / 16 + 1 / 16 + 64 / (4 * 128 * 32))
    assert sel.held_scale == pytest.approx(1 + 1 / 16)
    small = token_selection(DOUBLE_SPARSITY, 1 / 16, **LLAMA2, label_share=1 / 16, label_element_B=0.5)
    assert small.summary_share == pytest.approx(1 / 128)


def test_tidal_decode_by_hand():
    """TidalDecode's 32-layer Llama: layers 0 and 1 attend to everything, layers 2 and 12 too and choose the tokens
    the other 28 read. Its top-k: 2 selecting layers x 32 query heads x 2 B x (1 write + 2 reads) = 384 B per
    16,384 B of a layer's cache, spread over the 28 sparse layers. No summary: the cache held is the cache."""
    sel = token_selection(TIDAL_DECODE, 1 / 16, **LLAMA2)
    assert sel.bytes_scale == pytest.approx(4 / 32 + 28 / 32 * (1 / 16 + 384 / 16384 / 28))
    assert sel.flops_scale == pytest.approx(4 / 32 + 28 / 32 * (1 / 16 + 2 * 32 * 2 / 28 / (4 * 128 * 32)))
    assert sel.held_scale == 1.0
    # A model of at most four layers is dense throughout: it reads everything and selects nothing.
    tiny = token_selection(TIDAL_DECODE, 1 / 16, **(LLAMA2 | dict(layers=2)))
    assert tiny.bytes_scale == pytest.approx(1.0) and tiny.flops_scale == pytest.approx(1.0)


# Qwen2-7B's attention (TokenSelect's model): 28 layers, 28 query and 4 KV heads of 128 dims, a 16-bit cache.
QWEN2 = dict(layers=28, heads=28, kv_heads=4, head_dim=128, kv_element_B=2.0)


def test_token_select_by_hand():
    """Per cached token and layer the cache holds 2 x 128 x 2 B x 4 heads = 2,048 B; scoring reads every key, half
    of it, and holds nothing besides. Scores: 28 per token (one per query head) at 2 B, written, read and written by
    the softmax, read by the head sum: 4 x 28 x 2 = 224 B; the voted score, written once and read by 2 radix passes:
    6 B. Scoring: a 128-channel dot product, 2 x 128 FLOPs per 4 x 128 of attention; top-k: 2 per 4 x 128 x 28."""
    sel = token_selection(TOKEN_SELECT, 1 / 64, **QWEN2)
    assert sel.bytes_scale == pytest.approx(1 / 64 + 1 / 2 + 230 / 2048)
    assert sel.flops_scale == pytest.approx(1 / 64 + 1 / 2 + 2 / (4 * 128 * 28))
    assert sel.held_scale == 1.0
    assert sel.cache_scale == pytest.approx(1 / 64 + 1 / 2)  # every key, and the picked keys and values again


@pytest.mark.parametrize("method", [QUEST, DOUBLE_SPARSITY, TIDAL_DECODE, TOKEN_SELECT])
def test_reusing_a_selection_scores_less_and_holds_the_same(method):
    """A step that reuses the last selection (TokenSelect's Selection Cache) reads no summary and scores nothing: with
    9 of 10 steps reusing, the overheads are a tenth; the selected share is read every step; the summary held is the
    same. More reuse never reads more."""
    plain = token_selection(method, 1 / 16, **LLAMA2)
    reused = token_selection(method, 1 / 16, **LLAMA2, reuse=0.9)
    assert reused.overhead_bytes == pytest.approx(0.1 * plain.overhead_bytes)
    assert reused.overhead_flops == pytest.approx(0.1 * plain.overhead_flops)
    assert reused.share == plain.share and reused.held_scale == plain.held_scale
    reads = [token_selection(method, 1 / 16, **LLAMA2, reuse=r).bytes_scale for r in (0.0, 0.3, 0.6, 0.95)]
    assert all(a >= b for a, b in zip(reads, reads[1:], strict=False))


@pytest.mark.parametrize("reuse", [-0.1, 1.0, 1.5])
def test_a_reuse_that_never_scores_is_refused(reuse):
    with pytest.raises(ValueError, match=r"reuse: found .*allowed: a fraction in \[0, 1\)"):
        token_selection(TOKEN_SELECT, 1 / 16, **LLAMA2, reuse=reuse)


def test_what_a_step_fetches_by_hand():
    """Of the 1 + 1/16 Double Sparsity holds per cached token, a step touches its labels and the 1/16 it picks; with
    a window (keeping 320 of 1,000 tokens) the share applies to what is kept. Without a selection: all that is held."""
    sel = token_selection(DOUBLE_SPARSITY, 1 / 16, **LLAMA2)
    assert fetched_tokens(1000, KVPolicy(selection=sel)) == pytest.approx(1000 * (1 / 16 + 1 / 16))
    assert fetched_tokens(1000, KVPolicy(window=320, selection=sel)) == pytest.approx(320 * (1 / 16 + 1 / 16))
    assert fetched_tokens(1000, KVPolicy(window=320, full_heads=0.25)) == pytest.approx(490)
    assert fetched_tokens(1000, 64) == 64 and fetched_tokens(1000, None) == 1000


def test_policy_reads_and_holds_by_hand():
    """1000 cached tokens, a window of 320 on the streaming three quarters of the heads: 250 + 240 = 490 kept;
    a selection reads and computes its scales of them and holds its summary besides."""
    sel = token_selection(DOUBLE_SPARSITY, 0.25, **LLAMA2)
    policy = KVPolicy(window=320, full_heads=0.25, selection=sel)
    read_B, read_flops = decode_reads(1000, policy)
    assert read_B == pytest.approx(490 * sel.bytes_scale)
    assert read_flops == pytest.approx(490 * sel.flops_scale)
    assert kept_tokens(1000, policy) == pytest.approx(490 * (1 + 1 / 16))
    assert flops_per_read(policy) == pytest.approx(sel.flops_scale / sel.bytes_scale)
    # Without a selection, reads are what is held: the policies of before.
    assert decode_reads(1000, KVPolicy(window=320, full_heads=0.25)) == (pytest.approx(490), pytest.approx(490))
    assert decode_reads(1000, 64) == (64, 64)
    assert KVPolicy(selection=sel).tokens(1000) == 1000  # no window: every head keeps every token


@pytest.mark.parametrize("method", [QUEST, DOUBLE_SPARSITY, TIDAL_DECODE])
@pytest.mark.parametrize("window", [None, 64, 320])
def test_a_smaller_token_budget_never_reads_more_and_never_holds_less(method, window):
    tokens = np.arange(1, 5000, 37)
    shares = (1 / 64, 1 / 16, 0.1, 0.25, 0.5, 1.0)
    policies = [KVPolicy(window=window, selection=token_selection(method, share, **LLAMA2)) for share in shares]
    reads = [decode_reads(tokens, policy) for policy in policies]
    for (smaller_B, smaller_F), (larger_B, larger_F) in zip(reads, reads[1:], strict=False):
        assert (smaller_B <= larger_B).all() and (smaller_F <= larger_F).all()
    unselected = kept_tokens(tokens, KVPolicy(window=window) if window else None)
    for policy in policies:
        assert (kept_tokens(tokens, policy) >= unselected).all()  # selection never frees KV memory


def test_selection_reads_less_than_the_whole_cache_at_a_small_budget():
    """At 1/16 of the tokens both methods read and compute well under the whole cache (their overhead is ~1/16)."""
    for method in (QUEST, DOUBLE_SPARSITY, TIDAL_DECODE):
        sel = token_selection(method, 1 / 16, **LLAMA2)
        assert 1 / 16 < sel.bytes_scale < 0.25 and 1 / 16 < sel.flops_scale < 0.25


@pytest.mark.parametrize("bad", [dict(share=0.0), dict(share=1.5), dict(share=-0.1), dict(method="h2o")])
def test_bad_selections_are_refused(bad):
    args = dict(method=QUEST, share=0.5) | bad
    with pytest.raises(ValueError, match="found"):
        token_selection(args["method"], args["share"], **LLAMA2)
    with pytest.raises(ValueError, match="found"):
        TokenSelection(method=args["method"], share=args["share"], overhead_bytes=0.0, overhead_flops=0.0,
                       summary_share=0.0)


def _decode_attention_table() -> KernelTable:
    """Two layers' decode attention of 2 sequences at 100 keys, 4 heads over 2 KV heads of 16 dims, 16-bit."""
    rows = [Kernel(kind=KernelKind.ATTENTION_DECODE, op="sdpa", flops=2 * 4 * 4 * 16 * 100, weight_bytes=0.0,
                   act_bytes=1000.0, kv_bytes=2 * 2 * 2 * 100 * 16 * 2, dtype="bf16", tensor_core=True, layer=layer,
                   batch=2, heads=4, kv_heads=2, q_len=1, kv_len=100, head_dim=16) for layer in (0, 1)]
    return KernelTable.from_kernels(rows)


def test_the_table_rescales_bytes_and_flops_apart():
    """At 400 keys a selection's rows move bytes_scale x 4 and compute flops_scale x 4 of the traced row; their
    kv_len is the keys' worth of bytes they stream (the fp8-KV test reads it)."""
    table = _decode_attention_table()
    sel = token_selection(QUEST, 0.25, layers=32, heads=4, kv_heads=2, head_dim=16, kv_element_B=2.0)
    assert sel.bytes_scale < 0.5 and sel.flops_scale < 0.5
    steps = table.at_kv_lengths(np.array([400.0]), KVPolicy(selection=sel))
    assert steps.kv_bytes == pytest.approx(table.kv_bytes * 4 * sel.bytes_scale)
    assert steps.flops == pytest.approx(table.flops * 4 * sel.flops_scale)
    assert steps.kv_len == pytest.approx(np.full(2, 400 * sel.bytes_scale))
    # Quest leaves two layers dense: a two-layer model selects nowhere.
    dense = token_selection(QUEST, 0.25, layers=2, heads=4, kv_heads=2, head_dim=16, kv_element_B=2.0)
    steps = table.at_kv_lengths(np.array([400.0]), KVPolicy(selection=dense))
    assert steps.kv_bytes == pytest.approx(table.kv_bytes * 4)


def test_layer_skipping_by_hand():
    assert kept_layers(32, 0.5) == 16
    assert kept_layers(32, 0.2) == 6  # 6.4 rounds to 6
    assert kept_layers(32, 0.01) == 1  # at least one layer
    assert kept_layers(2, 1.0) == 2
    assert decode_kv_share(32, 0.25) == 0.25
    with pytest.raises(ValueError, match="found"):
        kept_layers(32, 0.0)
    with pytest.raises(ValueError, match="found"):
        kept_layers(32, 1.5)
    table = _decode_attention_table()
    upper = skip_layers(table, 2, 0.5)
    assert [k.layer for k in upper.kernels] == [1]  # SkipDecode runs the upper layers
    assert skip_layers(table, 2, 1.0) is table
