"""A serving iteration's attention rows under decode context parallelism (kernels/shapes.py StepTemplate.context_split),
by hand on the tiny llama: 4 query heads and 2 KV heads of 16 dimensions in 2 layers, on 4 tensor-parallel devices
(one query head and one KV head on each, each KV head on 2 of them), its keys split over dcp 2."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kernels.formats import NumericFormat
from kernels.kernel import KernelKind
from kernels.shapes import StepShape
from kernels.table import KIND_CODE

HEAD_DIM = 16
KEY_B = 2 * HEAD_DIM * 2  # a token's key and value of the device's one KV head in one layer, 2 bytes a value


@pytest.fixture
def templates(evaluator, tmp_path):
    from tests.explore.tiny_sweep import write_tiny_model

    plain = evaluator.template(write_tiny_model(tmp_path), NumericFormat(), tp=4, fusion="engine")
    return plain, replace(plain, context_split=2)


def _kinds(table) -> list[KernelKind]:
    codes = {code: kind for kind, code in KIND_CODE.items()}
    return [codes[code] for code in table.kind]


def test_a_decode_attends_over_half_the_keys_with_the_group_s_heads_between_three_exchanges(templates):
    """3 sequences of 101 keys each: the busiest device of the pair holds ceil(101 / 2) = 51 of each, attended by the
    pair's 2 query heads; the queries of the 2 heads gathered before (3 x 2 x 16 x 2 B = 192 B), the fp32 LSEs of
    both devices after (2 x 3 x 2 x 4 B = 48 B), then the outputs reduce-scattered (3 x 2 x 16 x 2 B = 192 B)."""
    plain, split = templates
    shape = StepShape(decode_seqs=3, decode_kv=3 * 101)
    whole, rows = plain.attention_table(shape), split.attention_table(shape)
    assert _kinds(whole) == [KernelKind.ATTENTION_DECODE]
    assert _kinds(rows) == [KernelKind.ALL_GATHER, KernelKind.ATTENTION_DECODE, KernelKind.ALL_GATHER,
                            KernelKind.REDUCE_SCATTER]
    assert whole.kv_bytes[0] == pytest.approx(3 * 101 * KEY_B)
    assert rows.kv_bytes[1] == pytest.approx(3 * 51 * KEY_B)
    assert rows.kv_len[1] == 51 and rows.heads[1] == 2 * whole.heads[0] == 2
    assert rows.flops[1] == pytest.approx(whole.flops[0] * 2 * 51 / 101)
    assert list(rows.act_bytes[[0, 2, 3]]) == pytest.approx([3 * 2 * HEAD_DIM * 2, 2 * 3 * 2 * 4, 3 * 2 * HEAD_DIM * 2])
    assert list(rows.batch[[0, 2, 3]]) == [2, 2, 2]  # each exchange over the pair


def test_a_chunk_past_a_cached_context_gathers_the_context_s_keys_first(templates):
    """A 64-token chunk past 100 cached tokens: each device gathers the context's 100 keys of its KV head, 100 x 64 B
    in each layer, from the pair; without the split it reads them whole from its own cache."""
    plain, split = templates
    shape = StepShape(prefill_seqs=1, prefill_tokens=64, prefill_pairs=64 * 100 + 64 * 65 // 2, prefill_cached=100)
    assert KernelKind.ALL_GATHER not in _kinds(plain.attention_table(shape))
    rows = split.attention_table(shape)
    gathers = np.flatnonzero(rows.kind == KIND_CODE[KernelKind.ALL_GATHER])
    assert len(gathers) == 1
    assert rows.act_bytes[gathers[0]] == pytest.approx(100 * KEY_B) and rows.batch[gathers[0]] == 2
    prefill = rows.kind == KIND_CODE[KernelKind.ATTENTION_PREFILL]
    assert rows.flops[prefill].sum() == pytest.approx(plain.attention_table(shape).flops.sum())


def test_an_iteration_s_cache_writes_are_split_over_the_group(templates):
    """3 decodes and a 64-token chunk write 67 tokens' keys and values of the device's KV head in each layer, 67 x 64 B
    = 4,288 B read and written; at dcp 2 each device stores every other position's, 2,144 B (vLLM's slot mapping)."""
    plain, split = templates
    shape = StepShape(decode_seqs=3, decode_kv=3 * 101, prefill_seqs=1, prefill_tokens=64,
                      prefill_pairs=64 * 100 + 64 * 65 // 2, prefill_cached=100)
    for template, write_B in ((plain, 67 * KEY_B), (split, 67 * KEY_B / 2)):
        table, _ = template.linear_table(shape)
        writes = np.flatnonzero((table.kv_bytes > 0) & ~table.tensor_core)
        assert [table.kernels[i].op for i in writes] == ["reshape_and_cache"]
        assert table.kv_bytes[writes[0]] == pytest.approx(write_B) and table.act_bytes[writes[0]] == pytest.approx(
            write_B)
