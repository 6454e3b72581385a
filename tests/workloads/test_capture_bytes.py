"""Bytes a captured trace moves, by tensor role, against hand formulas; KV-cache sizes; views are free."""

from __future__ import annotations

import collections

import pytest

from workloads.model_config import load_model_config
from workloads.op_costs import ATTENTION_OPS

BYTES_16BIT = 2  # bytes per fp16 (Llama-2) or bf16 (Llama-3) value

# Llama-2-7B: hidden 4096, 32 layers, 32 heads (= 32 KV heads) of 128, vocab 32000, 6,738,415,616 params.
L2_PARAMS, L2_H, L2_LAYERS, L2_KV_HEADS, L2_HEAD_DIM, L2_VOCAB = 6_738_415_616, 4096, 32, 32, 128, 32000
CONTEXT = 512

# Views alias their input: no data moves, no arithmetic.
VIEW_NAMES = {"view", "t", "transpose", "_unsafe_view", "slice", "alias", "unsqueeze", "reshape", "expand",
              "permute", "select", "squeeze", "detach"}


@pytest.fixture(scope="module")
def decode(trace_of):
    return trace_of("llama-2-7b", "decode", 1, 1, CONTEXT)


@pytest.fixture(scope="module")
def prefill(trace_of):
    return trace_of("llama-2-7b", "prefill", 1, CONTEXT)


def test_decode_weight_bytes(decode):
    # A decode step reads every weight once, except the embedding table (vocab x hidden) of which it
    # reads only the gathered rows: batch x 1 token x hidden values.
    batch, tokens = 1, 1
    expected = (L2_PARAMS - L2_VOCAB * L2_H) * BYTES_16BIT + batch * tokens * L2_H * BYTES_16BIT
    assert expected == 13_214_687_232 + 8_192
    assert decode.bytes_by_role()["weight"] == expected
    # Weights are only read, never written.
    assert sum(op.bytes_written.get("weight", 0) for op in decode.ops) == 0


def test_decode_kv_bytes(decode):
    # Decode attention reads keys and values of kv_len = context + 1 positions in every layer:
    # 2 (K and V) x layers x batch x kv_len x kv_heads x head_dim x 2 bytes.
    batch, kv_len = 1, CONTEXT + 1
    read = 2 * L2_LAYERS * batch * kv_len * L2_KV_HEADS * L2_HEAD_DIM * BYTES_16BIT
    assert read == 268_959_744
    attention_kv_read = sum(op.bytes_read.get("kv", 0) for op in decode.ops if op.short_name in ATTENTION_OPS)
    assert attention_kv_read == read
    # The new token's key and value are written into the cache: 2 x layers x batch x 1 x kv_heads x head_dim x 2.
    written = 2 * L2_LAYERS * batch * 1 * L2_KV_HEADS * L2_HEAD_DIM * BYTES_16BIT
    assert written == 524_288
    assert sum(op.bytes_written.get("kv", 0) for op in decode.ops) == written
    assert decode.bytes_by_role()["kv"] == read + written


def test_prefill_writes_whole_prompt_to_cache(prefill):
    # Prefill attends to the fresh K/V (activations) and writes all prompt positions into the cache.
    expected = 2 * L2_LAYERS * 1 * CONTEXT * L2_KV_HEADS * L2_HEAD_DIM * BYTES_16BIT
    assert sum(op.bytes_written.get("kv", 0) for op in prefill.ops) == expected
    assert sum(op.bytes_read.get("kv", 0) for op in prefill.ops) == 0


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_views_cost_nothing(phase, prefill, decode):
    trace = prefill if phase == "prefill" else decode
    views = [op for op in trace.ops if op.short_name in VIEW_NAMES]
    # The decoder uses all of these; the test means something only if they appear.
    assert {"view", "t", "transpose", "_unsafe_view", "slice"} <= {op.short_name for op in views}
    for op in views:
        assert op.is_view, op.name
        assert op.flops == 0, op.name
        assert op.total_bytes == 0, op.name
        assert op.bytes_read == {} and op.bytes_written == {}, op.name
    # Conversely, every op marked as a view costs nothing.
    for op in trace.ops:
        if op.is_view:
            assert op.flops == 0 and op.total_bytes == 0, op.name


def test_embedding_reads_only_gathered_rows(prefill):
    # Prefill of 512 tokens gathers 512 rows of 4096 bf16 values from the 32000-row table.
    (embedding,) = [op for op in prefill.ops if op.short_name == "embedding"]
    assert embedding.bytes_read["weight"] == 512 * L2_H * BYTES_16BIT
    assert embedding.flops == 0


def test_llama3_8b_kv_cache_8k_is_one_gib():
    # Llama-3-8B (GQA): 32 layers, 8 KV heads of 128. K and V per token:
    # 2 x 32 x 8 x 128 x 2 bytes = 131,072 B; x 8192 tokens = 2^30 B = 1 GiB exactly.
    cfg = load_model_config("llama-3-8b")
    assert cfg.kv_bytes_per_token() == 2 * 32 * 8 * 128 * 2 == 131_072
    assert cfg.kv_bytes_per_token() * 8192 == 1_073_741_824 == 2**30
    # Bits scale it: 8-bit KV halves it.
    assert cfg.kv_bytes_per_token(bits=8) * 8192 == 2**29


def test_llama3_8b_decode_reads_one_gib_of_kv_at_8k(trace_of):
    # The decode step after 8191 cached tokens attends to kv_len = 8192 positions. Per layer it reads
    # 2 x 8 KV heads x 8192 x 128 x 2 bytes = 32 MiB (GQA: the 8 KV heads, not the 32 query heads).
    trace = trace_of("llama-3-8b", "decode", 1, 1, 8191)
    per_layer = collections.Counter()
    for op in trace.ops:
        if op.short_name in ATTENTION_OPS:
            per_layer[op.layer] += op.bytes_read.get("kv", 0)
    assert sorted(per_layer) == list(range(32))
    assert set(per_layer.values()) == {2 * 8 * 8192 * 128 * 2} == {33_554_432}
    assert sum(per_layer.values()) == 2**30
