"""The energy of a weight-only GEMV on a GPU's CUDA cores, by hand: what dequantizing costs beside what its fewer
bytes save, and that a kernel's energy is the sum of its parts.

A lane instruction is charged as one FMA's issue, two FLOPs at the CUDA cores' energy per FLOP, which hw_models/gpu.py
derives from the preset as (TDP - idle - DRAM power at full bandwidth) / fp32 peak. On the A100 (400 W, 53.7 W idle,
2,039 GB/s at 3.97 pJ/bit, 19.5 TFLOP/s) that is 281.54 W / 19.5e12 = 14.438 pJ a FLOP, 28.88 pJ a lane instruction:
the order of the 1.5 pJ of an HFMA plus 30 pJ of instruction fetch, decode and operand fetch NVIDIA gives per
instruction (Dally, DAC 2021 keynote, as reported by Semiconductor Engineering, "Is Programmable Overhead Worth The
Cost?", 2022; its process node is unclear, hw_models/gpu.py). So a W3 weight (1.625 + 0.5 lane instructions,
61.4 pJ) costs 14.4 pJ more to unpack than a W4 weight (1.125 + 0.5, 46.9 pJ), and a W6 weight 18.0 pJ more than a
W8 weight (1.0 + 0.5, 43.3 pJ): more than the one or two bits they save in DRAM (3.97 pJ a bit), so at batch 1
energy per token is not monotone in the weight bits, and these tests pin down why.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from explore.design_point import DesignPoint
from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable

# Llama-2-7B's MLP down projection at batch 1: X[1, 11008] @ W[11008, 4096].
M, N, K = 1, 4096, 11008
# The A100 SXM 80 GB preset's figures (hw_models/presets/a100-sxm-80gb.yaml), typed here.
A100_TDP_W, A100_IDLE_W, A100_BANDWIDTH_Bps, A100_DRAM_pJ_PER_BIT, A100_FP32_FLOPS = 400.0, 53.7, 2039e9, 3.97, 19.5e12
# Lane instructions per weight (hw_models/gpu_quant.py's counts from the kernels' code): the unpack of the width (one
# shift, four lop3, two sub.f16x2 and two fma.f16x2 per eight 4-bit values; one prmt and one sub.f16x2 per two 8-bit
# values; a 2- or 4-bit plane plus a lop3 per pair merging the high bits for 3, 5 and 6 bits) plus one fma.f16x2 per
# pair applying the group scale.
LANE_OPS = {8: 1.0 + 0.5, 6: 9 / 8 + 0.5 + 0.5, 4: 9 / 8 + 0.5, 3: 9 / 8 + 0.5 + 0.5}


def gemv(m: int = M, n: int = N, k: int = K) -> Kernel:
    """A weight GEMM at 16 bits."""
    return Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * m * n * k, weight_bytes=2.0 * k * n,
                  act_bytes=2.0 * (m * k + m * n), kv_bytes=0.0, dtype="bf16", tensor_core=True, m=m, n=n, k=k, batch=1)


def costs(device, bits: int):
    table = KernelTable.from_kernels([gemv()])
    if bits < 16:
        table = table.with_format(NumericFormat(weight_bits=bits))
    return device.cost_table(table, "device")


@pytest.fixture(scope="module")
def a100():
    return load_device("a100-sxm-80gb")


def test_cuda_core_flop_energy_by_hand(a100):
    dynamic_W = A100_TDP_W - A100_IDLE_W - A100_BANDWIDTH_Bps * A100_DRAM_pJ_PER_BIT * 8e-12
    assert dynamic_W == pytest.approx(281.54, abs=0.01)
    assert a100.joules_per_flop("fp32") == pytest.approx(dynamic_W / A100_FP32_FLOPS, rel=1e-12)


@pytest.mark.parametrize("bits", sorted(LANE_OPS))
def test_dequantization_energy_of_one_gemv_by_hand(a100, bits):
    """The CUDA cores' energy a weight-only GEMV adds over the 16-bit one (the same tensor-core FLOPs): its weights
    unpacked once (one M-tile pass at one token), each lane instruction two FLOPs at 14.438 pJ."""
    flop_J = (A100_TDP_W - A100_IDLE_W - A100_BANDWIDTH_Bps * A100_DRAM_pJ_PER_BIT * 8e-12) / A100_FP32_FLOPS
    expected_J = LANE_OPS[bits] * K * N * 2.0 * flop_J
    added_J = float(costs(a100, bits).compute_J[0] - costs(a100, 16).compute_J[0])
    assert added_J == pytest.approx(expected_J, rel=1e-9)
    if bits == 4:  # 1.625 x 45,088,768 weights x 28.876 pJ
        assert added_J == pytest.approx(2.1157e-3, rel=1e-4)


@pytest.mark.parametrize("bits", sorted(LANE_OPS))
def test_weight_bytes_energy_of_one_gemv_by_hand(a100, bits):
    """DRAM energy of the stored weights (bits plus a 16-bit scale per 128) and the 16-bit activations in and out."""
    weight_B = K * N * (bits + 16 / 128) / 8
    act_B = 2.0 * (M * K + M * N)
    expected_J = (weight_B + act_B) * A100_DRAM_pJ_PER_BIT * 8e-12
    assert float(costs(a100, bits).memory_J[0]) == pytest.approx(expected_J, rel=1e-9)


def test_narrower_unaligned_widths_cost_more_to_unpack_than_their_bits_save(a100):
    """W3 against W4 and W6 against W8, by hand: the extra lane instructions (0.5 and 0.625 a weight, 14.4 and 18.0
    pJ) exceed the DRAM energy of the bits saved (3.97 and 7.94 pJ), so the dynamic energy of the narrower GEMV is the
    larger (its idle energy is smaller by as much as its time is shorter, which the fits set, not priced here)."""
    dynamic = {bits: float(costs(a100, bits).compute_J[0] + costs(a100, bits).memory_J[0]) for bits in (8, 6, 4, 3)}
    flop_J = a100.joules_per_flop("fp32")
    for wide, narrow in ((4, 3), (8, 6)):
        unpack_J = (LANE_OPS[narrow] - LANE_OPS[wide]) * K * N * 2.0 * flop_J
        saved_J = (wide - narrow) * K * N * A100_DRAM_pJ_PER_BIT * 1e-12
        assert dynamic[narrow] - dynamic[wide] == pytest.approx(unpack_J - saved_J, rel=1e-9)
        assert unpack_J > saved_J


def test_kernel_energy_is_the_sum_of_its_parts(a100):
    for bits in (16, *LANE_OPS):
        c = costs(a100, bits)
        np.testing.assert_allclose(c.energy_J, c.compute_J + c.memory_J + c.static_J, rtol=1e-12)
        np.testing.assert_allclose(c.static_J, A100_IDLE_W * c.time_s, rtol=1e-12)


@pytest.mark.parametrize("device", ["a100-sxm-80gb", "h100-sxm"])
@pytest.mark.parametrize("bits", [16, 8, 6, 4, 3])
def test_energy_per_token_is_the_sum_of_its_parts(evaluator, device, bits):
    point = DesignPoint(model="llama-2-7b", device=device, batch=1, prompt=128, output=64, execution="engine",
                        weight_bits=bits)
    evaluation = evaluator.evaluate(point)
    parts = evaluation.result.energy_parts_J
    assert set(parts) == {"compute_J", "memory_J", "static_J"}
    assert all(value > 0 for value in parts.values())
    assert evaluation.metrics["energy_per_token_J"] * 64 == pytest.approx(sum(parts.values()), rel=1e-12)


def test_readme_states_the_energies_per_bit_width(evaluator):
    """The README's batch-1 energies per token by weight width are what `explore run` gives."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    found = re.search(r"W16/W8/W6/W4/W3: ([\d./]+) J on an A100,\s+([\d./]+) on an H100 SXM", readme)
    assert found, "README sentence on energy per token by weight bits"
    for device, stated in zip(("a100-sxm-80gb", "h100-sxm"), found.groups(), strict=True):
        energies = [evaluator.evaluate(DesignPoint(model="llama-2-7b", device=device, batch=1, prompt=128, output=64,
                                                   execution="engine", weight_bits=bits)).metrics["energy_per_token_J"]
                    for bits in (16, 8, 6, 4, 3)]
        assert stated == "/".join(f"{energy:.2f}" for energy in energies), device
