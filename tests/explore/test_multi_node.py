"""Systems that span nodes end to end (hw_models/nodes.py): 16 H100s are two HGX boards joined by InfiniBand, what
`explore run` says and prices, and what a sweep's node link changes."""

from __future__ import annotations

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.sweep import load_sweep

LLAMA_70B_DECODE = dict(model="llama-3-70b", device="h100-sxm", batch=64, prompt=1024, output=16, execution="engine")


def test_sixteen_h100s_on_two_nodes_decode_slower_than_in_one_nvlink_domain(evaluator):
    """Llama-3-70B decoding a batch of 64 on tp 16: two nodes of 8 over NDR are slower than the same 16 in one NVLink
    domain (a what-if link.domain_devices 16, how 16 H100s were priced before nodes), and their all-reduces take
    longer; the NVLink domain's number is unchanged by the node link."""
    two_nodes = evaluator.evaluate(DesignPoint(**LLAMA_70B_DECODE, tp=16)).metrics
    one_domain = evaluator.evaluate(DesignPoint(**LLAMA_70B_DECODE, tp=16,
                                                link_overrides=(("domain_devices", 16),))).metrics
    roce = evaluator.evaluate(DesignPoint(**LLAMA_70B_DECODE, tp=16, link_overrides=(("domain_devices", 16),),
                                          knobs=(("node_link", "roce-400g"),))).metrics
    assert two_nodes["tpot_s"] > one_domain["tpot_s"]
    assert two_nodes["time_communication_s"] > one_domain["time_communication_s"]
    assert roce["tpot_s"] == one_domain["tpot_s"]


def test_a_slower_node_link_is_never_faster(evaluator):
    ndr = evaluator.evaluate(DesignPoint(**LLAMA_70B_DECODE, tp=16)).metrics
    ethernet = evaluator.evaluate(DesignPoint(**LLAMA_70B_DECODE, tp=16,
                                              knobs=(("node_link", "ethernet-100g"),))).metrics
    assert ethernet["tpot_s"] > ndr["tpot_s"]


# The runs below take LLAMA_70B_DECODE's batch, so they price the traces the tests above capture.
def test_run_says_its_system_spans_two_nodes(capsys):
    assert main(["run", "--model", "llama-3-70b", "--device", "h100-sxm", "--tp", "16", "--execution", "engine",
                 "--batch", "64", "--prompt", "1024", "--output", "16"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "spans 2 nodes of 8 joined by infiniband-ndr" in header, header
    assert "no measured collectives on it" in header, header


def test_run_within_one_node_says_its_node_link_is_unread(capsys):
    assert main(["run", "--model", "llama-3-70b", "--device", "h100-sxm", "--tp", "8", "--execution", "engine",
                 "--batch", "64", "--prompt", "1024", "--output", "16", "--node-link", "roce-400g"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "--node-link roce-400g unread: the 8 devices fit one node of nvlink4" in header, header


def test_a_node_link_on_one_device_is_refused_in_one_line(capsys):
    assert main(["run", "--model", "llama-3-70b", "--device", "h100-sxm", "--node-link", "roce-400g"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--node-link" in err, err


def test_a_sweep_point_within_one_node_is_the_point_without_its_node_link(tmp_path):
    """tp 8 x two node links are one design (the point without it); tp 16's two are two."""
    path = tmp_path / "nodes.yaml"
    path.write_text("name: nodes\nmodel: llama-3-70b\ndevice: h100-sxm\nworkload: {batch: 8, prompt: 256, output: 4}\n"
                    "parallel: {tp: [8, 16], node_link: [infiniband-ndr, roce-400g]}\n")
    sweep = load_sweep(path)
    points = list(sweep.points())
    ids = {(point.tp, point.knob("node_link")): point.point_id for point in points}
    assert ids[(8, "")] == DesignPoint(model="llama-3-70b", device="h100-sxm", batch=8, prompt=256, output=4,
                                       tp=8).point_id
    assert len({point.point_id for point in points if point.tp == 8}) == 1
    assert ids[(16, "infiniband-ndr")] != ids[(16, "roce-400g")]


def test_a100s_span_nodes_over_hdr_and_are_never_faster_than_over_ndr(evaluator):
    """A100 nodes join over HDR, 200 Gb/s a GPU (DGX A100 user guide), half NDR's rate: 16 A100s decoding Llama-3-70B
    on their default node link are never faster than over NDR."""
    a100 = dict(LLAMA_70B_DECODE, device="a100-sxm-80gb")
    hdr = evaluator.evaluate(DesignPoint(**a100, tp=16)).metrics
    ndr = evaluator.evaluate(DesignPoint(**a100, tp=16, knobs=(("node_link", "infiniband-ndr"),))).metrics
    assert hdr["tpot_s"] > ndr["tpot_s"]


def test_a_node_link_file_that_does_not_load_says_why_in_one_line(tmp_path, capsys):
    """A link YAML with a negative bandwidth, named by --node-link or a sweep's node_link, is refused with the file's
    own line and key (as --link says it), not only that the path is not allowed."""
    bad = tmp_path / "ib.yaml"
    bad.write_text("name: ib\ndescription: what-if\nbandwidth_GBps: -5\nlatency_us: 2.7\n")
    assert main(["run", "--model", "llama-3-70b", "--device", "h100-sxm", "--tp", "16", "--node-link", str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--node-link" in err and f"{bad}:3: bandwidth_GBps" in err, err
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("name: n\nmodel: llama-3-70b\ndevice: h100-sxm\nworkload: {batch: 1, prompt: 64, output: 4}\n"
                     f"parallel: {{tp: 16, node_link: [{bad}]}}\n")
    assert main(["check", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"{sweep}:5: node_link" in err and f"{bad}:3: bandwidth_GBps" in err, err


@pytest.mark.parametrize("bad", ["infiniband-nd", "nvme-pcie4-x4"])
def test_a_sweeps_node_link_that_is_no_link_is_refused_though_no_point_spans_nodes(tmp_path, capsys, bad):
    """A misspelled node link, or a storage tier, is refused in one line as --node-link refuses it, though tp 8 fits
    one node (where a point drops its node link): not noted as a link that changes nothing."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("name: n\nmodel: llama-3-70b\ndevice: h100-sxm\nworkload: {batch: 1, prompt: 64, output: 4}\n"
                     f"parallel: {{tp: 8, node_link: [{bad}]}}\n")
    assert main(["check", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"{sweep}:5: node_link: found '{bad}'" in err, err


def test_a_node_link_no_point_reads_is_noted(tmp_path):
    """A sweep naming one node link where every point fits one node (tp 4 x pp 2 = 8 H100s) is told that it changes
    nothing; one whose tp 16 spans two nodes is not."""
    from explore.sweep_notes import sweep_notes

    def notes(tp: int) -> list[str]:
        path = tmp_path / f"nodes-{tp}.yaml"
        path.write_text("name: nodes\nmodel: llama-3-70b\ndevice: h100-sxm\nworkload: {batch: 8, prompt: 256, "
                        f"output: 4}}\nparallel: {{tp: {tp}, pp: 2, node_link: roce-400g}}\n")
        return sweep_notes(load_sweep(path))

    assert any("node_link roce-400g changes nothing" in note for note in notes(4))
    assert not any("node_link" in note for note in notes(16))


# A link YAML joining 16 H100s in one NVLink domain (a what-if, as link.domain_devices 16 above), beside which a fleet's
# 16 A100s span two nodes of their own link, NVLink 3 (eight a DGX A100 board: nvlink3.yaml's source).
NVLINK_16 = ("name: nvlink4-16\ndescription: what-if\nbandwidth_GBps: 450\nlatency_us: 0.6\npeer_devices: 8\n"
             "domain_devices: 16\nsource: what-if, nvlink4 with a domain of 16 GPUs\n")


def _fleet_sweep(tmp_path, serving: str) -> str:
    (tmp_path / "nvlink16.yaml").write_text(NVLINK_16)
    path = tmp_path / "fleet.yaml"
    path.write_text(f"name: f\nmodel: llama-3-70b\ndevice: h100-sxm\nexecution: graphs\nparallel: {{tp: 16, link: "
                    f"{tmp_path / 'nvlink16.yaml'}, node_link: [infiniband-ndr, roce-400g]}}\nserving:\n  requests: 6\n"
                    f"  rate: 2\n  prompt: 32\n  output: 4\n{serving}")
    return path


def test_a_fleet_whose_mixed_replicas_span_nodes_keeps_its_node_link(tmp_path):
    """16 H100s in one domain beside one replica of 16 A100s on two nodes: the A100s' collectives cross the node link,
    so the two node links are two designs, each pricing the A100s over its own; without the fleet (mixed_replicas 0)
    nothing reads it and they are one design. The idle-knob note counts only the latter as repeated."""
    from explore.evaluate import Evaluator, pool_point
    from explore.sweep_notes import idle_what_if_note

    sweep = load_sweep(_fleet_sweep(tmp_path, "  mixed_device: a100-sxm-80gb\n  mixed_replicas: [0, 1]\n"))
    points = list(sweep.points())
    fleet = [point for point in points if point.serving.mixed_replicas == 1]
    assert len({point.point_id for point in points if point.serving.mixed_replicas == 0}) == 1
    assert [point.knob("node_link") for point in fleet] == ["infiniband-ndr", "roce-400g"]
    evaluator = Evaluator()
    assert [evaluator.point_device(pool_point(point, "a100-sxm-80gb")).node_link.spec.name for point in fleet] == [
        "infiniband-ndr", "roce-400g"]
    assert idle_what_if_note(sweep).startswith("1 of 4 points"), idle_what_if_note(sweep)


def test_a_prefill_pools_node_link_is_not_noted_as_changing_nothing(tmp_path):
    """A prefill pool hands each request's KV over the node link (kv_link left out), so its two node links are two
    designs though its devices fit one node, and the idle-knob note does not call them one."""
    from explore.sweep_notes import idle_what_if_note

    sweep = load_sweep(_fleet_sweep(tmp_path, "  prefill_replicas: 1\n"))
    assert len({point.point_id for point in sweep.points()}) == 2
    assert "node_link" not in idle_what_if_note(sweep), idle_what_if_note(sweep)


def test_a_kv_store_fetched_over_the_node_link_keeps_it_within_one_node(tmp_path):
    """Two H100s of one node beside a KV store fetched at the node link's NIC rate (kv_store_GBps left out): the store
    is reached across machines, so NDR's 50 GB/s and 100 GbE's 12.5 are two designs, as `explore run` prices them; a
    store at a kv_store_GBps of its own reads no node link, and they are one. The idle-knob note says so."""
    from explore.sweep_notes import idle_what_if_note

    def sweep(store: str):
        path = tmp_path / "store.yaml"
        path.write_text("name: s\nmodel: llama-3-8b\ndevice: h100-sxm\nexecution: engine\nparallel: {tp: 2, node_link: "
                        "[infiniband-ndr, ethernet-100g]}\nserving:\n  requests: 6\n  rate: 2\n  prompt: 64\n"
                        f"  output: 4\n  prefix_tokens: 32\n  replicas: 2\n  kv_store_GB: 8\n{store}")
        return load_sweep(path)

    fetched = sweep("")
    assert [point.knob("node_link") for point in fetched.points()] == ["infiniband-ndr", "ethernet-100g"]
    assert "node_link" not in idle_what_if_note(fetched)
    own = sweep("  kv_store_GBps: 40\n")
    assert len({point.point_id for point in own.points()}) == 1
    assert "node_link changes nothing" in idle_what_if_note(own)


@pytest.mark.parametrize("node_links", ["[infiniband-ndr, roce-400g]", "roce-400g"])
def test_a_link_what_if_that_splits_the_devices_over_nodes_is_not_noted_idle(tmp_path, node_links):
    """Eight H100s on a what-if NVLink domain of four (link.domain_devices 4) span two nodes, so each node link is a
    design of its own, and neither note says the node link changes nothing (both once judged the link without its
    what-ifs: one node of eight)."""
    from explore.sweep_notes import sweep_notes

    path = tmp_path / "domain4.yaml"
    path.write_text("name: d\nmodel: llama-3-70b\ndevice: h100-sxm\nworkload: {batch: 8, prompt: 256, output: 4}\n"
                    f"parallel: {{tp: 8, node_link: {node_links}}}\noverrides: {{link.domain_devices: 4}}\n")
    sweep = load_sweep(path)
    assert all(point.knob("node_link") for point in sweep.points())
    assert not any("node_link" in note for note in sweep_notes(sweep)), sweep_notes(sweep)
