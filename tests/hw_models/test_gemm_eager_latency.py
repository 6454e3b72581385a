"""GEMM fits on eagerly timed rows (aiconfigurator's block-scaled fp8 GEMMs: timing 'eager') take their device
latencies from a graph-timed fit of the same GPU instead of fitting them (hw_models/calibration.py fit_gemm).

An eager loop's floor is the longer of the host's launch interval and the device's time, so rows at the floor
cannot tell a device latency from the host interval: any device latency up to the host interval fits them. A fitted
one could land host-sized (shipped B200 block-scaled fp8: 48.8 us against the per-tensor kernel's 4.7 us) and was
then charged as device time in every execution mode (Llama-3-8B batch-1 decode on B200 under `engine`: 8.99 ms
block-scaled fp8 against 3.48 ms bf16).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from explore.design_point import DesignPoint
from hw_models.calibration import (
    QUANTIZE_BYTES_PER_INPUT,
    eager_latencies,
    fit_calibration,
    fit_gemm,
    latency_sibling,
    load_calibration,
    predict,
)
from hw_models.gpu import GPUModel
from hw_models.gpu_efficiency import Calibration, GemmFit, input_quantize_s
from hw_models.registry import load_device
from kernels.measured import MeasuredKernel
from workloads.errors import InputError

BLOCK = "fp8/block128"
# Ground truth of the synthetic rows: a B200 per-tensor fp8 GEMM timed in a CUDA graph and a block-scaled one timed
# eagerly, with the same device latencies (5 us GEMM, 2 us quantization kernel) and a 200 us host interval (the
# shipped B200 block-scaled fit's is 205 us), so the eager rows' small shapes sit on the host's floor.
PER_TENSOR = GemmFit(compute_fraction=0.6, bandwidth_fraction=0.7, latency_s=5e-6, blend=3.0, padding_share=0.5,
                     quantize_bytes_per_input=QUANTIZE_BYTES_PER_INPUT["fp8"], quantize_latency_s=2e-6,
                     quantize_bandwidth_fraction=0.3, quantize_row_s=4e-9, output_bandwidth_fraction=0.4)
BLOCK_SCALED = GemmFit(compute_fraction=0.65, bandwidth_fraction=0.5, latency_s=5e-6, blend=3.0, padding_share=1.0,
                       quantize_bytes_per_input=QUANTIZE_BYTES_PER_INPUT[BLOCK], quantize_latency_s=2e-6,
                       quantize_bandwidth_fraction=0.5, host_interval_s=200e-6)


def _rows(variant: str, timing: str, shapes, times) -> list[MeasuredKernel]:
    return [MeasuredKernel(device="b200", kernel="gemm", dtype="fp8", variant=variant, timing=timing,
                           time_s=float(t), source=f"synthetic:{variant}:{i % 4}", m=m, n=n, k=k)
            for i, (t, (m, n, k)) in enumerate(zip(times, shapes, strict=True))]


def test_an_eager_fit_takes_its_device_latency_from_its_graph_timed_sibling(tmp_path):
    """Fitted on both kinds of rows, each time scattered by 5% (log-normal) as measurements are, the block-scaled
    fit's device latencies are recovered (5 + 2 us) from the per-tensor fit, which the graph-timed rows identify,
    and its host interval from its own rows. Fitted on the eager rows alone, the latency is not identified
    (about 90% of them sit on the host's floor, the rest are device-bound with the latency under their scatter): the
    former fit put 0 to 17 us on it by the seed of the scatter."""
    base = load_device("b200", calibrated=False)
    rng = np.random.default_rng(11)
    shapes = [(int(m), int(n), int(k)) for m, n, k in 2 ** rng.integers([0, 8, 8], [15, 16, 16], size=(160, 3))]
    truth = GPUModel(base.spec, calibration=Calibration(device="b200", gemm_dtypes={"fp8": PER_TENSOR,
                                                                                    BLOCK: BLOCK_SCALED}))
    rows = []
    for variant, timing in (("tensor", "graph"), ("block128", "eager")):
        ideal = _rows(variant, timing, shapes, np.ones(len(shapes)))
        scatter = np.exp(rng.normal(0.0, 0.05, len(shapes)))
        rows += _rows(variant, timing, shapes, predict(truth, ideal) * scatter)
    table = tmp_path / "synthetic.csv"
    table.write_text("synthetic\n")
    cal = fit_calibration(base, rows, table_path=str(table), train_fraction=1.0, command="test")
    sibling, fitted = cal.gemm_dtypes["fp8"], cal.gemm_dtypes[BLOCK]
    # The GEMM's and the quantization kernel's fixed times add in every row, so only their sum is identified.
    assert fitted.latency_s + fitted.quantize_latency_s == pytest.approx(7e-6, rel=0.05)
    assert (fitted.latency_s, fitted.quantize_latency_s) == (sibling.latency_s, sibling.quantize_latency_s)
    assert fitted.host_interval_s == pytest.approx(200e-6, rel=0.05)
    assert "'fp8'" in cal.provenance["fixed_latencies"][BLOCK]


def test_an_eager_fit_without_a_sibling_is_refused():
    base = load_device("b200", calibrated=False)
    rows = _rows("block128", "eager", [(1, 4096, 4096)], [1e-4])
    with pytest.raises(ValueError, match="timed eagerly"):
        fit_gemm(base, rows)
    with pytest.raises(InputError, match="timed eagerly"):
        fit_calibration(base, rows, table_path=__file__, train_fraction=1.0, command="test")


def test_an_eager_fit_never_takes_its_latencies_from_another_eager_fit(tmp_path):
    """Per-tensor and block-scaled fp8 both timed eagerly beside graph-timed bf16 rows: 'fp8/block128' may not take
    the (itself unidentified) eager 'fp8' fit's latencies; both take the graph-timed 16-bit fit's, and say so."""
    base = load_device("b200", calibrated=False)
    rng = np.random.default_rng(5)
    shapes = [(int(m), int(n), int(k)) for m, n, k in 2 ** rng.integers([0, 8, 8], [12, 14, 14], size=(24, 3))]
    bf16 = GemmFit(compute_fraction=0.8, bandwidth_fraction=0.8, latency_s=3e-6, blend=2.0)
    truth = GPUModel(base.spec, calibration=Calibration(device="b200", gemm=bf16, gemm_dtypes={
        "fp8": replace(PER_TENSOR, host_interval_s=200e-6), BLOCK: BLOCK_SCALED}))
    rows = [MeasuredKernel(device="b200", kernel="gemm", dtype="bf16", timing="graph", time_s=1.0,
                           source=f"synthetic:bf16:{i % 4}", m=m, n=n, k=k) for i, (m, n, k) in enumerate(shapes)]
    rows += _rows("tensor", "eager", shapes, np.ones(len(shapes))) + _rows("block128", "eager", shapes,
                                                                           np.ones(len(shapes)))
    rows = [replace(r, time_s=float(t)) for r, t in zip(rows, predict(truth, rows), strict=True)]
    table = tmp_path / "synthetic.csv"
    table.write_text("synthetic\n")
    cal = fit_calibration(base, rows, table_path=str(table), train_fraction=1.0, command="test")
    for key in ("fp8", BLOCK):
        assert "'16-bit'" in cal.provenance["fixed_latencies"][key], key
        assert cal.gemm_dtypes[key].latency_s == cal.gemm.latency_s
        assert cal.gemm_dtypes[key].quantize_latency_s == cal.gemm.latency_s


def test_the_sibling_is_the_same_dtype_else_the_16_bit_fit():
    """'fp8/block128' takes 'fp8' where the GPU has it, else the 16-bit fit (whose one kernel latency then stands for
    the quantization kernel's too); a 16-bit key has no sibling but itself, so none."""
    bf16 = GemmFit(compute_fraction=0.8, bandwidth_fraction=0.8, latency_s=3e-6, blend=2.0)
    assert latency_sibling(BLOCK, {"": bf16, "fp8": PER_TENSOR}) == "fp8"
    assert latency_sibling(BLOCK, {"": bf16}) == ""
    assert latency_sibling("", {"": bf16}) is None
    assert eager_latencies(bf16, QUANTIZE_BYTES_PER_INPUT[BLOCK]) == {"latency_s": 3e-6, "quantize_latency_s": 3e-6}
    assert eager_latencies(PER_TENSOR, QUANTIZE_BYTES_PER_INPUT[BLOCK]) == {"latency_s": 5e-6,
                                                                             "quantize_latency_s": 2e-6}
    assert eager_latencies(PER_TENSOR, 0.0) == {"latency_s": 5e-6}


# Llama-3-8B (meta-llama/Meta-Llama-3-8B config.json: hidden 4096, intermediate 14336, 32 layers): the GEMMs a decode
# step quantizes the input of under an engine's fused kernels, by input width k: qkv, o and gate_up read the hidden
# state, down the intermediate one, 32 layers of each, and the LM head.
LLAMA3_8B_QUANTIZED_K = [4096] * (3 * 32 + 1) + [14336] * 32
FP8 = (("act_type", "fp8_e4m3"), ("weight_type", "fp8_e4m3"))


@pytest.mark.parametrize("device", ["b200", "h200", "l40s"])
def test_block_scaled_fp8_decode_is_no_slower_than_bf16_but_for_its_quantization_kernels(evaluator, device):
    """Batch-1 decode under `engine` streams the weights: block-scaled fp8 moves half of bf16's weight bytes, so the
    step may be slower than bf16 by no more than its one extra kernel per quantized GEMM, the input's quantization,
    bounded here by the GPU's graph-timed (identifiable) per-tensor fp8 quantization kernel at the block-scaled
    kernel's bytes per input: one row of k values each."""
    def tpot(weight_bits: int, act_bits: int, knobs=()) -> float:
        point = DesignPoint(model="llama-3-8b", device=device, batch=1, prompt=512, output=16, weight_bits=weight_bits,
                            act_bits=act_bits, execution="engine", knobs=knobs)
        return evaluator.evaluate(point).metrics["tpot_s"]
    per_tensor = load_calibration(device).gemm_dtypes["fp8"]
    quantize = GemmFit(**{**per_tensor.__dict__, "quantize_bytes_per_input": QUANTIZE_BYTES_PER_INPUT[BLOCK]})
    bandwidth_Bps = load_device(device).spec.memory.bandwidth_GBps * 1e9
    one = np.array([1.0])
    extra_s = sum(float(input_quantize_s(one, k, one, bandwidth_Bps, quantize)[0]) for k in LLAMA3_8B_QUANTIZED_K)
    assert tpot(8, 8, FP8) <= tpot(16, 16) + extra_s, (tpot(8, 8, FP8), tpot(16, 16), extra_s)
