"""Qwen3 (dense qwen3, MoE qwen3_moe): parameter counts against the model cards, the per-head q/k RMSNorms and the
routed experts in a traced layer, the routing weights' renormalization, and the configs the decoder refuses."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from kernels.fusion import fuse_engine
from kernels.lowering import lower_trace
from kernels.table import KernelTable
from workloads.model_config import config_from_hf, load_model_config

PRESETS = Path(__file__).resolve().parents[2] / "workloads" / "presets"

# (total, activated) parameters from each Hugging Face model card's "Number of Parameters" line.
MODEL_CARDS = {
    "qwen3-8b": (8.2e9, 8.2e9),  # https://huggingface.co/Qwen/Qwen3-8B: "8.2B"
    "qwen3-32b": (32.8e9, 32.8e9),  # https://huggingface.co/Qwen/Qwen3-32B: "32.8B"
    "qwen3-30b-a3b": (30.5e9, 3.3e9),  # https://huggingface.co/Qwen/Qwen3-30B-A3B: "30.5B in total and 3.3B activated"
    "qwen3-235b-a22b": (235e9, 22e9),  # https://huggingface.co/Qwen/Qwen3-235B-A22B: "235B in total and 22B activated"
}
# Where 1% is finer than the card prints: Qwen3-30B-A3B's 3,353,032,704 activated parameters (by hand below) are
# 1.6% above its card's "3.3B", within the card's last digit (0.1B).
ACTIVATED_TOLERANCE = {"qwen3-30b-a3b": 0.1e9}
# The cards' "Number of Parameters (Non-Embedding)": all but the embedding and the untied LM head.
NON_EMBEDDING = {
    "qwen3-8b": 6.95e9,  # https://huggingface.co/Qwen/Qwen3-8B: "6.95B"
    "qwen3-235b-a22b": 234e9,  # https://huggingface.co/Qwen/Qwen3-235B-A22B: "234B"
}


def _preset(name: str) -> dict:
    return json.loads((PRESETS / f"{name}.json").read_text())


@pytest.mark.parametrize("name", sorted(MODEL_CARDS))
def test_parameters_match_the_model_card(name):
    total, activated = MODEL_CARDS[name]
    config = load_model_config(name)
    assert config.param_count() == pytest.approx(total, rel=0.01)
    assert config.active_param_count() == pytest.approx(activated, rel=0.01, abs=ACTIVATED_TOLERANCE.get(name, 0))
    if name in NON_EMBEDDING:
        embedding = config.vocab_size * config.hidden_size * (1 if config.tie_embeddings else 2)
        assert config.param_count() - embedding == pytest.approx(NON_EMBEDDING[name], rel=0.01)


def test_qwen3_30b_a3b_by_hand():
    """Per layer: q and o (2048 x 32 x 128 each), k and v (2048 x 4 x 128 each), q_norm and k_norm (128 each), 128
    experts of gate, up and down (3 x 2048 x 768), the router (2048 x 128) and two norms (2048 each); 48 layers,
    an untied embedding and LM head (2 x 151,936 x 2048) and the final norm. A token reaches 8 of the 128 experts."""
    attention = 2 * 2048 * 4096 + 2 * 2048 * 512 + 2 * 128
    rest = 2048 * 128 + 2 * 2048
    expert = 3 * 2048 * 768
    outside = 2 * 151_936 * 2048 + 2048
    config = load_model_config("qwen3-30b-a3b")
    assert config.param_count() == 48 * (attention + 128 * expert + rest) + outside == 30_532_122_624
    assert config.active_param_count() == 48 * (attention + 8 * expert + rest) + outside
    assert (config.intermediate_size, config.num_experts, config.experts_per_token) == (768, 128, 8)


def test_mixtral_activated_parameters():
    """Mixtral of Experts (Jiang et al. 2024): 46.7B parameters, 12.9B active per token (2 of 8 experts)."""
    config = load_model_config("mixtral-8x7b")
    assert config.active_param_count() == pytest.approx(12.9e9, rel=0.01)
    assert config.normalize_topk and not config.qk_norm


# The MoE preset builds 6,144 expert modules on fake tensors (about 5 s): in the slow run.
@pytest.mark.parametrize("name", ["qwen3-8b", pytest.param("qwen3-30b-a3b", marks=pytest.mark.slow)])
def test_param_count_equals_module(name):
    from torch._subclasses.fake_tensor import FakeTensorMode

    from workloads.decoder import DecoderModel

    config = load_model_config(name)
    with FakeTensorMode():
        module = DecoderModel(config)
        assert sum(p.numel() for p in module.parameters()) == config.param_count()
        assert tuple(module.layers[0].self_attn.q_norm.weight.shape) == (128,)


def _tiny_moe(**changes) -> dict:
    """qwen3-30b-a3b's config at toy sizes: hidden 64, 4 heads of 16, 2 KV heads, 2 layers, 8 experts of 32, 2 a
    token."""
    return {**_preset("qwen3-30b-a3b"), "hidden_size": 64, "head_dim": 16, "num_attention_heads": 4,
            "num_key_value_heads": 2, "num_hidden_layers": 2, "num_experts": 8, "num_experts_per_tok": 2,
            "moe_intermediate_size": 32, "intermediate_size": 96, "vocab_size": 128, **changes}


def _layer(table: KernelTable, layer: int) -> list:
    return [k for k in table.kernels if k.layer == layer]


def test_a_traced_layer_normalizes_queries_and_keys_then_routes(trace_of):
    """One decode step of 4 sequences: each layer's q_norm and k_norm run on the projected heads (an rsqrt each,
    between the projections and the rotary embedding), the engine runs each as one rms_norm kernel, and the MoE
    layer runs its experts' GEMMs of hidden x moe_intermediate (gate, up) and moe_intermediate x hidden (down)."""
    config = config_from_hf(_tiny_moe(), name="tiny-qwen3-moe")
    trace = trace_of(config, "decode", 4, 1, 20)
    eager = KernelTable.from_kernels(lower_trace(trace))
    for layer in range(config.num_layers):
        kernels = _layer(eager, layer)
        modules = [k.module for k in kernels]
        for norm in ("q_norm", "k_norm"):
            ops = [k.op for k in kernels if k.module == f"layers.{layer}.self_attn.{norm}"]
            assert ops.count("rsqrt") == 1, (norm, ops)
        q_proj, q_norm = modules.index(f"layers.{layer}.self_attn.q_proj"), \
            modules.index(f"layers.{layer}.self_attn.q_norm")
        k_proj, k_norm = modules.index(f"layers.{layer}.self_attn.k_proj"), \
            modules.index(f"layers.{layer}.self_attn.k_norm")
        assert q_proj < q_norm < k_proj < k_norm  # Hugging Face's order: q_norm(q_proj(x)), then k_norm(k_proj(x))
        gemms = {(k.module.rsplit(".", 1)[-1], k.k, k.n) for k in kernels if ".experts." in k.module and k.op == "mm"}
        assert gemms == {("gate_proj", 64, 32), ("up_proj", 64, 32), ("down_proj", 32, 64)}
        # 4 tokens x 2 experts each over 8 experts: every expert gets one row (balanced routing).
        assert sum(1 for k in kernels if k.module.endswith(".gate_proj")) == 8
    engine = fuse_engine(eager)
    layer = _layer(engine, 1)
    assert [k.module for k in layer if k.op == "rms_norm"] == ["layers.1.self_attn.q_norm", "layers.1.self_attn.k_norm"]
    assert sum(1 for k in layer if k.op == "fused_moe") == 1


def test_a_dense_qwen3_has_no_qkv_bias_and_no_window():
    config = load_model_config("qwen3-8b")
    assert config.qk_norm and not config.attention_bias and not config.output_bias and not config.is_moe
    assert config.sliding_window is None and config.head_dim == 128


def test_attention_bias_adds_the_output_projection_bias_too():
    """Hugging Face's Qwen3Attention gives q, k, v and o_proj a bias with attention_bias (unlike Qwen2's o_proj)."""
    plain = config_from_hf(_preset("qwen3-8b"), name="q")
    biased = config_from_hf({**_preset("qwen3-8b"), "attention_bias": True}, name="q")
    assert biased.param_count() - plain.param_count() == 36 * (32 * 128 + 2 * 8 * 128 + 4096)


@pytest.mark.parametrize("normalize", [True, False])
def test_norm_topk_prob_renormalizes_the_routing_weights_only(normalize, trace_of):
    """norm_topk_prob divides the top-k weights by their sum (one sum and one division a layer); the experts' work
    is the same either way."""
    config = config_from_hf(_tiny_moe(norm_topk_prob=normalize), name="tiny-qwen3-moe")
    assert config.normalize_topk is normalize
    ops = [op for op in trace_of(config, "decode", 4, 1, 20).ops if op.module == "layers.0.mlp"]
    assert sum(op.short_name == "div" for op in ops) == (1 if normalize else 0)


@pytest.mark.parametrize("changes, message", [
    ({"num_experts": None}, "num_experts: missing, allowed: a positive integer (a qwen3_moe config needs it"),
    ({"num_experts_per_tok": None}, "num_experts_per_tok: missing"),
    ({"moe_intermediate_size": None}, "moe_intermediate_size: missing"),
    ({"num_experts": 0}, "num_experts: found 0, allowed: a positive integer"),
    ({"num_experts_per_tok": 200}, "num_experts_per_tok: found 200, allowed: 1 to num_local_experts (128)"),
    ({"mlp_only_layers": [0, 47]}, "mlp_only_layers: found [0, 47], allowed: [] (an MoE MLP in every layer"),
    ({"decoder_sparse_step": 2}, "decoder_sparse_step: found 2, allowed: 1 (an MoE MLP in every layer"),
    ({"norm_topk_prob": "true"}, "norm_topk_prob: found 'true', allowed: true or false"),
    ({"model_type": "qwen3"}, "architectures: found 'Qwen3MoeForCausalLM' with model_type 'qwen3'"),
])
def test_a_qwen3_moe_config_the_decoder_cannot_build_is_refused(changes, message, one_line_error):
    where, got = one_line_error(lambda: config_from_hf({**_preset("qwen3-30b-a3b"), **changes}, name="t",
                                                       where="t.json"))
    assert where == "t.json" and got.startswith(message), got


def test_a_missing_key_is_dropped_not_nulled(one_line_error):
    cfg = _preset("qwen3-30b-a3b")
    del cfg["num_experts"]
    _, got = one_line_error(lambda: config_from_hf(cfg, name="t", where="t.json"))
    assert got.startswith("num_experts: missing")


def test_the_cli_refuses_a_bad_qwen3_moe_config_in_one_line(tmp_path, capsys):
    from explore.cli import main

    path = tmp_path / "config.json"
    path.write_text(json.dumps({**_preset("qwen3-30b-a3b"), "mlp_only_layers": [3]}))
    code = main(["run", "--model", str(path), "--device", "h100-sxm"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [
        f"explore: error: {path}: mlp_only_layers: found [3], allowed: [] (an MoE MLP in every layer; dense layers "
        f"among MoE ones are not modeled)"]


def test_a_few_layers_of_the_full_size_moe_trace_at_its_shapes(trace_of):
    """qwen3-30b-a3b at full width (2 of its 48 layers), one decode token: 8 experts reached, each a GEMM of hidden
    2048 x moe_intermediate 768 (gate, up) and back (down)."""
    config = replace(load_model_config("qwen3-30b-a3b"), num_layers=2)
    kernels = _layer(KernelTable.from_kernels(lower_trace(trace_of(config, "decode", 1, 1, 63))), 1)
    gemms = [(k.module.rsplit(".", 1)[-1], k.m, k.k, k.n) for k in kernels if ".experts." in k.module and k.op == "mm"]
    assert len(gemms) == 3 * 8
    assert set(gemms) == {("gate_proj", 1, 2048, 768), ("up_proj", 1, 2048, 768), ("down_proj", 1, 768, 2048)}
