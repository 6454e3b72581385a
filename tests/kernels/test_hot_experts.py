"""Mixed precision by expert (kernels/formats.py NumericFormat.hot_experts, kernels/moe.py hot_expert_parts,
kernels/table.py with_format, kernels/shapes.py fused MoE parts, kernels/module_params.py).

Expected values are hand-computed from the tiny Mixtral's shapes (hidden 64, intermediate 128, 4 experts of which
2 per token, 2 layers: each expert holds gate, up and down matrices of 64 x 128 = 8,192 weights) and the formats'
definitions (4 bits + a 16-bit scale per 128 weights = 4.125 bits; 8.125 at 8 bits), or are invariants."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.fusion import fuse
from kernels.kernel import KernelKind
from kernels.lowering import lower_trace
from kernels.mixed_layers import edge_mixed_template
from kernels.module_params import expert_byte_share, expert_param_share, layer_param_shares, stored_weight_scale
from kernels.shapes import StepTemplate, step_shape
from kernels.table import KernelTable
from tests.kernels.test_shapes import _tracer
from workloads.model_config import load_model_config

EXPERT_WEIGHTS = 3 * 64 * 128  # one expert's gate, up and down matrices
LAYERS, EXPERTS = 2, 4
W4 = NumericFormat(weight_bits=4)
HOT = NumericFormat(weight_bits=4, hot_experts=0.25, hot_expert_bits=8)
COLUMNS = ("flops", "weight_bytes", "act_bytes", "kv_bytes")


def _pass(trace_of, config, fusion: str, phase: str = "prefill", batch: int = 2, length: int = 8) -> KernelTable:
    """A traced pass at the traced precision, fused as `fusion` launches it; the default reaches every expert."""
    return fuse(KernelTable.from_kernels(lower_trace(_tracer(trace_of, config)(phase, batch, length))), fusion)


def _expert_rows(table: KernelTable) -> np.ndarray:
    """Rows holding routed experts' weights: eager expert GEMMs and fused MoE kernels."""
    return np.array([(".experts." in k.module or k.kind == KernelKind.MOE) and w > 0
                     for k, w in zip(table.kernels, table.weight_bytes, strict=True)])


# ---- the format --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields, needle", [
    (dict(hot_experts=1.5, hot_expert_bits=8), "hot_experts: found 1.5, allowed: a fraction from 0 to 1"),
    (dict(hot_experts=-0.1, hot_expert_bits=8), "hot_experts: found -0.1"),
    # A share without its width: 0 is refused, so the message must not offer it (it offers hot_experts 0 instead).
    (dict(hot_experts=0.25), "hot_expert_bits: found 0 with hot_experts 0.25 and the experts at 4 bits, allowed: "
                             "more bits than the experts' (mlp_weight_bits, else weight_bits): 5, 6, 8, 16; or "
                             "hot_experts 0 (off)"),
    (dict(hot_experts=0.25, hot_expert_bits=7), "hot_expert_bits: found 7"),
    (dict(hot_experts=0.25, hot_expert_bits=6, mlp_weight_bits=8), "hot_expert_bits: found 6 with the experts at 8"),
    (dict(hot_experts=0.25, hot_expert_bits=8, weight_type="nf4"), "hot_expert_bits: found 8, a width the weights'"),
])
def test_bad_hot_experts_are_one_line_errors(fields, needle):
    with pytest.raises(ValueError) as info:
        NumericFormat(**{"weight_bits": 4, **fields})
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_no_hot_share_or_the_experts_own_bits_is_the_plain_format():
    """Settings that change no expert give a format equal to the one without them (so points share its costs)."""
    assert NumericFormat(weight_bits=4, hot_experts=0.0, hot_expert_bits=8) == W4
    assert NumericFormat(weight_bits=4, hot_experts=0.5, hot_expert_bits=4) == W4
    assert NumericFormat(weight_bits=4, mlp_weight_bits=8, hot_experts=0.5, hot_expert_bits=8) == NumericFormat(
        weight_bits=4, mlp_weight_bits=8)
    assert not W4.mixed and HOT.mixed and HOT.weight_widths == (4, 8)


def test_hot_experts_are_spread_over_the_ids():
    """8 experts, a quarter hot: 2 hot experts, and every run of first experts holds n / 4 of them rounded half up
    (1: 0, 2: 1 (0.5 up), 3-5: 1, 6-8: 2)."""
    fmt = NumericFormat(weight_bits=4, hot_experts=0.25, hot_expert_bits=8)
    hot = [e for e in range(8) if fmt.is_hot_expert(e)]
    assert len(hot) == 2
    assert [sum(fmt.is_hot_expert(e) for e in range(n)) for n in range(1, 9)] == [0, 1, 1, 1, 1, 2, 2, 2]
    everyone = NumericFormat(weight_bits=4, hot_experts=1.0, hot_expert_bits=8)
    assert all(everyone.is_hot_expert(e) for e in range(8))


# ---- weight bytes of a pass --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", ["", "engine"])
def test_a_quarter_hot_at_8_bits_is_the_hand_sum(trace_of, tiny_mixtral, fusion):
    """Every expert reached: per layer one expert at 8.125 bits and three at 4.125, eager or fused."""
    table = _pass(trace_of, tiny_mixtral, fusion).with_format(HOT)
    experts = _expert_rows(table)
    want = LAYERS * EXPERT_WEIGHTS * (1 * 8.125 + 3 * 4.125) / 8
    assert table.weight_bytes[experts].sum() == pytest.approx(want, rel=1e-12)
    assert set(table.weight_bits[experts]) == {4.0, 8.0}


def test_a_fused_layer_runs_its_hot_experts_as_a_kernel_apart(trace_of, tiny_mixtral):
    """The engine's one fused MoE kernel a layer becomes two: a quarter of the experts at 8 bits and the rest at 4,
    each with its share of the layer's FLOPs, and on a GPU each priced on its width's plan."""
    traced = _pass(trace_of, tiny_mixtral, "engine")
    table = traced.with_format(HOT)
    moe = table.kind == table.kind[[k.kind == KernelKind.MOE for k in table.kernels].index(True)]
    assert moe.sum() == 2 * LAYERS and len(table) == len(traced) + LAYERS
    hot = np.array([k.module.endswith(".experts.hot") for k in table.kernels])
    assert list(table.batch[hot]) == [1.0] * LAYERS and list(table.batch[moe & ~hot]) == [3.0] * LAYERS
    assert set(table.weight_bits[hot]) == {8.0} and set(table.weight_bits[moe & ~hot]) == {4.0}
    assert table.flops.sum() == pytest.approx(traced.flops.sum(), rel=1e-12)
    plans = {int(table.weight_bits[rows & moe][0]): rows for _, rows in load_device("h100-sxm").row_plans(table)}
    assert (plans[8] & moe).tolist() == hot.tolist() and (plans[4] & moe).tolist() == (moe & ~hot).tolist()


@pytest.mark.parametrize("fusion", ["", "engine"])
def test_no_hot_experts_is_byte_identical(trace_of, tiny_mixtral, fusion):
    traced = _pass(trace_of, tiny_mixtral, fusion)
    plain, off = traced.with_format(W4), traced.with_format(
        NumericFormat(weight_bits=4, hot_experts=0.0, hot_expert_bits=8))
    assert [k.module for k in off.kernels] == [k.module for k in plain.kernels]
    for column in (*COLUMNS, "weight_bits", "batch", "m"):
        assert np.array_equal(getattr(off, column), getattr(plain, column)), column


@pytest.mark.parametrize("fusion", ["", "engine"])
def test_every_expert_hot_is_the_experts_at_hot_bits(trace_of, tiny_mixtral, fusion):
    """hot_experts 1 puts every expert at 8 bits, as mlp_weight_bits 8 does; the router (64 x 4 weights a layer) keeps
    16 bits under both, so the two read the same bytes."""
    traced = _pass(trace_of, tiny_mixtral, fusion)
    hot = traced.with_format(NumericFormat(weight_bits=4, hot_experts=1.0, hot_expert_bits=8))
    mlp = traced.with_format(NumericFormat(weight_bits=4, mlp_weight_bits=8))
    experts = _expert_rows(hot)
    assert hot.weight_bytes[experts].sum() == pytest.approx(mlp.weight_bytes[experts].sum(), rel=1e-12)
    assert mlp.weight_bytes.sum() == pytest.approx(hot.weight_bytes.sum(), rel=1e-12)


@pytest.mark.parametrize("fusion", ["", "engine"])
def test_more_hot_bits_or_experts_never_fewer_bytes(trace_of, tiny_mixtral, fusion):
    traced = _pass(trace_of, tiny_mixtral, fusion, phase="decode", batch=1, length=40)
    for share in (0.25, 0.5, 0.75, 1.0):
        read = [traced.with_format(NumericFormat(weight_bits=4, hot_experts=share, hot_expert_bits=bits))
                .weight_bytes.sum() for bits in (4, 5, 6, 8, 16)]
        assert read == sorted(read) and read[0] < read[-1], (share, read)
    for bits in (5, 8, 16):
        read = [traced.with_format(NumericFormat(weight_bits=4, hot_experts=share, hot_expert_bits=bits))
                .weight_bytes.sum() for share in (0.0, 0.25, 0.5, 0.75, 1.0)]
        assert read == sorted(read) and read[0] < read[-1], (bits, read)


def test_a_fused_decode_reads_the_uniform_share_of_hot_experts(trace_of, tiny_mixtral):
    """One decode token, top-2 of 4 experts: 2 experts reached, of which a quarter (0.5 experts on average under
    uniform routing) are hot."""
    table = _pass(trace_of, tiny_mixtral, "engine", phase="decode", batch=1, length=40).with_format(HOT)
    experts = _expert_rows(table)
    assert table.batch[experts].sum() == 2 * LAYERS
    want = LAYERS * EXPERT_WEIGHTS * (0.5 * 8.125 + 1.5 * 4.125) / 8
    assert table.weight_bytes[experts].sum() == pytest.approx(want, rel=1e-12)


# ---- step templates ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", ["", "engine"])
@pytest.mark.parametrize("phase, batch, length", [("decode", 1, 40), ("decode", 3, 40), ("prefill", 8, 7)])
def test_a_template_reproduces_a_traced_hot_pass(trace_of, tiny_mixtral, fusion, phase, batch, length):
    """The template (traced at other shapes) re-shapes the hot and other experts' kernels as tracing that pass does:
    at one decode token only 2 of the 4 experts are reached (kernels/shapes.py)."""
    template = StepTemplate.from_model(tiny_mixtral, HOT, _tracer(trace_of, tiny_mixtral), fusion=fusion)
    _assert_template_is_the_trace(template, _pass(trace_of, tiny_mixtral, fusion, phase, batch, length).with_format(
        HOT), phase, batch, length)


def _assert_template_is_the_trace(template: StepTemplate, reference: KernelTable, phase: str, batch: int,
                                  length: int) -> None:
    """The template's pass of `batch` prompts of `length` tokens, or decode tokens after `length` cached ones, sums
    to the traced pass's columns and GPU time."""
    shape = (step_shape([(length, 0)] * batch, sampled=batch) if phase == "prefill"
             else step_shape(decode_kv=[length + 1] * batch, sampled=batch))
    table, count = template.table(shape)
    for column in COLUMNS:
        assert float(getattr(table, column) @ count) == pytest.approx(float(getattr(reference, column).sum()),
                                                                       rel=1e-9), (phase, column)
    gpu = load_device("h100-sxm")
    assert float(gpu.cost_table(table).time_s @ count) == pytest.approx(
        float(gpu.cost_table(reference).time_s.sum()), rel=1e-9), phase


# ---- weights held ------------------------------------------------------------------------------------------------
def test_stored_bytes_of_mixtral_hand_sum():
    """Mixtral 8x7B (32 layers, 8 experts of 3 x 4,096 x 14,336 weights a layer, a router of 4,096 x 8): a quarter of
    the experts at 8.125 bits instead of 4.125 adds 4 bits to a quarter of the experts' parameters; the routers keep
    16 bits."""
    config = load_model_config("mixtral-8x7b")
    total = config.param_count()
    experts, routers = 32 * 8 * 3 * 4096 * 14336, 32 * 4096 * 8
    assert expert_param_share(config) == pytest.approx(experts / total, rel=1e-12)
    _, mlp = layer_param_shares(config)
    assert mlp - expert_param_share(config) == pytest.approx(routers / total, rel=1e-9)
    fmt = NumericFormat(weight_bits=4, hot_experts=0.25, hot_expert_bits=8)
    got = stored_weight_scale(fmt, config) * total * 2
    assert got == pytest.approx((total - routers) * 4.125 / 8 + experts * 0.25 * 4 / 8 + routers * 2, rel=1e-12)
    assert stored_weight_scale(NumericFormat(weight_bits=4, hot_experts=1.0, hot_expert_bits=8), config) == \
        pytest.approx(stored_weight_scale(NumericFormat(weight_bits=4, mlp_weight_bits=8), config), rel=1e-12)


def test_expert_bytes_of_mixtral_hand_sum():
    """The routed experts' share of what a format stores of Mixtral 8x7B (its offloaded traffic streams the share
    its tokens reach): their parameter share at one width for every weight; with a quarter of them at 8.125 bits
    and the rest of the model at 4.125, their bytes over the model's."""
    config = load_model_config("mixtral-8x7b")
    total, experts, routers = config.param_count(), 32 * 8 * 3 * 4096 * 14336, 32 * 4096 * 8
    assert expert_byte_share(NumericFormat(), config) == pytest.approx(experts / total, rel=1e-12)
    # At 4 bits the 16-bit routers hold more of the bytes than of the parameters, the experts fewer.
    assert expert_byte_share(W4, config) == pytest.approx(
        experts * 4.125 / ((total - routers) * 4.125 + routers * 16), rel=1e-12)
    expert_bits = 0.75 * 4.125 + 0.25 * 8.125
    stored = experts * expert_bits + (total - experts - routers) * 4.125 + routers * 16
    assert expert_byte_share(HOT, config) == pytest.approx(experts * expert_bits / stored, rel=1e-12)
    # Experts at 4.125 bits beside 16-bit attention: fewer of the bytes than of the parameters.
    attn16 = NumericFormat(weight_bits=4, attn_weight_bits=16)
    attention = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024)
    assert expert_byte_share(attn16, config) == pytest.approx(
        experts * 4.125 / ((attention + routers) * 16 + (total - attention - routers) * 4.125), rel=1e-12)
    assert expert_byte_share(attn16, load_model_config("llama-2-7b")) == 0.0


def test_hot_experts_in_edge_layers_keep_the_edge_bits():
    """Edge layers at 16 bits raise every weight of theirs, hot experts included; between them a quarter is hot."""
    fmt = NumericFormat(weight_bits=4, hot_experts=0.25, hot_expert_bits=8, edge_layer_bits=16)
    assert fmt.module_bits("layers.0.mlp.experts.hot", edge=True) == 16
    assert fmt.module_bits("layers.0.mlp.experts.hot") == 8
    assert fmt.module_bits("layers.0.mlp.experts.cold") == 4
    assert fmt.module_bits("layers.0.mlp.gate") == 16  # the router: no format quantizes it
    assert fmt.at_edge().hot_experts == 0.0  # the edge's experts are all at 16 bits: one width


@pytest.mark.parametrize("fusion", ["", "engine"])
def test_an_edge_layer_template_with_hot_experts_is_the_whole_model_trace(trace_of, tiny_mixtral, fusion):
    """Six layers, the first and last at 6 bits, a quarter of the experts hot between them: the mix of the inner and
    edge layers' templates (kernels/mixed_layers.py) pairs each layer's hot and other experts' kernels as a trace of
    all six layers does."""
    config = replace(tiny_mixtral, num_layers=6)
    fmt = NumericFormat(weight_bits=4, hot_experts=0.25, hot_expert_bits=8, edge_layer_bits=6)
    few = _tracer(trace_of, replace(config, num_layers=2))
    template = edge_mixed_template(lambda layer_fmt: StepTemplate.from_model(config, layer_fmt, few, fusion=fusion),
                                   fmt, config.num_layers)
    for phase, batch, length in (("decode", 1, 40), ("prefill", 8, 7)):
        reference = _pass(trace_of, config, fusion, phase, batch, length).with_format(fmt)
        _assert_template_is_the_trace(template, reference, phase, batch, length)
