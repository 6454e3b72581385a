"""Tensor parallelism (kernels/parallel.py): what one device runs, against hand counts from the model's shapes."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.formats import NumericFormat
from kernels.kernel import KernelKind
from kernels.lowering import lower_trace
from kernels.parallel import check_tensor_parallel, kv_replication, shard_tensor_parallel
from kernels.shapes import StepShape, StepTemplate
from kernels.table import KIND_CODE, KernelTable

GEMM, ALL_REDUCE = KIND_CODE[KernelKind.GEMM], KIND_CODE[KernelKind.ALL_REDUCE]


def _table(trace_of, config, phase: str, batch: int, prompt: int) -> KernelTable:
    seq, context = (1, prompt) if phase == "decode" else (prompt, 0)
    return KernelTable.from_kernels(lower_trace(trace_of(config, phase, batch, seq, context)))


@pytest.mark.parametrize("tp", [2, 4])
@pytest.mark.parametrize("phase, batch, prompt", [("prefill", 2, 24), ("decode", 3, 40)])
def test_projections_split_and_one_all_reduce_per_block(tiny_llama, trace_of, tp, phase, batch, prompt):
    whole = _table(trace_of, tiny_llama, phase, batch, prompt)
    part = shard_tensor_parallel(whole, tp, tiny_llama)
    gemm_whole, gemm_part = whole.kind == GEMM, part.kind == GEMM
    # Every projection (and the LM head) is split tp ways: math and weights of tp devices add up to the whole.
    assert part.flops[gemm_part].sum() * tp == pytest.approx(whole.flops[gemm_whole].sum(), rel=1e-12)
    assert part.weight_bytes[gemm_part].sum() * tp == pytest.approx(whole.weight_bytes[gemm_whole].sum(), rel=1e-12)
    # Two all-reduces per layer (after o_proj and down_proj), each of the block's 16-bit output: tokens x hidden x 2 B.
    reduces = part.kind == ALL_REDUCE
    tokens = batch * (prompt if phase == "prefill" else 1)
    assert reduces.sum() == 2 * tiny_llama.num_layers
    assert np.all(part.act_bytes[reduces] == tokens * tiny_llama.hidden_size * 2)
    assert np.all(part.batch[reduces] == tp)  # the devices each all-reduce spans
    # Attention reads each device's KV heads (2 KV heads: whole heads per device up to tp = 2, copies beyond).
    attention = whole.kind == KIND_CODE[KernelKind.ATTENTION_PREFILL if phase == "prefill" else
                                        KernelKind.ATTENTION_DECODE]
    share = kv_replication(tiny_llama, tp) / tp
    part_attention = part.kind == whole.kind[attention][0]
    assert part.flops[part_attention].sum() == pytest.approx(whole.flops[attention].sum() / tp, rel=1e-12)
    assert part.kv_bytes[part_attention].sum() == pytest.approx(whole.kv_bytes[attention].sum() * share, rel=1e-12)


def test_norms_and_residual_adds_run_whole_on_every_device(tiny_llama, trace_of):
    whole = _table(trace_of, tiny_llama, "decode", 2, 20)
    part = shard_tensor_parallel(whole, 2, tiny_llama)
    for kind in (KernelKind.NORM, KernelKind.EMBEDDING):
        code = KIND_CODE[kind]
        assert part.act_bytes[part.kind == code].sum() == whole.act_bytes[whole.kind == code].sum()


def test_one_device_is_the_table_itself(tiny_llama, trace_of):
    whole = _table(trace_of, tiny_llama, "decode", 2, 20)
    assert shard_tensor_parallel(whole, 1, tiny_llama) is whole


def test_moe_layer_is_summed_by_one_all_reduce(tiny_mixtral, trace_of):
    whole = _table(trace_of, tiny_mixtral, "decode", 4, 20)
    part = shard_tensor_parallel(whole, 2, tiny_mixtral)
    # Per layer: one after o_proj, one after the MoE layer (not one per expert).
    assert (part.kind == ALL_REDUCE).sum() == 2 * tiny_mixtral.num_layers


@pytest.mark.parametrize("tp, ok", [(1, True), (2, True), (4, True), (3, False), (8, False)])
def test_tp_must_split_heads_into_whole_heads(tiny_llama, tp, ok):
    """4 heads and 2 KV heads: tp 1, 2, 4 shard them (4 copies each KV head twice); 3 and 8 cannot."""
    if ok:
        check_tensor_parallel(tiny_llama, tp)
    else:
        with pytest.raises(ValueError, match="allowed: a divisor"):
            check_tensor_parallel(tiny_llama, tp)


def test_only_work_between_split_projections_is_split(tiny_mixtral, trace_of):
    """The router, and an expert's gather of its tokens and scatter of its results, move whole hidden vectors
    on every device; the activation between an expert's gate/up and down projections works on split features."""
    whole = _table(trace_of, tiny_mixtral, "decode", 4, 20)
    part = shard_tensor_parallel(whole, 2, tiny_mixtral)
    same = {k.op for k, a, b in zip(whole.kernels, whole.act_bytes, part.act_bytes[part.kind != ALL_REDUCE],
                                    strict=True) if k.module.endswith(".mlp") and a == b}
    assert {"_softmax", "topk"} <= same  # the router runs whole
    for kernel, before, after in zip(whole.kernels, whole.act_bytes, part.act_bytes[part.kind != ALL_REDUCE],
                                     strict=True):
        if ".experts." in kernel.module and kernel.op in ("index_select", "index_add_"):
            assert after == before
        if ".experts." in kernel.module and kernel.kind is KernelKind.ACTIVATION:
            assert after == pytest.approx(before / 2)


@pytest.mark.parametrize("pp", [2, 3, 5])
def test_pipeline_stages_send_the_hidden_state_between_them(tiny_llama, trace_of, pp):
    """pp - 1 sends, each of tokens x hidden 16-bit values, each before the first kernel of a stage's first layer
    (5 layers split evenly: 3 stages hold layers 0-1, 2-3 and 4)."""
    from dataclasses import replace

    from kernels.parallel import pipeline_sends

    config = replace(tiny_llama, num_layers=5, name="tiny-llama-5")
    whole = _table(trace_of, config, "prefill", 3, 16)
    staged = pipeline_sends(whole, pp, config)
    sends = np.flatnonzero(staged.kind == KIND_CODE[KernelKind.SEND_RECV])
    assert len(sends) == pp - 1
    assert np.all(staged.act_bytes[sends] == 3 * 16 * config.hidden_size * 2)
    next_layers = [staged.kernels[i + 1].layer for i in sends]
    assert next_layers == [layer for layer in range(1, config.num_layers) if layer * pp // config.num_layers
                           != (layer - 1) * pp // config.num_layers]
    # An engine keeping the residual stream apart (vLLM's fused add + RMSNorm) sends it too: twice the bytes.
    engine = pipeline_sends(whole, pp, config, residual_apart=True)
    assert np.all(engine.act_bytes[sends] == 2 * 3 * 16 * config.hidden_size * 2)


def test_more_stages_than_layers_is_refused(tiny_llama):
    from kernels.parallel import check_pipeline_parallel

    check_pipeline_parallel(tiny_llama, 2)
    with pytest.raises(ValueError, match="allowed: 1 to tiny-llama's 2 decoder layers"):
        check_pipeline_parallel(tiny_llama, 3)


def test_expert_parallelism_spreads_whole_experts(tiny_mixtral, trace_of):
    """ep = tp = 2 over 4 experts: the priced device runs every other expert of the trace's fill order whole (0 and
    2: their tokens under balanced routing), so it holds half the experts' weights as a split would, launches half
    the expert kernels, and the layer keeps its one all-reduce."""
    whole = _table(trace_of, tiny_mixtral, "decode", 4, 20)
    split = shard_tensor_parallel(whole, 2, tiny_mixtral)
    spread = shard_tensor_parallel(whole, 2, tiny_mixtral, ep=2)
    experts = {k.module.split(".experts.")[1].split(".")[0] for k in spread.kernels if ".experts." in k.module}
    assert experts == {"0", "2"}
    expert_gemm = np.array([".experts." in k.module for k in whole.kernels]) & (whole.kind == GEMM)
    held = np.array([".experts.0." in k.module or ".experts.2." in k.module for k in whole.kernels])
    spread_gemm = np.array([".experts." in k.module for k in spread.kernels]) & (spread.kind == GEMM)
    # Experts 0 and 2 whole: exactly their traced GEMM work and weights.
    assert spread.flops[spread_gemm].sum() == pytest.approx(whole.flops[expert_gemm & held].sum(), rel=1e-12)
    assert spread.weight_bytes[spread_gemm].sum() == pytest.approx(whole.weight_bytes[expert_gemm].sum() / 2)
    expert_rows = sum(".experts." in k.module and k.kind is not KernelKind.ALL_REDUCE for k in spread.kernels)
    assert expert_rows * 2 == sum(".experts." in k.module for k in whole.kernels)
    assert (spread.kind == ALL_REDUCE).sum() == (split.kind == ALL_REDUCE).sum() == 2 * tiny_mixtral.num_layers


def test_one_token_under_expert_parallelism_reaches_one_expert_a_device(tiny_mixtral, trace_of):
    """A decode step of one token, top-2 of 4 experts spread over two devices: balanced routing sends its two
    experts to different devices (aiconfigurator's collector: stride ceil(4 / 2) = 2, experts 0 and 2, one on each
    of rank 0's 0-1 and rank 1's 2-3), so the priced device runs one expert whole, the same expert weights and GEMM
    work as its half of both experts split, not both experts."""
    def expert_gemm(table):
        return np.array([".experts." in k.module for k in table.kernels]) & (table.kind == GEMM)

    whole = _table(trace_of, tiny_mixtral, "decode", 1, 20)
    split = shard_tensor_parallel(whole, 2, tiny_mixtral)
    spread = shard_tensor_parallel(whole, 2, tiny_mixtral, ep=2)
    one_expert_B = whole.weight_bytes[expert_gemm(whole)].sum() / 2  # the trace reaches two experts a layer
    assert spread.weight_bytes[expert_gemm(spread)].sum() == pytest.approx(one_expert_B, rel=1e-12)
    assert split.weight_bytes[expert_gemm(split)].sum() == pytest.approx(one_expert_B, rel=1e-12)
    assert spread.flops[expert_gemm(spread)].sum() == pytest.approx(whole.flops[expert_gemm(whole)].sum() / 2,
                                                                     rel=1e-12)


def test_a_fused_layer_of_spread_experts_says_over_how_many_devices(tiny_mixtral, trace_of):
    """The fused MoE kernel an engine launches for experts spread whole over ep = tp = 2 devices carries ep = 2 (a
    GPU prices such a layer's fixed time apart: hw_models/gpu_moe.py), split experts' carries 1, and every other
    kernel 1, whatever the layout."""
    from kernels.fusion import fuse

    moe = KIND_CODE[KernelKind.MOE]
    whole = _table(trace_of, tiny_mixtral, "decode", 4, 20)
    for ep in (1, 2):
        fused = fuse(shard_tensor_parallel(whole, 2, tiny_mixtral, ep=ep), "engine")
        assert (fused.kind == moe).sum() == tiny_mixtral.num_layers
        assert fused.expert_parallel[fused.kind == moe].tolist() == [ep] * tiny_mixtral.num_layers
        assert (fused.expert_parallel[fused.kind != moe] == 1).all()
    # A serving step's template, re-shaped to other iterations, keeps it.
    template = StepTemplate.from_model(
        tiny_mixtral, NumericFormat(), lambda phase, batch, prompt: trace_of(
            tiny_mixtral, phase, batch, *((1, prompt) if phase == "decode" else (prompt,))),
        shard=lambda table: shard_tensor_parallel(table, 2, tiny_mixtral, ep=2), fusion="engine")
    step, _ = template.table(StepShape(decode_seqs=5, decode_kv=60))
    assert (step.kind == moe).any() and (step.expert_parallel[step.kind == moe] == 2).all()


def test_expert_parallelism_needs_experts_and_the_tp_group(tiny_llama, tiny_mixtral):
    from kernels.parallel import check_expert_parallel

    check_expert_parallel(tiny_mixtral, 2, 2)
    with pytest.raises(ValueError, match="has no experts"):
        check_expert_parallel(tiny_llama, 2, 2)
    with pytest.raises(ValueError, match="tensor-parallel degree"):
        check_expert_parallel(tiny_mixtral, 4, 2)


def test_expert_parallelism_on_more_devices_than_experts_offers_only_1(tiny_mixtral):
    """ep = tp = 8 on 4 experts: the message allows 1 alone and says why, not 'the tensor-parallel degree (8)',
    the value it refuses (Mixtral's 8 experts on 16 devices read so)."""
    from kernels.parallel import check_expert_parallel

    with pytest.raises(ValueError) as refused:
        check_expert_parallel(tiny_mixtral, 8, 8)
    assert str(refused.value) == "found 8, allowed: 1 (8 devices do not divide tiny-mixtral's 4 experts whole)"
