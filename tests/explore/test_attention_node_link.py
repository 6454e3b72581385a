"""Attention devices beyond one domain of their attention link (sim/serving_spec.py attention_spans_nodes): a replica's
devices and its attention devices that one NVSwitch board cannot hold sit on different nodes, so their sends cross
the node link (at most each end's PCIe link: hw_models/link_pcie.py), which then has a reader; within one board, or
over a network, they keep the attention link."""

from __future__ import annotations

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.sweep_serving import node_link_readers
from kernels.formats import NumericFormat
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import TINY_CONFIG, write_tiny_model
from workloads.requests import Fixed

# Llama-3-70B (Hugging Face meta-llama/Meta-Llama-3-70B config.json): 64 query heads and 8 KV heads of 128 dims. A token
# sends its query, key and value to the attention devices at 16 bits, (64 + 2 x 8) x 128 x 2 = 20,480 B a layer
# (Lamina, arXiv:2405.01814v2 section 3.1).
TOKEN_OUT_B = (64 + 2 * 8) * 128 * 2
# Datasheet rates a direction: InfiniBand NDR 400 Gb/s / 8 a port; PCIe 4 x16 16 GT/s x 16 x 128/130 / 8; the
# network's latency a hop (the infiniband presets' 2.7 us).
NDR_Bps, HDR_Bps, PCIE4_X16_Bps, NET_HOP_S = 50e9, 25e9, 31.5e9, 2.7e-6
READER = "the sends to its attention devices, on other nodes than its own"


def _point(device: str, tp: int, link: str | None, node_link: str = "", placement: str = "apart",
           attention_device: str = "h20") -> DesignPoint:
    spec = ServingSpec(requests=4, rate_per_s=10.0, prompt=Fixed(tokens=64), output=Fixed(tokens=4),
                       attention_device=attention_device, attention_devices=2, attention_link=link,
                       attention_placement=placement)
    return DesignPoint(model="llama-3-70b", device=device, batch=spec.max_seqs, prompt=0, output=0, serving=spec,
                       execution="engine", tp=tp, knobs=(("node_link", node_link),) if node_link else ())


@pytest.mark.parametrize(("device", "attention_device", "node_link", "crossing", "bandwidth_Bps"), [
    # 8 H100s and 2 H20s are 10 devices, more than one HGX board's 8 on NVLink 4: the H100s' own node link, NDR,
    # whose 50 GB/s both ends' PCIe 5 x16 (63 GB/s) pass.
    ("h100-sxm", "h20", "", "infiniband-ndr", NDR_Bps),
    # 8 A100s and 2 H20s over NVLink 3's boards of 8, the nodes joined by NDR: the A100s' PCIe 4 x16 caps it.
    ("a100-sxm-80gb", "h20", "infiniband-ndr", "infiniband-ndr", PCIE4_X16_Bps),
    # No --node-link: each end's own, the H100s' NDR and the A100s' HDR (DGX A100: 200 Gb/s a GPU). A path runs at its
    # slowest link (NCCL src/graph/paths.cc: a path's bw is the least of its links'), whichever end it is: HDR's
    # 25 GB/s, under both ends' PCIe.
    ("h100-sxm", "a100-sxm-80gb", "", "infiniband-hdr", HDR_Bps),
    ("a100-sxm-80gb", "h20", "", "infiniband-hdr", HDR_Bps),
])
def test_attention_devices_beyond_one_board_are_reached_over_the_node_link(evaluator, device, attention_device,
                                                                           node_link, crossing, bandwidth_Bps):
    """64 tokens' query, key and value leave the model's devices over the 2 ports of the attention devices (a port per
    device, min(tp, 2)): 64 x 20,480 / 2 = 655,360 B a port a layer, at the node link's rate and one hop."""
    link = "nvlink4" if device == "h100-sxm" else "nvlink3"
    pool = evaluator.attention_pool(_point(device, 8, link, node_link, attention_device=attention_device),
                                    NumericFormat())
    assert [link.spec.name for link in pool.links] == [crossing]
    out_s, _ = pool.send_s(64)
    assert out_s == pytest.approx(64 * TOKEN_OUT_B / 2 / bandwidth_Bps + NET_HOP_S)


def test_attention_devices_within_one_board_keep_the_attention_link(evaluator):
    """4 H100s and 2 H20s fit one board of 8: NVLink 4 itself."""
    pool = evaluator.attention_pool(_point("h100-sxm", 4, "nvlink4"), NumericFormat())
    assert [link.spec.name for link in pool.links] == ["nvlink4"]


@pytest.mark.parametrize(("tp", "link", "placement", "read_by"), [
    (8, "nvlink4", "apart", [READER]),  # 8 + 2 beyond a board of 8
    (4, "nvlink4", "apart", []),  # 4 + 2 within it
    (8, None, "apart", []),  # Lamina's RoCE (a network) joins any number: the crossing is the attention link
    (8, "pcie4-x16", "hybrid", []),  # a hybrid pool's attention device is its devices' own host, in their node
])
def test_what_reads_the_node_link_counts_attention_devices_on_other_nodes(tp, link, placement, read_by):
    spec = _point("h100-sxm", tp, link, placement=placement).serving
    assert node_link_readers("h100-sxm", "", tp, 1, (), spec) == read_by


def test_the_run_header_says_the_attention_devices_cross_the_node_link(tmp_path, capsys):
    """8 H100s of a model of 8 heads and 2 H20s on NVLink 4: the header names NDR (--node-link) as the attention
    devices' link, why, and the node link's reader (where it said the node link was unread)."""
    model = write_tiny_model(tmp_path, TINY_CONFIG | {"num_attention_heads": 8, "num_key_value_heads": 8})
    assert main(["run", "--model", model, "--device", "h100-sxm", "--tp", "8", "--serving", "--requests", "4",
                 "--rate", "4", "--prompt", "32", "--output", "4", "--attention-device", "h20", "--attention-devices",
                 "2", "--attention-link", "nvlink4", "--node-link", "infiniband-ndr"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert ("per replica over infiniband-ndr (50 GB/s a device), the node link: its 8 and 2 devices are more than one "
            "domain of nvlink4 joins (8), on its datasheet alpha-beta model") in header, header
    assert f"--node-link infiniband-ndr (50 GB/s a device) read by {READER}" in header, header


def test_the_run_header_names_the_slower_of_the_two_ends_node_links(tmp_path, capsys):
    """8 H100s and 2 A100s on NVLink 4 with no --node-link: the header names HDR, the A100s' node link, at its 25 GB/s
    (200 Gb/s / 8), as the slower of the two ends' (the H100s' NDR)."""
    model = write_tiny_model(tmp_path, TINY_CONFIG | {"num_attention_heads": 8, "num_key_value_heads": 8})
    assert main(["run", "--model", model, "--device", "h100-sxm", "--tp", "8", "--serving", "--requests", "4",
                 "--rate", "4", "--prompt", "32", "--output", "4", "--attention-device", "a100-sxm-80gb",
                 "--attention-devices", "2", "--attention-link", "nvlink4"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert ("per replica over infiniband-hdr (25 GB/s a device), the slower of the node links, h100-sxm's "
            "infiniband-ndr and a100-sxm-80gb's infiniband-hdr: its 8 and 2 devices are more than one domain of "
            "nvlink4 joins (8)") in header, header


def test_a_sweep_keeps_the_node_link_its_attention_devices_cross(tmp_path):
    """tp 4 and 8 H100s with 2 H20s on NVLink 4: the node link is read at tp 8 alone (8 + 2 beyond a board), so that
    point keeps it, the tp 4 point is the point without it, and no note calls it one that changes nothing."""
    from explore.sweep import load_sweep
    from explore.sweep_notes import sweep_notes

    path = tmp_path / "apart.yaml"
    path.write_text("name: apart\nmodel: llama-2-7b\ndevice: h100-sxm\nexecution: graphs\n"
                    "serving: {requests: 1, rate: 1, prompt: 32, output: 4, attention_device: h20, "
                    "attention_devices: 2, attention_link: nvlink4}\n"
                    "parallel: {tp: [4, 8], node_link: roce-400g}\n")
    sweep = load_sweep(str(path))
    assert [(point.tp, point.knob("node_link")) for point in sweep.points()] == [(4, ""), (8, "roce-400g")]
    notes = sweep_notes(sweep)
    assert not any("roce-400g changes nothing:" in note for note in notes), notes
