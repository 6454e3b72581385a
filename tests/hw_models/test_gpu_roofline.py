"""GPU cost model: roofline invariants over random kernels, one kernel by hand, energy and power bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import hw_models
from hw_models.registry import load_device, preset_names, read_device_yaml
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable

DTYPES = ["bf16", "fp16", "fp8", "int8", "int4", "fp32"]


def _random_kernels(seed: int, n: int = 300) -> KernelTable:
    rng = np.random.default_rng(seed)
    kernels = []
    for _ in range(n):
        flops = float(10 ** rng.uniform(0, 13))
        parts = 10 ** rng.uniform(0, 10, size=3) * (rng.random(3) < 0.8)
        tensor_core = bool(rng.random() < 0.6)
        kernels.append(Kernel(
            kind=KernelKind.GEMM if tensor_core else KernelKind.ELEMENTWISE, op="k", flops=flops,
            weight_bytes=float(parts[0]), act_bytes=float(parts[1]), kv_bytes=float(parts[2]),
            dtype=str(rng.choice(DTYPES)), tensor_core=tensor_core,
        ))
    return KernelTable.from_kernels(kernels)


@pytest.fixture(scope="module")
def kernels() -> KernelTable:
    return _random_kernels(seed=1234)


def _raw(name: str) -> dict:
    data, _ = read_device_yaml(name)
    return data


@pytest.mark.parametrize("name", preset_names("gpu"))
def test_time_never_below_roofline_floor(name, kernels):
    raw = _raw(name)
    # Independent floor from the preset's datasheet numbers: no kernel beats the fastest rate the chip has,
    # nor streams faster than its DRAM bandwidth, nor launches faster than the launch overhead.
    fastest = max(raw["compute"]["peak_TFLOPS"].values()) * 1e12
    bandwidth = raw["memory"]["bandwidth_GBps"] * 1e9
    launch = raw["overhead"]["kernel_launch_us"] * 1e-6
    floor = np.maximum(kernels.flops / fastest, kernels.bytes / bandwidth)
    for calibrated in (True, False):  # fitted efficiency only ever slows a kernel down
        costs = load_device(name, calibrated=calibrated).cost_table(kernels)
        assert np.all(costs.time_s >= floor * (1 - 1e-12))
        assert np.all(costs.time_s >= launch * (1 - 1e-12))
        assert np.all(costs.memory_s >= kernels.bytes / bandwidth * (1 - 1e-12))
    # The uncalibrated roofline's parts: memory time is bytes / bandwidth exactly; compute at least flops / fastest.
    costs = load_device(name, calibrated=False).cost_table(kernels)
    np.testing.assert_allclose(costs.memory_s, kernels.bytes / bandwidth, rtol=1e-12)
    assert np.all(costs.compute_s >= kernels.flops / fastest * (1 - 1e-12))
    assert np.all(costs.time_s >= np.maximum(costs.compute_s, costs.memory_s))


@pytest.mark.parametrize("name", ["h100-sxm", "a100-sxm-80gb", "l4", "v100-sxm2"])
@pytest.mark.parametrize("factor", [1.01, 2.0, 10.0])
def test_more_bandwidth_is_never_slower(name, factor, kernels):
    base = load_device(name)
    faster = load_device(name, {"memory.bandwidth_GBps": _raw(name)["memory"]["bandwidth_GBps"] * factor})
    t0, t1 = base.cost_table(kernels).time_s, faster.cost_table(kernels).time_s
    assert np.all(t1 <= t0)
    # Memory-bound kernels get strictly faster.
    memory_bound = base.cost_table(kernels).bound == 1
    assert memory_bound.any() and np.all(t1[memory_bound] < t0[memory_bound])


@pytest.mark.parametrize("name", ["h100-sxm", "a100-sxm-80gb", "l4", "v100-sxm2"])
@pytest.mark.parametrize("factor", [1.01, 2.0, 10.0])
def test_higher_peak_is_never_slower(name, factor, kernels):
    rates = _raw(name)["compute"]["peak_TFLOPS"]
    base = load_device(name)
    faster = load_device(name, {f"compute.peak_TFLOPS.{dtype}": rate * factor for dtype, rate in rates.items()})
    t0, t1 = base.cost_table(kernels).time_s, faster.cost_table(kernels).time_s
    assert np.all(t1 <= t0)
    compute_bound = base.cost_table(kernels).bound == 0
    assert compute_bound.any() and np.all(t1[compute_bound] < t0[compute_bound])


@pytest.mark.parametrize("name", preset_names("gpu"))
def test_energy_is_sum_of_parts_and_power_below_tdp(name, kernels):
    device = load_device(name)
    raw = _raw(name)
    costs = device.cost_table(kernels)
    for i in range(0, len(kernels), 7):
        row = costs.row(i)
        parts = row.breakdown
        assert row.energy_J == pytest.approx(parts["compute_J"] + parts["memory_J"] + parts["static_J"], rel=1e-12)
        assert min(parts["compute_J"], parts["memory_J"], parts["static_J"]) >= 0
    # Static energy is idle power x time; memory energy is bytes x 8 bits x pJ/bit.
    np.testing.assert_allclose(costs.static_J, raw["power"]["idle_W"] * costs.time_s, rtol=1e-12)
    np.testing.assert_allclose(costs.memory_J, kernels.bytes * 8 * raw["energy"]["dram_pJ_per_bit"] * 1e-12,
                               rtol=1e-12)
    # No kernel draws more than the board's TDP on average.
    power = costs.energy_J / costs.time_s
    assert np.all(power <= raw["power"]["tdp_W"] * (1 + 1e-9))
    assert np.all(power >= raw["power"]["idle_W"] * (1 - 1e-9))


def test_identical_inputs_identical_costs(kernels):
    a = load_device("h100-sxm").cost_table(kernels)
    b = load_device("h100-sxm").cost_table(_random_kernels(seed=1234))
    for field in ("time_s", "compute_s", "memory_s", "overhead_s", "compute_J", "memory_J", "static_J"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def _gemm(m: int, n: int, k: int, dtype: str = "bf16") -> Kernel:
    # C[m, n] = A[m, k] B[k, n] in 16-bit: A is the activation, B the weight, C written.
    return Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * m * n * k, weight_bytes=2.0 * k * n,
                  act_bytes=2.0 * (m * k + m * n), kv_bytes=0.0, dtype=dtype, tensor_core=True, m=m, n=n, k=k,
                  batch=1)


def test_gemm_4096_on_h100_by_hand():
    cost = load_device("h100-sxm", calibrated=False).cost(_gemm(4096, 4096, 4096))
    flops = 2 * 4096**3  # 137,438,953,472
    compute_s = flops / 989.4e12  # 138.9 us
    memory_s = 3 * 4096**2 * 2 / 3350e9  # 100,663,296 B -> 30.0 us
    assert compute_s > memory_s
    assert cost.time_s == pytest.approx(compute_s + 2.1e-6, rel=1e-9)
    assert cost.time_s == pytest.approx(141.01e-6, rel=1e-4)
    assert cost.bound == "compute"
    # Energy: dynamic power at full math and full bandwidth is TDP - idle - bandwidth x J/byte
    # = 700 - 71.8 - 3350e9 x 3.97e-12 x 8 = 521.804 W; compute energy = that x compute time.
    dynamic_W = 700 - 71.8 - 3350e9 * 3.97e-12 * 8
    assert dynamic_W == pytest.approx(521.804)
    assert cost.breakdown["compute_J"] == pytest.approx(dynamic_W * compute_s, rel=1e-9)
    assert cost.breakdown["memory_J"] == pytest.approx(3 * 4096**2 * 2 * 8 * 3.97e-12, rel=1e-9)
    assert cost.breakdown["static_J"] == pytest.approx(71.8 * (compute_s + 2.1e-6), rel=1e-9)


def test_bound_compute_for_big_gemm_memory_for_gemv():
    device = load_device("h100-sxm", calibrated=False)
    assert device.cost(_gemm(8192, 8192, 8192)).bound == "compute"
    gemv = device.cost(_gemm(1, 4096, 4096))
    assert gemv.bound == "memory"
    # Weight read dominates: (4096 x 4096 + 4096 + 4096) x 2 bytes / 3.35 TB/s + launch.
    assert gemv.time_s == pytest.approx((4096 * 4096 + 2 * 4096) * 2 / 3350e9 + 2.1e-6, rel=1e-9)
    # A tiny kernel is launch-bound.
    assert device.cost(_gemm(1, 8, 8)).bound == "overhead"


def test_vector_work_runs_at_fp32_rate():
    device = load_device("h100-sxm")
    kernel = Kernel(kind=KernelKind.ELEMENTWISE, op="mul", flops=1e12, weight_bytes=0.0, act_bytes=0.0,
                    kv_bytes=0.0, dtype="bf16", tensor_core=False)
    # 1e12 FLOPs on CUDA cores at 66.9 TFLOP/s, not at the 989.4 tensor rate.
    assert device.cost(kernel).breakdown["compute_s"] == pytest.approx(1e12 / 66.9e12, rel=1e-9)


def test_override_does_not_touch_the_preset(tmp_path):
    load_device("h100-sxm", {"memory.bandwidth_GBps": 1000})
    assert load_device("h100-sxm").spec.bandwidth_Bps == pytest.approx(3350e9)
    # And a copied preset with the same bandwidth written into the file gives the same device as the override.
    data = _raw("h100-sxm")
    data["memory"]["bandwidth_GBps"] = 1000
    data.pop("sibling")  # a copy naming a sibling borrows the sibling's fits: this one is the bare datasheet
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(data))
    kernel = _gemm(1, 4096, 4096)
    overridden = load_device("h100-sxm", {"memory.bandwidth_GBps": 1000}, calibrated=False)
    assert load_device(str(path)).cost(kernel).time_s == overridden.cost(kernel).time_s


@pytest.mark.parametrize("bandwidth_GBps", [1000, 5000, 30000])
def test_bandwidth_what_if_leaves_compute_energy_alone(bandwidth_GBps):
    # A what-if on memory bandwidth (DESIGN.md's example sweep overrides memory.bandwidth_GBps over
    # [1000, 5000]) does not touch the math units: the compute energy of the same GEMM must not change.
    # Independent figure: on the preset as shipped, the board draws its TDP where its fitted GEMMs reach their
    # ceiling (the shipped calibration's compute_fraction of the 989.4 TFLOP/s peak), so a 4096^3 bf16 GEMM's compute
    # energy is (700 - 71.8 - 3350e9 x 8 x 3.97e-12) W x 2 x 4096^3 / (fraction x 989.4e12 FLOP/s): 521.804 W x
    # 138.9 us / 0.758 = 95.6 mJ.
    gemm = _gemm(4096, 4096, 4096)
    fitted = yaml.safe_load((Path(hw_models.__file__).parent / "calibration" / "h100-sxm.yaml").read_text())
    fraction = fitted["gemm"]["compute_fraction"]
    assert 0.6 < fraction < 0.9  # a fitted share of the datasheet peak
    expected_J = (700 - 71.8 - 3350e9 * 8 * 3.97e-12) * 2 * 4096**3 / (fraction * 989.4e12)
    assert load_device("h100-sxm").cost(gemm).breakdown["compute_J"] == pytest.approx(expected_J, rel=1e-9)
    what_if = load_device("h100-sxm", {"memory.bandwidth_GBps": bandwidth_GBps}).cost(gemm)
    assert what_if.breakdown["compute_J"] == pytest.approx(expected_J, rel=1e-9)


def test_sparse_gemm_on_a_calibrated_gpu_does_half_the_math():
    """2:4 weights on an H100 with its fitted GEMM model: the padded tiles are the same, their math halves."""
    from kernels.formats import NumericFormat

    m, n, k = 8192, 4096, 4096
    gemm = Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * m * n * k, weight_bytes=2.0 * k * n,
                  act_bytes=2.0 * (m * k + m * n), kv_bytes=0.0, dtype="bf16", tensor_core=True, m=m, n=n, k=k, batch=1)
    table = KernelTable.from_kernels([gemm])
    device = load_device("h100-sxm")
    assert device.calibration is not None and "2:4" in device.sparsity_patterns
    dense = device.cost_table(table.with_format(NumericFormat()), execution="device")
    sparse = device.cost_table(table.with_format(NumericFormat(sparsity="2:4")), execution="device")
    assert sparse.compute_s[0] == pytest.approx(dense.compute_s[0] / 2, rel=1e-12)
    assert sparse.time_s[0] < 0.6 * dense.time_s[0]


@pytest.mark.parametrize("calibrated", [True, False])
def test_each_execution_mode_adds_its_sourced_launch_cost(kernels, calibrated):
    """Per kernel, over 'device' (kernel time only): a stream launch for 'eager' and 'engine' (kernel_launch_us),
    a graph node for 'graphs' (graph_launch_us): H100 2.1 and 1.3 us (Hazy Research, 'Look Ma, No Bubbles!', 2025,
    the preset's source). Pricing graphs at the eager cost fails here."""
    overhead = _raw("h100-sxm")["overhead"]
    assert (overhead["kernel_launch_us"], overhead["graph_launch_us"]) == (2.1, 1.3)
    device = load_device("h100-sxm", calibrated=calibrated)
    times = {mode: device.cost_table(kernels, mode).time_s for mode in ("device", "eager", "engine", "graphs")}
    np.testing.assert_allclose(times["eager"] - times["device"], 2.1e-6, rtol=1e-6)
    np.testing.assert_allclose(times["engine"] - times["device"], 2.1e-6, rtol=1e-6)
    np.testing.assert_allclose(times["graphs"] - times["device"], 1.3e-6, rtol=1e-6)
