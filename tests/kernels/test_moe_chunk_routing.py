"""The calls of a fused MoE layer past vLLM's chunk reach the experts the layer's routing model reaches for each call's
tokens (kernels/moe.py chunk_columns, Chunks): a small call of the tokens left reaches fewer under uniform or
power-law routing than one a routed row."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kernels.kernel import KernelKind
from kernels.moe import FUSED_MOE_CHUNK_TOKENS, ROUTINGS, chunk_columns, device_routing, fused_moe_kernel
from kernels.table import KernelTable
from workloads.model_config import BALANCED, POWER_LAW, UNIFORM

CHUNK = FUSED_MOE_CHUNK_TOKENS


def _calls(tokens: int, experts: int, topk: int, routing: str, ep: int = 1) -> dict[str, np.ndarray]:
    """chunk_columns of a layer of `tokens` tokens (hidden 64, intermediate 128, bf16) cut to a whole chunk's call
    and the call of the tokens left, its rows spread over the experts its routing reaches."""
    reached, routed = device_routing(tokens, topk, experts, experts // ep, routing)
    layer = fused_moe_kernel(tokens=tokens, routed=routed, touched=reached, hidden=64, inter=128, weight_width=2,
                             act_width=2, dtype="bf16", expert_parallel=ep)
    table = KernelTable.from_kernels([layer, layer]).routed(routing, experts, topk)
    return chunk_columns(tokens=table.tokens, m=table.m, batch=table.batch, flops=table.flops,
                         weight_bytes=table.weight_bytes, act_bytes=table.act_bytes,
                         call_tokens=np.array([CHUNK, tokens - CHUNK], dtype=float), routing=table.moe_routing,
                         experts=table.moe_experts, topk=table.moe_topk, expert_parallel=table.expert_parallel)


def test_a_uniform_remainder_call_reaches_the_uniform_expectation_by_hand():
    """Mixtral's top-2 of 8 at 16,384 + 3 tokens, uniform: the 3-token call reaches 8 (1 - (6/8)^3) = 4.625 -> 5
    experts (balanced: 6, one a routed row), each read whole, its 6 rows spread over them; the whole chunk's call
    reaches all 8."""
    calls = _calls(CHUNK + 3, 8, 2, UNIFORM)
    assert calls["batch"].tolist() == [8.0, 5.0]
    assert calls["m"][1] == pytest.approx(6 / 5, rel=1e-12)
    layer_B = 8 * 3 * 64 * 128 * 2
    assert calls["weight_bytes"].tolist() == pytest.approx([layer_B, 5 * layer_B / 8], rel=1e-12)
    assert calls["flops"][1] == pytest.approx(2 * 6 * 3 * 64 * 128, rel=1e-12)


def test_deepseek_remainder_calls_by_routing():
    """DeepSeek-V3's top-8 of 256 at 16,384 + 32 tokens: the 32-token call reaches 256 (1 - (248/256)^32) = 163.3 ->
    163 experts under uniform routing (a whole chunk's call all 256), min(256, 32 x 8) = 256 balanced, as before, and
    under the power law the 129 its collector's draws reach at 32 tokens (kernels/moe.py), a whole chunk's call the
    experts they reach at 16,384."""
    assert _calls(CHUNK + 32, 256, 8, UNIFORM)["batch"].tolist() == [256.0, 163.0]
    assert _calls(CHUNK + 32, 256, 8, BALANCED)["batch"].tolist() == [256.0, 256.0]
    assert device_routing(32, 8, 256, 256, POWER_LAW)[0] == 129
    chunk = device_routing(CHUNK, 8, 256, 256, POWER_LAW)[0]
    assert _calls(CHUNK + 32, 256, 8, POWER_LAW)["batch"].tolist() == [chunk, 129.0]


def test_a_devices_remainder_call_under_expert_parallelism():
    """Mixtral's top-2 of 8 spread over 2 devices at 16,384 + 3 tokens, uniform: the 3-token layer reaches 5 experts
    (4.625 rounded), filled first to last, of which the busier device holds every second: 0, 2 and 4, so 3 of its 4
    (device_routing's count)."""
    assert device_routing(3, 2, 8, 4, UNIFORM)[0] == 3
    assert _calls(CHUNK + 3, 8, 2, UNIFORM, ep=2)["batch"].tolist() == [4.0, 3.0]


def test_a_table_routes_only_its_fused_moe_rows():
    """KernelTable.routed sets the routing columns on fused MoE rows only; every other row, and every row of a table
    not routed, is balanced (code 0) with no experts."""
    moe = fused_moe_kernel(tokens=3, routed=6, touched=5, hidden=64, inter=128, weight_width=2, act_width=2,
                           dtype="bf16")
    table = KernelTable.from_kernels([moe, replace(moe, kind=KernelKind.GEMM, op="linear")])
    assert ROUTINGS[0] == BALANCED
    assert table.moe_routing.tolist() == [0.0, 0.0] and table.moe_experts.tolist() == [0.0, 0.0]
    routed = table.routed(POWER_LAW, 8, 2)
    assert routed.moe_routing.tolist() == [ROUTINGS.index(POWER_LAW), 0.0]
    assert routed.moe_experts.tolist() == [8.0, 0.0] and routed.moe_topk.tolist() == [2.0, 0.0]
