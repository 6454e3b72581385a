"""Format parts (kernels/formats.py): element types, scale types and granularity, by hand; combinations no kernel runs
and group sizes that do not fit a model's GEMMs are refused with the field named."""

from __future__ import annotations

import pytest

from kernels.formats import IDLE_FIELDS, NumericFormat, check_group_size

FP4 = dict(weight_bits=4, act_bits=4, weight_type="fp4_e2m1", act_type="fp4_e2m1")


@pytest.mark.parametrize("parts, bits", [
    (dict(weight_bits=4), 4 + 16 / 128),  # GPTQ/AWQ: a 16-bit scale per 128 weights
    (dict(**FP4, scale_type="e8m0", group_size=32), 4 + 8 / 32),  # MXFP4 (OCP MX v1.0: E8M0 per 32)
    (dict(**FP4, scale_type="e4m3", group_size=16), 4 + 8 / 16),  # NVFP4: an E4M3 scale per 16
    (dict(weight_bits=4, act_bits=8, scale_type="two_level"), 4 + 12 / 128),  # QServe: uint8 scale + uint4 zero
    (dict(weight_bits=8, scale_granularity="channel"), 8),  # per-channel scales: counted as no bytes
    (dict(weight_bits=2, weight_type="ternary"), 2 + 16 / 128),
    (dict(weight_bits=5), 5 + 16 / 128),
])
def test_stored_bits_per_weight(parts, bits):
    assert NumericFormat(**parts).weight_storage_bits == pytest.approx(bits)
    assert NumericFormat(**parts).weight_scale == pytest.approx(bits / 16)


@pytest.mark.parametrize("parts, dtype", [
    (dict(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3"), "fp8"),
    (dict(FP4), "fp4"),
    (dict(weight_bits=4, act_bits=8, act_type="fp8_e4m3"), "fp8"),  # TensorRT-LLM's W4A8 AWQ: int4 x fp8
    (dict(weight_bits=4, weight_type="fp4_e2m1"), "bf16"),  # weight-only fp4: 16-bit math
    (dict(weight_bits=3, weight_type="lut"), "bf16"),
    (dict(weight_bits=4, act_bits=8), "int8"),
])
def test_gemm_dtype_of_typed_formats(parts, dtype):
    assert NumericFormat(**parts).gemm_dtype("bf16") == dtype


@pytest.mark.parametrize("parts, message", [
    (dict(weight_bits=8, weight_type="fp4_e2m1"), "weight_type: found 'fp4_e2m1' with weight_bits 8"),
    (dict(weight_type="fp8_e4m3"), "weight_type: found 'fp8_e4m3' with weight_bits 16"),
    (dict(weight_bits=4, weight_type="fp5"), "weight_type: found 'fp5', allowed: int, fp8_e4m3"),
    (dict(act_bits=4, act_type="nf4"), "act_type: found 'nf4'"),
    (dict(weight_bits=4, act_bits=8, weight_type="nf4"), "weight_type: found 'nf4' with integer 8-bit"),
    (dict(weight_bits=8, act_bits=4, act_type="fp4_e2m1"), "weight_bits: found 8 with fp4_e2m1 activations"),
    # e2m1 holds 0, 0.5, 1, 1.5, 2, 3, 4 and 6 (and their negatives): int4's 5, 7 and -8 and nf4's codebook are not
    # fp4 values, so no kernel converts such weights for fp4 math.
    (dict(weight_bits=4, act_bits=4, act_type="fp4_e2m1"), "weight_type: found 'int' with fp4_e2m1 activations"),
    (dict(weight_bits=4, act_bits=4, weight_type="nf4", act_type="fp4_e2m1"), "weight_type: found 'nf4' with fp4"),
    (dict(weight_bits=4, scale_type="e8m0", scale_granularity="tensor"), "scale_type: found 'e8m0'"),
    (dict(weight_bits=4, scale_granularity="row"), "scale_granularity: found 'row'"),
    # QServe's two-level scales carry a 4-bit zero point per group, an integer shift that no float or codebook has.
    (dict(weight_bits=4, weight_type="fp4_e2m1", scale_type="two_level"),
     "scale_type: found 'two_level' with weight_type 'fp4_e2m1', allowed: weight_type int"),
    (dict(weight_bits=4, weight_type="nf4", scale_type="spqr3"), "scale_type: found 'spqr3' with weight_type 'nf4'"),
    (dict(weight_bits=7), "weight_bits: found 7"),
])
def test_combinations_no_kernel_runs_are_refused(parts, message):
    with pytest.raises(ValueError, match=message):
        NumericFormat(**parts)


def test_block_scaled_variants():
    fp8 = dict(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3")
    assert NumericFormat(**fp8).block_scaled_variant == "fp8/block128"
    assert NumericFormat(**fp8, scale_granularity="tensor").block_scaled_variant == ""
    assert NumericFormat(**FP4, scale_type="e4m3", group_size=16).block_scaled_variant == "fp4/nvfp4"
    assert NumericFormat(weight_bits=4).block_scaled_variant == ""


def test_group_size_must_divide_each_k_it_is_smaller_than():
    llama_7b = {"hidden": 4096, "attention output": 4096, "MLP down": 11008}
    check_group_size(NumericFormat(weight_bits=4, group_size=256), llama_7b, "llama-2-7b")  # 11008 = 43 x 256
    with pytest.raises(ValueError, match="group_size: found 256, which does not divide m's MLP down k=5504"):
        check_group_size(NumericFormat(weight_bits=4, group_size=256), {**llama_7b, "MLP down": 5504}, "m")
    # A group at least as long as a row is one scale per row; 16-bit weights and per-channel scales have no groups.
    check_group_size(NumericFormat(weight_bits=4, group_size=128), {"hidden": 64}, "tiny")
    check_group_size(NumericFormat(weight_bits=16, group_size=256), {"MLP down": 5504}, "m")
    check_group_size(NumericFormat(weight_bits=4, group_size=256, scale_granularity="channel"), {"down": 5504}, "m")


def test_kv_scales_stay_within_a_head():
    """One 16-bit scale per group of a token's head, never across heads: a group of 256 on 128-wide heads is one
    scale a head (4 + 16 / 128 bits a value), and a group of 32 on 80-wide heads (Phi-2) ends each head in a group
    of 16, 3 scales a head (4 + 48 / 80)."""
    assert NumericFormat(kv_bits=4, group_size=256).kv_value_bits(128) == 4 + 16 / 128
    assert NumericFormat(kv_bits=4, group_size=64).kv_value_bits(128) == 4 + 16 / 64
    assert NumericFormat(kv_bits=4, group_size=32).kv_value_bits(80) == 4 + 48 / 80
    assert NumericFormat(group_size=256).kv_value_bits(128) == 16.0


def test_defaults_are_the_formats_of_before():
    fmt = NumericFormat(weight_bits=4, kv_bits=8)
    assert fmt.label == "w4a16kv8" and fmt.weight_scale == (4 + 16 / 128) / 16
    assert fmt.kv_scale(128) == (8 + 16 / 128) / 16
    assert NumericFormat(weight_bits=4, sparsity="2:4").label == "w4a16kv16-2:4"


# Formats with settings their format reads (quantized, grouped weights; a quantized KV cache) or does not (16-bit
# weights, scales per channel, no edge bits, every activation kept).
_PARTS = [dict(weight_bits=w, kv_bits=kv, group_size=g, scale_granularity=gran, edge_layer_bits=edge, edge_layers=2,
               act_kept=kept, act_predictor="deja_vu")
          for w in (4, 16) for kv in (16, 8) for g in (32, 128) for gran in ("group", "channel")
          for edge in (0, 8) if not (w == 16 and edge) for kept in (1.0, 0.5)]


@pytest.mark.parametrize("parts", _PARTS)
def test_a_canonical_format_stores_and_computes_alike(parts):
    """NumericFormat.canonical puts the fields a format does not read at their defaults: what every cost model reads
    of the format (stored bits of weights and KV, the GEMM dtype, the layers kept at edge bits, the activations
    kept) is the same, and it is its own canonical form."""
    fmt = NumericFormat(**parts)
    plain = fmt.canonical
    assert (plain.weight_storage_bits, plain.kv_storage_bits(128), plain.gemm_dtype("bf16"), plain.edge_share(32),
            plain.act_kept, plain.act_predictor if plain.act_kept < 1 else "") == \
        (fmt.weight_storage_bits, fmt.kv_storage_bits(128), fmt.gemm_dtype("bf16"), fmt.edge_share(32), fmt.act_kept,
         fmt.act_predictor if fmt.act_kept < 1 else "")
    assert plain.stored_weight_scale(0.3, 0.6, num_layers=32) == fmt.stored_weight_scale(0.3, 0.6, num_layers=32)
    assert plain.canonical == plain
    assert set(fmt.idle_fields) <= set(IDLE_FIELDS)


@pytest.mark.parametrize("parts, idle", [
    # Nothing is scaled per group: 16-bit weights beside a 16-bit cache, or per-channel scales.
    (dict(group_size=32), {"group_size"}),
    (dict(weight_bits=4, scale_granularity="channel", group_size=32), {"group_size"}),
    # A quantized KV cache keeps a scale per group_size values whatever the weights'.
    (dict(kv_bits=8, group_size=32), set()),
    (dict(weight_bits=4, scale_granularity="channel", kv_bits=4, group_size=32), set()),
    (dict(weight_bits=4, group_size=32), set()),
    (dict(weight_bits=4, edge_layers=2), {"edge_layers"}),
    (dict(weight_bits=4, edge_layer_bits=8, edge_layers=2), set()),
    # SpQR's groups of 8 sizing a 4-bit cache beside 16-bit weights need its scale type: only that is read there.
    (dict(kv_bits=4, scale_type="spqr3", group_size=8), set()),
    (dict(scale_type="e8m0", group_size=32), {"group_size", "scale_type"}),
])
def test_canonical_resets_only_the_fields_the_format_does_not_read(parts, idle):
    fmt = NumericFormat(**parts)
    default = NumericFormat()
    reset = {name for name in parts if getattr(fmt.canonical, name) != getattr(fmt, name)}
    assert reset == idle
    assert all(getattr(fmt.canonical, name) == getattr(default, name) for name in idle)
