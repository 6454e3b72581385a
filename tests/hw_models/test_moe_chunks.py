"""A fused MoE layer of more tokens than vLLM's chunk priced as the calls vLLM runs it in (kernels/moe.py, Chunks;
hw_models/gpu.py): its whole chunks' calls and the call of the tokens left, each priced on the MoE fit as a layer of
that many tokens, launches and energy included."""

from __future__ import annotations

import numpy as np
import pytest

from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.moe import FUSED_MOE_CHUNK_TOKENS, fused_moe_kernel
from kernels.table import KernelTable

CHUNK = FUSED_MOE_CHUNK_TOKENS
PARTS = ("time_s", "compute_s", "memory_s", "overhead_s", "compute_J", "memory_J", "static_J")
NVFP4 = NumericFormat(weight_bits=4, act_bits=4, weight_type="fp4_e2m1", act_type="fp4_e2m1", scale_type="e4m3",
                      group_size=16)


def _mixtral(tokens: int):
    """Mixtral-8x7B's experts (hidden 4096, intermediate 14336, top-2 of 8), balanced routing, one layer."""
    return fused_moe_kernel(tokens=tokens, routed=2 * tokens, touched=8, hidden=4096, inter=14336, weight_width=2,
                            act_width=2, dtype="bf16")


def _costs(device, tokens: list[int], fmt: NumericFormat | None, execution: str):
    table = KernelTable.from_kernels([_mixtral(t) for t in tokens])
    return device.cost_table(table if fmt is None else table.with_format(fmt), execution=execution)


@pytest.mark.parametrize("device, fmt", [("h200", None), ("h100-sxm", NVFP4), ("b200", None)],
                         ids=["h200-bf16", "h100-nvfp4", "b200-bf16"])
@pytest.mark.parametrize("execution", ["engine", "device"])
def test_a_layer_past_the_chunk_is_its_two_whole_chunks_and_the_rest(device, fmt, execution):
    """2 x 16,384 + 1,000 tokens: the layer costs what two layers of 16,384 tokens and one of 1,000 cost, each on the
    fit (a layer of one chunk is one call); 2 x 16,384 tokens cost two such layers, with no empty call."""
    model = load_device(device)
    whole, calls = _costs(model, [2 * CHUNK + 1000, 2 * CHUNK], fmt, execution), _costs(model, [CHUNK, 1000], fmt,
                                                                                       execution)
    for part in PARTS:
        got, each = getattr(whole, part), getattr(calls, part)
        assert got[0] == pytest.approx(2 * each[0] + each[1], rel=1e-12), part
        assert got[1] == pytest.approx(2 * each[0], rel=1e-12), part


def test_a_layer_within_the_chunk_is_one_call():
    """At up to 16,384 tokens the layer is one call, priced as a fused MoE row that names no tokens (no chunk): the
    measured layers the fits were fitted on (1 to 16,384 tokens) price as they did."""
    model = load_device("h200")
    layers = KernelTable.from_kernels([_mixtral(t) for t in (1, 512, CHUNK)])
    unnamed = layers.with_columns(tokens=np.zeros(3))
    np.testing.assert_array_equal(model.cost_table(layers, execution="engine").time_s,
                                  model.cost_table(unnamed, execution="engine").time_s)


NF4 = NumericFormat(weight_bits=4, weight_type="nf4")


@pytest.mark.parametrize("device", ["h100-sxm", "h200"])
def test_dequantized_experts_past_the_chunk_run_the_16_bit_layer_s_calls(device):
    """nf4 experts an engine dequantizes apart (vLLM's BitsAndBytesMoEMethod: the experts' weights dequantized once,
    then fused_experts, which runs the chunk's calls) cost the bf16 layer of the same tokens plus one dequantization
    of the weights, whatever the tokens: the same amount within one chunk and past it (before, the 16-bit experts ran
    as one call past the chunk, and a layer of 5 chunks cost less than the bf16 layer)."""
    model = load_device(device)
    tokens = [CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 1000, 5 * CHUNK + 7]
    nf4, bf16 = (_costs(model, tokens, fmt, "engine").time_s for fmt in (NF4, None))
    dequantize_s = nf4 - bf16
    assert dequantize_s[0] > 0
    np.testing.assert_allclose(dequantize_s, dequantize_s[0], rtol=1e-9)
