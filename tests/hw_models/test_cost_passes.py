"""Passes priced together (hw_models/device.py cost_passes: their distinct rows stacked into one call) cost exactly
what each pass costs priced alone (DeviceModel.cost_table); sums over kernels by distinct row (IndexedCosts) equal
the sums of the per-kernel arrays."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest

from hw_models.cost import COST_FIELDS, IndexedCosts, KernelCosts
from hw_models.device import cost_passes
from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.lowering import lower_trace
from kernels.table import KernelTable

PROMPT = 48
# Fitted presets (H100 with its fp8 fits, A100 with a sibling's, L40S) and a datasheet roofline.
DEVICES = (("h100-sxm", True), ("a100-sxm-80gb", True), ("l40s", True), ("h100-sxm", False), ("npu-only", False),
           ("neupims", False), ("npu-mixpe", False), ("npu-lut", False))
# 16-bit, fp8 weights and activations, 4-bit weights only (dequantized on the CUDA cores), an fp8 KV cache with 2:4
# sparse weights: every fit variant of attention (prefill, decode, fp8 KV) and GEMM the tables reach.
FORMATS = (NumericFormat(), NumericFormat(weight_bits=8, act_bits=8), NumericFormat(weight_bits=4),
           NumericFormat(kv_bits=8, sparsity="2:4"))
# Formats a distinct row must price as its kernels' own rows are priced: 4-bit weights in groups of 128, fp8 weights and
# activations, mixed precision (attention, edge layers and LM head at 8 bits, the rest at 4), 2:4 sparse weights, a
# 4-bit KV cache, and activation sparsity with Deja Vu's predictor (it thins the MLP's GEMMs alone, which
# KernelTable.run_on finds by their modules, not by a column).
ROW_FORMATS = (NumericFormat(weight_bits=4, group_size=128),
               NumericFormat(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3"),
               NumericFormat(weight_bits=4, attn_weight_bits=8, edge_layer_bits=8, head_bits=8),
               NumericFormat(sparsity="2:4"), NumericFormat(kv_bits=4),
               NumericFormat(act_kept=0.5, act_predictor="deja_vu"))
# A MoE layer whose hot experts keep more bits runs them as a row apart from its other experts' (kernels/moe.py).
HOT_EXPERTS = NumericFormat(weight_bits=4, hot_experts=0.5, hot_expert_bits=8)


@pytest.fixture(scope="module")
def passes(trace_of, tiny_llama):
    """Prefill, decode step and the decode attention of three steps of the tiny Llama, batch 2, per format."""
    prefill = KernelTable.from_kernels(lower_trace(trace_of(tiny_llama, "prefill", 2, PROMPT)))
    decode = KernelTable.from_kernels(lower_trace(trace_of(tiny_llama, "decode", 2, 1, PROMPT)))
    out = []
    for fmt in FORMATS:
        p, d = prefill.with_format(fmt), decode.with_format(fmt)
        out.append((p, d, d.at_kv_lengths(PROMPT + 1 + np.arange(3.0))))
    return out


@pytest.mark.parametrize(("name", "calibrated"), DEVICES)
def test_stacked_passes_cost_what_each_pass_costs_alone(passes, name, calibrated):
    device = load_device(name, calibrated=calibrated)
    for tables in passes:
        together = cost_passes(device, list(tables))
        assert any(isinstance(costs, IndexedCosts) for costs in together)  # the stacked path ran
        for table, costs in zip(tables, together, strict=True):
            alone = device.cost_table(table)
            assert len(costs) == len(table)
            for field in COST_FIELDS:
                expected, got = getattr(alone, field), getattr(costs, field)
                assert (expected is None) == (got is None), field
                if expected is not None:
                    assert np.array_equal(got, expected), f"{name} {table.numeric_format}: {field}"


def _three_passes(trace_of, model, fmt: NumericFormat) -> tuple[KernelTable, KernelTable, KernelTable]:
    """Prefill, decode step and the decode attention of three steps of `model` at batch 2, in `fmt`."""
    prefill = KernelTable.from_kernels(lower_trace(trace_of(model, "prefill", 2, PROMPT))).with_format(fmt)
    decode = KernelTable.from_kernels(lower_trace(trace_of(model, "decode", 2, 1, PROMPT))).with_format(fmt)
    return prefill, decode, decode.at_kv_lengths(PROMPT + 1 + np.arange(3.0))


@pytest.fixture(scope="module")
def formatted_passes(trace_of, tiny_llama, tiny_mixtral):
    """_three_passes of a four-layer tiny Llama (two layers between its edge layers) in each of ROW_FORMATS, and of the
    tiny Mixtral with hot experts."""
    llama = replace(tiny_llama, name="tiny-llama-4-layers", num_layers=4)
    return [_three_passes(trace_of, llama, fmt) for fmt in ROW_FORMATS] + [
        _three_passes(trace_of, tiny_mixtral, HOT_EXPERTS)]


@pytest.mark.parametrize("execution", ["eager", "engine"])
@pytest.mark.parametrize(("name", "calibrated"), DEVICES)
def test_a_distinct_row_costs_what_its_kernels_cost_row_by_row(formatted_passes, name, calibrated, execution):
    """A model that prices each kernel by its own row (prices_rows_alone) prices a table's distinct rows once, alone
    (cost_table) or stacked with the other passes' (cost_passes): every kernel's cost is exactly its cost as a row of
    a call over the whole table (the same model with prices_rows_alone off). The tiny Llama's LM head (hidden 64 x
    vocab 128) has the shape of its MLP's gate and up projections, equal in every column, yet activation sparsity
    thins the MLP's alone: a distinct row must tell them apart."""
    device = load_device(name, calibrated=calibrated)
    assert device.prices_rows_alone
    whole = copy.copy(device)
    whole.prices_rows_alone = False  # every kernel a row of its own in one call
    for tables in formatted_passes:
        for table, stacked in zip(tables, cost_passes(device, list(tables), execution), strict=True):
            assert table.distinct_rows is not None  # the layers repeat: the distinct-row path is the one checked
            expected = whole.cost_table(table, execution)
            for path, costs in (("distinct", device.cost_table(table, execution)), ("stacked", stacked)):
                for field in COST_FIELDS:
                    want, got = getattr(expected, field), getattr(costs, field)
                    assert (want is None) == (got is None), field
                    if want is not None:
                        assert np.array_equal(got, want), f"{name} {table.numeric_format}: {path} {field}"


def test_sums_by_distinct_row_equal_sums_over_kernels(passes):
    device = load_device("h100-sxm")
    prefill, decode, steps = passes[0]
    for table, costs in zip((prefill, decode), cost_passes(device, [prefill, decode, steps])[:2], strict=True):
        assert isinstance(costs, IndexedCosts)
        attention = table.decode_attention_mask
        for field in ("time_s", "compute_J", "memory_J"):
            values = getattr(device.cost_table(table), field)
            assert costs.sum(field) == pytest.approx(values.sum(), rel=1e-12)
            assert costs.sum(field, without=attention) == pytest.approx(values[~attention].sum(), rel=1e-12)
            masks = table.class_masks
            assert costs.sums(field, masks, attention) == pytest.approx(
                [values[mask & ~attention].sum() for mask in masks.values()], rel=1e-12)


def test_tables_of_several_formats_are_priced_one_by_one(passes):
    """Stacking needs one format: passes of two are each priced alone, with the same numbers."""
    device = load_device("h100-sxm")
    dense, fp8 = passes[0][0], passes[1][1]
    for table, costs in zip((dense, fp8), cost_passes(device, [dense, fp8]), strict=True):
        assert np.array_equal(costs.time_s, device.cost_table(table).time_s)


@pytest.mark.parametrize("shape", [(6,), (3, 6)])
def test_a_slice_of_costs_slices_every_field(shape):
    """KernelCosts.rows_slice spells out its fields (for speed): every field, the unit too, is the slice of the
    kernels asked for, for one design point's costs and a block's (points, kernels)."""
    from dataclasses import fields

    values = {f.name: np.arange(np.prod(shape), dtype=float).reshape(shape) + 100 * i
              for i, f in enumerate(fields(KernelCosts)) if f.name != "unit"}
    costs = KernelCosts(**values, unit=np.arange(6))
    part = costs.rows_slice(1, 4)
    for f in fields(KernelCosts):
        whole = getattr(costs, f.name)
        np.testing.assert_array_equal(getattr(part, f.name), whole[..., 1:4])
