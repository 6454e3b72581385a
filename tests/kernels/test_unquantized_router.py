"""MoE routers kept at 16 bits under every format (kernels/formats.py unquantized_module, NumericFormat.module_bits,
KernelTable.with_format, kernels/module_params.py stored_weight_scale), as vLLM builds them: Mixtral's, Qwen2/3-MoE's
and DeepSeek's gate without a quant_config, gpt-oss's router a plain bfloat16 linear.

Expected values are hand counts from each model's config.json shapes and the formats' definitions (4 bits + a 16-bit
scale per 128 weights = 4.125 bits; 8.125 at 8 bits), or invariants."""

from __future__ import annotations

import numpy as np
import pytest

from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.fusion import fuse
from kernels.lowering import lower_trace
from kernels.module_params import stored_weight_scale
from kernels.table import KernelTable
from workloads.model_config import load_model_config

W4 = NumericFormat(weight_bits=4)
FP8 = NumericFormat(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3")
MXFP4 = dict(weight_bits=4, weight_type="fp4_e2m1", scale_type="e8m0", group_size=32)
# Mixtral 8x7B by layer (config.json: hidden 4,096, 32 heads and 8 KV heads of 128, 8 experts of intermediate 14,336,
# vocabulary 32,000, untied head): q and o 4,096 x 4,096, k and v 4,096 x 1,024; 8 experts of 3 x 4,096 x 14,336;
# a router of 4,096 x 8 without bias; two RMSNorms of 4,096.
MIXTRAL_LAYERS = 32
MIXTRAL_ATTENTION = 2 * 4096 * 4096 + 2 * 4096 * 1024
MIXTRAL_EXPERTS = 8 * 3 * 4096 * 14336
MIXTRAL_ROUTER = 4096 * 8
MIXTRAL_OUTSIDE = 2 * 32000 * 4096 + 4096 + MIXTRAL_LAYERS * 2 * 4096  # embedding, head, final and layer norms


def _mixtral_params() -> int:
    return MIXTRAL_LAYERS * (MIXTRAL_ATTENTION + MIXTRAL_EXPERTS + MIXTRAL_ROUTER) + MIXTRAL_OUTSIDE


def test_mixtral_at_4_bits_stores_its_routers_in_16():
    """Mixtral 8x7B at 4-bit weights: attention, experts, embedding, head and norms at 4.125 bits (head_bits 0: as
    weight_bits), the 32 layers' 4,096 x 8 router weights at 2 bytes each."""
    config = load_model_config("mixtral-8x7b")
    params = config.param_count()
    assert params == _mixtral_params() == 46_702_792_704
    routers = MIXTRAL_LAYERS * MIXTRAL_ROUTER
    stored_B = 2.0 * params * stored_weight_scale(W4, config)
    assert stored_B == pytest.approx((params - routers) * 4.125 / 8 + routers * 2, rel=1e-12)
    # The embedding and head at 16 bits (head_bits 16) and the experts at 8 (mlp_weight_bits): each part at its
    # bits, the routers at 16 still.
    fmt = NumericFormat(weight_bits=4, head_bits=16, mlp_weight_bits=8)
    attention, experts = MIXTRAL_LAYERS * MIXTRAL_ATTENTION, MIXTRAL_LAYERS * MIXTRAL_EXPERTS
    assert 2.0 * params * stored_weight_scale(fmt, config) == pytest.approx(
        attention * 4.125 / 8 + experts * 8.125 / 8 + (routers + MIXTRAL_OUTSIDE) * 2, rel=1e-12)


def test_gpt_oss_as_it_ships_stores_its_routers_in_bf16():
    """gpt-oss-20b as its checkpoint stores it: MXFP4 experts (4 bits + an 8-bit scale per 32 = 4.25 bits), the rest
    bf16; its 24 routers (2,880 x 32 weights and a bias of 32 each: config.json hidden 2,880, 32 local experts) among
    the bf16 ones. Every weight but the experts' takes 2 bytes."""
    config = load_model_config("gpt-oss-20b")
    params = config.param_count()
    experts = config.routed_expert_param_count()
    fmt = NumericFormat(**MXFP4, attn_weight_bits=16, head_bits=16)
    assert 2.0 * params * stored_weight_scale(fmt, config) == pytest.approx(
        experts * 4.25 / 8 + (params - experts) * 2, rel=1e-12)
    assert config.router_param_count() == 24 * 32 * (2880 + 1)


@pytest.mark.parametrize("model", ["mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3", "gpt-oss-120b"])
@pytest.mark.parametrize("fmt", [W4, FP8, NumericFormat(**MXFP4), NumericFormat(weight_bits=3),
                                 NumericFormat(weight_bits=4, edge_layer_bits=8, head_bits=16)],
                         ids=["w4", "fp8", "mxfp4", "w3", "w4-edge8-head16"])
def test_a_quantized_moe_model_still_stores_fewer_bytes(model, fmt):
    """Invariant: routers at 16 bits or not, a quantized MoE model's weights take fewer bytes than at 16 bits."""
    assert stored_weight_scale(fmt, load_model_config(model)) < stored_weight_scale(NumericFormat(),
                                                                                   load_model_config(model)) == 1.0


def _decode(trace_of, config, fusion: str) -> KernelTable:
    """A batch-8 decode step after 32 tokens, at the traced precision, fused as `fusion` launches it."""
    return fuse(KernelTable.from_kernels(lower_trace(trace_of(config, "decode", 8, 1, 32))), fusion)


def _router_rows(table: KernelTable) -> np.ndarray:
    return np.array([k.module.endswith("mlp.gate") for k in table.kernels])


@pytest.mark.parametrize("fusion", ["", "engine"])
@pytest.mark.parametrize("fmt", [W4, FP8, NumericFormat(weight_bits=4, mlp_weight_bits=8, edge_layer_bits=6)],
                         ids=["w4", "fp8", "mixed"])
def test_the_router_gemm_runs_as_its_16_bit_self(trace_of, tiny_mixtral, fusion, fmt):
    """Under a format the router's GEMM keeps the traced row: 16-bit weights and inputs, the traced dtype; and a GPU
    prices it, time and energy, as the 16-bit GEMM it is, while the experts beside it move fewer bytes."""
    traced = _decode(trace_of, tiny_mixtral, fusion)
    table = traced.with_format(fmt)
    router = _router_rows(table)
    assert router.sum() == tiny_mixtral.num_layers
    for column in ("weight_bytes", "act_bytes", "flops", "dtype"):
        assert np.array_equal(getattr(table, column)[router], getattr(traced, column)[router]), column
    assert (table.weight_bits[router] == 16).all()
    assert (table.weight_bytes[~router] <= traced.weight_bytes[~router]).all()
    assert table.weight_bytes[~router].sum() < traced.weight_bytes[~router].sum()
    gpu = load_device("h100-sxm")
    quantized, plain = gpu.cost_table(table), gpu.cost_table(traced.with_format(NumericFormat()))
    assert np.allclose(quantized.time_s[router], plain.time_s[router], rtol=1e-12)
    assert np.allclose(quantized.energy_J[router], plain.energy_J[router], rtol=1e-12)


def test_no_format_part_moves_the_router():
    """Module bits of the router, whatever weight_bits and the overrides say; its neighbours keep theirs."""
    fmt = NumericFormat(weight_bits=4, mlp_weight_bits=8, attn_weight_bits=6, edge_layer_bits=8)
    for module in ("layers.3.mlp.gate", "model.layers.0.block_sparse_moe.gate", "layers.1.mlp.router"):
        assert fmt.module_bits(module) == 16 and fmt.module_bits(module, edge=True) == 16
    assert fmt.module_bits("layers.3.mlp.gate_proj") == 8  # a dense MLP's gate projection is quantized
    assert fmt.module_bits("layers.3.mlp.experts.0.gate_proj") == 8
    assert fmt.module_bits("layers.3.self_attn.q_proj") == 6
