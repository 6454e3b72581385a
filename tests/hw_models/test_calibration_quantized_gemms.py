"""Quantized GEMM rows ('wXaY', as the harness times tinygemm's W4A16 and int8 W8A8) in a measured table: priced as a
point of that format prices its GEMMs (hw_models/gpu_quant.py) and never fitted (hw_models/calibration.py)."""

from __future__ import annotations

import numpy as np
import pytest

from hw_models.calibration import fit_calibration, gemm_key, predict, quantized_gemm
from hw_models.gpu import GPUModel
from hw_models.gpu_quant import lane_ops_per_s, unpack_ops
from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.measured import MeasuredKernel, write_table
from kernels.table import Kernel, KernelKind, KernelTable

N = K = 4096


def _row(dtype: str, m: int, time_s: float = 1e-5, source: str = "synthetic") -> MeasuredKernel:
    return MeasuredKernel(device="h100-sxm", kernel="gemm", dtype=dtype, m=m, n=N, k=K, time_s=time_s, source=source,
                          timing="isolated")


def _kernel(m: int) -> Kernel:
    """A bf16 GEMM of m tokens against a 4,096 x 4,096 weight, as a trace carries it."""
    return Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * m * K * N, weight_bytes=2.0 * K * N,
                  act_bytes=2.0 * m * (K + N), kv_bytes=0.0, dtype="bf16", tensor_core=True, layer=0,
                  module="model.layers.0.mlp.up_proj", m=m, n=N, k=K, batch=1)


def test_quantized_gemm_rows_have_a_group_of_their_own():
    assert quantized_gemm(_row("w4a16", 1)) and not quantized_gemm(_row("bf16", 1))
    assert gemm_key(_row("w4a16", 1)) == "w4a16" and gemm_key(_row("bf16", 1)) == ""


def test_a_w4a16_row_moves_a_quarter_of_the_weights_and_pays_the_dequantization():
    device = load_device("h100-sxm", calibrated=False)
    times = predict(device, [_row(d, m) for m in (1, 8192) for d in ("bf16", "w4a16")])
    bf16_1, w4_1, bf16_big, w4_big = times
    # Batch 1 is the weights' traffic: 4-bit weights (with a 16-bit scale per 128) against a 16-bit B operand.
    assert w4_1 < 0.5 * bf16_1
    # At m = 8,192 the same math runs at the 16-bit rate, and the CUDA cores add the dequantization: each weight
    # unpacked (1.125 instructions) and scaled (0.5) once per 64-row pass, 128 passes, at half the fp32 peak.
    ops = (unpack_ops(4, "int") + 0.5) * N * K * 8192 / 64
    dequant_s = ops / lane_ops_per_s(device.spec.compute.peak_TFLOPS["fp32"] * 1e12)
    assert w4_big >= bf16_big + 0.9 * dequant_s


def test_an_engine_dequantizes_a_many_token_w4a16_gemm_once():
    """A serving engine runs a GEMM of 8,192 tokens with 4-bit weights as vLLM's AWQ layer does from 256 tokens:
    dequantize the weights once (read 0.5 B and write 2 B a weight: 12.5 us at the H100's 3.35 TB/s, besides 1.625
    lane instructions a weight), then the 16-bit GEMM. So it costs more than the bf16 GEMM and less than redoing
    the dequantization in each of its 128 passes (the harness's tinygemm, above); one token stays the 4-bit GEMV."""
    model = GPUModel(load_device("h100-sxm", calibrated=False).spec)
    table = KernelTable.from_kernels([_kernel(m) for m in (1, 8192)])
    bf16_1, bf16_big = model.cost_table(table, "engine").time_s
    w4_1, w4_big = model.cost_table(table.with_format(NumericFormat(weight_bits=4)), "engine").time_s
    ops = (unpack_ops(4, "int") + 0.5) * N * K * 8192 / 64
    per_pass_s = ops / lane_ops_per_s(model.spec.compute.peak_TFLOPS["fp32"] * 1e12)
    assert bf16_big + N * K * 2.5 / 3.35e12 <= w4_big < bf16_big + 0.5 * per_pass_s
    assert w4_1 < 0.5 * bf16_1


def test_quantized_gemm_rows_are_not_fitted(tmp_path):
    base = load_device("h100-sxm", calibrated=False)
    rng = np.random.default_rng(3)
    plain = [_row("bf16", int(m), float(t), f"s{i % 8}")
             for i, (m, t) in enumerate(zip(2 ** rng.integers(0, 13, 64), rng.uniform(1e-5, 1e-3, 64), strict=True))]
    quantized = [_row("w4a16", int(m), 1.0, f"s{i % 8}") for i, m in enumerate(2 ** rng.integers(0, 13, 16))]

    def fit(rows):
        write_table(tmp_path / "t.csv", rows)
        return fit_calibration(base, rows, table_path=str(tmp_path / "t.csv"), train_fraction=1.0, command="test")

    alone, beside = fit(plain), fit(plain + quantized)  # a second per W4A16 GEMM would pull any fit it joined
    assert beside.gemm == alone.gemm and not beside.gemm_dtypes


def test_predicting_a_quantized_row_uses_the_devices_16_bit_fit():
    device = load_device("h200")
    uncalibrated = GPUModel(device.spec, device.reference)
    row = _row("w4a16", 4096)
    assert predict(device, [row])[0] != pytest.approx(predict(uncalibrated, [row])[0], rel=1e-3)
