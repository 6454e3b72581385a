"""A GPU's memory is what a CUDA program can allocate (the driver's total) where its preset measures it, not the
datasheet's 'GB' read as 10^9 bytes; the datasheet figure stays where no measurement is given."""

import pytest

from hw_models.registry import load_device

# Published totals, typed here from their sources (not read from the presets).
MEASURED_GIB = {
    # PyTorch OOM line 'GPU 0 has a total capacity of 79.11 GiB', NVIDIA H100 80GB HBM3,
    # github.com/vllm-project/vllm/issues/27508
    "h100-sxm": 79.11,
    # PyTorch OOM line 'total capacity of 39.56 GiB', NVIDIA A100-SXM4-40GB,
    # github.com/threestudio-project/threestudio/issues/402
    "a100-sxm-40gb": 39.56,
    # PyTorch OOM line 'total capacity of 22.03 GiB', NVIDIA L4, github.com/ArcInstitute/evo2/issues/190
    "l4": 22.03,
    # PyTorch OOM line 'total capacity of 44.53 GiB', L40S, github.com/Wan-Video/Wan2.1/issues/205
    "l40s": 44.53,
    # PyTorch OOM line 'total capacity of 95.00 GiB', H20, github.com/modelscope/DiffSynth-Studio/issues/1238
    "h20": 95.00,
    # cudaGetDeviceProperties totalGlobalMem '178.35 GB' (GiB), NVIDIA B200, github.com/pytorch/ao/pull/4002
    "b200": 178.35,
    # nvidia-smi total 46068MiB, NVIDIA A40, github.com/sgl-project/sglang/issues/1522
    "a40": 46068 / 1024,
    # CUDA deviceQuery totalGlobalMem 85100068864 bytes, NVIDIA A100-SXM4-80GB,
    # github.com/thamada/nvidia-smi nvsim/A100SXMx4_deviceQuery.py
    "a100-sxm-80gb": 85100068864 / 2**30,
    # CUDA deviceQuery totalGlobalMem 34089730048 bytes, Tesla V100-SXM2-32GB, github.com/infn-esc/esc21
    # parallelism/cuda.md (commit fd6b856f)
    "v100-sxm2": 34089730048 / 2**30,
    # CUDA deviceQuery totalGlobalMem 51160023040 bytes, NVIDIA RTX A6000, hpc-community.unige.ch/t/3741
    "rtx-a6000": 51160023040 / 2**30,
    # torch.cuda.get_device_properties on an NVIDIA H200: 'total_memory=143156MB', which torch prints as
    # totalGlobalMem / 2^20 (MiB), github.com/ai-bot-pro/achatbot deploy/modal/src/llm/vllm/vlm/skywork_r1v.py
    # (commit 859e2161)
    "h200": 143156 / 1024,
    # H100 PCIe: H100 SXM's PyTorch total above (the same nvidia-smi total, 81559MiB, on both cards: Scaleway's
    # docs-content pages/gpu/how-to/use-nvidia-mig-technology.mdx on an NVIDIA H100 PCIe, modal-labs/modal-client
    # PR 2797 on an H100 80GB HBM3)
    "h100-pcie": 79.11,
}


@pytest.mark.parametrize("name", sorted(MEASURED_GIB))
def test_memory_is_the_measured_total(name):
    assert load_device(name).memory_bytes == pytest.approx(MEASURED_GIB[name] * 2**30, rel=1e-9)


def test_h100_holds_more_than_80e9_bytes():
    """79.11 GiB = 84.94e9 B: the 80 GB card holds about 6% more than 80e9 bytes."""
    assert load_device("h100-sxm").memory_bytes == pytest.approx(84.94e9, rel=1e-3)


@pytest.mark.parametrize("name, datasheet_GB", [("v100s-pcie", 32), ("t4", 16)])
def test_unmeasured_cards_keep_the_datasheet_capacity(name, datasheet_GB):
    assert load_device(name).memory_bytes == datasheet_GB * 1e9


def test_a_model_that_fits_one_80gb_h100_fits_the_other():
    """82e9 bytes: over the datasheet's 80e9, under the 79.11 GiB (84.94e9 B) a CUDA program gets on either card."""
    assert all(load_device(name).memory_bytes >= 82e9 for name in ("h100-sxm", "h100-pcie"))


def test_what_if_capacity_keeps_the_usable_share():
    """Doubling an H100's datasheet capacity doubles what a program can allocate, not resets it to 160e9 B."""
    assert load_device("h100-sxm", {"memory.capacity_GB": 160}).memory_bytes == pytest.approx(
        2 * 79.11 * 2**30, rel=1e-9)


def test_what_if_usable_is_taken_as_given():
    assert load_device("h100-sxm", {"memory.usable_GiB": 70}).memory_bytes == pytest.approx(70 * 2**30, rel=1e-9)


def test_system_sums_its_devices_usable_memory():
    from hw_models.link import load_link_model
    from hw_models.system import SystemModel

    system = SystemModel(load_device("h100-sxm"), 2, load_link_model("nvlink4"))
    assert system.memory_bytes == pytest.approx(2 * 79.11 * 2**30, rel=1e-9)


def test_block_of_capacities_keeps_the_usable_share():
    """A sweep block varying capacity_GB prices each point as its own what-if does."""
    import numpy as np

    from hw_models.device_block import block_device

    block = block_device(load_device("h100-sxm"), {"memory.capacity_GB": [80, 160]})
    np.testing.assert_allclose(np.ravel(block.memory_bytes), [79.11 * 2**30, 2 * 79.11 * 2**30], rtol=1e-9)
