"""A node link's per-GPU rate is at most the GPU's own PCIe link to its NIC (hw_models/link_pcie.py): GPUDirect RDMA
crosses that link, and NCCL gives a path its slowest link's bandwidth (ncclTopoSetPaths)."""

from __future__ import annotations

import numpy as np
import pytest

from hw_models.link import load_link, load_link_model
from hw_models.link_pcie import through_pcie
from hw_models.registry import load_device
from hw_models.system import SystemModel

# Datasheet rates per direction after line encoding (the link presets' sources): PCI-SIG, 16 GT/s x 16 lanes x 128/130
# / 8 = 31.5 GB/s (PCIe 4 x16), 32 GT/s: 63.0 (PCIe 5), 8 GT/s: 15.75 (PCIe 3); InfiniBand NDR 400 Gb/s / 8 = 50 GB/s,
# HDR 25. Step latencies: NCCL's cost model, NVLink 0.6 us, a network hop 2.7 us.
PCIE4_GBPS, NDR_GBPS, HDR_GBPS, PCIE3_GBPS = 31.5, 50.0, 25.0, 15.75
NVLINK3_GBPS, NVLINK4_GBPS, NVLINK_STEP_S, NET_STEP_S = 300.0, 450.0, 0.6e-6, 2.7e-6
GIB = 2**30


def _sixteen(device: str, link: str, overrides: dict | None = None) -> SystemModel:
    """16 GPUs, two nodes of 8 on their board's NVLink (datasheet model), joined by InfiniBand NDR."""
    return SystemModel(load_device(device, overrides), 16, load_link_model(link, calibrated=False),
                       node_link=load_link_model("infiniband-ndr"))


def _hierarchical_all_reduce_s(size_B: float, nvlink_GBps: float, nic_GBps: float) -> float:
    """By hand: a reduce-scatter and an all-gather of S among a node's 8 on NVLink (7/8 S / B + 7 steps each), and an
    all-reduce of S / 8 between the 2 nodes over each GPU's NIC (2 x 1/2 x S / 8 / B + 2 steps)."""
    within = 2 * (7 / 8 * size_B / (nvlink_GBps * 1e9) + 7 * NVLINK_STEP_S)
    across = 2 * (1 / 2) * (size_B / 8) / (nic_GBps * 1e9) + 2 * NET_STEP_S
    return within + across


def test_sixteen_a100s_over_ndr_all_reduce_at_their_pcie_4_rate():
    """16 A100s over NDR: the 1 GiB all-reduce's step between nodes moves 128 MiB per GPU at PCIe 4 x16's 31.5 GB/s,
    not the port's 50: 4.266 ms there against 2.690 (2 steps of 2.7 us each), 10.54 ms in all against 8.96 by hand
    (the node's halves 6.272 ms)."""
    system = _sixteen("a100-sxm-80gb", "nvlink3")
    assert system.node_link.spec.bandwidth_GBps == PCIE4_GBPS
    capped = _hierarchical_all_reduce_s(GIB, NVLINK3_GBPS, PCIE4_GBPS)
    assert capped == pytest.approx(10.54e-3, abs=0.01e-3)
    assert _hierarchical_all_reduce_s(GIB, NVLINK3_GBPS, NDR_GBPS) == pytest.approx(8.96e-3, abs=0.01e-3)
    assert system.collective_time_s("all_reduce", GIB, 16) == pytest.approx(capped, rel=1e-12)


def test_sixteen_h100s_over_ndr_keep_the_ports_rate():
    """An H100's PCIe 5 x16 (63.0 GB/s) is above NDR's 50: the node link as the preset gives it."""
    system = _sixteen("h100-sxm", "nvlink4")
    assert system.node_link.spec.bandwidth_GBps == NDR_GBPS
    assert system.collective_time_s("all_reduce", GIB, 16) == pytest.approx(
        _hierarchical_all_reduce_s(GIB, NVLINK4_GBPS, NDR_GBPS), rel=1e-12)


@pytest.mark.parametrize("kind", ["all_reduce", "all_gather", "reduce_scatter", "all_to_all"])
def test_a_faster_pcie_link_is_never_slower(kind):
    """Invariant: the same 16 A100s with a PCIe 3, 4 or 5 x16 host link (a device what-if) price every collective
    across nodes no slower as the PCIe link gets faster, and large messages strictly faster up to NDR's rate."""
    sizes = np.geomspace(2**10, 4 * GIB, 23)
    times = [_sixteen("a100-sxm-80gb", "nvlink3", {"host_link.link": pcie}).collective_time_s(kind, sizes, 16)
             for pcie in ("pcie3-x16", "pcie4-x16", "pcie5-x16")]
    assert np.all(times[1] <= times[0]) and np.all(times[2] <= times[1])
    assert times[1][-1] < times[0][-1] and times[2][-1] < times[1][-1]


def test_only_a_network_is_capped_and_only_by_a_slower_pcie_link():
    """A T4 (PCIe 3 x16) reaches HDR at 15.75 GB/s, its NVLink-less board's PCIe domain as it is; an A100 reaches HDR
    at HDR's 25 (below its PCIe 4) and its NVLink 3 board at 300; a device without a host link (B200) is not capped."""
    t4, a100, b200 = (load_device(name).spec for name in ("t4", "a100-sxm-80gb", "b200"))
    assert through_pcie(load_link("infiniband-hdr"), t4).bandwidth_GBps == PCIE3_GBPS
    assert through_pcie(load_link("pcie3-x16"), t4) == load_link("pcie3-x16")
    assert through_pcie(load_link("infiniband-hdr"), a100).bandwidth_GBps == HDR_GBPS
    assert through_pcie(load_link("nvlink3"), a100).bandwidth_GBps == NVLINK3_GBPS
    assert through_pcie(load_link("infiniband-ndr"), b200).bandwidth_GBps == NDR_GBPS
    # Two ends: the slower of their PCIe links.
    assert through_pcie(load_link("infiniband-ndr"), load_device("h100-sxm").spec, t4).bandwidth_GBps == PCIE3_GBPS
