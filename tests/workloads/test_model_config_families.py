"""Hand-written config.json files of published models in each supported family, as a user brings them: parameter
counts against the published ones, KV-cache bytes per token and decode FLOPs against a calculation from the config,
and the keys that change the shape (tied embeddings, head_dim apart from hidden / heads, one KV head, a sliding window)
or do not (rope_scaling: the rotary frequencies, which cost the same)."""

from __future__ import annotations

import pytest

from workloads.model_config import config_from_hf

LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "hidden_act": "silu",
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}
# Llama-3.2-1B: tied embeddings, head_dim 64 (2048 / 32).
LLAMA_32_1B = {**LLAMA_31_8B, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
               "head_dim": 64, "tie_word_embeddings": True}
# Qwen2.5-0.5B: tied embeddings, q/k/v biases, a sliding_window key that use_sliding_window false turns off.
QWEN_25_05B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
    "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
    "max_position_embeddings": 32768, "max_window_layers": 24, "sliding_window": 32768, "use_sliding_window": False,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "hidden_act": "silu", "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}
MISTRAL_7B_V01 = {
    "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000,
    "max_position_embeddings": 32768, "sliding_window": 4096, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
    "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
OPT_13B = {
    "architectures": ["OPTForCausalLM"], "model_type": "opt", "hidden_size": 2048, "ffn_dim": 8192,
    "num_hidden_layers": 24, "num_attention_heads": 32, "vocab_size": 50272, "max_position_embeddings": 2048,
    "activation_function": "relu", "do_layer_norm_before": True, "word_embed_proj_dim": 2048, "torch_dtype": "float16",
}
# A GQA model with one KV head of 256 dimensions (16 x 256 = 4096 query dimensions on a 3072 hidden size).
ONE_KV_HEAD = {**LLAMA_31_8B, "hidden_size": 3072, "intermediate_size": 12288, "num_hidden_layers": 28,
               "num_attention_heads": 16, "num_key_value_heads": 1, "head_dim": 256, "max_position_embeddings": 8192,
               "rope_scaling": None}

# Parameters as Hugging Face counts them (each checkpoint's safetensors total), where the model is published.
PUBLISHED = {"llama-3.1-8b": 8_030_261_248, "llama-3.2-1b": 1_235_814_400, "qwen2.5-0.5b": 494_032_768,
             "mistral-7b-v0.1": 7_241_732_096, "opt-1.3b": 1_315_758_080}
CONFIGS = {"llama-3.1-8b": LLAMA_31_8B, "llama-3.2-1b": LLAMA_32_1B, "qwen2.5-0.5b": QWEN_25_05B,
           "mistral-7b-v0.1": MISTRAL_7B_V01, "opt-1.3b": OPT_13B, "one-kv-head": ONE_KV_HEAD}


def _by_hand(cfg: dict) -> int:
    """Parameters from the config's sizes: attention (q, k, v, o; Qwen2's q/k/v biases), the MLP (gate, up, down; OPT's
    fc1, fc2 with biases), two norms per layer and a final one, the embedding, an untied LM head and OPT's learned
    positions (2 extra rows)."""
    h, layers, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    if cfg["model_type"] == "opt":
        f = cfg["ffn_dim"]
        layer = 4 * h * h + 4 * h + 2 * h * f + f + h + 2 * 2 * h  # biased projections; layer norms of weight and bias
        return layers * layer + vocab * h + (cfg["max_position_embeddings"] + 2) * h + 2 * h
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg.get("head_dim") or h // heads
    attention = 2 * h * heads * d + 2 * h * kv_heads * d
    if cfg["model_type"] == "qwen2":
        attention += heads * d + 2 * kv_heads * d
    layer = attention + 3 * h * cfg["intermediate_size"] + 2 * h
    head = 0 if cfg.get("tie_word_embeddings") else vocab * h
    return layers * layer + vocab * h + head + h


@pytest.mark.parametrize("name", PUBLISHED)
def test_parameters_match_the_published_count(name):
    assert _by_hand(CONFIGS[name]) == PUBLISHED[name]  # the calculation itself, against the checkpoint
    assert config_from_hf(CONFIGS[name], name=name).param_count() == PUBLISHED[name]


def test_one_kv_head_of_256_by_hand():
    config = config_from_hf(ONE_KV_HEAD, name="one-kv-head")
    assert (config.head_dim, config.num_kv_heads) == (256, 1)
    assert config.param_count() == _by_hand(ONE_KV_HEAD)
    # K and V of one 256-dimension head in 28 layers, 2 bytes each: 28,672 bytes a token.
    assert config.kv_bytes_per_token() == 2 * 28 * 1 * 256 * 2 == 28_672


@pytest.mark.parametrize("name, kv_bytes", [
    ("llama-3.1-8b", 2 * 32 * 8 * 128 * 2),  # 131,072: 128K tokens of context hold 17.2 GB
    ("llama-3.2-1b", 2 * 16 * 8 * 64 * 2),
    ("qwen2.5-0.5b", 2 * 24 * 2 * 64 * 2),
    ("opt-1.3b", 2 * 24 * 32 * 64 * 2),  # no GQA: every head keeps its K and V
])
def test_kv_bytes_per_token_by_hand(name, kv_bytes):
    assert config_from_hf(CONFIGS[name], name=name).kv_bytes_per_token() == kv_bytes


def test_the_shape_keys_are_read():
    assert config_from_hf(MISTRAL_7B_V01, name="m").sliding_window == 4096
    assert config_from_hf(QWEN_25_05B, name="q").sliding_window is None  # use_sliding_window false
    assert config_from_hf(LLAMA_32_1B, name="l").tie_embeddings
    assert config_from_hf(LLAMA_31_8B, name="l").max_positions == 131072  # rope_scaling's long context
    # rope_scaling changes the rotary frequencies only, which cost the same: the same model as without it.
    assert config_from_hf({**LLAMA_31_8B, "rope_scaling": None}, name="l") == config_from_hf(LLAMA_31_8B, name="l")


def test_decode_flops_of_a_tied_model_by_hand(trace_of):
    """Llama-3.2-1B, one decode token after 1,023 cached: 2 FLOPs per weight of each layer's matrices and the LM head
    (the tied embedding matrix, read again), plus attention's QK^T and PV over 1,024 keys in each of 32 heads; the
    weights it holds count the tied matrix once."""
    config = config_from_hf(LLAMA_32_1B, name="llama-3.2-1b")
    trace = trace_of(config, "decode", 1, 1, 1023)
    h, layers, d, heads = 2048, 16, 64, 32
    matrices = layers * (2 * h * heads * d + 2 * h * 8 * d + 3 * h * 8192) + 128256 * h
    attention = layers * heads * 1024 * 2 * (2 * d)
    pointwise = trace.flops - 2 * matrices - attention  # norms, residual adds, SiLU, rotary: a few per hidden value
    assert 0 <= pointwise < 1e-3 * trace.flops
    assert trace.param_bytes == 2 * PUBLISHED["llama-3.2-1b"]
