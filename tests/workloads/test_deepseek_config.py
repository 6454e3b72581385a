"""DeepSeek-V2-Lite, DeepSeek-V2 and DeepSeek-V3 (model_type deepseek_v2 / deepseek_v3): parameter counts against the
model cards and by hand, the MLA KV cache per token, and the configs the decoder refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernels.module_params import expert_param_share
from workloads.model_config import config_from_hf, load_model_config

PRESETS = Path(__file__).resolve().parents[2] / "workloads" / "presets"

# (total, activated) parameters from each Hugging Face model card, and the card's last digit. DeepSeek counts the
# activated parameters without the input embedding (a table lookup): DeepSeek-V3's README_WEIGHTS.md gives 36.6B
# activated "including 0.9B for the output Head", the 37B of its card.
MODEL_CARDS = {
    "deepseek-v3": (671e9, 37e9, 1e9),  # deepseek-ai/DeepSeek-V3: "671B total parameters with 37B activated"
    "deepseek-v2": (236e9, 21e9, 1e9),  # deepseek-ai/DeepSeek-V2: "236B total parameters, of which 21B are activated"
    "deepseek-v2-lite": (15.7e9, 2.4e9, 0.1e9),  # deepseek-ai/DeepSeek-V2-Lite: "15.7B ... 2.4B activated"
}


@pytest.mark.parametrize("name", sorted(MODEL_CARDS))
def test_parameters_match_the_model_card(name):
    """Within the card's last digit (DeepSeek-V2-Lite's 2.45B activated prints as "2.4B")."""
    total, activated, digit = MODEL_CARDS[name]
    config = load_model_config(name)
    embedding = config.vocab_size * config.hidden_size
    assert config.param_count() == pytest.approx(total, abs=digit)
    assert config.active_param_count() - embedding == pytest.approx(activated, abs=digit)


def test_deepseek_v3_by_hand():
    """61 layers of MLA: q_a_proj (7168 x 1536), its norm (1536), q_b_proj (1536 x 128 heads x (128 + 64)),
    kv_a_proj_with_mqa (7168 x (512 + 64)), the latent's norm (512), kv_b_proj (512 x 128 x (128 + 128)), o_proj
    (128 x 128 x 7168) and two norms (7168 each); 3 dense layers of gate, up, down (3 x 7168 x 18432); 58 MoE layers
    of 256 routed experts and 1 shared (3 x 7168 x 2048 each), the router (7168 x 256) and its bias (256); the
    embedding and LM head (2 x 129,280 x 7168) and the final norm. 671B: the card's total without the
    multi-token-prediction module, which is not built. A token runs 8 routed experts and the shared one."""
    attention = (7168 * 1536 + 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 + 512 * 128 * 256 + 128 * 128 * 7168
                 + 2 * 7168)
    expert = 3 * 7168 * 2048
    moe = lambda routed: routed * expert + expert + 7168 * 256 + 256  # noqa: E731
    outside = 2 * 129_280 * 7168 + 7168
    config = load_model_config("deepseek-v3")
    assert config.param_count() == 61 * attention + 3 * 3 * 7168 * 18432 + 58 * moe(256) + outside
    assert config.param_count() == 671_026_419_200
    assert config.active_param_count() == 61 * attention + 3 * 3 * 7168 * 18432 + 58 * moe(8) + outside
    assert expert_param_share(config) == pytest.approx(58 * 256 * expert / config.param_count(), rel=1e-12)


def test_deepseek_v2_lite_queries_are_projected_directly():
    """q_lora_rank null: q_proj (2048 x 16 x 192) in place of q_a_proj, its norm and q_b_proj."""
    config = load_model_config("deepseek-v2-lite")
    assert config.q_lora_rank == 0
    attention = 2048 * 16 * 192 + 2048 * 576 + 512 + 512 * 16 * 256 + 16 * 128 * 2048
    assert config._attention_params() == attention


@pytest.mark.parametrize("name, layers", [("deepseek-v3", 61), ("deepseek-v2", 60), ("deepseek-v2-lite", 27)])
def test_the_kv_cache_holds_one_latent_and_rope_key_a_layer(name, layers):
    """(kv_lora_rank 512 + qk_rope_head_dim 64) x layers x 2 bytes in bf16: DeepSeek-V3's 61 x 576 x 2 = 70,272 B,
    not 2 x 128 heads x 192 x 61 x 2 = 5,996,544 B of per-head keys and values."""
    config = load_model_config(name)
    assert config.kv_bytes_per_token() == 576 * layers * 2
    assert config.kv_bytes_per_token(bits=8) == 576 * layers
    assert load_model_config("deepseek-v3").kv_bytes_per_token() == 70_272


def test_routing_fields():
    v3, v2, lite = (load_model_config(n) for n in ("deepseek-v3", "deepseek-v2", "deepseek-v2-lite"))
    assert (v3.scoring, v3.score_bias, v3.expert_groups, v3.topk_groups) == ("sigmoid", True, 8, 4)
    assert v3.routed_scale == 2.5
    assert (v2.scoring, v2.score_bias, v2.expert_groups, v2.topk_groups) == ("softmax", False, 8, 3)
    assert (lite.expert_groups, lite.topk_groups, lite.shared_experts, lite.dense_layers) == (1, 1, 2, 1)
    assert v3.normalize_topk and not v2.normalize_topk
    assert (v3.moe_layers, v3.dense_intermediate_size, v3.intermediate_size) == (58, 18432, 2048)


def _v3(**changes) -> dict:
    cfg = json.loads((PRESETS / "deepseek-v3.json").read_text())
    return {**cfg, **changes}


@pytest.mark.parametrize("changes, message", [
    ({"scoring_func": "tanh"}, "scoring_func: found 'tanh', allowed: softmax, sigmoid"),
    ({"topk_method": "random"}, "topk_method: found 'random', allowed: greedy, group_limited_greedy, noaux_tc"),
    ({"moe_layer_freq": 2}, "moe_layer_freq: found 2, allowed: 1"),
    ({"first_k_dense_replace": 61}, "first_k_dense_replace: found 61, allowed: 0 to 60"),
    ({"first_k_dense_replace": -1}, "first_k_dense_replace: found -1, allowed: an integer from 0 to 1,000"),
    ({"n_shared_experts": 1.5}, "n_shared_experts: found 1.5, allowed: an integer from 0 to 1,024"),
    ({"attention_bias": True}, "attention_bias: found true, allowed: false"),
    ({"n_group": 7}, "n_group, topk_group: found 7 groups of 256 experts"),
    ({"topk_group": 9}, "n_group, topk_group: found 8 groups of 256 experts, 9 chosen"),
    ({"qk_rope_head_dim": 63}, "qk_rope_head_dim: found 63, allowed: an even head size"),
    ({"kv_lora_rank": 0}, "kv_lora_rank: found 0, allowed: a positive integer"),
    ({"routed_scaling_factor": -1}, "routed_scaling_factor: found -1, allowed: a positive number"),
    ({"routed_scaling_factor": None}, "routed_scaling_factor: found null, allowed: a positive number"),
    ({"n_routed_experts": None}, "n_routed_experts: missing"),
    ({"architectures": ["DeepseekV2ForCausalLM"]}, "architectures: found 'DeepseekV2ForCausalLM' with model_type"),
])
def test_what_is_not_modeled_is_refused(changes, message, one_line_error):
    where, got = one_line_error(lambda: config_from_hf(_v3(**changes), name="t", where="t.json"))
    assert where == "t.json" and got.startswith(message), got


def test_a_config_without_the_mla_keys_names_the_first_missing():
    cfg = _v3()
    del cfg["v_head_dim"]
    with pytest.raises(ValueError, match="t.json: key 'v_head_dim' is missing"):
        config_from_hf(cfg, name="t", where="t.json")
