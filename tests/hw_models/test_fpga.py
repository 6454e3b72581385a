"""FPGA (FlightLLM-style) cost model: hand calculations, always-on-chip decode, sparsity, mixed precision,
invariants, energy accounting, and preset errors."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from hw_models.registry import load_device, read_device_yaml
from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable

U280 = "alveo-u280"


def _gemm(m: int, n: int = 4096, k: int = 4096, dtype: str = "bf16") -> Kernel:
    """A weight GEMM traced at 16 bits: C[m, n] = A[m, k] W[k, n]."""
    return Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * m * n * k, weight_bytes=2.0 * n * k,
                  act_bytes=2.0 * m * (n + k), kv_bytes=0.0, dtype=dtype, tensor_core=True, m=m, n=n, k=k, batch=1)


def _decode_attention(kv_len: int = 128, heads: int = 32, head_dim: int = 128) -> Kernel:
    return Kernel(kind=KernelKind.ATTENTION_DECODE, op="sdpa", flops=4.0 * heads * kv_len * head_dim,
                  weight_bytes=0.0, act_bytes=2.0 * 2 * heads * head_dim, kv_bytes=2.0 * 2 * heads * kv_len * head_dim,
                  dtype="bf16", tensor_core=True, heads=heads, kv_heads=heads, q_len=1, kv_len=kv_len,
                  head_dim=head_dim)


def _norm(elements: int = 4096) -> Kernel:
    return Kernel(kind=KernelKind.NORM, op="rms_norm", flops=5.0 * elements, weight_bytes=2.0 * elements,
                  act_bytes=4.0 * elements, kv_bytes=0.0, dtype="bf16", tensor_core=False)


def _table(kernels, fmt: NumericFormat | None = None) -> KernelTable:
    table = KernelTable.from_kernels(kernels)
    return table.with_format(fmt) if fmt else table


W8A8 = NumericFormat(weight_bits=8, act_bits=8)


def test_gemv_time_is_hbm_streaming_at_achieved_efficiency():
    """Hand calculation from the preset: int8 weights 4096 x 4096 (+ one 16-bit scale per 128) at 65.9% of 460 GB/s."""
    device = load_device(U280)
    cost = device.cost_table(_table([_gemm(1)], W8A8))
    weight_B = 4096 * 4096 * (8 + 16 / 128) / 8
    # The 8-bit activation in, its 16-bit output out (act_bits quantizes GEMM inputs; the following kernels
    # read 16-bit activations); no decode pass here, so they go to HBM.
    act_B = 4096 * 1 + 4096 * 2
    memory_s = (weight_B + act_B) / (460e9 * 0.659)
    # MV mode: a quarter of the 6144 DSPs, two int8 MACs each, at 225 MHz
    compute_s = 2 * 4096 * 4096 / (2 * 6144 * 2 * 225e6 * 0.25)
    assert cost.memory_s[0] == pytest.approx(memory_s, rel=1e-9)
    assert cost.compute_s[0] == pytest.approx(compute_s, rel=1e-9)
    assert cost.time_s[0] == pytest.approx(max(memory_s, compute_s) + 1 / 225e6, rel=1e-9)


def test_prefill_gemm_is_compute_bound_at_packed_int8_rate():
    device = load_device(U280)
    cost = device.cost_table(_table([_gemm(512)], W8A8))
    compute_s = 2 * 512 * 4096 * 4096 / (2 * 6144 * 2 * 225e6)  # full MM mode
    assert cost.compute_s[0] == pytest.approx(compute_s, rel=1e-9)
    assert cost.compute_s[0] > cost.memory_s[0]


def test_mixed_precision_rates_follow_dsp_packing():
    device = load_device(U280)
    assert device.peak_flops("int4") == pytest.approx(2 * device.peak_flops("int8"))
    assert device.peak_flops("bf16") == pytest.approx(device.peak_flops("int8") / 2)
    assert device.peak_flops("fp8") == device.peak_flops("fp16")  # no fp8 packing listed: runs as fp16
    assert device.peak_flops("fp32") == pytest.approx(48 * 225e6)  # the SFU's vector rate
    # A 4-bit-weight, 4-bit-activation GEMM runs at the int4 rate: twice as fast when compute-bound.
    w4a4 = device.cost_table(_table([_gemm(512)], NumericFormat(weight_bits=4, act_bits=4)))
    w8a8 = device.cost_table(_table([_gemm(512)], W8A8))
    assert w4a4.compute_s[0] == pytest.approx(w8a8.compute_s[0] / 2)


def test_always_on_chip_decode_keeps_activations_off_hbm():
    """In a decode pass, activations that fit the on-chip buffer cost on-chip bandwidth, not HBM."""
    device = load_device(U280)
    off = load_device(U280, overrides={"onchip.always_on_chip_decode": False})
    table = _table([_gemm(1), _decode_attention(), _norm()], W8A8)
    on_cost, off_cost = device.cost_table(table), off.cost_table(table)
    assert device.activations_on_chip(table).all()
    spec = device.spec
    expected = (table.weight_bytes + table.kv_bytes) / spec.achieved_bandwidth_Bps + table.act_bytes / 7970e9
    np.testing.assert_allclose(on_cost.memory_s, expected, rtol=1e-9)
    np.testing.assert_allclose(off_cost.memory_s, table.bytes / spec.achieved_bandwidth_Bps, rtol=1e-9)
    assert (on_cost.memory_s < off_cost.memory_s).all()
    assert on_cost.memory_J.sum() < off_cost.memory_J.sum()


def test_prefill_and_oversized_activations_go_to_hbm():
    device = load_device(U280)
    prefill = _table([_gemm(128)], W8A8)  # no decode attention: not a decode pass
    assert not device.activations_on_chip(prefill).any()
    tiny_buffer = load_device(U280, overrides={"onchip.activation_buffer_MB": 1e-5})  # 10 bytes
    decode = _table([_gemm(1), _decode_attention()], W8A8)
    assert not tiny_buffer.activations_on_chip(decode).any()


def test_supported_nm_sparsity_skips_zeros_unsupported_runs_dense():
    device = load_device(U280)
    dense = device.cost_table(_table([_gemm(512)], W8A8))
    sparse_fmt = NumericFormat(weight_bits=8, act_bits=8, sparsity="2:4")
    sparse = device.cost_table(_table([_gemm(512)], sparse_fmt))
    assert sparse.compute_s[0] == pytest.approx(dense.compute_s[0] / 2)
    no_chains = load_device(U280, overrides={"compute.sparsity_patterns": []})
    assert no_chains.cost_table(_table([_gemm(512)], sparse_fmt)).compute_s[0] == pytest.approx(dense.compute_s[0])
    # Compressed weights (kept values + 2-bit positions) stream faster in decode.
    gemv_dense = device.cost_table(_table([_gemm(1)], W8A8)).memory_s[0]
    gemv_sparse = device.cost_table(_table([_gemm(1)], sparse_fmt)).memory_s[0]
    assert gemv_sparse < 0.7 * gemv_dense
    assert "1:16" in device.sparsity_patterns and "2:4" in device.sparsity_patterns


def _mixed_table() -> KernelTable:
    return _table([_gemm(1), _gemm(256), _decode_attention(512), _norm()], W8A8)


def test_time_floor_and_energy_parts():
    device = load_device(U280)
    cost = device.cost_table(_mixed_table())
    assert (cost.time_s >= np.maximum(cost.compute_s, cost.memory_s)).all()
    np.testing.assert_allclose(cost.energy_J, cost.compute_J + cost.memory_J + cost.static_J)
    np.testing.assert_allclose(cost.static_J, device.spec.power.idle_W * cost.time_s)
    # Hand calculation for the m = 256 GEMM: the pass holds decode attention, so its activations (2 MB) stay
    # on chip; its weights cross HBM (3.97 pJ/bit) and every byte crosses BRAM/URAM (0.31 pJ/bit).
    table = _mixed_table()
    hbm_J = table.weight_bytes[1] * 8 * 3.97e-12
    onchip_J = table.bytes[1] * 8 * 0.31e-12
    assert cost.memory_J[1] == pytest.approx(hbm_J + onchip_J)
    assert cost.compute_J[1] == pytest.approx(table.flops[1] / 2 * 0.3e-12)


@pytest.mark.parametrize("path, factor", [("memory.bandwidth_GBps", 2.0), ("memory.efficiency", 1.2),
                                          ("compute.dsp_count", 1.4), ("compute.clock_MHz", 1.5),
                                          ("onchip.bandwidth_GBps", 2.0)])
def test_more_resources_never_slower(path, factor):
    data, _ = read_device_yaml(U280)
    section, key = path.split(".")
    value = data[section][key] * factor
    if key == "efficiency":
        value = min(value, 1.0)
    if key == "dsp_count":
        value = min(int(value), data["compute"]["device_dsp_count"])
    base = load_device(U280).cost_table(_mixed_table()).time_s
    more = load_device(U280, overrides={path: value}).cost_table(_mixed_table()).time_s
    assert (more <= base + 1e-15).all()
    assert (more < base).any()


def test_execution_modes_price_alike():
    device = load_device(U280)
    table = _mixed_table()
    eager = device.cost_table(table, "eager").time_s
    np.testing.assert_array_equal(eager, device.cost_table(table, "graphs").time_s)
    np.testing.assert_array_equal(eager, device.cost_table(table, "device").time_s)


def test_vhk158_has_more_bandwidth_and_memory_than_u280():
    u280, vhk = load_device(U280), load_device("versal-vhk158")
    assert vhk.bandwidth_Bps == pytest.approx(819.2e9) and u280.bandwidth_Bps == pytest.approx(460e9)
    assert vhk.memory_bytes > u280.memory_bytes
    table = _table([_gemm(1), _decode_attention()], W8A8)
    assert (vhk.cost_table(table).time_s < u280.cost_table(table).time_s).all()


def test_v100s_preset_from_datasheet():
    v100s = load_device("v100s-pcie")
    assert v100s.peak_flops("fp16") == pytest.approx(130e12)
    assert v100s.peak_flops("int8") == pytest.approx(130e12)  # no integer tensor cores: runs at fp16
    assert v100s.bandwidth_Bps == pytest.approx(1134e9)
    assert v100s.sparsity_patterns == frozenset()


def test_wrong_key_in_fpga_preset_is_one_line(tmp_path, one_line_error):
    data, _ = read_device_yaml(U280)
    data["memory"]["efficency"] = data["memory"].pop("efficiency")
    path = tmp_path / "fpga.yaml"
    path.write_text(yaml.safe_dump(data))
    where, message = one_line_error(lambda: load_device(str(path)))
    assert str(path) in where and "memory.efficency" in message


@pytest.mark.parametrize("path, value, words", [
    ("compute.dsp_count", 20000, "device_dsp_count"),
    ("compute.sparsity_patterns", ["3:5"], "sparsity"),
    ("memory.efficiency", 1.5, "efficiency"),
    ("onchip.activation_buffer_MB", 100.0, "activation_buffer_MB"),
])
def test_bad_fpga_values_are_one_line(path, value, words, one_line_error):
    where, message = one_line_error(lambda: load_device(U280, overrides={path: value}))
    assert words in message
