"""Model presets: parameter counts against published figures; the formula against the built module; errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workloads.errors import InputError
from workloads.model_config import (
    POSITIVE_INT_KEYS,
    SUPPORTED_MODEL_TYPES,
    check_context,
    config_from_hf,
    load_model_config,
    preset_names,
)

# Published parameter counts (model cards and papers).
PUBLISHED_PARAMS = {
    "llama-2-7b": 6.74e9,  # Llama 2 model card (HF: 6,738,415,616)
    "llama-2-13b": 13.0e9,  # Llama 2 model card (HF: 13,015,864,320)
    "llama-2-70b": 69.0e9,  # Llama 2 model card (HF: 68,976,648,192)
    "llama-7b": 6.7e9,  # LLaMA (Touvron et al. 2023) Table 2: 6.7B
    "llama-13b": 13.0e9,  # LLaMA Table 2: 13.0B
    "llama-33b": 32.5e9,  # LLaMA (Touvron et al. 2023) Table 2: 32.5B ("33B"; HF huggyllama/llama-30b)
    "llama-65b": 65.2e9,  # LLaMA Table 2: 65.2B
    "llama-3.1-8b": 8.03e9,  # Llama-3.1-8B model card (8.03B)
    "yi-34b": 34.4e9,  # 01-ai/Yi-34B on Hugging Face: 34.4B parameters
    "llama-3-8b": 8.03e9,  # Meta-Llama-3-8B model card (8.03B)
    "llama-3-70b": 70.6e9,  # Meta-Llama-3-70B model card (70.6B)
    "mistral-7b": 7.24e9,  # Mistral-7B-v0.1 (7.24B)
    "qwen2.5-7b": 7.62e9,  # Qwen2.5-7B model card ("Number of Parameters: 7.61B"; HF reports 7.62B)
    "qwen2.5-72b": 72.7e9,  # Qwen2.5-72B-Instruct model card ("Number of Parameters: 72.7B", 70.0B non-embedding)
    "mixtral-8x7b": 46.7e9,  # Mixtral of Experts (Jiang et al. 2024): 46.7B total, 12.9B active
    "opt-13b": 12.85e9,  # OPT (Zhang et al. 2022) 13B; HF facebook/opt-13b: 12.85B
}


def test_every_model_with_a_published_count_ships_as_a_preset():
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


# ---- values that used to trace into a traceback, hang, or run as another model (issue 17) ----------------------

def _llama(**changes) -> dict:
    cfg = json.loads((Path(__file__).resolve().parents[2] / "workloads" / "presets" / "llama-2-7b.json").read_text())
    return {**cfg, **changes}


@pytest.mark.parametrize("key", sorted(POSITIVE_INT_KEYS))
def test_each_size_key_has_a_ceiling(key, one_line_error):
    most = POSITIVE_INT_KEYS[key]
    where, message = one_line_error(lambda: config_from_hf(_llama(**{key: most + 1}), name="t", where="t.json"))
    assert where == "t.json" and message == f"{key}: found {most + 1}, allowed: a positive integer up to {most:,}"


def test_the_ceilings_leave_room_above_every_preset():
    for name in preset_names():
        cfg = load_model_config(name)
        assert cfg.hidden_size * 4 <= POSITIVE_INT_KEYS["hidden_size"] and cfg.num_layers * 4 <= 1000


@pytest.mark.parametrize("changes, message", [
    ({"head_dim": 7}, "head_dim: found 7, allowed: an even head size"),
    ({"hidden_size": 4000}, "hidden_size / num_attention_heads: found 125, allowed: an even head size"),
    ({"rope_theta": "10000"}, "rope_theta: found '10000', allowed: a number from 1 to 1e12"),
    ({"rms_norm_eps": float("nan")}, "rms_norm_eps: found NaN"),  # as json writes it
    ({"rms_norm_eps": 0}, "rms_norm_eps: found 0, allowed: a number in (0, 1)"),
    ({"attention_bias": "no"}, "attention_bias: found 'no', allowed: true or false"),
    ({"mlp_bias": 1}, "mlp_bias: found 1, allowed: true or false"),
    ({"architectures": ["Qwen2ForCausalLM"]}, "architectures: found 'Qwen2ForCausalLM' with model_type 'llama'"),
])
def test_bad_values_name_the_key(changes, message, one_line_error):
    where, got = one_line_error(lambda: config_from_hf(_llama(**changes), name="t", where="t.json"))
    assert got.startswith(message), got


def test_a_head_size_apart_from_hidden_over_heads_is_a_llama_option():
    # Hugging Face Llama reads head_dim when given (Mistral-Nemo: 5120 / 32 heads, head_dim 128).
    cfg = config_from_hf(_llama(hidden_size=5120, head_dim=128), name="t")
    assert cfg.head_dim == 128


def test_opt_heads_must_divide_hidden_even_with_a_head_dim_key(one_line_error):
    opt = json.loads((Path(__file__).resolve().parents[2] / "workloads" / "presets" / "opt-13b.json").read_text())
    _, message = one_line_error(lambda: config_from_hf({**opt, "num_attention_heads": 41, "head_dim": 125},
                                                       name="t", where="t.json"))
    assert message.startswith("num_attention_heads: found 41, allowed: a divisor of hidden_size (5120)")


def test_a_mixtral_config_needs_its_expert_keys(one_line_error):
    mixtral = json.loads((Path(__file__).resolve().parents[2] / "workloads" / "presets" /
                          "mixtral-8x7b.json").read_text())
    for key in ("num_local_experts", "num_experts_per_tok"):
        _, message = one_line_error(lambda key=key: config_from_hf({**mixtral, key: None}, name="t", where="t.json"))
        assert message.startswith(f"{key}: missing")


def test_a_long_integer_is_named_by_its_key_and_harmless_where_unread(tmp_path, one_line_error):
    text = json.dumps(_llama(bos_token_id=1))
    path = tmp_path / "config.json"
    path.write_text(text.replace('"bos_token_id": 1', '"bos_token_id": ' + "7" * 5000))
    assert load_model_config(str(path)).hidden_size == 4096  # a key no model reads keeps its value unconverted
    path.write_text(text.replace('"vocab_size": 32000', '"vocab_size": ' + "7" * 5000))
    _, message = one_line_error(lambda: load_model_config(str(path)))
    assert message.startswith("vocab_size: found an integer of 5,000 digits")


def test_context_holds_prompt_plus_output():
    cfg = load_model_config("llama-2-7b")
    check_context(cfg, 4000, 96)  # 4,096: the whole context
    with pytest.raises(InputError, match=r"^--prompt, --output: found a prompt of 4,000 tokens and an output of 97 "
                                         r"\(4,097 in all\), allowed: at most llama-2-7b's context of 4,096 tokens"):
        check_context(cfg, 4000, 97)


def test_an_opt_activation_other_than_relu_is_refused(one_line_error):
    """OPT's layers run activation_function (every OPT checkpoint: relu); the decoder builds relu, so another would be
    priced as relu without a word."""
    opt = json.loads((Path(__file__).resolve().parents[2] / "workloads" / "presets" / "opt-13b.json").read_text())
    assert config_from_hf(opt, name="t").mlp == "relu"
    _, message = one_line_error(lambda: config_from_hf({**opt, "activation_function": "gelu"}, name="t",
                                                       where="t.json"))
    assert message.startswith("activation_function: found 'gelu', allowed: 'relu'")


def _qwen2(**changes) -> dict:
    """Qwen2.5-7B's config.json as shipped: a 131,072-token sliding_window with use_sliding_window false."""
    qwen = json.loads((Path(__file__).resolve().parents[2] / "workloads" / "presets" / "qwen2.5-7b.json").read_text())
    return {**qwen, **changes}


def test_a_qwen2_window_covers_the_layers_from_max_window_layers(one_line_error):
    """Hugging Face's Qwen2 windows layers max_window_layers and later, only with use_sliding_window: 28 layers and
    max_window_layers 28 leave every layer whole; 0 windows every layer; 14 would window half, not modeled."""
    assert _qwen2()["num_hidden_layers"] == 28
    assert config_from_hf(_qwen2(), name="t").sliding_window is None
    assert config_from_hf(_qwen2(use_sliding_window=True, max_window_layers=28), name="t").sliding_window is None
    windowed = config_from_hf(_qwen2(use_sliding_window=True, max_window_layers=0, sliding_window=4096), name="t")
    assert windowed.sliding_window == 4096
    _, message = one_line_error(lambda: config_from_hf(_qwen2(use_sliding_window=True, max_window_layers=14),
                                                       name="t", where="t.json"))
    assert message.startswith("max_window_layers: found 14 with use_sliding_window true and 28 layers")
