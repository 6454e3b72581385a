"""Sparsity patterns beyond N:M (kernels/sparsity.py) and what KernelTable.run_on does with them: expected values
are hand calculations from the layouts the module cites, or invariants."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.sparsity import (
    ACTIVATION,
    DEJA_VU_RANK,
    SparsitySupport,
    exploits,
    parse_sparsity,
    sparsity_use,
    support_key,
)
from kernels.table import KernelTable

HIDDEN, FFN = 4096, 11008


def _gemm(tokens: int, n: int, k: int, module: str, layer: int | None = 0) -> Kernel:
    return Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * tokens * n * k, weight_bytes=2.0 * n * k,
                  act_bytes=2.0 * tokens * (n + k), kv_bytes=0.0, dtype="bf16", tensor_core=True, m=tokens, n=n, k=k,
                  batch=1, layer=layer, module=module)


def _layer(tokens: int) -> KernelTable:
    """One Llama decoder layer's weight GEMMs at `tokens` tokens: q projection, MLP up and down, and an LM head."""
    return KernelTable.from_kernels([
        _gemm(tokens, HIDDEN, HIDDEN, "layers.0.self_attn.q_proj"),
        _gemm(tokens, FFN, HIDDEN, "layers.0.mlp.up_proj"),
        _gemm(tokens, HIDDEN, FFN, "layers.0.mlp.down_proj"),
        _gemm(tokens, 32000, HIDDEN, "lm_head", layer=None)])


ALL = SparsitySupport.of(("2:4", "unstructured", "block64", ACTIVATION))


@pytest.mark.parametrize(("pattern", "density", "compute", "stored_at_16_bits"), [
    ("dense", 1.0, 1.0, 1.0),
    ("2:4", 0.5, 0.5, 0.5 * (1 + 2 / 16)),  # a 2-bit position per kept value
    # Flash-LLM Tiled-CSL: 16-bit value + 16-bit location per nonzero, computed dense.
    ("unstructured:0.7", 0.3, 1.0, 0.3 * 2),
    ("unstructured:0.5", 0.5, 1.0, 1.0),  # the break-even point of the 32-bit items
    ("block64:0.5", 0.5, 0.5, 0.5 * (1 + 32 / 64**2 / 16)),  # one int32 column index per kept 64 x 64 block
    ("block16:0.25", 0.75, 0.75, 0.75 * (1 + 32 / 16**2 / 16)),
])
def test_layouts_by_hand(pattern, density, compute, stored_at_16_bits):
    parsed = parse_sparsity(pattern)
    assert parsed.density == pytest.approx(density)
    assert parsed.compute_density == pytest.approx(compute)
    assert NumericFormat(sparsity=pattern).sparse_weight_scale == pytest.approx(stored_at_16_bits)


def test_quantized_unstructured_keeps_the_16_bit_location():
    # 4-bit weights with fp16 scales per 128: 4.125 bits per value, plus 16 location bits per kept value.
    fmt = NumericFormat(weight_bits=4, sparsity="unstructured:0.9")
    assert fmt.sparse_weight_scale == pytest.approx(0.1 * (4.125 + 16) / 4.125)


@pytest.mark.parametrize("bad", ["3:5", "2:3", "unstructured", "unstructured:0", "unstructured:1.0", "unstructured:1.5",
                                 "block48:0.5", "block64", "block64:-0.5", "sparse", "block64:0.5x"])
def test_bad_patterns_name_what_is_allowed(bad):
    with pytest.raises(ValueError) as info:
        NumericFormat(sparsity=bad)
    message = str(info.value)
    assert message.startswith(f"sparsity: found {bad!r}, allowed: dense or N:M") and "unstructured:S" in message
    assert "\n" not in message


@pytest.mark.parametrize(("kept", "predictor", "field"), [(0.0, "none", "act_kept"), (1.5, "none", "act_kept"),
                                                          (-0.2, "none", "act_kept"), (0.5, "teal", "act_predictor")])
def test_bad_activation_sparsity_names_the_field(kept, predictor, field):
    with pytest.raises(ValueError, match=f"^{field}: found"):
        NumericFormat(act_kept=kept, act_predictor=predictor)


def test_support_answers_for_whole_patterns():
    support = SparsitySupport.of(("2:4", "unstructured", "block64"))
    assert "unstructured:0.3" in support and "block64:0.9" in support and "2:4" in support and "dense" in support
    assert "block32:0.5" not in support and "4:8" not in support and "nonsense" not in support
    assert ACTIVATION not in support and support_key("block128:0.5") == "block128"


@pytest.mark.parametrize("pattern", ["2:4", "unstructured:0.7", "block64:0.5"])
def test_unsupported_patterns_run_exactly_dense(pattern):
    table = _layer(1).with_format(NumericFormat(sparsity=pattern, act_kept=0.5))
    assert table.run_on(SparsitySupport()) is table  # nothing exploited: the traced work and traffic as they are
    dense = _layer(1).with_format(NumericFormat())
    np.testing.assert_array_equal(table.flops, dense.flops)
    np.testing.assert_array_equal(table.weight_bytes, dense.weight_bytes)


def test_activation_sparsity_one_is_dense():
    fmt = NumericFormat(act_kept=1.0, act_predictor="deja_vu")
    table = _layer(1).with_format(fmt)
    assert table.run_on(ALL) is table


@pytest.mark.parametrize("kind", ["unstructured", "block64"])
def test_sparser_never_moves_more_weight_bytes(kind):
    tables = [_layer(8).with_format(NumericFormat(sparsity=f"{kind}:{s}")).run_on(ALL)
              for s in (0.1, 0.3, 0.5, 0.7, 0.9, 0.99)]
    totals = [t.weight_bytes.sum() for t in tables]
    assert all(a >= b for a, b in zip(totals, totals[1:], strict=False))
    assert totals[-1] < totals[0]


@pytest.mark.parametrize("bits", [16, 8, 4, 3, 2])
@pytest.mark.parametrize("kind", ["unstructured", "block64"])
def test_a_pattern_that_skips_no_math_never_stores_more_weight_bytes_than_dense(kind, bits):
    """At the same bits a weight: unstructured sparsity's 16-bit locations outweigh the zeros below 16 / (16 + b)
    sparsity (50% at 16 bits, 80% at 4), where the weights stay dense; block patterns' int32 per block never do."""
    dense = _layer(1).with_format(NumericFormat(weight_bits=bits)).run_on(ALL).weight_bytes.sum()
    for share in (0.05, 0.3, 0.5, 0.7, 0.79, 0.85, 0.95):
        fmt = NumericFormat(weight_bits=bits, sparsity=f"{kind}:{share}")
        assert _layer(1).with_format(fmt).run_on(ALL).weight_bytes.sum() <= dense * (1 + 1e-12), (fmt.sparsity, bits)


def test_unstructured_sparsity_runs_dense_below_its_break_even():
    """At 4-bit weights (4.125 bits with a 16-bit scale per 128): 70% sparse would take 0.3 x 20.125 / 4.125 = 1.46x
    the dense bytes, so it runs dense (its weight_density left at the pattern's, its work and traffic dense); 85%,
    0.73x, is exploited."""
    below = _layer(1).with_format(NumericFormat(weight_bits=4, sparsity="unstructured:0.7"))
    assert below.run_on(ALL) is below
    assert not exploits(ALL, below.numeric_format)
    assert exploits(ALL, NumericFormat(weight_bits=4, sparsity="unstructured:0.85"))
    assert exploits(SparsitySupport.of(("4:8",)), NumericFormat(weight_bits=2, sparsity="4:8"))  # half the math


def test_unstructured_moves_compressed_bytes_and_computes_dense():
    dense = _layer(1).with_format(NumericFormat())
    sparse = _layer(1).with_format(NumericFormat(sparsity="unstructured:0.8")).run_on(ALL)
    np.testing.assert_allclose(sparse.weight_bytes, dense.weight_bytes * 0.2 * 2)
    np.testing.assert_array_equal(sparse.flops, dense.flops)
    np.testing.assert_array_equal(sparse.weight_density, 1.0)  # the share of the math done


def test_activation_sparsity_reads_the_union_of_kept_rows_in_the_mlp_only():
    dense = _layer(4).with_format(NumericFormat())
    sparse = _layer(4).with_format(NumericFormat(act_kept=0.5)).run_on(ALL)
    union = 1 - 0.5**4  # four tokens, each keeping an independent half
    np.testing.assert_allclose(sparse.weight_bytes, dense.weight_bytes * [1, union, union, 1])
    np.testing.assert_allclose(sparse.flops, dense.flops * [1, union, union, 1])


def test_a_prefill_gains_nothing_from_activation_sparsity():
    dense = _layer(512).with_format(NumericFormat())
    sparse = _layer(512).with_format(NumericFormat(act_kept=0.5)).run_on(ALL)
    np.testing.assert_allclose(sparse.weight_bytes, dense.weight_bytes, rtol=1e-12)


def test_deja_vu_predictor_adds_its_low_rank_weights_once_per_layer():
    plain = _layer(1).with_format(NumericFormat(act_kept=0.2)).run_on(ALL)
    predicted = _layer(1).with_format(NumericFormat(act_kept=0.2, act_predictor="deja_vu")).run_on(ALL)
    extra_bytes = predicted.weight_bytes - plain.weight_bytes
    # hidden -> rank -> intermediate, fp16, on the down projection only
    np.testing.assert_allclose(extra_bytes, [0, 0, DEJA_VU_RANK * (HIDDEN + FFN) * 2, 0])
    np.testing.assert_allclose(predicted.flops - plain.flops, [0, 0, 2 * DEJA_VU_RANK * (HIDDEN + FFN), 0])


def test_label_spells_activation_sparsity():
    assert NumericFormat(act_kept=0.4, act_predictor="deja_vu").label == "w16a16kv16-act0.4-deja_vu"
    assert NumericFormat(sparsity="block64:0.5").label == "w16a16kv16-block64:0.5"


def test_the_sparsity_use_column_says_when_an_exploited_pattern_reads_more_than_dense():
    """4:8 at 2 bits keeps half the weights with a 3-bit index each beside 2.125 stored bits (a 16-bit scale per 128):
    0.5 x (2.125 + 3) / 2.125 = 1.21x the dense bytes, which the column says beside 'exploited' (the math it skips
    is why a device runs it); 2:4 at 4 bits, 0.5 x (4.125 + 2) / 4.125 = 0.74x, is exploited and smaller."""
    support = SparsitySupport.of(("2:4", "4:8"))
    assert sparsity_use(support, "alveo-u280", NumericFormat(weight_bits=2, sparsity="4:8")) == (
        "4:8 exploited, reading 1.21x the bytes of dense 2-bit weights for the math it skips")
    assert sparsity_use(support, "alveo-u280", NumericFormat(weight_bits=4, sparsity="2:4")) == "2:4 exploited"
