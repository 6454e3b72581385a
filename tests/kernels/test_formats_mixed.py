"""Mixed precision by module and layer, outliers kept apart and DFloat11-coded weights (kernels/formats.py,
kernels/table.py with_format, kernels/format_kernels.py, kernels/mixed_layers.py, kernels/module_params.py).

Expected values are hand-computed from the formats' definitions (bits and scales per weight, 32 bits per outlier,
DFloat11's published compressed size) and from the models' shapes, or are invariants."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from explore.evaluate import Evaluator
from kernels.format_kernels import DECOMPRESS_OP, OUTLIER_OP
from kernels.formats import NumericFormat, check_edge_layers
from kernels.kernel import Kernel, KernelKind
from kernels.module_params import layer_param_shares, stored_weight_scale
from kernels.shapes import step_shape
from kernels.table import KernelTable
from tests.explore.tiny_sweep import TINY_CONFIG
from workloads.model_config import load_model_config

LAYERS = 4
# The tiny Llama's decoder-layer projections (hidden 64, 4 heads of 16, 2 KV heads, intermediate 128): k x n.
PROJECTIONS = {"self_attn.q_proj": (64, 64), "self_attn.k_proj": (64, 32), "self_attn.v_proj": (64, 32),
               "self_attn.o_proj": (64, 64), "mlp.gate_proj": (64, 128), "mlp.up_proj": (64, 128),
               "mlp.down_proj": (128, 64)}


def _gemm(layer: int | None, module: str, k: int, n: int, m: int = 1) -> Kernel:
    return Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * m * n * k, weight_bytes=2.0 * k * n,
                  act_bytes=2.0 * m * (k + n), kv_bytes=0.0, dtype="bf16", tensor_core=True, layer=layer,
                  module=module if layer is None else f"layers.{layer}.{module}", m=m, n=n, k=k, batch=1)


def _model_table() -> KernelTable:
    """Every projection of a 4-layer tiny Llama and its LM head (vocabulary 128), one token."""
    rows = [_gemm(layer, module, k, n) for layer in range(LAYERS) for module, (k, n) in PROJECTIONS.items()]
    return KernelTable.from_kernels([*rows, _gemm(None, "lm_head", 64, 128)])


def _bits(storage_bits: float) -> float:
    return storage_bits / 16.0


def test_a_module_override_sets_its_rows_bytes_and_no_others():
    fmt = NumericFormat(weight_bits=4, attn_weight_bits=8)
    traced = _model_table()
    table = traced.with_format(fmt)
    for i, kernel in enumerate(traced.kernels):
        # 8 bits + a 16-bit scale per 128 for attention, 4 + 16/128 for the MLP and the LM head.
        expected = _bits(8.125) if "self_attn" in kernel.module else _bits(4.125)
        assert table.weight_bytes[i] == pytest.approx(kernel.weight_bytes * expected)
        assert table.weight_bits[i] == (8 if "self_attn" in kernel.module else 4)


def test_edge_layers_keep_their_bits_in_the_first_and_last_layers():
    traced = _model_table()
    for edge_layers, edge in ((1, {0, 3}), (2, {0, 1, 2, 3})):
        fmt = NumericFormat(weight_bits=4, edge_layer_bits=8, edge_layers=edge_layers)
        table = traced.with_format(fmt)
        for i, kernel in enumerate(traced.kernels):
            expected = 8 if kernel.layer in edge else 4  # the LM head (layer None) keeps weight_bits
            assert table.weight_bits[i] == expected, (edge_layers, kernel.module)


def test_edge_layers_of_a_longer_model_than_the_table():
    """Told the model has 32 layers, a table of its first 4 puts only layer 0 at the edge."""
    fmt = NumericFormat(weight_bits=4, edge_layer_bits=8)
    table = _model_table().with_format(fmt, num_layers=32)
    layers = np.array([-1 if k.layer is None else k.layer for k in table.kernels])
    assert set(table.weight_bits[layers == 0]) == {8.0}
    assert set(table.weight_bits[layers > 0]) == {4.0}


def test_edge_layers_at_each_end_fit_in_the_model():
    """16 edge layers at each end of a 32-layer model keep all of it at the edge bits; 17 would overlap (one error
    naming the knob and the model); without edge bits edge_layers keeps nothing and is not checked."""
    check_edge_layers(NumericFormat(weight_bits=4, edge_layer_bits=8, edge_layers=16), 32, "llama-2-7b")
    with pytest.raises(ValueError, match=r"^edge_layers: found 17 on llama-2-7b, which has 32 decoder layers, "
                                         r"allowed: 1 to 16"):
        check_edge_layers(NumericFormat(weight_bits=4, edge_layer_bits=8, edge_layers=17), 32, "llama-2-7b")
    check_edge_layers(NumericFormat(weight_bits=4, edge_layers=17), 32, "llama-2-7b")


def test_a_module_at_16_bits_runs_unquantized():
    fmt = NumericFormat(weight_bits=8, act_bits=8, act_type="fp8_e4m3", weight_type="fp8_e4m3", attn_weight_bits=16)
    traced = _model_table()
    table = traced.with_format(fmt)
    attention = np.array(["self_attn" in k.module for k in traced.kernels])
    assert set(table.dtype[attention]) == {"bf16"} and set(table.dtype[~attention]) == {"fp8"}
    assert np.allclose(table.weight_bytes[attention], traced.weight_bytes[attention])
    assert np.allclose(table.act_bytes[attention], traced.act_bytes[attention])  # 16-bit activations too


@pytest.mark.parametrize("fmt", [
    NumericFormat(weight_bits=4, act_bits=8, attn_weight_bits=8, edge_layer_bits=6, head_bits=16),
    NumericFormat(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3", scale_type="e8m0",
                  group_size=32, mlp_weight_bits=16),
], ids=["w4a8 int at three widths", "mxfp8 with a 16-bit mlp"])
def test_16bit_inputs_restore_the_traced_activations_at_every_width(fmt):
    """A weight-only kernel reads the traced 16-bit input (2 bytes an element) whatever the width of its row's
    weights: every quantized row of a mixed format gets back its traced activation bytes, m (k + n) x 2, and each
    row's bytes under the format are m (k x act_storage_bits / 8 + n x 2) by hand."""
    traced = _model_table()
    table = traced.with_format(fmt)
    quantized = table.weight_bits < 16
    assert fmt.mixed and len(np.unique(table.weight_bits)) >= 2
    for i, kernel in enumerate(traced.kernels):
        if quantized[i]:
            by_hand = kernel.m * (kernel.k * fmt.act_storage_bits / 8.0 + kernel.n * 2.0)
            assert table.act_bytes[i] == pytest.approx(by_hand)
    restored = table.with_16bit_inputs(np.ones(len(table), dtype=bool))
    assert np.allclose(restored.act_bytes, [2.0 * k.m * (k.k + k.n) for k in traced.kernels])


def test_more_bits_in_any_module_never_fewer_bytes():
    traced = _model_table()
    widths = (0, 4, 6, 8, 16)
    totals = {}
    for attn, mlp, edge, head in itertools.product(widths, repeat=4):
        fmt = NumericFormat(weight_bits=4, attn_weight_bits=attn, mlp_weight_bits=mlp, edge_layer_bits=edge,
                            head_bits=head)
        totals[attn or 4, mlp or 4, edge or 4, head or 4] = (traced.with_format(fmt).weight_bytes.sum(),
                                                             fmt.stored_weight_scale(0.3, 0.6, 32))
    for bits, value in totals.items():
        for more, other in totals.items():
            if all(b2 >= b for b, b2 in zip(bits, more, strict=True)):
                assert other[0] >= value[0] and other[1] >= value[1], (bits, more)


def test_an_override_equal_to_weight_bits_is_the_uniform_format():
    assert NumericFormat(weight_bits=4, attn_weight_bits=4, edge_layer_bits=4, head_bits=4) == \
        NumericFormat(weight_bits=4)


def test_head_bits_set_the_lm_head_and_nothing_in_the_layers():
    """head_bits 16 keeps the LM head (the one weight GEMM outside the decoder layers) unquantized, as GPTQ and AWQ
    do, and every decoder-layer projection at 4 + 16/128 bits."""
    traced = _model_table()
    table = traced.with_format(NumericFormat(weight_bits=4, head_bits=16))
    for i, kernel in enumerate(traced.kernels):
        head = kernel.layer is None
        assert table.weight_bits[i] == (16 if head else 4)
        assert table.weight_bytes[i] == pytest.approx(kernel.weight_bytes * (1.0 if head else _bits(4.125)))


def test_llama_2_7b_keeps_its_head_and_embeddings_at_16_bits_by_hand():
    """Llama-2-7B's weights outside its decoder layers: an untied embedding and LM head of 32,000 x 4,096 and 65
    RMSNorm weights of 4,096 (two per layer and the final one). At head_bits 16 under W4 (4 + 16/128 bits) they
    store (16 - 4.125) / 8 bytes more each."""
    cfg = load_model_config("llama-2-7b")
    outside = 2 * 32_000 * 4096 + 65 * 4096
    extra_B = (stored_weight_scale(NumericFormat(weight_bits=4, head_bits=16), cfg)
               - stored_weight_scale(NumericFormat(weight_bits=4), cfg)) * 2 * cfg.param_count()
    assert extra_B == pytest.approx(outside * (16 - 4.125) / 8, rel=1e-9)


@pytest.mark.parametrize("parts, needle", [
    (dict(weight_bits=8, attn_weight_bits=4), "attn_weight_bits: found 4 with weight_bits 8, allowed: 0"),
    (dict(weight_bits=4, mlp_weight_bits=7), "mlp_weight_bits: found 7"),
    (dict(weight_bits=4, weight_type="fp4_e2m1", edge_layer_bits=8), "edge_layer_bits: found 8, a width"),
    (dict(weight_bits=4, edge_layer_bits=8, edge_layers=0), "edge_layers: found 0"),
    (dict(weight_bits=8, head_bits=4), "head_bits: found 4 with weight_bits 8, allowed: 0"),
    (dict(outlier_fraction=0.01), "outlier_fraction: found 0.01 with weight_bits 16"),
    (dict(weight_bits=4, outlier_fraction=0.2), "outlier_fraction: found 0.2, allowed: a fraction from 0 to 0.05"),
    (dict(weight_bits=4, weight_coding="dfloat11"), "weight_coding: found 'dfloat11' with weight_bits 4"),
    (dict(weight_coding="zip"), "weight_coding: found 'zip', allowed: none, dfloat11"),
])
def test_bad_parts_name_the_field(parts, needle):
    with pytest.raises(ValueError, match="^" + needle.replace("(", r"\(").replace(".", r"\.")):
        NumericFormat(**parts)


def test_outliers_store_32_bits_each_and_run_a_sparse_kernel():
    fmt = NumericFormat(weight_bits=3, outlier_fraction=0.0045)  # SqueezeLLM's 0.45%
    # 3 bits + 16/128 of scale + 0.45% x (16-bit value + 16-bit column index).
    assert fmt.stored_weight_bits(3) == pytest.approx(3.125 + 0.0045 * 32)
    traced = KernelTable.from_kernels([_gemm(0, "mlp.down_proj", k=4096, n=1024, m=8)])
    table = traced.with_format(fmt)
    assert [k.op for k in table.kernels] == ["mm", OUTLIER_OP]
    sparse = table.select([1])
    weights = 4096 * 1024
    assert sparse.weight_bytes[0] == pytest.approx(0.0045 * weights * 4)  # 4 bytes per outlier
    assert sparse.flops[0] == pytest.approx(2 * 8 * 0.0045 * weights)  # a multiply-add per outlier and token
    # Input read once, output read and written back: 8 tokens x (4096 + 2 x 1024) x 2 bytes.
    assert sparse.act_bytes[0] == pytest.approx(8 * (4096 + 2 * 1024) * 2)
    assert table.weight_bytes[0] == pytest.approx(2 * weights * 3.125 / 16)  # the dense part is unchanged


def test_outlier_fraction_zero_is_todays_table():
    traced = _model_table()
    plain, zero = NumericFormat(weight_bits=4), NumericFormat(weight_bits=4, outlier_fraction=0.0)
    a, b = traced.with_format(plain), traced.with_format(zero)
    assert len(a) == len(b) == len(traced)
    for name in ("weight_bytes", "act_bytes", "flops", "weight_bits"):
        assert np.array_equal(getattr(a, name), getattr(b, name))


def test_more_outliers_never_fewer_bytes():
    traced = _model_table()
    totals = [traced.with_format(NumericFormat(weight_bits=4, outlier_fraction=f)).bytes.sum()
              for f in (0.0, 0.0005, 0.0045, 0.01, 0.05)]
    assert totals == sorted(totals) and totals[0] < totals[-1]


def test_dfloat11_stores_its_published_size_and_decompresses_per_block():
    fmt = NumericFormat(weight_coding="dfloat11")
    # Llama 3.1 8B: 16.1 GB in bf16, 10.9 GB in DFloat11 (Zhang et al. 2025, Table 2).
    assert fmt.stored_weight_bits(16) * 16.1 / 16 == pytest.approx(10.9)
    assert fmt.stored_weight_scale() < NumericFormat().stored_weight_scale()  # never stores more than bf16
    traced = _model_table()
    table = traced.with_format(fmt)
    gemms = table.select(np.arange(len(traced)))
    assert np.array_equal(gemms.weight_bytes, traced.weight_bytes)  # the GEMMs read 16-bit weights
    decompress = table.select(np.array([k.op == DECOMPRESS_OP for k in table.kernels]))
    assert len(decompress) == LAYERS + 1  # one per transformer block, one for the LM head
    per_layer = 2.0 * sum(k * n for k, n in PROJECTIONS.values())
    assert decompress.act_bytes[0] == pytest.approx(per_layer)  # writes the block's 16-bit weights
    assert decompress.weight_bytes[0] == pytest.approx(per_layer * 10.9 / 16.1)  # reads them coded


def test_llama_2_7b_parameter_shares_from_its_shapes():
    """Llama-2-7B: 32 layers of 4 x 4096^2 attention and 3 x 4096 x 11008 MLP weights, 6,738,415,616 in all."""
    attention, mlp = layer_param_shares(load_model_config("llama-2-7b"))
    total = 6_738_415_616
    assert attention == pytest.approx(32 * 4 * 4096**2 / total)
    assert mlp == pytest.approx(32 * 3 * 4096 * 11008 / total)


def test_stored_scale_of_a_mixed_format_by_hand():
    cfg = load_model_config("llama-2-7b")
    attention, mlp = 32 * 4 * 4096**2 / 6_738_415_616, 32 * 3 * 4096 * 11008 / 6_738_415_616
    fmt = NumericFormat(weight_bits=4, attn_weight_bits=8, edge_layer_bits=16)
    # 2 of 32 layers at 16 bits; the other 30 with attention at 8.125 and MLP at 4.125 bits; the rest at 4.125.
    edge = 2 / 32
    expected = ((1 - attention - mlp) * 4.125 + attention * ((1 - edge) * 8.125 + edge * 16)
                + mlp * ((1 - edge) * 4.125 + edge * 16)) / 16
    assert stored_weight_scale(fmt, cfg) == pytest.approx(expected)
    assert stored_weight_scale(NumericFormat(weight_bits=4), cfg) == NumericFormat(weight_bits=4).weight_scale


@pytest.fixture(scope="module")
def four_layer_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("four-layers") / "config.json"
    path.write_text(json.dumps(dict(TINY_CONFIG, num_hidden_layers=LAYERS)))
    return str(path)


@pytest.mark.parametrize("fmt", [
    NumericFormat(weight_bits=4, edge_layer_bits=8),
    NumericFormat(weight_bits=4, attn_weight_bits=8, edge_layer_bits=16, outlier_fraction=0.01),
    NumericFormat(weight_coding="dfloat11"),
    NumericFormat(weight_bits=4, head_bits=8),
], ids=["edge", "edge+attn+outliers", "dfloat11", "head"])
def test_step_template_matches_the_whole_model_trace(four_layer_model, fmt):
    """A template traces 2 of the 4 layers; its decode step moves the bytes and does the FLOPs of the whole model's
    traced decode under the same format (edge layers mixed in by share, kernels/mixed_layers.py)."""
    ev = Evaluator()
    template = ev.template(four_layer_model, fmt)
    table, count = template.table(step_shape(decode_kv=[16], sampled=1))
    whole = ev.tables(four_layer_model, 1, 16, fmt).decode
    format_rows = table.format_rows
    for name in ("weight_bytes", "flops"):
        assert float((getattr(table, name) * count)[format_rows].sum()) == pytest.approx(
            float(getattr(whole, name)[whole.format_rows].sum()), rel=1e-9), name
