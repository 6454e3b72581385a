"""Step templates of DeepSeek models (kernels/mixed_layers.py model_template: MLA's two forms, dense first layers
beside MoE ones) against the traced passes they stand for, and a serving iteration mixing prefill chunks and decode
tokens priced in each one's MLA form."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.fusion import fuse
from kernels.kernel import KernelKind
from kernels.lowering import lower_trace
from kernels.mixed_layers import model_template
from kernels.parallel import shard_tensor_parallel
from kernels.shapes import TEMPLATE_LAYERS, StepTemplate, step_shape
from kernels.table import KIND_CODE, KernelTable
from tests.kernels.test_mla import _tiny

FMT = NumericFormat()
DEVICES = ("h100-sxm", "neupims", "ampere-altra", "alveo-u280")
COLUMNS = ("flops", "weight_bytes", "act_bytes", "kv_bytes", "reduce_rows")
PREFILL, DECODE = KIND_CODE[KernelKind.ATTENTION_PREFILL], KIND_CODE[KernelKind.ATTENTION_DECODE]
BMM = KIND_CODE[KernelKind.BATCHED_GEMM]


def _template(config, trace_of, tp: int = 1, fusion: str = "") -> StepTemplate:
    def build(variant):
        few = replace(variant, num_layers=min(variant.num_layers, TEMPLATE_LAYERS))
        return StepTemplate.from_model(variant, FMT, lambda phase, batch, prompt: (
            trace_of(few, "decode", batch, 1, prompt) if phase == "decode" else trace_of(few, "prefill", batch,
                                                                                        prompt)),
            shard=lambda table: shard_tensor_parallel(table, tp, few), fusion=fusion)
    return model_template(build, config)


@pytest.fixture(scope="module")
def tiny_template(trace_of):
    return _tiny(), _template(_tiny(), trace_of)


# Two sequences or more: the template is traced at two or more (MLA's absorbed output is copied for more than one
# token), and a pass of one takes the narrowest traced pass's layout flags (a slice of one sequence is dense where one
# of several is not: kernels/lowering.py general_layout).
@pytest.mark.parametrize("phase, batch, length", [("prefill", 2, 7), ("prefill", 3, 40), ("decode", 4, 7),
                                                  ("decode", 8, 100)])
def test_the_template_reproduces_a_traced_pass(tiny_template, trace_of, phase, batch, length):
    """The template (two forms x dense and MoE layers, two traced layers each) against the whole four-layer model
    traced at the shape (prefill: decompressed; decode: absorbed), column sums and the time and energy of a device
    of each kind."""
    config, template = tiny_template
    if phase == "prefill":
        reference = trace_of(config, "prefill", batch, length)
        shape = step_shape([(length, 0)] * batch, sampled=batch)
    else:
        reference = trace_of(config, "decode", batch, 1, length)
        shape = step_shape(decode_kv=[length + 1] * batch, sampled=batch)
    reference = KernelTable.from_kernels(lower_trace(reference)).with_format(FMT)
    table, count = template.table(shape)
    assert count.sum() == pytest.approx(len(reference))  # every traced kernel stood for once
    for column in COLUMNS:
        assert float(getattr(table, column) @ count) == pytest.approx(float(getattr(reference, column).sum()),
                                                                      rel=1e-9), column
    for name in DEVICES:
        device = load_device(name)
        got, want = device.cost_table(table), device.cost_table(reference)
        for part in ("time_s", "energy_J"):
            assert float(getattr(got, part) @ count) == pytest.approx(float(getattr(want, part).sum()),
                                                                      rel=1e-9), (name, part)


def test_a_mixed_iteration_prices_prefill_tokens_decompressed_and_decode_tokens_absorbed(tiny_template):
    """A chunk of 30 prompt tokens beside 5 decoding sequences: kv_b_proj up-projects the 30 prompt tokens' latents
    (2 x 30 x 16 x 4 x (8 + 6) FLOPs a layer); the bmms run the 5 decode tokens (2 x 4 heads x 5 x 8 x 16 and 2 x 4 x
    5 x 16 x 6); q_b_proj runs all 35; the prefill attention has 12-wide queries and keys, the decode attention
    attends over the 20-wide latent."""
    config, template = tiny_template
    table, count = template.table(step_shape([(30, 0)], decode_kv=[50] * 5, sampled=6))
    layers = config.num_layers
    modules = [k.module.rsplit(".", 1)[-1] for k in table.kernels]
    up = [i for i, m in enumerate(modules) if m == "kv_b_proj"]
    assert len(up) == 1 and table.flops[up[0]] * count[up[0]] == pytest.approx(2 * 30 * 16 * 4 * 14 * layers)
    bmm = np.flatnonzero(table.kind == BMM)
    assert sorted(table.flops[bmm] * count[bmm]) == pytest.approx(sorted([2 * 4 * 5 * 8 * 16 * layers,
                                                                          2 * 4 * 5 * 16 * 6 * layers]))
    q_b = [i for i, m in enumerate(modules) if m == "q_b_proj"][0]
    assert table.m[q_b] == pytest.approx(35)
    prefill, decode = (np.flatnonzero(table.kind == kind) for kind in (PREFILL, DECODE))
    assert table.head_dim[prefill].tolist() == [12] and table.head_dim[decode].tolist() == [20]
    # Neither form's rows run without their tokens.
    only_decode, _ = template.table(step_shape(decode_kv=[50] * 5, sampled=5))
    assert "kv_b_proj" not in {k.module.rsplit(".", 1)[-1] for k in only_decode.kernels}
    only_prefill, _ = template.table(step_shape([(30, 0)], sampled=1))
    assert not (only_prefill.kind == BMM).any()


@pytest.mark.parametrize("fusion", ["", "engine"])
def test_a_chunks_cached_prefix_is_up_projected_and_its_attention_merged(trace_of, fusion):
    """A chunk of 30 prompt tokens after 50 cached ones against the same chunk without them, as vLLM's MLA backend
    runs it (_compute_prefill_context): kv_b_proj up-projects the 50 cached latents, reading its weights again (2 x 50
    x 16 x 4 x (8 + 6) FLOPs, 16 x 56 weights and 50 x (16 + 56) activations of 4 B a layer), the chunk's 30 x 50 pairs
    more with the prefix (2 x (12 + 6) FLOPs a pair and head), and the merge of the two outputs (30 x 4 heads x 6-wide
    values, 4 FLOPs an element; two outputs and log-sum-exps read, one written, 4 B an element in this fp32 model, as
    vLLM's merge_attn_states moves the outputs in their own dtype, and 4 B a log-sum-exp).
    Past vLLM's 64K-token workspace the prefix is attended to in passes, each merged."""
    config = _tiny()
    template = _template(config, trace_of, fusion=fusion)
    layers = config.num_layers

    def sums(shape):
        table, count = template.table(shape)
        return {column: float(getattr(table, column) @ count) for column in ("flops", "weight_bytes", "act_bytes")}

    fresh, cached = sums(step_shape([(30, 0)], sampled=1)), sums(step_shape([(30, 50)], sampled=1))
    up_flops, merge_flops = 2 * 50 * 16 * 4 * 14, 30 * 4 * 6 * 4
    assert cached["flops"] - fresh["flops"] == pytest.approx(
        layers * (up_flops + 30 * 50 * 4 * 2 * (12 + 6) + merge_flops))
    assert cached["weight_bytes"] - fresh["weight_bytes"] == pytest.approx(layers * 16 * 4 * 14 * 4)
    assert cached["act_bytes"] - fresh["act_bytes"] == pytest.approx(
        layers * (50 * (16 + 4 * 14) * 4 + 3 * 30 * 4 * (6 * 4 + 4)))
    table, count = template.table(step_shape([(30, 70_000)], sampled=1))
    merges = np.array([k.op == "cascade_merge" for k in table.kernels])
    assert float(table.flops[merges] @ count[merges]) == pytest.approx(layers * 2 * merge_flops)  # two passes


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_the_template_of_an_engine_on_two_devices_reproduces_its_traced_pass(trace_of, phase):
    """The same, each pass sharded over 2 tensor-parallel devices and fused as an engine runs it (kernels/parallel.py,
    kernels/fusion.py), priced on an H100."""
    config = _tiny()
    template = _template(config, trace_of, tp=2, fusion="engine")
    if phase == "prefill":
        traced, shape = trace_of(config, "prefill", 3, 40), step_shape([(40, 0)] * 3, sampled=3)
    else:
        traced, shape = trace_of(config, "decode", 8, 1, 100), step_shape(decode_kv=[101] * 8, sampled=8)
    reference = fuse(shard_tensor_parallel(KernelTable.from_kernels(lower_trace(traced)), 2, config),
                     "engine").with_format(FMT)
    table, count = template.table(shape)
    assert count.sum() == pytest.approx(len(reference))
    for column in COLUMNS:
        assert float(getattr(table, column) @ count) == pytest.approx(float(getattr(reference, column).sum()),
                                                                      rel=1e-9), column
    device = load_device("h100-sxm")
    assert float(device.cost_table(table).time_s @ count) == pytest.approx(
        float(device.cost_table(reference).time_s.sum()), rel=1e-9)


def test_iterations_of_equal_tokens_split_otherwise_cost_what_a_fresh_model_prices(tiny_template):
    """The rows outside attention of an MLA model depend on how many of an iteration's tokens are prefill chunks' (the
    decompressed form's up-projection runs on those, the absorbed form's bmms on the decodes'): a cost model that
    keeps them per iteration shape (IterationCostModel, on a device that prices rows alone) prices 36 tokens, 8
    sampled, longest query 20, as chunks of 20 + 10 beside 6 decodes and as 20 + 6 beside 10, each as a model that
    never saw the other does; keyed by tokens, sampled sequences and longest query alone, the second took the
    first's rows."""
    from sim.costs import IterationCostModel

    _, template = tiny_template
    device = load_device("h100-sxm")
    assert device.prices_rows_alone
    first = step_shape([(20, 0), (10, 0)], decode_kv=[50] * 6, sampled=8)
    second = step_shape([(20, 0), (6, 0)], decode_kv=[50] * 10, sampled=8)
    assert (first.tokens, first.sampled, first.positions) == (second.tokens, second.sampled, second.positions)
    assert first.prefill_tokens != second.prefill_tokens
    shared = IterationCostModel(device, template)
    shared.price(first)
    kept, fresh = shared.price(second), IterationCostModel(device, template).price(second)
    assert (kept.time_s, kept.compute_J, kept.memory_J) == (fresh.time_s, fresh.compute_J, fresh.memory_J)
