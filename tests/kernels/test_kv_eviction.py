"""KV eviction by importance scores and KV merging (kernels/kv_eviction.py) through the KV policy: the budget caps
reads and memory as kv_budget does, and each method adds its scores' traffic and work, counted by hand here."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.kernel import KernelKind
from kernels.kv_eviction import D2O, H2O, STREAMING, eviction, merged_prefill, scored_prefill
from kernels.kv_policy import KVPolicy, budget_error, decode_reads, flops_per_read, kept_tokens
from kernels.table import KernelTable

# Llama-2-7B's attention: 32 query heads over 32 KV heads of 128 dims, a 16-bit cache.
MHA = dict(heads=32, kv_heads=32, head_dim=128, kv_element_B=2.0)
# Llama-3-8B's: 32 query heads over 8 KV heads.
GQA = dict(heads=32, kv_heads=8, head_dim=128, kv_element_B=2.0)


def test_h2o_overheads_by_hand():
    """Per kept token, MHA: KV = 2 x 128 x 2 B x 32 heads = 16,384 B. Every step: per query head 8 B unfused + 2 B
    read into the accumulator, per KV head 4 B of accumulator read and written: 32 x 10 + 32 x 4 = 448 B; a step that
    evicts adds the argmin's read, 2 B per KV head: 64 B. Work: 1 FLOP per query head (the add) against 4 x 128 per
    query head: 1/512, and the argmin's compare, 1/512 more on a step that evicts. Held: 2 B per KV head, 64 B."""
    h2o = eviction(H2O, **MHA)
    assert h2o.overhead_bytes == pytest.approx(448 / 16384) and h2o.evict_bytes == pytest.approx(64 / 16384)
    assert h2o.overhead_flops == pytest.approx(1 / 512) and h2o.evict_flops == pytest.approx(1 / 512)
    assert h2o.held_share == pytest.approx(64 / 16384)
    assert eviction(STREAMING, **MHA) is None


def test_d2o_adds_a_similarity_row_on_a_step_that_evicts_by_hand():
    """GQA: KV per kept token = 2 x 128 x 2 x 8 = 4,096 B. H2O's scores every step: 32 x 10 + 8 x 4 = 352 B; a step
    that evicts reads the accumulator for the argmin, 8 x 2 = 16 B, and D2O's merge reads the 8 kept keys again,
    8 x 128 x 2 = 2,048 B. FLOPs per 4 x 128 x 32 of attention: 32 every step; 32 + 2 x 128 x 8 = 2,080 evicting."""
    d2o = eviction(D2O, **GQA)
    assert d2o.overhead_bytes == pytest.approx(352 / 4096)
    assert d2o.evict_bytes == pytest.approx((16 + 2048) / 4096)
    assert d2o.overhead_flops == pytest.approx(32 / (4 * 128 * 32))
    assert d2o.evict_flops == pytest.approx(2080 / (4 * 128 * 32))
    h2o = eviction(H2O, **GQA)
    assert (h2o.overhead_bytes, h2o.evict_bytes) == pytest.approx((352 / 4096, 16 / 4096))


def test_the_budget_caps_reads_and_memory_plus_the_overheads():
    h2o = eviction(H2O, **MHA)
    policy = KVPolicy(window=100, eviction=h2o)
    assert kept_tokens(1000.0, policy) == pytest.approx(100 * (1 + 1 / 256))
    moved, work = decode_reads(1000.0, policy)
    assert moved == pytest.approx(100 * (1 + 512 / 16384)) and work == pytest.approx(100 * (1 + 2 / 512))
    assert flops_per_read(policy) == pytest.approx((1 + 2 / 512) / (1 + 512 / 16384))
    # Under the budget everything is kept and scored, and nothing is evicted.
    assert decode_reads(40.0, policy)[0] == pytest.approx(40 * (1 + 448 / 16384))
    # Retrieval heads keep every token and score none: a quarter of the heads at 1000, the rest at 100 + scores.
    mixed = KVPolicy(window=100, full_heads=0.25, eviction=h2o)
    assert decode_reads(1000.0, mixed)[0] == pytest.approx(250 + 75 * (1 + 512 / 16384))


@pytest.mark.parametrize("method", [H2O, D2O])
def test_a_budget_that_holds_the_context_evicts_and_merges_nothing(method):
    """Llama-3-8B's GQA at 1,000 cached tokens and a budget of 1,024: nothing leaves, so the step pays the scores
    alone (352 B per kept token of 4,096, by hand above), D2O the same as H2O: no argmin, no similarity row. At 2,000
    tokens the budget evicts one token a step, and the argmin and the merge are paid over its 1,024 kept tokens."""
    policy = KVPolicy(window=1024, eviction=eviction(method, **GQA))
    assert decode_reads(1000.0, policy)[0] == pytest.approx(1000 * (1 + 352 / 4096))
    evict_B = 16 + (2048 if method == D2O else 0)
    assert decode_reads(2000.0, policy)[0] == pytest.approx(1024 * (1 + (352 + evict_B) / 4096))
    # The first token past the budget is the first that evicts.
    assert decode_reads(1024.0, policy)[0] == pytest.approx(1024 * (1 + 352 / 4096))
    assert decode_reads(1025.0, policy)[0] == pytest.approx(1024 * (1 + (352 + evict_B) / 4096))


@pytest.mark.parametrize("method", [H2O, D2O])
def test_a_smaller_budget_keeps_no_more_and_reads_more_only_by_its_evictions(method):
    """A smaller budget never keeps more, and where both budgets evict (the context past both) or neither does, it
    never reads more. Between them the smaller one evicts where the larger keeps every token: each evicting step pays
    its argmin and D2O's merge over its kept tokens, which can outweigh the tokens it saves just past its budget (D2O:
    re-reading the kept keys is half their KV, so a budget B evicting at a context under about 1.46 B reads more than
    keeping all), but never by more than the eviction's share: reads(smaller) <= reads(larger) x (1 + evict / (1 +
    scores))."""
    tokens = np.arange(1, 5000, 37, dtype=float)
    evicts = eviction(method, **GQA)
    budgets = (16, 64, 320, 1024, 8192)
    kept = [kept_tokens(tokens, KVPolicy(window=w, eviction=evicts)) for w in budgets]
    reads = [decode_reads(tokens, KVPolicy(window=w, eviction=evicts))[0] for w in budgets]
    bound = 1 + evicts.evict_bytes / (1 + evicts.overhead_bytes)
    for (w_small, w_large), (k_small, k_large), (r_small, r_large) in zip(
            zip(budgets, budgets[1:], strict=False), zip(kept, kept[1:], strict=False),
            zip(reads, reads[1:], strict=False), strict=True):
        assert (k_small <= k_large).all()
        alike = (tokens > w_large) | (tokens <= w_small)
        assert (r_small[alike] <= r_large[alike]).all()
        assert (r_small <= r_large * bound * (1 + 1e-12)).all()
    # D2O just past a budget of 320 (at 359 tokens) reads more than a budget of 1,024 that keeps them all.
    if method == D2O:
        small, large = (decode_reads(359.0, KVPolicy(window=w, eviction=evicts))[0] for w in (320, 1024))
        assert small == pytest.approx(320 * (1 + (352 + 2064) / 4096))
        assert large == pytest.approx(359 * (1 + 352 / 4096))
        assert small > large


def test_scores_cost_more_than_the_plain_window():
    """The same budget kept by recency (StreamingLLM) reads less than by scores, and D2O more than H2O."""
    plain = decode_reads(2000.0, 256)[0]  # past the budget: every step evicts
    h2o = decode_reads(2000.0, KVPolicy(window=256, eviction=eviction(H2O, **MHA)))[0]
    d2o = decode_reads(2000.0, KVPolicy(window=256, eviction=eviction(D2O, **MHA)))[0]
    assert plain < h2o < d2o


def test_an_eviction_needs_a_budget_and_attends_to_the_whole_prompt():
    with pytest.raises(ValueError, match="eviction: found without a window"):
        KVPolicy(eviction=eviction(H2O, **MHA))
    assert KVPolicy(window=2, eviction=eviction(H2O, **MHA)).prefill_attention_share(4) == 1.0


def _prefill_row(batch: int, heads: int, prompt: int, head_dim: int, kv_heads: int = 0) -> KernelTable:
    from kernels.kernel import Kernel, KernelKind

    flops = 4.0 * batch * heads * head_dim * prompt * (prompt + 1) / 2  # causal pairs
    row = Kernel(op="attn", kind=KernelKind.ATTENTION_PREFILL, flops=flops, weight_bytes=0.0, act_bytes=1000.0,
                 kv_bytes=0.0, dtype="bf16", tensor_core=True, batch=batch, heads=heads, q_len=prompt,
                 kv_len=prompt, head_dim=head_dim, kv_heads=kv_heads or heads)
    return KernelTable.from_kernels([row])


def test_the_scored_prefill_by_hand():
    """Batch 2, 4 heads, a prompt of 10: the unfused matrix has 2 x 4 x 100 pairs of 10 B each, and computes 100
    pairs per head instead of the causal 55."""
    table = _prefill_row(batch=2, heads=4, prompt=10, head_dim=16)
    scored = scored_prefill(table, 1.0, 10.0)
    assert scored.act_bytes[0] == pytest.approx(1000 + 2 * 4 * 100 * 10)
    assert scored.flops[0] == pytest.approx(table.flops[0] * 100 / 55)
    half = scored_prefill(table, 0.5, 10.0)
    assert half.act_bytes[0] == pytest.approx(1000 + 0.5 * 2 * 4 * 100 * 10)


def test_d2o_merges_the_prompt_tokens_its_prefill_evicts_by_hand():
    """D2O's prefill evicts a prompt's tokens past the budget and merges each into its most similar kept key (Wan et
    al., Section 3.3): batch 2, 2 KV heads of 16 dims, a prompt of 10 and a budget of 4 evict 6 tokens a sequence and
    KV head, so 2 x 2 = 4 GEMMs of (6 x 16) x (16 x 4): 2 x 6 x 4 x 16 x 4 = 3,072 FLOPs; they read the 10 keys of
    16 2-byte elements, 4 x 10 x 16 x 2 = 1,280 B of cache, and write 4 x 6 x 4 similarities of 2 B, 192 B. Half the
    KV heads evicting (the others retrieval heads) halve all three; a budget holding the prompt merges nothing."""
    table = _prefill_row(batch=2, heads=4, prompt=10, head_dim=16, kv_heads=2)
    merged = merged_prefill(table, 4, 1.0, 2.0)
    assert len(merged) == 2 and merged.kernels[0].op == "attn"
    gemm = merged.kernels[1]
    assert gemm.kind == KernelKind.GEMM and (gemm.m, gemm.n, gemm.k, gemm.batch) == (6, 4, 16, 4)
    assert (gemm.flops, gemm.kv_bytes, gemm.act_bytes) == (3072, 1280, 192)
    half = merged_prefill(table, 4, 0.5, 2.0).kernels[1]
    assert (half.flops, half.kv_bytes, half.act_bytes) == (1536, 640, 96)
    assert merged_prefill(table, 10, 1.0, 2.0) is table


def test_budget_error_names_the_limit():
    assert budget_error(300, 340, "x") == ""
    assert budget_error(340, 340, "x") == ""
    assert budget_error(1000, 340, "the point's prompt + output") == (
        "found a budget of 1,000 tokens, allowed: at most the point's prompt + output of 340 tokens "
        "(0 keeps every token)")
