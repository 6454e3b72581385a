"""KV eviction by importance scores and KV merging (kernels/kv_eviction.py) through the KV policy: the budget caps
reads and memory as kv_budget does, and each method adds its scores' traffic and work, counted by hand here."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.kv_eviction import D2O, H2O, STREAMING, eviction, scored_prefill
from kernels.kv_policy import KVPolicy, budget_error, decode_reads, flops_per_read, kept_tokens
from kernels.table import KernelTable

# Llama-2-7B's attention: 32 query heads over 32 KV heads of 128 dims, a 16-bit cache.
MHA = dict(heads=32, kv_heads=32, head_dim=128, kv_element_B=2.0)
# Llama-3-8B's: 32 query heads over 8 KV heads.
GQA = dict(heads=32, kv_heads=8, head_dim=128, kv_element_B=2.0)


def test_h2o_overheads_by_hand():
    """Per kept token, MHA: KV = 2 x 128 x 2 B x 32 heads = 16,384 B. Scores: per query head (8 B unfused + 2 B read
    into the accumulator), per KV head 6 B of accumulator traffic: 32 x 10 + 32 x 6 = 512 B, 1/32 of the KV. Work:
    2 FLOPs per query head against 4 x 128: 1/256. Held: 2 B per KV head, 64 B of 16,384: 1/256."""
    h2o = eviction(H2O, **MHA)
    assert h2o.overhead_bytes == pytest.approx(512 / 16384)
    assert h2o.overhead_flops == pytest.approx(1 / 256)
    assert h2o.held_share == pytest.approx(64 / 16384)
    assert eviction(STREAMING, **MHA) is None


def test_d2o_adds_a_similarity_row_by_hand():
    """GQA: KV per kept token = 2 x 128 x 2 x 8 = 4,096 B. H2O's scores: 32 x 10 + 8 x 6 = 368 B; D2O reads the
    8 kept keys again, 8 x 128 x 2 = 2,048 B: (368 + 2048) / 4096. FLOPs: 64 + 2 x 128 x 8 = 2,112 over 4 x 128 x 32."""
    d2o = eviction(D2O, **GQA)
    assert d2o.overhead_bytes == pytest.approx((368 + 2048) / 4096)
    assert d2o.overhead_flops == pytest.approx(2112 / (4 * 128 * 32))
    assert eviction(H2O, **GQA).overhead_bytes == pytest.approx(368 / 4096)


def test_the_budget_caps_reads_and_memory_plus_the_overheads():
    h2o = eviction(H2O, **MHA)
    policy = KVPolicy(window=100, eviction=h2o)
    assert kept_tokens(1000.0, policy) == pytest.approx(100 * (1 + 1 / 256))
    moved, work = decode_reads(1000.0, policy)
    assert moved == pytest.approx(100 * (1 + 1 / 32)) and work == pytest.approx(100 * (1 + 1 / 256))
    assert flops_per_read(policy) == pytest.approx((1 + 1 / 256) / (1 + 1 / 32))
    # Under the budget everything is kept and scored.
    assert decode_reads(40.0, policy)[0] == pytest.approx(40 * (1 + 1 / 32))
    # Retrieval heads keep every token and score none: a quarter of the heads at 1000, the rest at 100 + scores.
    mixed = KVPolicy(window=100, full_heads=0.25, eviction=h2o)
    assert decode_reads(1000.0, mixed)[0] == pytest.approx(250 + 75 * (1 + 1 / 32))


@pytest.mark.parametrize("method", [H2O, D2O])
def test_a_smaller_budget_never_reads_more(method):
    tokens = np.arange(1, 5000, 37, dtype=float)
    evicts = eviction(method, **GQA)
    reads = [decode_reads(tokens, KVPolicy(window=w, eviction=evicts))[0] for w in (16, 64, 320, 1024, 8192)]
    for smaller, larger in zip(reads, reads[1:], strict=False):
        assert (smaller <= larger).all()


def test_scores_cost_more_than_the_plain_window():
    """The same budget kept by recency (StreamingLLM) reads less than by scores, and D2O more than H2O."""
    plain = decode_reads(2000.0, 256)[0]
    h2o = decode_reads(2000.0, KVPolicy(window=256, eviction=eviction(H2O, **MHA)))[0]
    d2o = decode_reads(2000.0, KVPolicy(window=256, eviction=eviction(D2O, **MHA)))[0]
    assert plain < h2o < d2o


def test_an_eviction_needs_a_budget_and_attends_to_the_whole_prompt():
    with pytest.raises(ValueError, match="eviction: found without a window"):
        KVPolicy(eviction=eviction(H2O, **MHA))
    assert KVPolicy(window=2, eviction=eviction(H2O, **MHA)).prefill_attention_share(4) == 1.0


def _prefill_row(batch: int, heads: int, prompt: int, head_dim: int) -> KernelTable:
    from kernels.kernel import Kernel, KernelKind

    flops = 4.0 * batch * heads * head_dim * prompt * (prompt + 1) / 2  # causal pairs
    row = Kernel(op="attn", kind=KernelKind.ATTENTION_PREFILL, flops=flops, weight_bytes=0.0, act_bytes=1000.0,
                 kv_bytes=0.0, dtype="bf16", tensor_core=True, batch=batch, heads=heads, q_len=prompt,
                 kv_len=prompt, head_dim=head_dim)
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


def test_budget_error_names_the_limit():
    assert budget_error(300, 340, "x") == ""
    assert budget_error(340, 340, "x") == ""
    assert budget_error(1000, 340, "the point's prompt + output") == (
        "found a budget of 1,000 tokens, allowed: at most the point's prompt + output of 340 tokens "
        "(0 keeps every token)")
