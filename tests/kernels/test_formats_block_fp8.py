"""DeepSeek-V3's block fp8 (kernels/formats.py: scale_type fp32, scale_granularity block): a float32 scale per
128 x 128 weight block and per token and 128 activation values along k, counted by hand from the checkpoint's
layout (DeepSeek-V3 README_WEIGHTS.md: "weight_block_size": [128, 128], weight_scale_inv a float32 tensor,
activations quantized "per-token-per-128-channel"), against the project's fp16 scales per 128 values it counted
before (8.125 bits a weight and a value)."""

from __future__ import annotations

import pytest

from hw_models.calibration import QUANTIZE_BYTES_PER_INPUT
from kernels.formats import NumericFormat, check_group_size
from kernels.kernel import Kernel, KernelKind
from kernels.module_params import stored_weight_scale
from kernels.table import KernelTable
from workloads.model_config import load_model_config

FP8 = dict(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3")
DEEPSEEK = NumericFormat(**FP8, scale_type="fp32", scale_granularity="block")
# DeepSeek-V3's parameters by hand (tests/workloads/test_deepseek_config.py test_deepseek_v3_by_hand) and those
# outside its attention and MLP: the embedding and LM head (2 x 129,280 x 7168), the final norm (7168) and each of
# the 61 layers' two norms (2 x 7168).
DEEPSEEK_V3_PARAMS = 671_026_419_200
DEEPSEEK_V3_OUTSIDE = 2 * 129_280 * 7168 + 7168 + 61 * 2 * 7168
# Its routers, which no format quantizes (vLLM's DeepseekV2MoE builds its gate without a quant_config; the checkpoint
# stores it bf16, its e_score_correction_bias float32): the 58 MoE layers' (61 less first_k_dense_replace 3) gates
# of 256 experts x 7168 weights, and a bias per expert.
DEEPSEEK_V3_ROUTERS = 58 * 256 * (7168 + 1)


def test_deepseek_v3_weights_store_8_002_bits():
    """Every weight but the routers' 1 byte plus a 4-byte scale per 16,384 weights: 8 + 32 / 16384 = 8.001953125
    bits, Q + Q / 4096 bytes for those Q weights, beside the routers' 106,445,312 at 2 bytes; with its bf16
    embeddings and LM head (head_bits 16) those 1,854,239,744 weights take 2 bytes too."""
    config = load_model_config("deepseek-v3")
    params = config.param_count()
    assert params == DEEPSEEK_V3_PARAMS
    assert config.router_param_count() == DEEPSEEK_V3_ROUTERS == 106_445_312
    assert DEEPSEEK.weight_storage_bits == 8 + 32 / 16384 == 8.001953125
    stored_B = 2.0 * params * stored_weight_scale(DEEPSEEK, config)
    quantized = DEEPSEEK_V3_PARAMS - DEEPSEEK_V3_ROUTERS
    assert stored_B == pytest.approx(quantized + quantized / 4096 + 2 * DEEPSEEK_V3_ROUTERS, rel=1e-12)  # 671.30 GB
    served = NumericFormat(**FP8, scale_type="fp32", scale_granularity="block", head_bits=16)
    inside = quantized - DEEPSEEK_V3_OUTSIDE
    assert 2.0 * params * stored_weight_scale(served, config) == pytest.approx(
        inside + inside / 4096 + 2 * (DEEPSEEK_V3_OUTSIDE + DEEPSEEK_V3_ROUTERS), rel=1e-12)  # 673.15 GB


def test_a_gemm_moves_its_blocks_and_token_groups_scales():
    """DeepSeek-V3's q_a_proj (k 7168, n 1536) for 4 tokens: 56 x 12 = 672 weight blocks of 4 bytes beside 7168 x 1536
    fp8 weights, and 4 tokens x 56 groups of 4 bytes beside the 4 x 7168 fp8 inputs; the output stays 16-bit."""
    m, k, n = 4, 7168, 1536
    gemm = Kernel(kind=KernelKind.GEMM, op="linear", flops=2.0 * m * k * n, weight_bytes=2.0 * k * n,
                  act_bytes=2.0 * (m * k + m * n), kv_bytes=0.0, dtype="bf16", tensor_core=True, m=m, n=n, k=k)
    table = KernelTable.from_kernels([gemm]).with_format(DEEPSEEK)
    assert table.weight_bytes[0] == pytest.approx(k * n + 672 * 4, rel=1e-12)
    assert table.act_bytes[0] == pytest.approx(m * k + 4 * 56 * 4 + 2 * m * n, rel=1e-12)
    assert table.dtype[0] == "fp8"


def test_activations_move_8_25_bits_and_their_quantization_kernel_its_bytes():
    """An activation is 1 byte and a 4-byte scale per 128 values: 8.25 bits. vLLM's per_token_group_quant_fp8 reads
    the 16-bit input and writes those: 2 + 1 + 4 / 128 bytes an input, the count hw_models/calibration.py gives the
    measured block-scaled kernel."""
    assert DEEPSEEK.act_storage_bits == 8 + 32 / 128 == 8.25
    assert QUANTIZE_BYTES_PER_INPUT["fp8/block128"] == 2 + DEEPSEEK.act_storage_bits / 8 == 3 + 4 / 128
    assert DEEPSEEK.block_scaled_variant == "fp8/block128"


@pytest.mark.parametrize("parts, weight_bits, act_bits", [
    (dict(FP8), 8 + 16 / 128, 8 + 16 / 128),  # the default: fp16 scales per 128 along k, as before
    (dict(FP8, scale_type="fp32"), 8 + 32 / 128, 8 + 32 / 128),  # fp32 per 128 along k, weights and activations
    (dict(FP8, scale_granularity="block"), 8 + 16 / 128**2, 8 + 16 / 128),  # fp16 per 128 x 128 block
    (dict(FP8, scale_type="e8m0", group_size=32, scale_granularity="block"), 8 + 8 / 32**2, 8 + 8 / 32),
    (dict(weight_bits=8, weight_type="fp8_e4m3", scale_type="fp32", scale_granularity="block"), 8 + 32 / 128**2, 16),
    (dict(weight_bits=4, scale_type="fp32"), 4 + 32 / 128, 16),  # integer weights with fp32 group scales
])
def test_scale_types_and_blocks_by_hand(parts, weight_bits, act_bits):
    fmt = NumericFormat(**parts)
    assert fmt.weight_storage_bits == pytest.approx(weight_bits, rel=1e-12)
    assert fmt.act_storage_bits == pytest.approx(act_bits, rel=1e-12)


@pytest.mark.parametrize("parts, message", [
    (dict(weight_bits=4, scale_granularity="block"), "scale_granularity: found 'block' with weight_type 'int', "
                                                      "allowed: group, channel or tensor"),
    (dict(weight_bits=4, weight_type="nf4", scale_granularity="block"), "scale_granularity: found 'block' with "
                                                                         "weight_type 'nf4'"),
    (dict(FP8, scale_type="fp32", scale_granularity="channel"), "scale_type: found 'fp32' with scale_granularity "
                                                                 "'channel', allowed: fp16"),
    (dict(FP8, scale_type="fp64"), "scale_type: found 'fp64', allowed: fp16, fp32, e8m0"),
])
def test_combinations_refused_in_one_line(parts, message):
    with pytest.raises(ValueError, match=message) as err:
        NumericFormat(**parts)
    assert "\n" not in str(err.value)


def test_labels_tell_the_scales_apart():
    labels = {NumericFormat(**FP8).label, NumericFormat(**FP8, scale_type="fp32").label, DEEPSEEK.label,
              NumericFormat(**FP8, scale_granularity="block").label}
    assert len(labels) == 4
    assert DEEPSEEK.label == "w8a8kv16-w:fp8_e4m3-a:fp8_e4m3-block-fp32/128x128"


def test_blocks_are_checked_against_k_as_groups_are():
    """A block's side along k must divide each k it is smaller than, as a group's must; 16-bit weights ignore it."""
    # 128 is also the default: the message says so without claiming it was left unset (a sweep may set it).
    with pytest.raises(ValueError, match=r"group_size: found 128 \(also the default\), which does not divide toy's "
                                         r"down k=7000"):
        check_group_size(DEEPSEEK, {"down": 7000}, "toy")
    check_group_size(DEEPSEEK, {"down": 7168, "narrow": 96}, "toy")  # 96 < 128: one block along k
    assert "scale_granularity" in NumericFormat(scale_granularity="block").idle_fields
