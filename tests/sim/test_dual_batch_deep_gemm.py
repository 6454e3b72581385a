"""The SMs DeepGEMM's kernels keep while vLLM's dual-batch overlap splits an iteration (sim/data_parallel.py
dbo_comm_sms, ExpertRanks.sharing_sms, IterationCostModel._micro_batch_chain): a split with a prefill runs beside
DeepEP's high-throughput all-to-all kernels, which hold VLLM_DBO_COMM_SMS = 20 SMs, and DeepGEMM's GEMMs run on the
other 112 of an H100's 132 (vllm-project/vllm vllm/v1/worker/gpu_ubatch_wrapper.py at 01e3c43); a decode-only split
runs beside the low-latency kernels, which hold none.

A Mixtral of two layers wide enough for DeepGEMM and for its GEMMs to compute at 1,024 tokens (hidden 2,048, FFN
4,096, 16 heads of 128, 4 KV heads: every weight's n and k a multiple of 128) in DeepSeek-V3's block-scaled fp8
(fp8 weights and activations) on two H100s over NVLink 4, each rank's rows whole and the experts spread, as
tests/sim/test_data_parallel.py builds the tiny one."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hw_models.link import load_link_model
from hw_models.registry import load_device
from hw_models.system import SystemModel
from kernels.formats import NumericFormat
from kernels.parallel import shard_tensor_parallel
from kernels.shapes import StepTemplate, step_shape
from sim.costs import IterationCostModel
from sim.data_parallel import DBO_COMM_SMS, ExpertRanks, dbo_comm_sms
from tests.sim.test_data_parallel import DISPATCH_B_PER_TOKEN, LAYERS, RANKS

BLOCK_FP8 = NumericFormat(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3",
                          scale_type="fp32", scale_granularity="block")
# Each rank's batch: 1,024-token prefills (above vLLM's 512-token threshold), or 64 decodes of 100 keys (above 32).
PREFILLS = (step_shape([(1024, 0)], sampled=1),) * RANKS
DECODES = (step_shape(decode_kv=[100] * 64, sampled=64),) * RANKS


@pytest.fixture(scope="module")
def templates(tiny_mixtral, trace_of):
    config = replace(tiny_mixtral, name="wide-mixtral", hidden_size=2048, intermediate_size=4096, num_heads=16,
                     num_kv_heads=4, head_dim=128)

    def template(fmt: NumericFormat, ep: int | None) -> StepTemplate:
        def trace(phase: str, batch: int, prompt: int):
            if phase == "decode":
                return trace_of(config, "decode", batch, 1, prompt)
            return trace_of(config, "prefill", batch, prompt)

        shard = None if ep is None else (lambda table: shard_tensor_parallel(table, RANKS, config, ep))
        return StepTemplate.from_model(config, fmt, trace, shard=shard)

    def pair(fmt: NumericFormat):
        whole, spread = template(fmt, None), template(fmt, RANKS)
        return whole.select_rows(~whole.expert_mask), spread.select_rows(spread.expert_mask)

    return {"block fp8": pair(BLOCK_FP8), "bf16": pair(NumericFormat())}


def _costs(pair, overlap: str, device: str = "h100-sxm") -> IterationCostModel:
    dense, experts = pair
    system = SystemModel(load_device(device), RANKS, load_link_model("nvlink4"))
    return IterationCostModel(system, dense, execution="graphs", overlap=overlap,
                              experts=ExpertRanks(system, experts, DISPATCH_B_PER_TOKEN, LAYERS))


def test_the_all_to_all_kernels_hold_sms_in_a_split_with_a_prefill_alone():
    assert dbo_comm_sms(PREFILLS) == DBO_COMM_SMS == 20
    assert dbo_comm_sms(DECODES) == 0
    assert dbo_comm_sms((PREFILLS[0], DECODES[0])) == 20


def test_a_split_prefill_is_never_faster_on_112_sms_and_slower_where_its_gemms_compute(templates, monkeypatch):
    """The same split priced with every SM (no SMs held, as before these SMs were priced) is the lower bound; the
    1,024-token prefills' block-scaled GEMMs and experts lose 20 of 132 SMs, so the split takes longer; its energy is
    its work's, the same either way."""
    costs = _costs(templates["block fp8"], "dual_batch")
    assert costs.experts.dual_batch(PREFILLS)
    shared = costs.price_ranks(PREFILLS)
    monkeypatch.setattr("sim.costs.dbo_comm_sms", lambda ranks: 0)
    every = _costs(templates["block fp8"], "dual_batch").price_ranks(PREFILLS)
    assert shared.time_s > every.time_s
    assert shared.compute_J == pytest.approx(every.compute_J, rel=1e-12)
    # At most every DeepGEMM kernel's math 132 / 112 times as long plus a wave: well under the whole iteration again.
    assert shared.time_s < every.time_s * 132 / 112 * 1.5


@pytest.mark.parametrize("name, shapes, fmt, device", [
    ("decode-only split (low-latency kernels)", DECODES, "block fp8", "h100-sxm"),
    ("16-bit GEMMs (not DeepGEMM's)", PREFILLS, "bf16", "h100-sxm"),
    ("an A100 (no DeepGEMM)", PREFILLS, "block fp8", "a100-sxm-80gb"),
])
def test_where_no_deep_gemm_kernel_loses_sms_the_split_costs_what_it_did(templates, monkeypatch, name, shapes, fmt,
                                                                         device):
    """Priced with and without the all-to-all kernels' SMs, the split is the same to the bit."""
    costs = _costs(templates[fmt], "dual_batch", device)
    assert costs.experts.dual_batch(shapes)
    shared = costs.price_ranks(shapes)
    monkeypatch.setattr("sim.costs.dbo_comm_sms", lambda ranks: 0)
    every = _costs(templates[fmt], "dual_batch", device).price_ranks(shapes)
    assert shared.time_s == every.time_s and shared.compute_J == every.compute_J
    assert np.array_equal(shared.class_time_s, every.class_time_s)


def test_a_batch_kept_whole_keeps_every_sm(templates):
    """511-token prefills stay whole (under vLLM's 512-token threshold): under dual_batch they cost what they cost
    without overlap, every SM DeepGEMM's."""
    shapes = (step_shape([(511, 0)], sampled=1),) * RANKS
    costs = _costs(templates["block fp8"], "dual_batch")
    assert not costs.experts.dual_batch(costs.experts.rank_shapes(shapes, costs._launch)[0])
    split, whole = costs.price_ranks(shapes), _costs(templates["block fp8"], "none").price_ranks(shapes)
    assert split.time_s == whole.time_s and split.compute_J == whole.compute_J
