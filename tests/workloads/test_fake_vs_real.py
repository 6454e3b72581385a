"""A capture on fake tensors equals one on real CPU tensors, op for op; GEMM FLOPs agree with torch's counter."""

from __future__ import annotations

import collections

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from workloads.decoder import DecoderModel, KVCache

BATCH, PROMPT = 2, 16
FAMILIES = ["tiny_llama", "tiny_mixtral", "tiny_opt"]
PHASES = [("prefill", PROMPT, 0), ("decode", 1, PROMPT)]


def _op_facts(op):
    return (op.name, op.inputs, op.outputs, op.flops, op.bytes_read, op.bytes_written, op.is_view, op.module,
            op.layer, op.attrs)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("phase, seq_len, context", PHASES)
def test_fake_equals_real(family, phase, seq_len, context, request, trace_of):
    cfg = request.getfixturevalue(family)
    fake = trace_of(cfg, phase, BATCH, seq_len, context, fake=True)
    real = trace_of(cfg, phase, BATCH, seq_len, context, fake=False)
    assert fake.capture_mode == "fake" and real.capture_mode == "real"
    assert len(fake.ops) == len(real.ops) > 0
    for i, (a, b) in enumerate(zip(fake.ops, real.ops, strict=True)):
        assert _op_facts(a) == _op_facts(b), f"op {i}"
    assert fake.flops == real.flops
    assert fake.bytes_by_role() == real.bytes_by_role()
    assert (fake.param_count, fake.param_bytes) == (real.param_count, real.param_bytes)


def _tiny_gemm_flops(cfg, phase: str) -> float:
    """Hand formula: 2 x rows x (in x out) for every linear layer, rows = tokens the layer sees."""
    h, f, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    tokens = BATCH * (PROMPT if phase == "prefill" else 1)
    attention = h * cfg.num_heads * d + 2 * h * cfg.num_kv_heads * d + cfg.num_heads * d * h
    mlp_mats = 3 if cfg.mlp == "gated_silu" else 2
    if cfg.num_experts:
        # Router on every token; each token runs experts_per_token experts' MLPs.
        routed = tokens * cfg.experts_per_token
        per_layer = 2 * tokens * (attention + h * cfg.num_experts) + 2 * routed * mlp_mats * h * f
    else:
        per_layer = 2 * tokens * (attention + mlp_mats * h * f)
    head = 2 * BATCH * 1 * h * cfg.vocab_size  # last position only
    return cfg.num_layers * per_layer + head


def test_tiny_hand_formula_values(tiny_llama, tiny_mixtral, tiny_opt):
    # Written out for tiny-llama prefill: 32 tokens; per layer q 64x64, k/v 64x32, o 64x64 = 12288,
    # gate/up/down 3 x 64 x 128 = 24576; 2 layers; head 2 x 2 x 64 x 128 = 32768.
    assert _tiny_gemm_flops(tiny_llama, "prefill") == 2 * (2 * 32 * (12288 + 24576)) + 32768 == 4_751_360
    # tiny-mixtral: router 64 x 4 per token; 32 tokens x 2 experts x 24576.
    assert _tiny_gemm_flops(tiny_mixtral, "prefill") == 2 * (2 * 32 * (12288 + 256) + 2 * 64 * 24576) + 32768
    # tiny-opt (MHA): 4 x 64 x 64 attention, up/down 2 x 64 x 128.
    assert _tiny_gemm_flops(tiny_opt, "prefill") == 2 * (2 * 32 * (16384 + 16384)) + 32768 == 4_227_072


def _flop_counter_counts(cfg, phase: str, seq_len: int, context: int) -> dict[str, float]:
    """Run our decoder on real tensors under torch's FlopCounterMode; FLOPs per aten op name."""
    torch.manual_seed(0)
    model = DecoderModel(cfg)
    cache = KVCache(cfg, BATCH, context + seq_len, model.dtype)
    ids = torch.zeros((BATCH, seq_len), dtype=torch.long)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(ids, cache, context)
    return {str(op).split(".")[-1]: float(n) for op, n in counter.get_flop_counts()["Global"].items()}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("phase, seq_len, context", PHASES)
def test_gemm_flops_agree_with_flop_counter(family, phase, seq_len, context, request, trace_of):
    cfg = request.getfixturevalue(family)
    counted = _flop_counter_counts(cfg, phase, seq_len, context)
    trace = trace_of(cfg, phase, BATCH, seq_len, context, fake=True)
    traced = collections.defaultdict(float)
    for op in trace.ops:
        traced[op.short_name] += op.flops
    gemm_names = ("mm", "addmm", "bmm")
    assert sum(counted.get(n, 0.0) for n in gemm_names) > 0
    for name in gemm_names:
        assert traced.get(name, 0.0) == pytest.approx(counted.get(name, 0.0), rel=1e-9), name
    # And both equal the hand formula.
    total = sum(traced.get(n, 0.0) for n in gemm_names)
    assert total == pytest.approx(_tiny_gemm_flops(cfg, phase), rel=1e-9)
