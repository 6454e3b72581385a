"""Whole prefills measured on an H200 with this project's harness (data/measured/h200-2026-12-04/h200-prefill.csv.gz:
Llama-3-8B bf16 and Llama-2-7B fp16, one prompt of 128-4,096 tokens, 4 of 2,048 and 16 of 512, launched eagerly)
against the TTFT `explore run` simulates for them, and the profiles of four of those prefills op by op. No prefill
was used to fit anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from explore.calibrate_cmd import predict_steps
from hw_models.calibration import error_summary
from hw_models.registry import load_device
from kernels.kernel import KernelKind
from kernels.lowering import lower_op
from kernels.measured import read_table
from kernels.table import KernelTable
from workloads.profiler_import import profile_to_trace

DATA = Path(__file__).resolve().parents[2] / "data" / "measured" / "h200-2026-12-04"
# The prefills whose kernels keep the GPU busy (2,048 tokens and more); the 128-token one is host-bound.
LONG_PROFILES = ["llama-3-8b-prefill-b1x2048", "llama-3-8b-prefill-b4x2048", "llama-2-7b-prefill-b4x2048"]
POINTWISE = (KernelKind.NORM_PART, KernelKind.ROPE_PART, KernelKind.ELEMENTWISE, KernelKind.ACTIVATION)


def _time_by_kind(name: str) -> dict[KernelKind, tuple[float, float]]:
    """(predicted, measured) kernel time summed by kind over one profiled prefill (device time, no launch)."""
    trace = profile_to_trace(DATA / f"h200-profile-{name}.json.gz")
    pairs = [(kernel, op.attrs["measured_time_s"]) for op in trace.ops
             if op.attrs.get("measured_time_s") and (kernel := lower_op(op, trace.dtype)) is not None]
    predicted = load_device("h200").cost_table(KernelTable.from_kernels([k for k, _ in pairs]),
                                               execution="device").time_s
    sums: dict[KernelKind, list[float]] = {}
    for (kernel, measured_s), predicted_s in zip(pairs, predicted, strict=True):
        total = sums.setdefault(kernel.kind, [0.0, 0.0])
        total[0] += predicted_s
        total[1] += measured_s
    return {kind: (p, m) for kind, (p, m) in sums.items()}


def _ratio(sums: dict[KernelKind, tuple[float, float]], kinds) -> float:
    return sum(sums[k][0] for k in kinds if k in sums) / sum(sums[k][1] for k in kinds if k in sums)


@pytest.mark.slow  # 12 prefills of two full-size models, each traced at its own shape: about 20 s
def test_prefills_are_within_20_percent_at_the_median():
    # 12.4% in the median (bias -12.4%): the GPU-bound prefills of 2,048 tokens and more -5% to -13%; the host-bound
    # ones of 128 and 512 tokens -29% to -38%, where this lease's host dispatched 31-35 us per eager kernel against
    # the model's 21.6 us (gpt-fast's).
    rows = read_table(DATA / "h200-prefill.csv.gz")
    summary = error_summary(predict_steps("h200", rows, "h200-prefill"), np.array([r.time_s for r in rows]))
    assert summary["n"] == 12 and summary["median_abs_err"] <= 0.20, summary


@pytest.mark.parametrize("name", LONG_PROFILES)
def test_gemm_and_attention_time_inside_long_prefills(name):
    # The math a prefill is made of, summed over the step: the GEMM fit (aiconfigurator's) and the torch SDPA fit
    # (this harness's attention cases) on kernels neither saw.
    ratio = _ratio(_time_by_kind(name), (KernelKind.GEMM, KernelKind.ATTENTION_PREFILL))
    assert 0.90 <= ratio <= 1.10, ratio


@pytest.mark.parametrize("name", LONG_PROFILES)
def test_pointwise_time_inside_long_prefills(name):
    # The eager decoder's pointwise kernels, summed: most of their time is ops off the contiguous vectorized loop
    # (the RMSNorm's fp32 casts and per-row products, RoPE's broadcast products and strided halves, the KV-cache
    # writes), priced by the general-layout fit of casts, per-row products and strided negations timed alone with warm
    # inputs (h200-pointwise-warm.csv.gz): 0.84-1.0 of the measured sum; priced as contiguous streams they came to
    # 0.6-0.75 of it.
    ratio = _ratio(_time_by_kind(name), POINTWISE)
    assert 0.80 <= ratio <= 1.20, ratio
