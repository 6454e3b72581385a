"""Weight-only (W4A16) fused MoE layers: the 16-bit MoE fit at 4-bit weight traffic plus the CUDA cores'
dequantization (hw_models/gpu_quant.py), scored on aiconfigurator's Marlin int4 MoE layers (moe_dtype int4_wo:
vLLM's compressed-tensors WNA16 Marlin experts, one model shape, hidden 7168, intermediate 2048, top-8 of 384
experts), rows that no fit saw: an independent check of the weight-only model on MoE layers."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.measured import MeasuredKernel
from kernels.table import KernelTable

AICONFIGURATOR = Path(__file__).resolve().parents[3] / "shared" / "data" / "aiconfigurator"
pytestmark = pytest.mark.skipif(not AICONFIGURATOR.is_dir(), reason="../shared/data/aiconfigurator not present")
W4A16 = NumericFormat(weight_bits=4)


def _int4_layers(gpu: str, device: str) -> list[MeasuredKernel]:
    path = next((AICONFIGURATOR / gpu / "moe").glob("*/*/moe_perf.csv.gz"))
    with gzip.open(path, "rt", newline="") as f:
        return [MeasuredKernel(device=device, kernel="moe", dtype="bf16", time_s=float(r["latency"]) * 1e-3,
                               timing="graph", m=int(r["num_tokens"]), n=int(r["inter_size"]) // int(r["moe_tp_size"]),
                               k=int(r["hidden_size"]), topk=int(r["topk"]), experts=int(r["num_experts"]),
                               expert_parallel=int(r["moe_ep_size"]), routing=r["distribution"],
                               backend=r["kernel_source"], source=f"aiconfigurator:{gpu}:moe:int4_wo")
                for r in csv.DictReader(f) if r["moe_dtype"] == "int4_wo"]


def _errors(gpu: str, device_name: str, fmt: NumericFormat = W4A16) -> np.ndarray:
    rows = _int4_layers(gpu, device_name)
    assert len(rows) > 1000
    table = KernelTable.from_kernels([r.to_kernel() for r in rows]).with_format(fmt)
    predicted = load_device(device_name).cost_table(table, execution="device").time_s
    return predicted / np.array([r.time_s for r in rows]) - 1.0


def test_dequantization_reaches_the_fused_layer():
    """At 16,384 tokens (about 340 rows per expert) the layer is math-bound, so the dequantization in series with it
    shows: per-group scales (0.5 instructions per weight and pass on top of the 1.125 of the int4 unpack) take longer
    than a per-tensor scale applied in the epilogue, on the same bytes within the scales' 1/64 share."""
    rows = [r for r in _int4_layers("h200_sxm", "h200") if r.m == 16384]
    table = KernelTable.from_kernels([r.to_kernel() for r in rows])
    device = load_device("h200")
    grouped = device.cost_table(table.with_format(W4A16), execution="device").time_s
    per_tensor = device.cost_table(table.with_format(NumericFormat(weight_bits=4, scale_granularity="tensor")),
                                   execution="device").time_s
    assert (grouped > per_tensor * 1.01).all()


def test_ada_marlin_layers_within_twenty_percent():
    """On L40S (Ada: Marlin's mma.sync is its tensor cores' native instruction) the median error is within 20%, the
    upper end of the fitted MoE layers' in-source held-out medians (10-17%, README)."""
    assert np.median(np.abs(_errors("l40s", "l40s"))) <= 0.20


@pytest.mark.parametrize("gpu, device_name", [("h200_sxm", "h200"), ("b200_sxm", "b200")])
@pytest.mark.xfail(strict=True, reason=(
    "priced 37% (H200) and 60% (B200) too fast in the median. Marlin's MoE kernel (vLLM csrc/moe/marlin_moe_wna16, "
    "built on quantization/gptq_marlin/marlin.cuh) issues the sm_80 warp-level mma.sync m16n8k16 on every GPU, while "
    "Hopper and Blackwell reach their tensor-core peak only through the asynchronous warpgroup wgmma (sm_90) and "
    "tcgen05 (sm_100) instructions (Luo et al., 'Benchmarking and Dissecting the Nvidia Hopper GPU Architecture', "
    "2024: the tensor cores' full potential is realized only with wgmma), and the 16-bit MoE fit these layers are "
    "priced on was measured on kernels that use them. The rate mma.sync reaches on H200 and B200 is neither in the "
    "project's data nor found published as a number; pricing it needs that per-GPU rate in the preset and a "
    "mixed-input MMA rate in gpu.py's MoE call (moe_times receives the dtype's peak)"))
def test_hopper_and_blackwell_marlin_layers_within_twenty_percent(gpu, device_name):
    assert np.median(np.abs(_errors(gpu, device_name))) <= 0.20
