"""Model presets: parameter counts against published figures; the formula against the built module; errors."""

from __future__ import annotations

import json

import pytest

from workloads.errors import InputError
from workloads.model_config import SUPPORTED_MODEL_TYPES, load_model_config, preset_names

# Published parameter counts (model cards and papers).
PUBLISHED_PARAMS = {
    "llama-2-7b": 6.74e9,  # Llama 2 model card (HF: 6,738,415,616)
    "llama-2-13b": 13.0e9,  # Llama 2 model card (HF: 13,015,864,320)
    "llama-2-70b": 69.0e9,  # Llama 2 model card (HF: 68,976,648,192)
    "llama-3-8b": 8.03e9,  # Meta-Llama-3-8B model card (8.03B)
    "llama-3-70b": 70.6e9,  # Meta-Llama-3-70B model card (70.6B)
    "mistral-7b": 7.24e9,  # Mistral-7B-v0.1 (7.24B)
    "qwen2.5-7b": 7.62e9,  # Qwen2.5-7B model card ("Number of Parameters: 7.61B"; HF reports 7.62B)
    "mixtral-8x7b": 46.7e9,  # Mixtral of Experts (Jiang et al. 2024): 46.7B total, 12.9B active
    "opt-13b": 12.85e9,  # OPT (Zhang et al. 2022) 13B; HF facebook/opt-13b: 12.85B
}


def test_all_nine_presets_ship():
    assert set(PUBLISHED_PARAMS) <= set(preset_names())


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_param_count_matches_published(name):
    assert load_model_config(name).param_count() == pytest.approx(PUBLISHED_PARAMS[name], rel=0.01)


def test_llama2_7b_param_count_by_hand():
    # Per layer: q, k, v, o (4 x 4096^2) + gate, up, down (3 x 4096 x 11008) + two RMSNorm weights (2 x 4096).
    # Plus embedding and LM head (2 x 32000 x 4096) and the final norm (4096).
    per_layer = 4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096
    expected = 32 * per_layer + 2 * 32000 * 4096 + 4096
    assert expected == 6_738_415_616
    assert load_model_config("llama-2-7b").param_count() == expected


def test_mixtral_param_count_by_hand():
    # Per layer: attention with 8 KV heads: q, o (4096^2) + k, v (4096 x 1024); 8 experts of 3 x 4096 x 14336;
    # router 4096 x 8; two norms. Plus embedding and LM head (2 x 32000 x 4096) and the final norm.
    per_layer = 2 * 4096**2 + 2 * 4096 * 1024 + 8 * 3 * 4096 * 14336 + 4096 * 8 + 2 * 4096
    expected = 32 * per_layer + 2 * 32000 * 4096 + 4096
    assert load_model_config("mixtral-8x7b").param_count() == expected


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_param_count_equals_module(name):
    # The formula in ModelConfig and the PyTorch module are written independently; they must agree.
    # The module is built on fake tensors (full size, no memory).
    from torch._subclasses.fake_tensor import FakeTensorMode

    from workloads.decoder import DecoderModel

    cfg = load_model_config(name)
    with FakeTensorMode():
        module = DecoderModel(cfg)
        counted = sum(p.numel() for p in module.parameters())
    assert counted == cfg.param_count()


@pytest.mark.parametrize("name, context", [("llama-2-7b", 512), ("llama-3-8b", 8191), ("mixtral-8x7b", 128)])
def test_param_count_equals_trace(name, context, trace_of):
    # Trace.param_count of a fake decode trace (traces shared with the FLOP, KV and MoE tests).
    trace = trace_of(name, "decode", 1, 1, context)
    cfg = load_model_config(name)
    assert trace.param_count == cfg.param_count()
    # bf16 / fp16 weights: 2 bytes each.
    assert trace.param_bytes == 2 * cfg.param_count()


def test_unknown_preset_names_key_and_allowed_values():
    with pytest.raises(InputError) as info:
        load_model_config("llama-9b")
    message = str(info.value)
    assert "\n" not in message
    assert "model" in message and "llama-9b" in message
    for name in PUBLISHED_PARAMS:
        assert name in message


def test_unsupported_model_type(tmp_path, one_line_error):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "gpt2", "hidden_size": 768, "num_attention_heads": 12}))
    where, message = one_line_error(lambda: load_model_config(str(path)))
    assert where == str(path)
    assert "model_type" in message and "gpt2" in message
    for allowed in SUPPORTED_MODEL_TYPES:
        assert allowed in message


def test_missing_key_names_file_and_key(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4}))
    with pytest.raises(InputError) as info:
        load_model_config(str(path))
    message = str(info.value)
    assert str(path) in message and "intermediate_size" in message


def test_missing_config_file(tmp_path):
    with pytest.raises(InputError, match="no such"):
        load_model_config(str(tmp_path / "absent.json"))
