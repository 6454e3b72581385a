"""Design-point evaluation: which device model priced a point is reported, and the roofline switch works."""

from __future__ import annotations

from dataclasses import replace

import pytest

from explore.design_point import DesignPoint
from explore.rows import device_label, normalize_row
from hw_models.registry import load_device

# Replayed from graphs: a batch-1 eager decode waits on PyTorch's host dispatch, whatever prices the kernels.
POINT = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=1, prompt=64, output=4, execution="graphs")


def test_calibrated_column_and_roofline_switch(evaluator):
    calibrated = evaluator.evaluate(POINT).metrics
    roofline = evaluator.evaluate(replace(POINT, use_calibration=False)).metrics
    assert calibrated["calibrated"] == "fitted" and roofline["calibrated"] == "none"
    # Fitted fractions are at most 1 and add a latency: the datasheet roofline is always the faster prediction.
    assert roofline["tpot_s"] < calibrated["tpot_s"] and roofline["ttft_s"] < calibrated["ttft_s"]
    assert evaluator.evaluate(replace(POINT, device="v100-sxm2")).metrics["calibrated"] == "none"  # no fit, no sibling


def test_a_gpu_without_measurements_borrows_its_architecture_siblings_fits(evaluator):
    pcie = evaluator.evaluate(replace(POINT, device="h100-pcie")).metrics
    roofline = evaluator.evaluate(replace(POINT, device="h100-pcie", use_calibration=False)).metrics
    assert pcie["calibrated"] == "sibling" and roofline["calibrated"] == "none"
    assert roofline["tpot_s"] < pcie["tpot_s"]  # the borrowed fractions are at most 1 and add latencies


def test_a_sibling_lends_what_it_borrows_itself():
    """H100 PCIe's sibling, H100 SXM, takes attention and fp8 GEMMs from its own sibling, H200 (Vidur measured neither
    on H100): H100 PCIe takes them too, so nothing of a Hopper GPU is left on the datasheet roofline, while the chain
    stops where it comes back (H100 SXM and H200 are each other's siblings)."""
    pcie, sxm, h200 = (load_device(name).calibration for name in ("h100-pcie", "h100-sxm", "h200"))
    assert pcie.sibling == "h100-sxm" and set(pcie.borrowed) == set(sxm.fitted_classes)
    assert pcie.attention == sxm.attention == h200.attention and pcie.gemm == sxm.gemm != h200.gemm
    assert {"attention", "gemm fp8"} <= set(sxm.borrowed) and set(sxm.borrowed) <= set(h200.fitted_classes)


def test_uncalibrated_devices_are_marked_in_labels_from_csv_rows():
    assert device_label(normalize_row({"device": "v100-sxm2", "calibrated": "none"})) == "v100-sxm2 (uncalibrated)"
    assert device_label(normalize_row({"device": "h100-pcie", "calibrated": "sibling"})) == "h100-pcie (sibling fit)"
    assert device_label(normalize_row({"device": "h100-sxm", "calibrated": "fitted"})) == "h100-sxm"


def test_kv_cache_holds_the_prompt_and_every_output_token_but_the_last(evaluator):
    """Llama-3-8B keeps 32 layers x 8 KV heads x 128 x 2 (K and V) x 2 B = 131,072 B per token. With one
    output token only the prompt is cached (the token comes from the prefill); each further token adds one."""
    def kv_B(output: int) -> float:
        point = DesignPoint(model="llama-3-8b", device="h100-sxm", batch=2, prompt=512, output=output)
        return evaluator.evaluate(point).result.memory.kv_cache_B

    assert kv_B(1) == 2 * 512 * 131_072
    assert kv_B(16) == 2 * (512 + 15) * 131_072


def _weight_gemms(evaluator, point: DesignPoint) -> int:
    decode = evaluator.point_tables(point, evaluator.point_device(point)).decode
    return int((decode.class_masks["gemm"] & (decode.weight_bytes > 0)).sum())


def test_cpu_engine_runs_the_kernels_llama_cpp_runs(evaluator):
    """llama.cpp (and T-MAC, on llama.cpp's graphs) runs Llama's q, k, v and gate, up projections as separate GEMMs:
    a Llama-2-7B decode step launches 7 weight GEMMs per layer x 32 layers + the LM head = 225 on a CPU, in engine
    execution as in eager, so T-MAC's fitted 8-thread point gives the same rate in both; a GPU engine fuses QKV and
    gate/up (4 x 32 + 1 = 129)."""
    cpu = DesignPoint(model="llama-2-7b", device="m2-ultra-tmac", batch=1, prompt=64, output=16, weight_bits=2,
                      overrides=(("compute.threads", 8),))
    gpu = replace(cpu, device="a100-sxm-80gb", overrides=(), execution="engine")
    assert _weight_gemms(evaluator, replace(cpu, execution="engine")) == _weight_gemms(evaluator, cpu) == 225
    assert _weight_gemms(evaluator, gpu) == 129
    eager, engine = (evaluator.evaluate(replace(cpu, execution=mode)).metrics["tpot_s"] for mode in ("eager", "engine"))
    assert engine == pytest.approx(eager, rel=1e-12)
