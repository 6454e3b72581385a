"""A link as `explore run`'s header names it: its name and its rate a device, and where a device's own PCIe link caps
a network's rate (hw_models/link_pcie.py), the capped rate and the device and PCIe link that set it."""

from __future__ import annotations

from hw_models.link import LinkSpec
from hw_models.link_pcie import pcie_cap


def link_rate_text(link: LinkSpec, *device_specs) -> str:
    """`link` in words as traffic from or to the devices of `device_specs` crosses it: 'infiniband-ndr (50 GB/s a
    device, capped at 31.5 GB/s by a100-sxm-80gb's pcie4-x16)', or without the cap where it does not bind."""
    rate = f"{link.bandwidth_GBps:g} GB/s a device"
    cap = pcie_cap(link, *device_specs)
    if cap is not None:
        device, pcie = cap
        rate += f", capped at {pcie.bandwidth_GBps:g} GB/s by {device.name}'s {pcie.name}"
    return f"{link.name} ({rate})"
