"""Behaviour no other test pinned, checked by hand from preset numbers: what each execution mode adds per kernel
through a whole design point, the stored bytes of sparse weights in the memory footprint, and the price metrics
(cost_usd, tokens_per_usd) from the preset's price fields."""

from __future__ import annotations

import math

import pytest

from explore.design_point import DesignPoint
from hw_models.registry import read_device_yaml

# The tiny Llama of tiny_sweep.py: hidden 64, FFN 128, 2 layers, 4 heads of 16, 2 KV heads, vocabulary 128, untied
# embeddings, bf16. Parameters by hand: per layer q 64x64 + k, v 64x32 each + o 64x64 = 12,288, gate/up/down
# 3 x 64x128 = 24,576, two norms 128; embedding and LM head 128x64 each, final norm 64.
TINY_PARAMS = 2 * (12_288 + 24_576 + 128) + 2 * 128 * 64 + 64
TINY_WEIGHT_BYTES = 2 * TINY_PARAMS  # bf16




def _point(model: str, **fields) -> DesignPoint:
    return DesignPoint(model=model, **{"device": "h100-sxm", "batch": 2, "prompt": 16, "output": 5} | fields)


# --- execution modes ---------------------------------------------------------------------------------------------


def test_each_execution_mode_prices_its_own_launches_through_a_decode_step(tiny_evaluator, tiny_config):
    """Per decode step of N kernels on an H100: 'graphs' adds graph_launch_us per kernel to the device time
    ('device' mode, no launches), 'eager' waits on PyTorch's host dispatch, 21.6 us per kernel ((1 / 25.5) s per
    token over gpt-fast's 1,818 kernels, hw_models/device.py), longer than any of these tiny kernels with its
    2.1 us launch; the preset's launch costs are the Hazy Research H100 figures (2.1 us stream launch, 1.3 us in a
    CUDA graph). Replacing the graph launch cost with the eager one fails here."""
    overhead = read_device_yaml("h100-sxm")[0]["overhead"]
    assert (overhead["kernel_launch_us"], overhead["graph_launch_us"]) == (2.1, 1.3)
    tpot = {mode: tiny_evaluator.evaluate(_point(tiny_config, execution=mode)).metrics["tpot_s"]
            for mode in ("device", "graphs", "eager")}
    kernels = len(tiny_evaluator.tables(tiny_config, 2, 16, _point(tiny_config).numeric_format).decode)
    assert kernels > 20
    assert tpot["graphs"] - tpot["device"] == pytest.approx(kernels * 1.3e-6, rel=1e-9)
    assert tpot["eager"] == pytest.approx(kernels * (1 / 25.5) / 1818, rel=1e-9)


# --- sparse weights in the memory footprint -----------------------------------------------------------------------


def test_traced_weights_are_the_hand_count(tiny_evaluator, tiny_config):
    assert tiny_evaluator.trace(tiny_config, "prefill", 2, 16).param_bytes == TINY_WEIGHT_BYTES


@pytest.mark.parametrize("bits", [16, 4])
def test_2_4_weights_are_stored_sparse_only_where_the_device_computes_on_them(tiny_evaluator, tiny_config, bits):
    """2:4 keeps 2 of every 4 weights plus a 2-bit position each: at 16 bits (2 x 16 + 2 x 2) / (4 x 16) = 0.5625
    of the dense bytes, at 4 bits with a 16-bit scale per 128 weights (2 x 4.125 + 2 x 2) / (4 x 4.125) = 0.7424.
    The H100's sparse tensor cores take 2:4 (preset structured_sparsity), the V100's have none: dense bytes."""
    assert "2:4" in read_device_yaml("h100-sxm")[0]["compute"]["structured_sparsity"]
    assert "2:4" not in (read_device_yaml("v100-sxm2")[0]["compute"].get("structured_sparsity") or [])
    stored = 16.0 if bits == 16 else bits + 16 / 128
    dense_B = TINY_WEIGHT_BYTES * stored / 16
    kept = (2 * stored + 2 * 2) / (4 * stored)
    for device, ratio in (("h100-sxm", kept), ("v100-sxm2", 1.0)):
        peak = {sparsity: tiny_evaluator.evaluate(_point(tiny_config, device=device, weight_bits=bits,
                                                         sparsity=sparsity)).metrics["peak_memory_B"]
                for sparsity in ("dense", "2:4")}
        assert peak["dense"] - peak["2:4"] == pytest.approx(dense_B * (1 - ratio), rel=1e-9, abs=1e-6), device


# --- price metrics ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["h100-sxm", "m2-ultra-tmac", "a100-sxm-80gb"])
def test_cost_usd_and_tokens_per_usd_from_the_preset_price(tiny_evaluator, tiny_config, device):
    """cost_usd is the preset's purchase price (NaN where none is published); tokens_per_usd is tokens per second
    over the hourly price per second (NaN without an hourly price): h100-sxm rents at $3.78/h and has no list
    price; the M2 Ultra Mac Studio costs $3,999 and rents at nothing; the A100-80GB rents at $2.4984/h."""
    price = read_device_yaml(device)[0]["price"]
    expected = {"h100-sxm": (None, 3.78), "m2-ultra-tmac": (3999, None), "a100-sxm-80gb": (None, 2.4984)}[device]
    assert (price.get("usd"), price.get("usd_per_hour")) == expected
    m = tiny_evaluator.evaluate(_point(tiny_config, device=device)).metrics
    usd, usd_per_hour = expected
    assert m["cost_usd"] == usd if usd is not None else math.isnan(m["cost_usd"])
    if usd_per_hour is None:
        assert math.isnan(m["tokens_per_usd"])
    else:
        assert m["tokens_per_usd"] == pytest.approx(m["tokens_per_s"] * 3600 / usd_per_hour, rel=1e-12)
        assert m["tokens_per_usd"] > 0
