"""What reads a point's node link (explore/sweep_serving.py node_link_readers), the one rule a sweep's points, and a
run's header, judge a node link by."""

from __future__ import annotations

from dataclasses import replace

import pytest

from explore.cli import main
from explore.sweep_serving import node_link_readers
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import write_tiny_model


@pytest.mark.parametrize("tp, serving, read_by", [
    (2, None, []),  # two H100s of an 8-GPU NVLink board: one node
    (16, None, ["its 16 devices, which span nodes"]),  # 16 over boards of 8
    (2, ServingSpec(prefill_replicas=1), ["the prefill pool's KV handover"]),
    (2, ServingSpec(prefill_replicas=1, kv_link="roce-400g"), []),  # the KV crosses the kv_link it names
    (2, ServingSpec(prefix_tokens=256, kv_store_GB=64), ["the KV store's fetches"]),
    (2, ServingSpec(prefix_tokens=256, kv_store_GB=64, kv_store_GBps=40), []),  # fetched at its own rate
])
def test_what_reads_the_node_link(tp, serving, read_by):
    assert node_link_readers("h100-sxm", "", tp, 1, (), serving) == read_by


def test_a_fleet_whose_replicas_span_nodes_reads_it_where_the_point_does_not():
    """16 H100s on a what-if NVLink of 16 fit one domain; 16 A100s over nvlink3's boards of 8 span two nodes."""
    fleet = ServingSpec(mixed_device="a100-sxm-80gb", mixed_replicas=1)
    assert node_link_readers("h100-sxm", "", 16, 1, (("domain_devices", 16),), fleet) == [
        "the a100-sxm-80gb replicas, which span nodes"]
    assert node_link_readers("h100-sxm", "", 16, 1, (("domain_devices", 16),), ServingSpec()) == []


def test_a_prefill_pool_whose_devices_span_nodes_reads_it_where_the_point_does_not():
    """16 H100s on a what-if NVLink of 16 fit one domain; an A100 prefill pool's 16 over nvlink3's boards of 8 span two
    nodes, joined by the point's node link unless the pool names its own (its KV crossing a kv_link either way)."""
    one_node = (("domain_devices", 16),)
    split = ServingSpec(prefill_replicas=1, prefill_device="a100-sxm-80gb", kv_link="roce-400g")
    assert node_link_readers("h100-sxm", "", 16, 1, one_node, split) == [
        "the a100-sxm-80gb prefill replicas, which span nodes"]
    assert node_link_readers("h100-sxm", "", 16, 1, one_node, replace(split, prefill_node_link="infiniband-hdr")) == []
    assert node_link_readers("h100-sxm", "", 2, 1, (), split) == []  # two A100s: one node


def test_a_sweep_keeps_the_node_links_a_prefill_pool_spans_its_nodes_over(tmp_path, tiny_evaluator):
    """The points above as a sweep of two node links: two designs, the A100 prefill pool's two nodes joined by each
    (not by the A100s' own InfiniBand HDR, as when the point dropped a node link it judged unread), and no note calling
    them one design."""
    from explore.evaluate import pool_point, serving_pools
    from explore.sweep import load_sweep
    from explore.sweep_notes import sweep_notes

    path = tmp_path / "split.yaml"
    path.write_text("name: split\nmodel: llama-2-7b\ndevice: h100-sxm\nexecution: graphs\n"
                    "parallel: {tp: 16, node_link: [infiniband-ndr, ethernet-100g]}\n"
                    "overrides: {link.domain_devices: 16}\n"
                    "serving: {requests: 1, rate: 1, prompt: 32, output: 4, prefill_replicas: 1, "
                    "prefill_device: a100-sxm-80gb, kv_link: roce-400g}\n")
    sweep = load_sweep(str(path))
    points = list(sweep.points())
    assert [point.knob("node_link") for point in points] == ["infiniband-ndr", "ethernet-100g"]
    assert len({point.point_id for point in points}) == 2
    prefill_links = []
    for point in points:
        (_, _, name, own, node_link), _ = serving_pools(point)
        prefill = tiny_evaluator.point_device(pool_point(point, name, own, node_link))
        assert prefill.nodes == 2
        prefill_links.append(prefill.node_link.spec.name)
    assert prefill_links == ["infiniband-ndr", "ethernet-100g"]
    assert not any("node_link" in note for note in sweep_notes(sweep)), sweep_notes(sweep)


def test_a_run_says_a_kv_store_reads_its_node_link(tmp_path, capsys):
    """Two devices within one node, a KV store fetched at the node link's NIC rate: the header names the reader where
    it said the node link was unread."""
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--tp", "2", "--serving", "--requests", "4",
                 "--rate", "4", "--prompt", "32", "--output", "4", "--prefix-tokens", "16", "--kv-store-GB", "1",
                 "--node-link", "ethernet-100g"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "--node-link ethernet-100g (12.5 GB/s a device) read by the KV store's fetches" in header, header
    assert "unread" not in header, header


def test_a_sweep_whose_kv_crosses_a_named_kv_link_on_one_node_runs_its_node_links_once(tmp_path):
    """Two devices a replica (one node), a prefill pool handing KV over the kv_link it names: nothing reads the node
    link, so the node links listed are one design, the point without one."""
    from explore.sweep import load_sweep

    path = tmp_path / "kv.yaml"
    path.write_text("name: kv\nmodel: llama-2-7b\ndevice: h100-sxm\nexecution: graphs\n"
                    "serving: {requests: 1, rate: 1, prompt: 32, output: 4, prefill_replicas: 1, kv_link: roce-400g}\n"
                    "parallel: {tp: 2, node_link: [infiniband-hdr, ethernet-100g]}\n")
    points = list(load_sweep(str(path)).points())
    assert [point.knob("node_link") for point in points] == ["", ""]
    assert len({point.point_id for point in points}) == 1
