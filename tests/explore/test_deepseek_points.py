"""DeepSeek models (MLA, shared experts, dense first layers) as design points: the KV cache sized from the latent under
tensor and data-parallel attention, the weights data-parallel ranks hold, what is refused over MLA, and the points
the README names running end to end.

The tiny DeepSeek: hidden 64, 2 layers (the first dense), 4 heads with 8 + 4 query/key dims and 6 value dims, a
16-wide latent, 4 routed experts of 32 (2 a token) and one shared, a dense MLP of 96, vocabulary 128. Per layer its
attention holds q_proj 64 x 4 x 12 = 3,072, kv_a_proj_with_mqa 64 x 20 = 1,280, the latent's norm 16, kv_b_proj 16 x
4 x 14 = 896 and o_proj 4 x 6 x 64 = 1,536: 6,800, and two norms of 64. The dense layer's MLP: 3 x 64 x 96 = 18,432;
the MoE layer's: 4 experts of 3 x 64 x 32 = 6,144 each, the shared one as large, the router 64 x 4 = 256. The
embedding and LM head 128 x 64 each and the final norm 64: 79,712 parameters, 24,576 of them routed experts'. Its KV
cache holds (16 + 4) values a layer a token: 2 x 20 x 2 B = 80 B.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from sim.serving_spec import ServingSpec
from workloads.errors import InputError
from workloads.requests import Fixed

ROUTED_PARAMS = 4 * 3 * 64 * 32
REST_PARAMS = 2 * (6800 + 128) + 3 * 64 * 96 + 3 * 64 * 32 + 64 * 4 + 2 * 128 * 64 + 64
KV_B_PER_TOKEN = 2 * (16 + 4) * 2
SPEC = ServingSpec(requests=6, rate_per_s=50.0, prompt=Fixed(tokens=40), output=Fixed(tokens=4))


TINY_DEEPSEEK = {
    "model_type": "deepseek_v2", "architectures": ["DeepseekV2ForCausalLM"], "hidden_size": 64,
    "intermediate_size": 96, "moe_intermediate_size": 32, "num_hidden_layers": 2, "first_k_dense_replace": 1,
    "num_attention_heads": 4, "num_key_value_heads": 4, "q_lora_rank": None, "kv_lora_rank": 16,
    "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 6, "n_routed_experts": 4, "n_shared_experts": 1,
    "num_experts_per_tok": 2, "vocab_size": 128, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
    "torch_dtype": "bfloat16", "hidden_act": "silu", "scoring_func": "softmax", "topk_method": "greedy"}


@pytest.fixture(scope="module")
def tiny_deepseek(tmp_path_factory) -> str:
    """The tiny DeepSeek's config.json, in a folder of its own (the model is named after the folder)."""
    path = tmp_path_factory.mktemp("tiny-deepseek") / "config.json"
    path.write_text(json.dumps(TINY_DEEPSEEK))
    return str(path)


def _point(model: str, tp: int = 2, serving: ServingSpec | None = SPEC, **knobs) -> DesignPoint:
    return DesignPoint(model=model, device="h100-sxm", batch=SPEC.max_seqs, prompt=0, output=0, tp=tp, ep=tp,
                       serving=serving, knobs=tuple(sorted({"attention_parallel": "data", **knobs}.items())))


def test_the_counts_the_memory_checks_rest_on(tiny_deepseek):
    from workloads.model_config import load_model_config

    config = load_model_config(tiny_deepseek)
    assert config.param_count() == ROUTED_PARAMS + REST_PARAMS == 79_712
    assert config.routed_expert_param_count() == ROUTED_PARAMS
    assert config.kv_bytes_per_token() == KV_B_PER_TOKEN


@pytest.mark.parametrize("tp", [2, 4])
def test_every_tensor_parallel_rank_holds_the_whole_latent_and_a_data_parallel_rank_its_own_sequences(
        tiny_evaluator, tiny_deepseek, tp):
    """Under tensor parallelism every device caches every token's latent (a block of 16 tokens: tp x 16 x 80 B over
    the replica); a data-parallel rank caches its own sequences' once (16 x 80 B a block). Data-parallel ranks hold the
    routed experts once and the rest (attention, the dense layer, the shared expert, the router) on every device."""
    data = tiny_evaluator.evaluate(_point(tiny_deepseek, tp)).result.memory
    tensor = tiny_evaluator.evaluate(_point(tiny_deepseek, tp, attention_parallel="tensor")).result.memory
    assert data.kv_block_B == pytest.approx(KV_B_PER_TOKEN * SPEC.block_tokens, rel=1e-12)
    assert tensor.kv_block_B == pytest.approx(tp * KV_B_PER_TOKEN * SPEC.block_tokens, rel=1e-12)
    assert data.weights_B == pytest.approx(2 * (ROUTED_PARAMS + tp * REST_PARAMS), rel=1e-9)
    assert tensor.weights_B == pytest.approx(2 * (ROUTED_PARAMS + REST_PARAMS), rel=1e-9)


def test_a_mixed_format_stores_each_part_of_the_dense_and_moe_layers_at_its_bits(tiny_evaluator, tiny_deepseek):
    """Weights at 4 bits, the MLPs (the dense layer's, the experts' and the shared one) at 8, half the routed experts
    at 16, groups of 128 with a 16-bit scale (4.125 and 8.125 bits a weight): attention 2 x 6,800 and the rest (norms,
    embedding, LM head) 2 x 128 + 2 x 128 x 64 + 64 = 16,704 at 4.125; the MLPs 18,432 + 4 x 6,144 + 6,144 = 49,152
    at 8.125; the router's 64 x 4 = 256 at 16, as no format quantizes it; the hot half of the routed experts, 12,288,
    up from 8.125 to 16 bits."""
    point = replace(_point(tiny_deepseek, 1, attention_parallel="tensor", mlp_weight_bits=8, hot_experts=0.5,
                           hot_expert_bits=16), weight_bits=4)
    memory = tiny_evaluator.evaluate(point).result.memory
    assert memory.weights_B == pytest.approx(((2 * 6800 + 16_704) * 4.125 + 49_152 * 8.125 + 256 * 16
                                              + ROUTED_PARAMS / 2 * (16 - 8.125)) / 8, rel=1e-12)


def test_data_parallel_ranks_exchange_tokens_in_the_moe_layers_alone(tiny_evaluator, tiny_deepseek):
    """The dense first layer has no experts to dispatch tokens to: one exchange a pass of the tiny model's two layers
    (DeepSeek-V3: 58 of 61)."""
    point = _point(tiny_deepseek, 2)
    assert tiny_evaluator.cost_model(point, point.numeric_format).experts.moe_layers == 1


def test_the_latent_cache_matches_what_vllm_reports_for_deepseek_v2_lite():
    """vLLM v0.8.3 (vllm-project/vllm#15871, DeepSeek-V2-Lite-Chat in bf16): '0.95 GiB KV cache is needed' for one
    request of 32,768 tokens: 32,768 x 27 layers x 576 x 2 B = 0.949 GiB."""
    from workloads.model_config import load_model_config

    assert 32_768 * load_model_config("deepseek-v2-lite").kv_bytes_per_token() / 2**30 == pytest.approx(0.95,
                                                                                                      abs=0.005)


@pytest.mark.parametrize("knob, value", [("kv_budget", 64), ("topk_fraction", 0.5), ("retrieval_heads", 0.5),
                                         ("prefill_kept", 0.5)])
def test_a_per_head_kv_policy_over_the_latent_is_refused(tiny_evaluator, tiny_deepseek, knob, value):
    point = _point(tiny_deepseek, 1, attention_parallel="tensor", **{knob: value})
    with pytest.raises(InputError, match=rf"^{knob}: found {value!r} with tiny-deepseek\d*, allowed: .*per-head KV "
                                         rf"policy over it is not modeled"):
        tiny_evaluator.check_point(point)


@pytest.mark.parametrize("spec, message", [
    (dict(attention_device="h100-sxm", attention_devices=2), "attention_device: found 'h100-sxm'"),
    (dict(prefix_tokens=32, prefix_attention="cascade"), "prefix_attention: found 'cascade'"),
])
def test_attention_apart_or_cascaded_is_refused_for_mla(tiny_evaluator, tiny_deepseek, spec, message):
    from dataclasses import replace

    point = _point(tiny_deepseek, 1, serving=replace(SPEC, **spec), attention_parallel="tensor")
    with pytest.raises(InputError, match=rf"^{message} with tiny-deepseek\d*, allowed: "):
        tiny_evaluator.check_point(point)


@pytest.mark.slow  # the full model traced: about 20 s of CPU the first time
def test_deepseek_v2_lite_runs_on_an_h100(capsys):
    """`explore run --model deepseek-v2-lite --device h100-sxm`: a static batch, the full model traced (27 layers, 64
    experts)."""
    assert main(["run", "--model", "deepseek-v2-lite", "--device", "h100-sxm", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["fits_in_memory"] is True and metrics["tpot_s"] > 0


@pytest.mark.slow
def test_deepseek_v3_serves_on_eight_h200s_at_fp8_with_data_parallel_attention(capsys):
    """DeepSeek-V3 at fp8 weights on 8 H200s (tp 8, ep 8, attention_parallel data), as SGLang and vLLM serve it: the
    routed experts once over the 8 devices (654 GB at 1 B), the rest on every one (17 GB each), fits in 8 x 141 GB;
    a serving run of 16 requests completes them all."""
    assert main(["run", "--model", "deepseek-v3", "--device", "h200", "--tp", "8", "--ep", "8",
                 "--attention-parallel", "data", "--weight-bits", "8", "--weight-type", "fp8_e4m3", "--serving",
                 "--scheduler", "chunked", "--requests", "16", "--rate", "4", "--execution", "engine", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["fits_in_memory"] is True and metrics["requests_per_s"] > 0 and metrics["tpot_mean_s"] > 0


def test_a_weight_group_must_divide_the_mla_projections_k():
    """DeepSeek-V3 at tp 8: o_proj reads 128 heads x 128 value dims / 8 = 2,048 (not 128 x 576 / 8: the latent's width
    is not the value's), kv_b_proj the 512-wide latent, q_b_proj the 1,536-wide query latent; a group of 384 divides
    neither 7,168, 2,048 nor 512."""
    from explore.format_checks import check_format
    from workloads.model_config import load_model_config

    with pytest.raises(ValueError, match=r"found 384, which does not divide deepseek-v3's hidden \(QKV, MLP up, LM "
                                         r"head\) k=7168, attention output k=2048, latent \(kv_b_proj\) k=512;"):
        check_format({"weight_bits": 4, "group_size": 384}, load_model_config("deepseek-v3"), 8)
