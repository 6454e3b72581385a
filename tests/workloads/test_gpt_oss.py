"""gpt-oss (OpenAI's open-weight MoE models): parameter counts against the model card, each layer's attention window
from layer_types in the trace, the kernels and the KV cache, and the configs refused."""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kernels.kernel import KernelKind
from kernels.lowering import lower_trace
from kernels.table import KernelTable
from sim.memory import batch_footprint
from workloads.capture import trace_model
from workloads.errors import InputError
from workloads.model_config import config_from_hf, load_model_config

PRESETS = Path(__file__).resolve().parents[2] / "workloads" / "presets"

# OpenAI, "gpt-oss-120b & gpt-oss-20b Model Card" (arXiv 2508.10925), section 2.1: "116.8B total parameters (5.1B
# active)" and "20.9B total parameters (3.6B active)". The card's active count leaves out the embedding table (a
# token's lookup reads one row of it) and keeps the unembedding: (total, active).
MODEL_CARD = {"gpt-oss-120b": (116.8e9, 5.1e9), "gpt-oss-20b": (20.9e9, 3.6e9)}

# One KV head's key and value of one token in bf16: head_dim 64 x 2 tensors x 2 bytes, times 8 KV heads.
KV_TOKEN_LAYER_B = 8 * 64 * 2 * 2


@pytest.mark.parametrize("name", sorted(MODEL_CARD))
def test_parameters_match_the_model_card(name):
    config = load_model_config(name)
    total, active = MODEL_CARD[name]
    embedding = config.vocab_size * config.hidden_size
    assert config.param_count() == pytest.approx(total, rel=0.001)
    assert config.active_param_count() - embedding == pytest.approx(active, rel=0.01)


def test_the_20b_parameters_by_hand():
    """From the shapes in transformers' modeling_gpt_oss.py: q/k/v/o projections with biases (2880 x 4096 + 4096,
    2 x (2880 x 512 + 512), 4096 x 2880 + 2880) and 64 sinks: 26,550,144 a layer; two norms 5,760; a router with a
    bias 32 x 2881 = 92,192; 32 experts of gate_up 2880 x 5760 + 5760 and down 2880 x 2880 + 2880: 24,891,840 each.
    24 layers of 823,186,976, an embedding and an untied head of 201,088 x 2880 each, the final norm 2,880."""
    assert load_model_config("gpt-oss-20b").param_count() == 24 * 823_186_976 + 2 * 579_133_440 + 2_880


def test_a_traced_model_weighs_what_its_config_counts():
    """The decoder builds every parameter the shapes count (sinks, biases, the router's bias), traced from its three
    distinct layers (a sliding one, a full one, the last)."""
    config = load_model_config("gpt-oss-20b")
    trace = trace_model(config, phase="decode", batch=1, seq_len=1, context_len=8)
    assert trace.param_count == config.param_count()
    assert trace.layer_windows == (128, None) * 12


def test_layer_types_set_each_layers_window():
    config = load_model_config("gpt-oss-120b")
    assert config.sliding_window is None  # no window every layer has
    assert [config.layer_window(i) for i in range(4)] == [128, None, 128, None]
    assert config.layer_window(35) is None


@pytest.mark.parametrize("change, message", [
    ({"layer_types": ["sliding_attention", "chunked_attention"] * 12},
     "layer_types[1]: found 'chunked_attention', allowed: sliding_attention, full_attention"),
    ({"layer_types": ["sliding_attention"] * 23}, "layer_types: found"),
    ({"sliding_window": None}, "sliding_window: found null with sliding_attention layers"),
])
def test_layer_types_it_cannot_build_are_refused(change, message):
    cfg = json.loads((PRESETS / "gpt-oss-20b.json").read_text()) | change
    with pytest.raises(InputError, match="^cfg.json: " + message.replace("[", r"\[").replace("]", r"\]")):
        config_from_hf(cfg, name="x", where="cfg.json")


def test_kv_bytes_of_a_sequence_count_each_layers_window():
    """gpt-oss-20b at 4,096 tokens: 12 full layers keep all of them, 12 sliding ones their last 128."""
    config = load_model_config("gpt-oss-20b")
    want = (12 * 4096 + 12 * 128) * KV_TOKEN_LAYER_B
    assert want == 103_809_024
    assert config.kv_bytes_per_sequence(4096) == want
    memory = batch_footprint(weight_bytes=0.0, kv_bytes_per_token=config.kv_bytes_per_token(), batch=3,
                             tokens_per_sequence=4096, activation_bytes=0.0, layer_windows=config.layer_windows)
    assert memory.kv_cache_B == 3 * want


@functools.cache
def _two_layers(phase: str, tokens: int) -> KernelTable:
    """gpt-oss-20b's first two layers (a sliding one, a full one) at full width: a prefill of `tokens` tokens, or a
    decode step whose keys are `tokens` (its own one and the tokens before)."""
    config = load_model_config("gpt-oss-20b")
    config = replace(config, num_layers=2, layer_windows=config.layer_windows[:2])
    shape = dict(seq_len=tokens) if phase == "prefill" else dict(seq_len=1, context_len=tokens - 1)
    return KernelTable.from_kernels(lower_trace(trace_model(config, phase=phase, batch=1, **shape)))


def _attention_rows(table: KernelTable) -> list:
    return [k for k in table.kernels if k.kind in (KernelKind.ATTENTION_PREFILL, KernelKind.ATTENTION_DECODE)]


def test_decode_attention_reads_the_window_in_a_sliding_layer_and_every_key_in_a_full_one():
    """A decode step with 4,096 keys: the sliding layer reads 128 keys' K and V, the full layer all 4,096."""
    sliding, full = _attention_rows(_two_layers("decode", 4096))
    assert (sliding.kv_len, sliding.kv_bytes) == (128, 128 * KV_TOKEN_LAYER_B)
    assert (full.kv_len, full.kv_bytes) == (4096, 4096 * KV_TOKEN_LAYER_B)


def test_a_decode_step_resized_to_a_longer_context_keeps_the_sliding_window():
    """The step traced at 300 keys and re-sized to 4,096 (KernelTable.at_kv_lengths, how a static batch prices its
    decode steps) reads what the step traced at 4,096 reads: the window in the sliding layer."""
    resized = _two_layers("decode", 300).at_kv_lengths(np.array([4096.0]))
    traced = _two_layers("decode", 4096).select(_two_layers("decode", 4096).decode_attention_mask)
    assert resized.kv_len.tolist() == [128, 4096]
    assert resized.kv_bytes.tolist() == traced.kv_bytes.tolist() == [128 * KV_TOKEN_LAYER_B, 4096 * KV_TOKEN_LAYER_B]
    assert resized.flops.tolist() == traced.flops.tolist()


def test_prefill_attention_computes_the_pairs_inside_each_layers_window():
    """A 4,096-token prefill: the sliding layer's query i attends to min(i + 1, 128) keys, 128 x 129 / 2 + 3,968 x 128
    = 516,160 pairs; the full layer's to i + 1, 4,096 x 4,097 / 2 = 8,390,656. Each pair costs 2 x 64 heads x (64 + 64)
    FLOPs (QK^T and PV)."""
    sliding, full = _attention_rows(_two_layers("prefill", 4096))
    assert sliding.flops == 516_160 * 2 * 64 * 128
    assert full.flops == 8_390_656 * 2 * 64 * 128


def test_rows_alike_inside_the_window_stay_apart_past_it():
    """Traced at 100 keys both layers' decode attention rows are alike but for their window; re-sized to 4,096 the
    rows a cost model prices once each (KernelTable.distinct_rows) still give each row its own keys."""
    resized = _two_layers("decode", 100).at_kv_lengths(np.array([4096.0]))
    rows, index = resized.distinct_rows or (resized, np.arange(len(resized)))
    assert rows.kv_len[index].tolist() == resized.kv_len.tolist() == [128, 4096]


@pytest.mark.parametrize("phase, shape", [("prefill", dict(seq_len=16)), ("decode", dict(seq_len=1, context_len=16))])
def test_a_tiny_gpt_oss_on_fake_tensors_is_what_real_ones_run(phase, shape):
    """The decoder's gpt-oss layers (a 4-key window, then a full layer; sinks, biases, the clamped SwiGLU) record the
    same ops on fake tensors as on real CPU tensors, past the window."""
    config = replace(load_model_config("gpt-oss-20b"), hidden_size=64, intermediate_size=32, num_layers=2,
                     num_heads=4, num_kv_heads=2, head_dim=16, num_experts=4, experts_per_token=2, vocab_size=128,
                     layer_windows=(4, None))
    fake = trace_model(config, phase=phase, batch=2, **shape)
    real = trace_model(config, phase=phase, batch=2, fake=False, **shape)
    assert fake.to_dict()["ops"] == real.to_dict()["ops"]
    assert fake.param_count == real.param_count == config.param_count()
    assert fake.layer_windows == real.layer_windows == (4, None)
