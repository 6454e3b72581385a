"""A step template of a model whose attention windows differ by layer (gpt-oss's sliding and full layers): each layer's
attention priced at its own window, against traces of the whole pass and by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.kernel import KernelKind
from kernels.lowering import lower_trace
from kernels.parallel import stage_of_layer
from kernels.shapes import StepTemplate, step_shape
from kernels.table import KIND_CODE, KernelTable
from tests.kernels.test_shapes import _tracer

FMT = NumericFormat()
WINDOW = 24
# Five layers, windowed and full in turn as gpt-oss's layer_types alternate (sliding first).
WINDOWS = (WINDOW, None, WINDOW, None, WINDOW)
COLUMNS = ("flops", "weight_bytes", "act_bytes", "kv_bytes")
ATTENTION = (KIND_CODE[KernelKind.ATTENTION_PREFILL], KIND_CODE[KernelKind.ATTENTION_DECODE])


@pytest.fixture(scope="module")
def config(tiny_llama):
    return replace(tiny_llama, name="tiny-windowed", num_layers=len(WINDOWS), layer_windows=WINDOWS)


@pytest.fixture(scope="module")
def tracer(trace_of, config):
    return _tracer(trace_of, config)


@pytest.fixture(scope="module")
def template(config, tracer):
    return StepTemplate.from_model(config, FMT, tracer)


def _shape(phase: str, batch: int, length: int):
    if phase == "prefill":
        return step_shape([(length, 0)] * batch, sampled=batch, layer_window=WINDOW)
    return step_shape(decode_kv=[length + 1] * batch, sampled=batch, layer_window=WINDOW)


@pytest.mark.parametrize("stages", [1, 2, 3])
@pytest.mark.parametrize("phase,batch,length", [("prefill", 3, 40), ("decode", 3, 100)])
def test_each_stage_prices_its_layers_at_their_windows(config, template, tracer, stages, phase, batch, length):
    """Past the window (40-token prompts, 101 keys a decode): every stage's rows, weighted by its counts, carry the
    FLOPs and bytes, and cost the time, of the traced kernels of that stage's layers, whose sliding layers attend to 24
    keys and full ones to all (the template traced two layers, below the window)."""
    reference = KernelTable.from_kernels(lower_trace(tracer(phase, batch, length))).with_format(FMT)
    layer = [k.layer for k in reference.kernels]
    first = next(i for i, value in enumerate(layer) if value is not None)
    on_stage = np.array([stage_of_layer(value, len(WINDOWS), stages) if value is not None
                         else 0 if i < first else stages - 1 for i, value in enumerate(layer)])
    table, counts = template.stage_table(_shape(phase, batch, length), stages)
    assert counts.sum() == len(reference)
    device = load_device("h100-sxm")
    for stage in range(stages):
        part = reference.select(np.flatnonzero(on_stage == stage))
        for column in COLUMNS:
            assert float(getattr(table, column) @ counts[stage]) == pytest.approx(
                float(getattr(part, column).sum()), rel=1e-9), (stage, column)
        got = float(device.cost_table(table).time_s @ counts[stage])
        assert got == pytest.approx(float(device.cost_table(part).time_s.sum()), rel=1e-9)


def test_a_decode_step_and_a_chunk_by_hand(config, template):
    """Decodes of 101 keys read 24 of them in each of the 3 sliding layers and 101 in each of the 2 full ones: 3 x
    (3 x 24 + 2 x 101) keys of K and V of 2 KV heads of 16 values at 2 bytes. A chunk of 10 tokens after 50 cached:
    each query sees 24 keys in a sliding layer (240 pairs) and 51 to 60 in a full one (555), and reads back 23 cached
    keys (those of its first query's window) against 50."""
    key_B = 2 * config.num_kv_heads * config.head_dim * 2
    table, count = template.table(_shape("decode", 3, 100))
    attention = np.isin(table.kind, ATTENTION)
    assert float(table.kv_bytes[attention] @ count[attention]) == 3 * (3 * 24 + 2 * 101) * key_B
    chunk = step_shape([(10, 50)], sampled=1, layer_window=WINDOW)
    assert (chunk.prefill_pairs, chunk.window_pairs) == (sum(range(51, 61)), 10 * 24)
    assert (chunk.prefill_cached, chunk.window_cached) == (50, 23)
    table, count = template.table(chunk)
    attention = np.isin(table.kind, ATTENTION)
    flops_per_pair = 2 * config.num_heads * 2 * config.head_dim  # QK^T and PV, 2 FLOPs a multiply-add
    assert float(table.flops[attention] @ count[attention]) == (3 * 240 + 2 * 555) * flops_per_pair
    assert float(table.kv_bytes[attention] @ count[attention]) == (3 * 23 + 2 * 50) * key_B


def test_a_verification_step_by_hand(config, template):
    """A speculative verification of 2 drafts (3 queries a sequence) for 3 sequences of 100 computed tokens: the
    queries at positions 100, 101 and 102 each attend to the 24 keys ending at their own in a sliding layer, so the
    layer reads keys 77 to 102, 26 of them, and a full layer all 103; each query is priced against every key its
    sequence reads (3 x 26 and 3 x 103 pairs). Before: 24 keys a sliding layer, the first two queries' windows cut."""
    shape = step_shape(decode_kv=[103] * 3, sampled=9, decode_query=3, layer_window=WINDOW)
    assert (shape.decode_kv, shape.window_kv) == (3 * 103, 3 * 26)
    table, count = template.table(shape)
    attention = np.isin(table.kind, ATTENTION)
    key_B = 2 * config.num_kv_heads * config.head_dim * 2
    assert float(table.kv_bytes[attention] @ count[attention]) == 3 * (3 * 26 + 2 * 103) * key_B
    flops_per_pair = 2 * config.num_heads * 2 * config.head_dim  # QK^T and PV, 2 FLOPs a multiply-add
    assert float(table.flops[attention] @ count[attention]) == 3 * 3 * (3 * 26 + 2 * 103) * flops_per_pair


def test_windows_never_cost_more_than_full_layers(tiny_llama, config, template, trace_of):
    """The same iteration of the same model with every layer full takes at least as long, and as long where no
    sequence reaches the window."""
    full = replace(config, layer_windows=())
    full_template = StepTemplate.from_model(full, FMT, _tracer(trace_of, full))
    device = load_device("h100-sxm")

    def time_s(tmpl, shape) -> float:
        table, count = tmpl.table(shape)
        return float(device.cost_table(table).time_s @ count)

    for chunks, kv, query in (([(200, 300)], [900, 40, 5], 1), ([], [4000] * 8, 1), ([(512, 0)] * 2, [], 1),
                              ([(200, 300)], [900, 40, 5], 6), ([], [4000] * 8, 33)):
        sampled = query * len(kv) + len(chunks)
        windowed = step_shape(chunks, kv, sampled=sampled, decode_query=query, layer_window=WINDOW)
        plain = step_shape(chunks, kv, sampled=sampled, decode_query=query)
        assert time_s(template, windowed) < time_s(full_template, plain)
    short = step_shape([(10, 5)], [20, 3], sampled=3, layer_window=WINDOW)
    assert time_s(template, short) == pytest.approx(time_s(full_template, step_shape([(10, 5)], [20, 3], sampled=3)),
                                                    rel=1e-12)
    # A verification whose queries' windows reach its first key (26 keys, 24 + 3 - 1) reads what a full layer does.
    verify = step_shape([], [26, 3], sampled=6, decode_query=3, layer_window=WINDOW)
    assert time_s(template, verify) == pytest.approx(
        time_s(full_template, step_shape([], [26, 3], sampled=6, decode_query=3)), rel=1e-12)
