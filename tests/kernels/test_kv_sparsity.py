"""The bitmap layout of a sparse KV cache (kernels/kv_sparsity.py, Mustafar): bits per element by hand from the
authors' layout, the dense cache below break-even, and NumericFormat's kv_scale and checks."""

from __future__ import annotations

import pytest

from kernels.formats import NumericFormat
from kernels.kv_sparsity import bitmap_element_bits, break_even_sparsity, kv_element_bits

HEAD_DIM = 128  # Llama-2-7B's heads: a group of 128 values is one scale a head


def test_a_16_bit_tile_at_70_percent_by_hand():
    """A 64-element tile at 70% sparsity keeps 19.2 fp16 values, padded by 3.5 on average (the mean of rounding a
    count up to a multiple of 8), beside a 64-bit bitmap and a 32-bit offset: (22.7 x 16 + 96) / 64 = 7.175 bits an
    element, 44.8% of 16 bits (the paper's 45%)."""
    by_hand = ((64 * 0.3 + 3.5) * 16 + 64 + 32) / 64
    assert bitmap_element_bits(16.0, 0.7) == pytest.approx(by_hand) == pytest.approx(7.175)
    assert NumericFormat(kv_sparsity=0.7).kv_scale(HEAD_DIM) == pytest.approx(7.175 / 16)


def test_an_8_bit_tile_keeps_its_scales_and_pads_to_16_bytes():
    """8-bit values with a 16-bit scale per 128 (8.125 bits a value) at 50%: 32 kept values, padded by 7.5 of the 16
    a 128-bit boundary holds: (32 x 8.125 + 7.5 x 8 + 96) / 64 bits."""
    fmt = NumericFormat(kv_bits=8, kv_sparsity=0.5)
    by_hand = (32 * 8.125 + 7.5 * 8 + 96) / 64
    assert fmt.kv_storage_bits(HEAD_DIM) == pytest.approx(by_hand)
    assert fmt.kv_scale(HEAD_DIM) == pytest.approx(by_hand / 16)
    assert fmt.kv_packing(HEAD_DIM) == pytest.approx(by_hand / 8.125)


def test_dense_is_todays_cache_and_below_break_even_the_cache_stays_dense():
    for bits in (16, 8, 4):
        fmt = NumericFormat(kv_bits=bits)
        assert NumericFormat(kv_bits=bits, kv_sparsity=0.0).kv_scale(HEAD_DIM) == fmt.kv_scale(HEAD_DIM) == \
            fmt.kv_value_bits(HEAD_DIM) / 16
    # (64 + 32 + 56) / 64 = 2.375 bits of metadata: the layout pays above 2.375 / 16 = 14.8% sparsity.
    assert break_even_sparsity(16.0) == pytest.approx(2.375 / 16)
    assert kv_element_bits(16.0, 0.1) == 16.0 < bitmap_element_bits(16.0, 0.1)
    assert kv_element_bits(16.0, 0.2) == bitmap_element_bits(16.0, 0.2) < 16.0


@pytest.mark.parametrize("bits", [16, 8, 4])
def test_more_sparsity_never_more_bytes(bits):
    scales = [NumericFormat(kv_bits=bits, kv_sparsity=s / 20).kv_scale(HEAD_DIM) for s in range(20)]
    assert all(b <= a for a, b in zip(scales, scales[1:], strict=False))
    assert scales[-1] < scales[0]


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, True, "0.5"])
def test_bad_sparsity_is_refused(value):
    with pytest.raises(ValueError, match=r"^kv_sparsity: found .*, allowed: a fraction from 0 to below 1"):
        NumericFormat(kv_sparsity=value)


def test_the_label_names_it():
    assert NumericFormat(kv_sparsity=0.7).label == "w16a16kv16-kvsp0.7"
    assert NumericFormat(kv_sparsity=0.7) != NumericFormat()
