"""A mixed-precision MAC unit in an FPGA's matrix engine (hw_models/mixed_precision.py): no FPGA preset ships one
(no sourced per-DSP figures), so a what-if unit on the U280 checks the mechanism against hand calculations."""

from __future__ import annotations

import numpy as np
import yaml

from hw_models.registry import load_device, read_device_yaml
from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable

U280 = "alveo-u280"
# A test's unit: bit-serial lookups at 6 MACs per DSP slice a cycle per 1-bit pass, 0.05 pJ per pass MAC.
LUT_UNIT = {"kind": "lut", "weight_bits": 4, "macs_per_cycle": {"bf16": 6.0, "int8": 6.0},
            "mac_pJ": {"bf16": 0.05, "int8": 0.05}, "source": "a test's what-if"}


def gemm(m: int, n: int = 4096, k: int = 4096) -> Kernel:
    return Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * m * n * k, weight_bytes=2.0 * n * k,
                  act_bytes=2.0 * m * (n + k), kv_bytes=0.0, dtype="bf16", tensor_core=True, m=m, n=n, k=k, batch=1)


def device_with(tmp_path, unit: dict):
    data, _ = read_device_yaml(U280)
    data["mixed_precision"] = unit
    path = tmp_path / "u280-unit.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_device(str(path))


def table(m: int, fmt: NumericFormat) -> KernelTable:
    return KernelTable.from_kernels([gemm(m)]).with_format(fmt)


def test_lut_unit_on_the_dsps_by_hand(tmp_path):
    base, unit = load_device(U280), device_with(tmp_path, LUT_UNIT)
    spec = base.spec
    for bits, acts in ((4, 16), (2, 16), (2, 8)):
        rows = table(4096, NumericFormat(weight_bits=bits, act_bits=acts))
        costs = unit.cost_table(rows)
        # 2 FLOP per MAC on 6,144 DSPs at 225 MHz, 6 / bits MACs per DSP a cycle (a matrix-matrix GEMM: whole engine).
        peak = 2 * spec.compute.dsp_count * spec.compute.clock_MHz * 1e6 * 6.0 / bits
        np.testing.assert_allclose(costs.compute_s, rows.flops / peak, rtol=1e-12)
        np.testing.assert_allclose(costs.compute_J, rows.flops / 2 * bits * 0.05e-12, rtol=1e-12)
        np.testing.assert_array_equal(costs.memory_s, base.cost_table(rows).memory_s)
    # W4A8: 6 / 4 = 1.5 MACs per DSP a cycle is slower than the two packed int8 MACs (FlightLLM Sec. 3.2.1): the GEMM
    # stays on the int8 path.
    rows = table(4096, NumericFormat(weight_bits=4, act_bits=8))
    np.testing.assert_array_equal(unit.cost_table(rows).compute_J, base.cost_table(rows).compute_J)
    np.testing.assert_allclose(unit.cost_table(rows).compute_s, rows.flops / base.peak_flops("int8"), rtol=1e-12)
    # Matrix-vector mode keeps its share of the engine on the unit too.
    rows = table(1, NumericFormat(weight_bits=4))
    gemv_peak = 2 * spec.compute.dsp_count * spec.compute.clock_MHz * 1e6 * 6.0 / 4 * spec.compute.gemv_dsp_fraction
    np.testing.assert_allclose(unit.cost_table(rows).compute_s, rows.flops / gemv_peak, rtol=1e-12)


def test_without_a_unit_or_where_it_is_slower_the_dsps_price_as_before(tmp_path):
    base = load_device(U280)
    dequantize = device_with(tmp_path, {**LUT_UNIT, "kind": "dequantize"})
    # 0.5 MAC per DSP a cycle at 4-bit weights is slower than the packed int8 (2) and fp16 (1) paths.
    slow = device_with(tmp_path, {**LUT_UNIT, "kind": "mixpe", "macs_per_cycle": {"bf16": 0.5, "int8": 0.5}})
    for fmt in (NumericFormat(weight_bits=4), NumericFormat(weight_bits=4, act_bits=8), NumericFormat()):
        for m in (1, 64, 4096):
            expected = base.cost_table(table(m, fmt))
            for device in (dequantize, slow):
                got = device.cost_table(table(m, fmt))
                for part in ("time_s", "compute_J", "memory_J", "static_J"):
                    np.testing.assert_array_equal(getattr(got, part), getattr(expected, part))


def test_fewer_weight_bits_never_cost_more(tmp_path):
    unit = device_with(tmp_path, LUT_UNIT)
    for acts in (16, 8):
        for m in (1, 64, 4096):
            costs = [unit.cost_table(table(m, NumericFormat(weight_bits=bits, act_bits=acts))) for bits in (8, 4, 3, 2)]
            for wider, narrower in zip(costs, costs[1:], strict=False):
                assert np.all(narrower.time_s <= wider.time_s * (1 + 1e-12))
                assert np.all(narrower.energy_J <= wider.energy_J * (1 + 1e-12))
