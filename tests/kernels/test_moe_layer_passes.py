"""kernels/parallel.py and kernels/fusion.py find each MoE layer's rows in one pass over the table: the tables they
build are the ones a scan of the whole table per MoE layer builds (the reference scans below), column for column."""

from __future__ import annotations

import re
from dataclasses import fields, replace

import numpy as np
import pytest

import kernels.parallel as parallel
from kernels.fusion import _COLLECTIVES, _Fusion, fuse
from kernels.lowering import lower_trace
from kernels.table import KernelTable
from workloads.model_config import load_model_config

_EXPERT = re.compile(r"^(.*)\.experts\.(\d+)(\.|$)")


class _ScanRouter:
    """A module's first row, found by scanning the table for it."""

    def __init__(self, table: KernelTable):
        self.table = table

    def __getitem__(self, module: str) -> int:
        return next(j for j, k in enumerate(self.table.kernels) if k.module == module)


def _scan_last_rows(table: KernelTable, prefixes) -> dict[str, int]:
    """Each prefix's last row, by a scan of the whole table per prefix."""
    return {prefix: max(i for i, k in enumerate(table.kernels) if k.module.startswith(prefix)) for prefix in prefixes}


class _ScanExperts:
    """An MoE layer's expert rows (collectives apart) by expert index, by a scan of the whole table per layer."""

    def __init__(self, fusion: _Fusion):
        self.fusion = fusion

    def __iter__(self):
        return iter(dict.fromkeys(match[1] for m in self.fusion.modules if (match := _EXPERT.match(m))))

    def __getitem__(self, parent: str) -> dict[str, list[int]]:
        experts: dict[str, list[int]] = {}
        for i, module in enumerate(self.fusion.modules):
            if (match := _EXPERT.match(module)) and match[1] == parent and self.fusion.t.kind[i] not in _COLLECTIVES:
                experts.setdefault(match[2], []).append(i)
        return experts


def _prepared(eager: KernelTable, config, tp: int) -> list[KernelTable]:
    """The eager table fused, and sharded over tp devices (experts split, then spread) before and after fusing."""
    out = [fuse(eager, "engine")]
    for ep in (1, tp):
        sharded = parallel.shard_tensor_parallel(eager, tp, config, ep)
        out += [sharded, fuse(sharded, "engine")]
    return out


# DeepSeek-V3 with its 3 dense first layers and 3 MoE ones (MLA, shared experts, grouped routing); Mixtral (8 experts,
# softmax routing, no shared experts); Qwen3 MoE (128 experts, 4 KV heads).
@pytest.mark.parametrize("model, layers, tp", [("deepseek-v3", 6, 8), ("mixtral-8x7b", 3, 8),
                                               ("qwen3-30b-a3b", 3, 4)])
def test_tables_match_a_scan_per_moe_layer(trace_of, monkeypatch, model, layers, tp):
    config = replace(load_model_config(model), num_layers=layers, mtp_layers=0)
    eager = KernelTable.from_kernels(lower_trace(trace_of(config, "prefill", 2, 64)))
    assert config.moe_layers >= 2
    built = _prepared(eager, config, tp)
    monkeypatch.setattr(parallel, "_first_rows", _ScanRouter)
    monkeypatch.setattr(parallel, "_last_rows_of", _scan_last_rows)
    init = _Fusion.__init__

    def scanning_init(self, table):
        init(self, table)
        self.experts = _ScanExperts(self)

    monkeypatch.setattr(_Fusion, "__init__", scanning_init)
    reference = _prepared(eager, config, tp)
    for table, expected in zip(built, reference, strict=True):
        for column in fields(KernelTable):
            got, want = getattr(table, column.name), getattr(expected, column.name)
            assert np.array_equal(got, want) if isinstance(got, np.ndarray) else got == want, column.name
