"""KernelTable.with_columns: dataclasses.replace of a table's columns without re-running its __init__."""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import pytest

from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable


def _table() -> KernelTable:
    # A GEMM and a decode attention row (Llama-3-8B-like: 32 heads of 128, 8 KV heads, 100 keys).
    gemm = Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * 4096 * 4096, weight_bytes=2.0 * 4096 * 4096,
                  act_bytes=2.0 * 2 * 4096, kv_bytes=0.0, dtype="bf16", tensor_core=True, m=1, n=4096, k=4096, batch=1)
    attention = Kernel(kind=KernelKind.ATTENTION_DECODE, op="attn", flops=4.0 * 32 * 128 * 100, weight_bytes=0.0,
                       act_bytes=2.0 * 32 * 128 * 2, kv_bytes=2.0 * 8 * 100 * 128 * 2, dtype="bf16", tensor_core=True,
                       batch=1, heads=32, kv_heads=8, q_len=1, kv_len=100, head_dim=128)
    return KernelTable.from_kernels([gemm, attention])


def test_with_columns_is_replace_field_by_field():
    table = _table()
    changes = dict(flops=table.flops * 3.0, kv_len=np.array([0.0, 400.0]), batch=np.array([2.0, 2.0]))
    fast, slow = table.with_columns(**changes), replace(table, **changes)
    assert type(fast) is KernelTable
    for field in fields(KernelTable):
        got, want = getattr(fast, field.name), getattr(slow, field.name)
        if isinstance(want, np.ndarray):
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), field.name
        else:
            assert got == want, field.name
    assert fast.flops.tolist() == [3 * 2.0 * 4096 * 4096, 3 * 4.0 * 32 * 128 * 100]


def test_with_columns_recomputes_what_the_source_cached():
    table = _table()
    assert table.bytes.tolist() == [2.0 * 4096 * 4096 + 2.0 * 2 * 4096, 2.0 * 32 * 128 * 2 + 2.0 * 8 * 100 * 128 * 2]
    doubled = table.with_columns(kv_bytes=table.kv_bytes * 2.0)
    # The attention row's KV bytes doubled (409,600 -> 819,200 B); the source's cached bytes not carried over.
    assert doubled.bytes.tolist() == [2.0 * 4096 * 4096 + 2.0 * 2 * 4096, 16384.0 + 819200.0]


def test_with_columns_refuses_a_name_that_is_no_field():
    with pytest.raises(TypeError, match="flop"):
        _table().with_columns(flop=np.zeros(2))
