"""SpQR's format (kernels/formats.py scale_type spqr3): bits per weight against the paper's stated averages, stored
bytes by hand, and the one-line errors of parts it does not take.

Expected values are typed in from the paper (Dettmers et al., "SpQR", ICLR 2024, arXiv:2306.03078): Eq. 4 (Appendix
D), b_w + (b_s + b_z) / beta1 + 64 / (beta1 beta2) + 32 r_o with b_s = b_z = 3; Table 5's grid of average bits at
3-bit weights without outliers; Table 3 ("3-bit statistics", beta1 = beta2 = 16: 3.63), Appendix H (the same
configuration: 3.625), Appendix D's example (3-bit, beta1 16, beta2 32, 0.4% outliers: ~3.63) and Table 1's
stated averages (~3.9 bits: 3-bit weights, beta1 8, beta2 64 with outliers, Section 5; ~4.6 bits: 4-bit weights,
beta1 = beta2 = 16 with outliers, Appendix B), which the paper rounds to two decimals.
"""

from __future__ import annotations

import math

import pytest

from kernels.format_kernels import OUTLIER_OP
from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable

ROUNDED = 0.005 + 1e-9  # half a unit of the paper's two decimals
# Table 5, upper left: average bits of 3-bit SpQR without outliers, by beta1 (rows) and beta2 (columns 4-128). The
# beta1 = 4 row (8.5 ... 4.625) is left out: groups below 8 are not a format here.
BETA2 = (4, 8, 16, 32, 64, 128)
TABLE_5 = {8: (5.75, 4.75, 4.25, 4, 3.875, 3.813),
           16: (4.375, 3.875, 3.625, 3.5, 3.438, 3.406),
           32: (3.688, 3.438, 3.313, 3.25, 3.219, 3.203),
           64: (3.344, 3.219, 3.156, 3.125, 3.109, 3.102),
           128: (3.172, 3.109, 3.078, 3.063, 3.055, 3.051)}


def spqr(bits: int, beta1: int, beta2: int, outliers: float = 0.0, **fields) -> NumericFormat:
    return NumericFormat(weight_bits=bits, scale_type="spqr3", group_size=beta1, scale_group_size=beta2,
                         outlier_fraction=outliers, **fields)


@pytest.mark.parametrize("beta1", sorted(TABLE_5))
def test_bits_per_weight_are_table_5(beta1):
    for beta2, paper in zip(BETA2, TABLE_5[beta1], strict=True):
        assert spqr(3, beta1, beta2).stored_weight_bits(3) == pytest.approx(paper, abs=0.0005 + 1e-9), (beta1, beta2)


def test_bits_per_weight_are_the_papers_worked_examples():
    assert spqr(3, 16, 16).stored_weight_bits(3) == 3.625  # Appendix H
    assert abs(spqr(3, 16, 16).stored_weight_bits(3) - 3.63) <= ROUNDED  # Table 3, "3-bit statistics"
    assert abs(spqr(3, 16, 32, 0.004).stored_weight_bits(3) - 3.63) <= ROUNDED  # Appendix D's example
    # Section 4.2: a 16 x 16 group holds 256 3-bit codes, 16 3-bit scales and zeros and four 16-bit scalars.
    assert spqr(3, 16, 16).stored_weight_bits(3) == (256 * 3 + 16 * 6 + 4 * 16) / 256


# Table 1 (LLaMa, Avg bits column): each SpQR row's stated average and the configuration the paper gives for it.
TABLE_1 = [("7B", 3.94, 3, 8, 64), ("13B", 3.96, 3, 8, 64), ("30B", 3.89, 3, 8, 64), ("65B", 3.90, 3, 8, 64),
           ("7B", 4.63, 4, 16, 16), ("13B", 4.63, 4, 16, 16), ("30B", 4.69, 4, 16, 16), ("65B", 4.71, 4, 16, 16)]


@pytest.mark.parametrize(("size", "average", "bits", "beta1", "beta2"), TABLE_1)
def test_table_1_averages_are_its_configuration_plus_under_1_percent_outliers(size, average, bits, beta1, beta2):
    """Without outliers each configuration stores no more than the stated average, and the outliers that fill the
    rest, at 32 bits each, are under 1% of the weights ("we choose tau such that the proportion of outliers is
    under 1%", Section 5); the ~3.9-bit rows stay under 4 bits ("as many outliers as possible to still reach less
    than 4-bits per parameter")."""
    base = spqr(bits, beta1, beta2).stored_weight_bits(bits)
    assert base <= average + ROUNDED
    outliers = (average - base) / 32
    assert -ROUNDED / 32 <= outliers < 0.01, size
    if bits == 3:
        assert average < 4


def test_outliers_cost_32_bits_each():
    assert spqr(3, 8, 64, 0.002).stored_weight_bits(3) - spqr(3, 8, 64).stored_weight_bits(3) == \
        pytest.approx(0.002 * 32)


def test_a_spqr_gemm_stores_its_bits_by_hand():
    """A 4,096 x 4,096 projection at SpQR's ~3.9-bit configuration with 0.2% outliers: 3 + 6 / 8 + 64 / 512 = 3.875
    bits a weight in the dense part, 16,777,216 x 3.875 / 8 = 8,126,464 bytes; the outliers' CSR matrix 0.2% x
    16,777,216 x 4 bytes = 134,217.728 bytes, read by the same kernel (SpQR's spqr_quantized_matvec_fused multiplies
    the dense and sparse parts in one launch: no kernel of its own, as SqueezeLLM's outliers have)."""
    weights = 4096 * 4096
    gemm = Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * weights, weight_bytes=2.0 * weights,
                  act_bytes=2.0 * (4096 + 4096), kv_bytes=0.0, dtype="fp16", tensor_core=True, layer=0,
                  module="model.layers.0.mlp.down_proj", m=1, n=4096, k=4096, batch=1)
    table = KernelTable.from_kernels([gemm]).with_format(spqr(3, 8, 64, 0.002))
    assert [k.op for k in table.kernels] == ["mm"] and OUTLIER_OP not in [k.op for k in table.kernels]
    assert table.weight_bytes[0] == pytest.approx(8_126_464 + 134_217.728)
    assert table.weight_bytes.sum() == pytest.approx(weights * 3.939 / 8)


def test_a_model_stores_spqr_weights_at_their_average_bits():
    """Every weight at one width: the stored bytes relative to 16 bits are the average bits over 16."""
    fmt = spqr(4, 16, 16, 0.0027)
    assert fmt.stored_weight_scale(0.3, 0.6, 32) == pytest.approx((4.625 + 0.0027 * 32) / 16)
    assert fmt.weight_scale == pytest.approx(4.625 / 16)  # the dense part's traffic; the outliers' is added to it


def test_other_scale_types_are_unchanged():
    """The second level is SpQR's alone: a 16-bit scale per 128 (GPTQ/AWQ) stays 4.125 bits, whatever
    scale_group_size says, and the format compares equal to the default one."""
    assert NumericFormat(weight_bits=4).weight_storage_bits == 4.125
    assert NumericFormat(weight_bits=4, scale_group_size=64) == NumericFormat(weight_bits=4)
    assert NumericFormat(weight_bits=4, scale_type="e4m3", group_size=16, scale_group_size=64).weight_storage_bits \
        == 4.5


def test_spqr_label_names_both_group_sizes():
    label = spqr(3, 8, 64, 0.002).label
    assert "spqr3/8x64" in label and "out0.002" in label


def test_a_16_bit_module_of_a_spqr_format_keeps_its_group_size():
    """A module kept at 16 bits runs unquantized; the format of that width stays valid (groups of 8 size the KV
    cache's scales too)."""
    fmt = spqr(3, 8, 64, attn_weight_bits=16)
    assert fmt.at_bits(16).weight_storage_bits == 16.0
    assert fmt.at_bits(16).group_size == 8
    assert math.isclose(fmt.at_bits(4).weight_storage_bits, 4 + 6 / 8 + 64 / 512)


@pytest.mark.parametrize(("parts", "needle"), [
    ({"weight_bits": 3, "group_size": 8}, "group_size: found 8 with scale_type fp16, allowed: 16, 32, 64, 128, 256; "
                                          "8 only with scale_type spqr3"),
    ({"weight_bits": 3, "scale_type": "spqr3", "group_size": 4}, "group_size: found 4 with scale_type spqr3"),
    ({"weight_bits": 3, "scale_type": "spqr3", "scale_group_size": 5}, "scale_group_size: found 5, allowed: 4, 8, "
                                                                       "16, 32, 64, 128"),
    ({"weight_bits": 4, "scale_type": "spqr3", "weight_type": "nf4"}, "scale_type: found 'spqr3' with weight_type "
                                                                      "'nf4', allowed: weight_type int"),
    ({"weight_bits": 4, "act_bits": 8, "scale_type": "spqr3"}, "scale_type: found 'spqr3' with act_bits 8, allowed: "
                                                               "act_bits 16"),
    ({"weight_bits": 4, "scale_type": "spqr3", "scale_granularity": "channel"}, "scale_type: found 'spqr3' with "
                                                                                "scale_granularity 'channel'"),
])
def test_bad_spqr_parts_name_the_field(parts, needle):
    with pytest.raises(ValueError) as err:
        NumericFormat(**parts)
    assert str(err.value).startswith(needle) and "\n" not in str(err.value)

