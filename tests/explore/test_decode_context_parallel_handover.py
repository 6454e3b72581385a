"""Decode context parallelism on a decode pool: a prefill pool at dcp 1 hands each request's KV to a decode pool at
dcp tp, as vLLM's NIXL connector runs DCP for latent attention (each decode device reads its slice from one prefill
device). A tiny DeepSeek-V2 (one latent of 16 + 4 RoPE dimensions a token, 2 layers: 2 x 20 x 2 B = 80 B a token) on
4 H100s, whose latent every device holds whole at dcp 1, a quarter of the tokens each at dcp 4."""

from __future__ import annotations

from pathlib import Path

import pytest

from explore.design_point import DesignPoint
from explore.evaluate import serving_pools
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import write_tiny_model
from workloads.requests import Fixed

TOKEN_B = 2 * (16 + 4) * 2
TINY_MLA = {
    "model_type": "deepseek_v2", "architectures": ["DeepseekV2ForCausalLM"], "hidden_size": 64,
    "intermediate_size": 96, "moe_intermediate_size": 32, "num_hidden_layers": 2, "first_k_dense_replace": 1,
    "n_routed_experts": 4, "num_experts_per_tok": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
    "q_lora_rank": None, "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 6,
    "vocab_size": 128, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "torch_dtype": "bfloat16",
    "hidden_act": "silu"}


@pytest.fixture(scope="module")
def tiny_mla(tmp_path_factory) -> str:
    return write_tiny_model(Path(tmp_path_factory.mktemp("mla")), TINY_MLA)


def _point(model: str, dcp: int, tp: int = 4) -> DesignPoint:
    """One request of 1,500 prompt and 4 output tokens, prefilled on one replica and decoded on another."""
    spec = ServingSpec(requests=1, rate_per_s=1.0, prompt=Fixed(tokens=1500), output=Fixed(tokens=4),
                       prefill_replicas=1)
    return DesignPoint(model=model, device="h100-sxm", batch=1, prompt=0, output=0, tp=tp, execution="graphs",
                       serving=spec, knobs=(("dcp", dcp),) if dcp > 1 else ())


def test_the_decode_pool_takes_dcp_and_the_prefill_pool_holds_its_kv_whole(evaluator, tiny_mla):
    """The prefill pool: blocks of 16 tokens, each token's latent on all 4 devices (16 x 4 x 80 B = 5,120 B), its steps
    unsplit; the decode pool: blocks of 16 x 4 = 64 tokens, each token's latent on one device (64 x 80 B = 5,120 B,
    vLLM's KV manager's count under DCP), its decode attention split 4 ways."""
    point = _point(tiny_mla, 4)
    assert point.unjudged() == ""
    prefill, decode = (evaluator._pool(point, point.numeric_format, *pool) for pool in serving_pools(point))
    assert (prefill.role, decode.role) == ("prefill", "decode")
    assert (prefill.memory.block_tokens, decode.memory.block_tokens) == (16, 64)
    assert prefill.memory.kv_block_B == 16 * 4 * TOKEN_B
    assert decode.memory.kv_block_B == 64 * 1 * TOKEN_B
    assert (prefill.costs.template.context_split, decode.costs.template.context_split) == (1, 4)


def test_each_decode_device_receives_its_quarter_of_the_kv(evaluator, tiny_mla):
    """The 1,500 prompt tokens' KV crosses InfiniBand NDR (50 GB/s a port, 2.7 us a send: its preset's datasheet
    figures), each of the 4 prefill devices sending over its own port what its decode device holds: the whole latent
    at dcp 1, 1,500 x 80 B / 50 GB/s + 2.7 us = 5.1 us; a quarter at dcp 4, 1,500 x 20 B / 50 GB/s + 2.7 us = 3.3 us."""
    for dcp, crossing_s in ((1, 1500 * TOKEN_B / 50e9 + 2.7e-6), (4, 1500 * TOKEN_B / 4 / 50e9 + 2.7e-6)):
        point = _point(tiny_mla, dcp)
        assert point.serving.handoff_links(point.device) == ("infiniband-ndr",)
        records = evaluator.evaluate(point).result.records
        assert records.decode_admitted_s[0] - records.first_token_s[0] == pytest.approx(crossing_s, rel=1e-9)


@pytest.mark.parametrize("grouped", [False, True])
def test_a_decode_pool_is_refused_dcp_where_the_connector_does_not_hand_over_under_it(tiny_mla, tiny_config, grouped):
    """vLLM's NIXL connector runs DCP for latent attention at dcp 1 or tp alone: dcp 2 of 4 is refused, on the latent
    model as on a grouped-query one."""
    point = _point(tiny_config if grouped else tiny_mla, 2)
    assert point.unjudged().startswith("prefill_replicas: found 1 with dcp 2, allowed: 0, or a model of latent "
                                       "attention at dcp 4"), point.unjudged()
