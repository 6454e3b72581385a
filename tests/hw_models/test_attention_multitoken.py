"""Attention of a few query tokens against a long cache (a speculative verification of k + 1 tokens, a tiny prefill
chunk) is priced by the decode fit, as FlashAttention-3 runs it (hw_models/gpu_attention.py decode_like)."""

from __future__ import annotations

import pytest

from hw_models.gpu_attention import decode_like
from hw_models.registry import load_device
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable
from workloads.op_costs import attention_flops


def _time_s(device, q_len: int, kv_len: int, batch: int = 8, heads: int = 32, kv_heads: int = 32) -> float:
    kind = KernelKind.ATTENTION_DECODE if q_len == 1 else KernelKind.ATTENTION_PREFILL
    flops = attention_flops(batch, heads, q_len, kv_len, 128, 128, causal=True)
    kernel = Kernel(kind=kind, op="attention", flops=flops,
                    weight_bytes=0.0, act_bytes=4.0 * batch * heads * q_len * 128,
                    kv_bytes=4.0 * batch * kv_heads * kv_len * 128, dtype="bf16", tensor_core=True, batch=batch,
                    heads=heads, kv_heads=kv_heads, q_len=q_len, kv_len=kv_len, head_dim=128, causal=q_len > 1)
    return float(device.cost_table(KernelTable.from_kernels([kernel]), execution="device").time_s[0])


def test_which_calls_run_as_decode():
    assert decode_like(1, 4096, 32, 32)
    assert decode_like(6, 4096, 32, 32)  # a verification of 5 drafted tokens
    assert decode_like(32, 4096, 32, 8)  # 32 positions x 4 query heads per KV head: one 128-row tile
    assert not decode_like(33, 4096, 32, 8)  # two tiles
    assert not decode_like(64, 64, 32, 32)  # a prompt attending to itself


@pytest.mark.parametrize("device_name", ["h200", "h100-sxm", "b200", "l40s"])
def test_verifying_six_tokens_costs_about_one_decode_step(device_name):
    """Six query rows against 3,800 cached tokens read the same KV cache as one: memory-bound, the call takes at
    least the one-token decode's time and at most 1.25x it (the extra math is 6 x 4 x 128 FLOPs per cached key and
    head, under 2% of an H200's peak over the time the KV read takes)."""
    device = load_device(device_name)
    one, six = _time_s(device, 1, 3_800), _time_s(device, 6, 3_800)
    assert one <= six <= 1.25 * one
