"""FLOPs of a full-size Llama-2-7B captured on fake tensors, against hand formulas from the architecture.

Llama-2-7B (Touvron et al. 2023; HF config): hidden h = 4096, FFN f = 11008, 32 layers, 32 heads of 128,
no GQA, vocab 32000, untied LM head, no biases.
"""

from __future__ import annotations

import pytest

from workloads.op_costs import ATTENTION_OPS

H, F, LAYERS, HEADS, HEAD_DIM, VOCAB = 4096, 11008, 32, 32, 128, 32000
# Matmul weights of one layer: q, k, v, o (h x h each, MHA) + gate, up, down (h x f each).
LAYER_MATMUL_PARAMS = 4 * H * H + 3 * H * F  # 202,375,168
# Published parameter count of Llama-2-7B (HF model card: "7B", 6,738,415,616 parameters).
PARAMS = 6_738_415_616
PROMPT = 512
CONTEXT = 512

GEMM_OPS = {"mm", "addmm"}


def _sum_flops(trace, names) -> float:
    return sum(op.flops for op in trace.ops if op.short_name in names)


@pytest.fixture(scope="module")
def prefill(trace_of):
    return trace_of("llama-2-7b", "prefill", 1, PROMPT)


@pytest.fixture(scope="module")
def decode(trace_of):
    return trace_of("llama-2-7b", "decode", 1, 1, CONTEXT)


def test_hand_constants():
    # The hand figures themselves: 4 x 4096^2 + 3 x 4096 x 11008.
    assert LAYER_MATMUL_PARAMS == 67_108_864 + 135_266_304 == 202_375_168


def test_prefill_gemm_flops(prefill):
    # Every layer's matmuls run on all 512 tokens; the LM head only on the last position (batch x 1 row).
    tokens = 1 * PROMPT
    expected = 2 * tokens * LAYER_MATMUL_PARAMS * LAYERS + 2 * 1 * H * VOCAB
    assert expected == 6_631_429_505_024 + 262_144_000
    assert _sum_flops(prefill, GEMM_OPS) == pytest.approx(expected, rel=1e-12)


def test_prefill_attention_flops(prefill):
    # torch's convention: QK^T and PV over the full q x kv rectangle (causality not halved):
    # 4 x layers x heads x head_dim x q_len x kv_len.
    expected = 4 * LAYERS * HEADS * HEAD_DIM * PROMPT * PROMPT
    assert expected == 137_438_953_472
    attention = [op for op in prefill.ops if op.short_name in ATTENTION_OPS]
    assert len(attention) == LAYERS
    assert _sum_flops(prefill, ATTENTION_OPS) == pytest.approx(expected, rel=1e-12)


def test_decode_gemm_flops(decode):
    tokens = 1
    expected = 2 * tokens * LAYER_MATMUL_PARAMS * LAYERS + 2 * 1 * H * VOCAB
    assert expected == 13_214_154_752
    assert _sum_flops(decode, GEMM_OPS) == pytest.approx(expected, rel=1e-12)


def test_decode_attention_flops(decode):
    # One new query attends to the 512 cached keys and its own: kv_len = 513.
    kv_len = CONTEXT + 1
    expected = 4 * LAYERS * HEADS * HEAD_DIM * 1 * kv_len
    assert expected == 268_959_744
    assert _sum_flops(decode, ATTENTION_OPS) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_total_flops_near_two_params_per_token(phase, prefill, decode):
    # Rule of thumb (Kaplan et al. 2020): a forward pass costs ~2 x params FLOPs per token, plus attention.
    # The trace is a little below it: the embedding is a lookup and the LM head runs on the last position
    # only, while elementwise ops add a little; "a few percent" is 5 % here.
    trace, tokens, kv = (prefill, PROMPT, PROMPT) if phase == "prefill" else (decode, 1, CONTEXT + 1)
    attention = 4 * LAYERS * HEADS * HEAD_DIM * tokens * kv
    rule = 2 * PARAMS * tokens + attention
    assert trace.flops == pytest.approx(rule, rel=0.05)
    # ... and never below the matmul work alone.
    assert trace.flops >= 2 * tokens * LAYER_MATMUL_PARAMS * LAYERS + attention


def test_prefill_flops_scale_with_tokens(trace_of, prefill):
    # GEMM work is linear in the prompt: 256 tokens do half the layer matmul FLOPs of 512 (LM head fixed).
    half = trace_of("llama-2-7b", "prefill", 1, PROMPT // 2)
    head = 2 * H * VOCAB
    assert _sum_flops(half, GEMM_OPS) - head == pytest.approx((_sum_flops(prefill, GEMM_OPS) - head) / 2, rel=1e-9)
    # Attention is quadratic in the prompt: a quarter.
    assert _sum_flops(half, ATTENTION_OPS) == pytest.approx(_sum_flops(prefill, ATTENTION_OPS) / 4, rel=1e-9)
