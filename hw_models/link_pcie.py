"""A network link as a GPU reaches it: through the GPU's own PCIe link to its NIC.

GPUDirect RDMA moves a GPU's data between its memory and its NIC over the GPU's PCIe link (through the node's PCIe
switch), so a transfer between nodes runs at the least of the NIC port's rate and the PCIe links on its path: NCCL
gives a path the bandwidth of its slowest link (NVIDIA/nccl src/graph/paths.cc ncclTopoSetPaths). A GPU's PCIe link
is its preset's host_link, the x16 port its host's memory is reached over too: an A100's PCIe 4 x16 (31.5 GB/s a
direction) is below InfiniBand NDR's 50 GB/s port, an H100's PCIe 5 x16 (63.0) above it, a T4's PCIe 3 x16 (15.75)
below HDR's 25.

Both sides are datasheet rates after line encoding, as every link preset is. NCCL's topology takes a PCIe link at
three quarters of that (width x per-lane rate / 80 GB/s, 120 a lane at 16 GT/s: 24 GB/s for PCIe 4 x16, 48 for PCIe 5,
12 for PCIe 3; src/graph/topo.cc kvDictPciGen, ncclTopoAddPci) beside a NIC at its port's line rate (ncclTopoAddNet:
speed / 8000), which would put an H100's path to an NDR port at 48 GB/s. Here a link has one rate wherever it is read
(the PCIe preset is what offloaded bytes stream over: sim/offload.py), and the datasheet model's gap to measured NCCL
times (README: 45-85%) falls on the NIC and the PCIe link alike.

Only a network is capped (LinkSpec.domain_devices None: a GPU reaches any number of others through its NIC); NVLink or
PCIe between the GPUs of one node is not. A device whose preset names no host link (b200, v100-sxm2: no PCIe
generation found that a source states for the module; CPUs, NPUs, FPGAs) is not capped.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hw_models.link import LinkModel, LinkSpec, load_link


def pcie_link(device_spec) -> LinkSpec | None:
    """A device's own PCIe link: its preset's host_link where that joins devices (a storage tier is not the GPU's
    port), else None."""
    host = getattr(device_spec, "host_link", None)
    if host is None:
        return None
    link = load_link(host.link)
    return link if link.joins_devices else None


def pcie_cap(link: LinkSpec, *device_specs) -> tuple[Any, LinkSpec] | None:
    """The device of `device_specs` and its PCIe link that cap a network's bandwidth (the slowest PCIe link, the first
    device of that rate; module docstring); None where `link` is no network or none of their PCIe links is slower."""
    if link.domain_devices is not None:
        return None
    ends = [(spec, pcie) for spec in device_specs if (pcie := pcie_link(spec)) is not None]
    if not ends:
        return None
    slowest = min(ends, key=lambda end: end[1].bandwidth_GBps)
    return slowest if slowest[1].bandwidth_GBps < link.bandwidth_GBps else None


def through_pcie(link: LinkSpec, *device_specs) -> LinkSpec:
    """`link` as traffic from or to the devices of `device_specs` crosses it: a network's bandwidth at most the slowest
    of their PCIe links' (module docstring); the link itself where it is no network or none of them is slower."""
    cap = pcie_cap(link, *device_specs)
    return link if cap is None else replace(link, bandwidth_GBps=cap[1].bandwidth_GBps)


def model_through_pcie(link: LinkModel, *device_specs) -> LinkModel:
    """through_pcie of a link with its fits (a fit's bandwidth fractions apply to the capped rate)."""
    spec = through_pcie(link.spec, *device_specs)
    return link if spec is link.spec else LinkModel(spec, link.fits, link.fitted_on)
