"""explore run's header names a link with its rate a device and, where a device's own PCIe link caps a network's rate
(hw_models/link_pcie.py), the capped rate and the device and PCIe link that set it (explore/link_words.py)."""

from __future__ import annotations

import pytest

from explore.cli import main
from explore.link_words import link_rate_text
from hw_models.link import load_link
from hw_models.registry import load_device
from tests.explore.tiny_sweep import write_tiny_model

# Datasheet rates a direction: InfiniBand NDR 400 Gb/s / 8 and HDR 200 Gb/s / 8 a port (ConnectX-7, DGX A100 user
# guide); NVLink 3 12 links x 25 GB/s; PCIe 4 x16 16 GT/s x 16 x 128/130 / 8, PCIe 3 x16 8 GT/s x 16 x 128/130 / 8.
NDR_GBPS, HDR_GBPS, NVLINK3_GBPS = 50, 25, 300
PCIE4_X16_GBPS, PCIE3_X16_GBPS = 31.5, 15.75

A100, H100, T4 = (load_device(name).spec for name in ("a100-sxm-80gb", "h100-sxm", "t4"))


@pytest.mark.parametrize("link, devices, expected", [
    # An A100's PCIe 4 x16 is below NDR's port: the cap binds.
    ("infiniband-ndr", (A100,),
     f"infiniband-ndr ({NDR_GBPS} GB/s a device, capped at {PCIE4_X16_GBPS} GB/s by a100-sxm-80gb's pcie4-x16)"),
    # An H100's PCIe 5 x16 (63 GB/s) is above it; HDR's port is below an A100's PCIe 4: no cap to name.
    ("infiniband-ndr", (H100,), f"infiniband-ndr ({NDR_GBPS} GB/s a device)"),
    ("infiniband-hdr", (A100,), f"infiniband-hdr ({HDR_GBPS} GB/s a device)"),
    # Between an H100 and a T4 the slower end's PCIe 3 x16 sets it.
    ("infiniband-ndr", (H100, T4),
     f"infiniband-ndr ({NDR_GBPS} GB/s a device, capped at {PCIE3_X16_GBPS} GB/s by t4's pcie3-x16)"),
    # NVLink within a node does not cross the PCIe link.
    ("nvlink3", (A100,), f"nvlink3 ({NVLINK3_GBPS} GB/s a device)"),
])
def test_a_links_words_name_the_pcie_cap_where_it_binds(link, devices, expected):
    assert link_rate_text(load_link(link), *devices) == expected


# llama-3-70b decoding as tests/explore/test_multi_node.py runs it (the traces it captures): tp 16 spans two nodes of 8.
LLAMA_70B_TP16 = ["run", "--model", "llama-3-70b", "--tp", "16", "--execution", "engine", "--batch", "64", "--prompt",
                  "1024", "--output", "16"]


def test_sixteen_a100s_over_ndr_name_the_cap_sixteen_h100s_do_not(capsys):
    assert main([*LLAMA_70B_TP16, "--device", "a100-sxm-80gb", "--node-link", "infiniband-ndr"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert (f"joined by infiniband-ndr ({NDR_GBPS} GB/s a device, capped at {PCIE4_X16_GBPS} GB/s by a100-sxm-80gb's "
            f"pcie4-x16), a port per device") in header, header
    assert main([*LLAMA_70B_TP16, "--device", "h100-sxm"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert f"joined by infiniband-ndr ({NDR_GBPS} GB/s a device), a port per device" in header, header
    assert "capped" not in header, header


def test_a_kv_stores_fetches_name_the_cap_of_each_pools_devices(tmp_path, capsys):
    """Two A100s (one NVLink 3 node) fetch from the store over NDR, capped by their PCIe 4; with an A100 prefill pool
    before H100 decode replicas on NDR, the A100s' fetches are capped and the H100s' are not."""
    model = write_tiny_model(tmp_path)
    base = ["run", "--model", model, "--execution", "graphs", "--serving", "--requests", "1", "--rate", "1",
            "--prompt", "32", "--output", "4", "--prefix-tokens", "16", "--kv-store-GB", "64",
            "--node-link", "infiniband-ndr"]
    capped = f"infiniband-ndr ({NDR_GBPS} GB/s a device, capped at {PCIE4_X16_GBPS} GB/s by a100-sxm-80gb's pcie4-x16)"
    assert main([*base, "--device", "a100-sxm-80gb", "--tp", "2"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert f"reached over each device's node-link NIC, {capped}" in header, header
    assert main([*base, "--device", "h100-sxm", "--prefill-replicas", "1", "--prefill-device", "a100-sxm-80gb"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert (f"reached over each device's node-link NIC, a100-sxm-80gb's {capped} and h100-sxm's infiniband-ndr "
            f"({NDR_GBPS} GB/s a device)") in header, header
    # The handover between them leaves the A100s' PCIe links: capped too.
    assert f"handing KV over {capped} to 1 decode replica" in header, header


def test_a_pools_own_node_link_names_the_cap_of_its_devices(tmp_path, capsys):
    """An A100 prefill pool's own NDR, read by its KV handover, behind its PCIe 4 x16; the H100s' decode pool beside it
    would not cap it, the handover is capped by the A100s' end."""
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--execution", "graphs", "--serving", "--requests",
                 "1", "--rate", "1", "--prompt", "32", "--output", "4", "--prefill-replicas", "1", "--prefill-device",
                 "a100-sxm-80gb", "--prefill-node-link", "infiniband-ndr"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    capped = f"infiniband-ndr ({NDR_GBPS} GB/s a device, capped at {PCIE4_X16_GBPS} GB/s by a100-sxm-80gb's pcie4-x16)"
    assert f"(a100-sxm-80gb, --prefill-node-link {capped} read by its KV handover)" in header, header


def test_a_points_node_link_read_by_its_kv_store_names_its_rate_and_cap(tmp_path, capsys):
    """Two A100s (one NVLink 3 node) whose KV store's fetches read --node-link NDR: the clause naming the reader gives
    NDR's 50 GB/s a port and the 31.5 GB/s of the A100s' own PCIe 4 x16 that caps it, as a pool's own node link's
    clause does; two H100s (PCIe 5 x16, 63 GB/s) leave it uncapped."""
    model = write_tiny_model(tmp_path)
    base = ["run", "--model", model, "--execution", "graphs", "--tp", "2", "--serving", "--requests", "1", "--rate",
            "1", "--prompt", "32", "--output", "4", "--prefix-tokens", "16", "--kv-store-GB", "64",
            "--node-link", "infiniband-ndr"]
    said = {}
    for device in ("a100-sxm-80gb", "h100-sxm"):
        assert main([*base, "--device", device]) == 0
        said[device] = capsys.readouterr().out.splitlines()[0]
    capped = f"({NDR_GBPS} GB/s a device, capped at {PCIE4_X16_GBPS} GB/s by a100-sxm-80gb's pcie4-x16)"
    for device, rate in (("a100-sxm-80gb", capped), ("h100-sxm", f"({NDR_GBPS} GB/s a device)")):
        assert f"--node-link infiniband-ndr {rate} read by the KV store's fetches" in said[device], said[device]
