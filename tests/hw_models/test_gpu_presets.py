"""GPU presets: all load, every section cites a source, and the numbers match the vendors' datasheets."""

from __future__ import annotations

import dataclasses

import pytest

from hw_models.registry import load_device, preset_names

# Vendor datasheet figures: dense bf16 (or fp16) tensor TFLOP/s (sparse figures halved), DRAM GB/s, GB, TDP W.
DATASHEET = {
    # NVIDIA H100 datasheet, SXM column: BF16 1,979 TFLOPS with sparsity -> 989.4 dense; 3.35 TB/s; 80 GB; 700 W.
    "h100-sxm": dict(bf16=989.4, bandwidth=3350, capacity=80, tdp=700),
    # H100 PCIe: 1,513 sparse -> 756.5 dense; 2 TB/s; 80 GB; 350 W.
    "h100-pcie": dict(bf16=756.5, bandwidth=2000, capacity=80, tdp=350),
    # NVIDIA H200 datasheet: 141 GB HBM3e at 4.8 TB/s; same GH100 tensor rates as H100 SXM; 700 W.
    "h200": dict(bf16=989.4, bandwidth=4800, capacity=141, tdp=700),
    # NVIDIA A100 datasheet: BF16 312 dense; 80GB SXM 2,039 GB/s; 40GB 1,555 GB/s; 400 W.
    "a100-sxm-80gb": dict(bf16=312, bandwidth=2039, capacity=80, tdp=400),
    "a100-sxm-40gb": dict(bf16=312, bandwidth=1555, capacity=40, tdp=400),
    # NVIDIA L4 datasheet: BF16 242 sparse -> 121 dense; 300 GB/s; 24 GB; 72 W.
    "l4": dict(bf16=121, bandwidth=300, capacity=24, tdp=72),
    # NVIDIA L40S datasheet: BF16 733 sparse -> 362 dense (366 at boost); 864 GB/s; 48 GB; 350 W.
    "l40s": dict(bf16=362, bandwidth=864, capacity=48, tdp=350),
    # NVIDIA RTX A6000 datasheet: tensor 309.7 sparse -> 154.8 dense; 768 GB/s; 48 GB; 300 W.
    "rtx-a6000": dict(bf16=154.8, bandwidth=768, capacity=48, tdp=300),
    # NVIDIA V100 datasheet (SXM2): tensor 125 TFLOPS (fp16); 900 GB/s; 32 GB; 300 W.
    "v100-sxm2": dict(fp16=125, bandwidth=900, capacity=32, tdp=300),
}


def test_expected_presets_ship():
    assert set(DATASHEET) <= set(preset_names())


@pytest.mark.parametrize("name", preset_names("gpu"))
def test_preset_loads(name):
    device = load_device(name)
    assert device.name == name
    assert device.kind == "gpu"
    assert device.memory_bytes > 0 and device.idle_power_W > 0


@pytest.mark.parametrize("name", preset_names("gpu"))
def test_every_section_has_a_source(name):
    spec = load_device(name).spec
    sections = [getattr(spec, f.name) for f in dataclasses.fields(spec)]
    sections = [s for s in sections if dataclasses.is_dataclass(s)]
    assert len(sections) >= 7  # compute, memory, power, energy, overhead, area, price
    for section in sections:
        assert isinstance(section.source, str) and len(section.source.strip()) >= 10, type(section).__name__


@pytest.mark.parametrize("name", sorted(DATASHEET))
def test_datasheet_figures(name):
    figures = DATASHEET[name]
    device = load_device(name)
    spec = device.spec
    dtype = "bf16" if "bf16" in figures else "fp16"
    assert device.peak_flops(dtype) == pytest.approx(figures[dtype] * 1e12, rel=0.005)
    assert spec.bandwidth_Bps == pytest.approx(figures["bandwidth"] * 1e9, rel=1e-9)
    # The datasheet's capacity stays the preset's capacity_GB; what a program can allocate (memory_bytes) is the
    # measured usable_GiB where given (tests/hw_models/test_usable_memory.py).
    assert spec.memory.capacity_GB == figures["capacity"]
    assert spec.power.tdp_W == figures["tdp"]


def test_h100_sxm_exact():
    device = load_device("h100-sxm")
    assert device.peak_flops("bf16") == pytest.approx(989.4e12)
    assert device.spec.bandwidth_Bps == pytest.approx(3350e9)
    assert device.spec.memory.capacity_GB == 80
    # What a CUDA program can allocate: PyTorch's 'total capacity of 79.11 GiB' on an NVIDIA H100 80GB HBM3
    # (github.com/vllm-project/vllm/issues/27508).
    assert device.memory_bytes == pytest.approx(79.11 * 2**30)


def test_h200_memory():
    device = load_device("h200")
    assert device.spec.bandwidth_Bps == pytest.approx(4800e9)
    assert device.spec.memory.capacity_GB == 141
    # What a CUDA program can allocate: torch's 'total_memory=143156MB' (MiB) on an NVIDIA H200
    # (github.com/ai-bot-pro/achatbot deploy/modal/src/llm/vllm/vlm/skywork_r1v.py).
    assert device.memory_bytes == pytest.approx(143156 * 2**20)


def test_dtype_fallbacks():
    # V100 has no bf16 tensor cores: bf16 runs at the fp16 rate, 125 TFLOP/s.
    assert load_device("v100-sxm2").peak_flops("bf16") == pytest.approx(125e12)
    # A100 has no fp8: fp8 runs at the 16-bit rate, 312.
    assert load_device("a100-sxm-80gb").peak_flops("fp8") == pytest.approx(312e12)
    # H100 has no int4 tensor mode: int4 runs at the int8 rate, 1978.9 TOPS.
    assert load_device("h100-sxm").peak_flops("int4") == pytest.approx(1978.9e12)
    # Vector fp32 on H100 SXM: 66.9 TFLOP/s.
    assert load_device("h100-sxm").peak_flops("fp32") == pytest.approx(66.9e12)
