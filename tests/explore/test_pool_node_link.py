"""A pool's own node link (serving: prefill_node_link, mixed_node_link; ServingSpec.pool_node_link): real clusters mix
fabrics, so a prefill pool or a fleet's mixed replicas may name the link between their nodes; the point's node_link
stays every other pool's, and a pool naming none takes it (else its devices' own)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.evaluate import pool_point, serving_pools
from explore.sweep import load_sweep
from explore.sweep_notes import sweep_notes
from explore.sweep_serving import node_link_readers, pool_node_link_readers
from kernels.shapes import step_shape
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import write_tiny_model
from workloads.requests import Fixed

# The claims here are about rows, columns, messages and times, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

# The link presets' datasheet figures (hw_models/presets/links/*.yaml): GB/s a port, one way latency a step.
NDR_GBPS, HDR_GBPS, ETHERNET_GBPS, ROCE_GBPS = 50.0, 25.0, 12.5, 45.7
NDR_LATENCY_S, HDR_LATENCY_S, ETHERNET_LATENCY_S, ROCE_LATENCY_S = 2.7e-6, 2.7e-6, 2.7e-6, 16.5e-6
# An A100's own PCIe 4 x16 to its NIC, 16 GT/s x 16 lanes x 128/130 / 8 (PCI-SIG): the most it sends over any port.
A100_PCIE_GBPS = 31.5
# The tiny model's KV for 32 tokens: 32 x 2 layers x 2 KV heads x 16 dims x (K, V) x 2 bytes.
KV_32_TOKENS_B = 32 * 2 * 2 * 16 * 2 * 2


def _point(model: str, device: str = "h100-sxm", node_link: str = "", tp: int = 1, link_overrides: tuple = (),
           **serving) -> DesignPoint:
    """Requests of 32 prompt and 4 output tokens, one a second, on the pools `serving` sets."""
    spec = ServingSpec(**{"requests": 1, "rate_per_s": 1.0, "prompt": Fixed(tokens=32), "output": Fixed(tokens=4)}
                       | serving)
    return DesignPoint(model=model, device=device, batch=1, prompt=0, output=0, serving=spec, execution="graphs",
                       tp=tp, link_overrides=link_overrides, knobs=(("node_link", node_link),) if node_link else ())


def _handover_s(evaluator, point: DesignPoint) -> float:
    records = evaluator.evaluate(point).result.records
    return records.decode_admitted_s[0] - records.first_token_s[0]


def test_the_handover_crosses_the_slower_of_the_two_pools_node_links(tmp_path, tiny_evaluator):
    """By hand, the tiny model's 8,192 B of KV: from a prefill pool on Ethernet 100G to H100 decode replicas on their
    own NDR, over Ethernet, 8,192 / 12.5e9 s + 2.7 us = 3.36 us (NDR's would be 2.86 us); from a prefill pool on NDR to
    decode replicas on the point's roce-400g, over RoCE (45.7 GB/s, below NDR's 50), 8,192 / 45.7e9 s + 16.5 us."""
    model = write_tiny_model(tmp_path)
    assert KV_32_TOKENS_B == 8192
    ethernet = _point(model, prefill_replicas=1, prefill_node_link="ethernet-100g")
    assert _handover_s(tiny_evaluator, ethernet) == pytest.approx(
        KV_32_TOKENS_B / (ETHERNET_GBPS * 1e9) + ETHERNET_LATENCY_S, rel=1e-9)
    roce = _point(model, node_link="roce-400g", prefill_replicas=1, prefill_node_link="infiniband-ndr")
    assert _handover_s(tiny_evaluator, roce) == pytest.approx(
        KV_32_TOKENS_B / (ROCE_GBPS * 1e9) + ROCE_LATENCY_S, rel=1e-9)


def test_each_pool_spans_its_nodes_over_its_own_node_link(tiny_evaluator):
    """16 devices a replica (two nodes of an 8-GPU board): with node_link roce-400g, an A100 prefill pool naming HDR
    joins its nodes by HDR and the H100 decode pool by RoCE, the handover over both (HDR's 25 GB/s below RoCE's 45.7,
    its 2.7 us below RoCE's 16.5: neither is the slower on both counts); a fleet's A100 replicas naming Ethernet join
    theirs by it, the point's H100s by RoCE."""
    def pool_links(point: DesignPoint) -> list[str]:
        return [tiny_evaluator.point_device(pool_point(point, name, own, node_link)).node_link.spec.name
                for _, _, name, own, node_link in serving_pools(point)]

    split = _point("llama-2-7b", node_link="roce-400g", tp=16, prefill_replicas=1, prefill_device="a100-sxm-80gb",
                   prefill_node_link="infiniband-hdr")
    assert pool_links(split) == ["infiniband-hdr", "roce-400g"]
    assert split.serving.handoff_links(split.device, "roce-400g") == ("infiniband-hdr", "roce-400g")
    fleet = _point("llama-2-7b", node_link="roce-400g", tp=16, mixed_device="a100-sxm-80gb", mixed_replicas=1,
                   mixed_node_link="ethernet-100g")
    assert pool_links(fleet) == ["roce-400g", "ethernet-100g"]
    # A pool naming none takes the point's, as before pools could name their own.
    assert pool_links(replace(fleet, serving=replace(fleet.serving, mixed_node_link=""))) == ["roce-400g"] * 2


def test_a_pools_all_reduce_across_nodes_crosses_its_own_node_link(tiny_evaluator):
    """Two pools of 16 H100s (two nodes of 8, the same NVLink within each), the prefill pool's nodes on Ethernet 100G,
    the decode pool's on NDR: an all-reduce of 1 MB a device is a reduce-scatter and an all-gather within each node
    (the same in both) around a ring all-reduce of each GPU's eighth, 125,000 B, over the 2 nodes, each port sending
    2 (2 - 1) / 2 of it in 2 steps of 2.7 us on both links. By hand the prefill pool's takes 125,000 / 12.5e9 -
    125,000 / 50e9 = 7.5 us longer."""
    point = _point("llama-2-7b", tp=16, prefill_replicas=1, prefill_node_link="ethernet-100g",
                   node_link="infiniband-ndr")
    prefill, decode = (tiny_evaluator.point_device(pool_point(point, name, own, node_link))
                       for _, _, name, own, node_link in serving_pools(point))
    extra_s = prefill.collective_time_s("all_reduce", 1e6, 16) - decode.collective_time_s("all_reduce", 1e6, 16)
    assert extra_s == pytest.approx(125_000 / (ETHERNET_GBPS * 1e9) - 125_000 / (NDR_GBPS * 1e9), rel=1e-9)


def _slow_link(tmp_path) -> str:
    """A link YAML slower than Ethernet 100G on both counts: 2 GB/s and 10 us a step (a what-if on a node link)."""
    path = tmp_path / "slow-net.yaml"
    path.write_text("name: slow-net\ndescription: a what-if network\nbandwidth_GBps: 2.0\nlatency_us: 10.0\n"
                    "peer_devices: 1\ndomain_devices: null\nsource: a what-if\n")
    return str(path)


def test_a_pool_on_a_slower_node_link_is_never_faster(tmp_path, tiny_evaluator):
    """Node links each no faster than the one before on both bandwidth and latency (NDR, HDR, Ethernet 100G, a 2 GB/s
    link YAML): a prefill pool spanning two nodes (tp 4 over a what-if NVLink of 2) never gets a lower mean TTFT, nor a
    fleet's mixed replicas spanning two nodes (every other request theirs) a lower mean E2E; the slowest is slower."""
    model = write_tiny_model(tmp_path)
    links = ["infiniband-ndr", "infiniband-hdr", "ethernet-100g", _slow_link(tmp_path)]
    spans = dict(tp=4, link_overrides=(("domain_devices", 2),), requests=8)
    ttft = [tiny_evaluator.evaluate(_point(model, prefill_replicas=1, prefill_node_link=link, **spans)
                                    ).metrics["ttft_s"] for link in links]
    e2e = [tiny_evaluator.evaluate(_point(model, mixed_device="h100-sxm", mixed_replicas=1, router="round_robin",
                                          mixed_node_link=link, **spans)).metrics["e2e_s"] for link in links]
    for times in (ttft, e2e):
        assert all(slower >= faster for faster, slower in zip(times, times[1:], strict=False)), times
        assert times[-1] > times[0], times


def test_a_prefill_pool_on_a_slower_link_never_hands_over_faster(tmp_path, tiny_evaluator):
    """Decode replicas on roce-400g (45.7 GB/s, 16.5 us), a prefill pool on NDR, HDR, Ethernet 100G or a 2 GB/s 10 us
    link YAML, each no faster than the one before on both counts: by hand the tiny model's 8,192 B take 8,192 / 45.7e9
    s + 16.5 us = 16.68 us over RoCE, longer than over NDR (2.86 us), HDR (3.03), Ethernet (3.36) or the YAML (14.1):
    each handover takes RoCE's 16.68 us, none faster as its pool's link slows (picking the link of lower bandwidth
    alone handed over HDR's 3.03 us, faster than beside NDR)."""
    model = write_tiny_model(tmp_path)
    roce_s = KV_32_TOKENS_B / (ROCE_GBPS * 1e9) + ROCE_LATENCY_S
    for link in ("infiniband-ndr", "infiniband-hdr", "ethernet-100g", _slow_link(tmp_path)):
        point = _point(model, node_link="roce-400g", prefill_replicas=1, prefill_node_link=link)
        assert _handover_s(tiny_evaluator, point) == pytest.approx(roce_s, rel=1e-9), link


def _sweep(tmp_path, serving: str, parallel: str = "{tp: 16}"):
    path = tmp_path / "pools.yaml"
    path.write_text("name: pools\nmodel: llama-2-7b\ndevice: h100-sxm\nexecution: graphs\n"
                    f"serving: {{requests: 1, rate: 1, prompt: 32, output: 4, {serving}}}\nparallel: {parallel}\n")
    return load_sweep(path)


def test_a_sweep_compares_a_pools_node_links_and_keys_a_point_without_one_as_before(tmp_path):
    """prefill_node_link sweeps like any knob: each link its own design, the first one's column set; where nothing of
    the pool reads it (its two devices in one node, the KV handed over a kv_link), the points are one design, keyed as
    the sweep without it."""
    points = list(_sweep(tmp_path, "prefill_replicas: 1, prefill_node_link: [infiniband-ndr, ethernet-100g]").points())
    assert [p.serving.prefill_node_link for p in points] == ["infiniband-ndr", "ethernet-100g"]
    assert len({p.point_id for p in points}) == 2
    assert points[1].serving.columns()["prefill_node_link"] == "ethernet-100g"
    unread = _sweep(tmp_path, "prefill_replicas: 1, kv_link: roce-400g, prefill_node_link: [infiniband-ndr, "
                              "ethernet-100g]", "{tp: 2}")
    without = _sweep(tmp_path, "prefill_replicas: 1, kv_link: roce-400g", "{tp: 2}")
    assert {p.point_id for p in unread.points()} == {p.point_id for p in without.points()}
    assert len({p.point_id for p in without.points()}) == 1
    assert "prefill_node_link" not in next(iter(without.points())).serving.columns()


def test_a_sweep_notes_a_pools_node_links_that_nothing_reads(tmp_path):
    """Where the prefill pool's two devices fit one node and its KV crosses a kv_link, the listed links are one design
    and a note says why; on 16 devices a replica (two nodes) no note calls them idle."""
    idle = "prefill_node_link changes nothing where the prefill pool's devices fit one node"
    notes = sweep_notes(_sweep(tmp_path, "prefill_replicas: 1, kv_link: roce-400g, prefill_node_link: [infiniband-ndr, "
                                         "ethernet-100g]", "{tp: 2}"))
    assert any(note.startswith("1 of 2 points are another point's design") and idle in note for note in notes), notes
    notes = sweep_notes(_sweep(tmp_path, "prefill_replicas: 1, kv_link: roce-400g, prefill_node_link: [infiniband-ndr, "
                                         "ethernet-100g]"))
    assert not any("prefill_node_link" in note for note in notes), notes


def test_a_pools_node_link_yaml_beside_the_sweep_is_found_from_elsewhere(tmp_path, monkeypatch):
    """A sweep names a link YAML by a path relative to its own folder, as it names a kv_link's: run from another folder
    it is read from there."""
    folder = tmp_path / "study"
    folder.mkdir()
    _slow_link(folder)
    path = folder / "pools.yaml"
    path.write_text("name: pools\nmodel: llama-2-7b\ndevice: h100-sxm\nexecution: graphs\n"
                    "serving: {requests: 1, rate: 1, prompt: 32, output: 4, prefill_replicas: 1, "
                    "prefill_node_link: slow-net.yaml, mixed_replicas: 1, mixed_device: a100-sxm-80gb, "
                    "mixed_node_link: [slow-net.yaml]}\nparallel: {tp: 16}\n")
    monkeypatch.chdir(tmp_path)
    (point,) = load_sweep(str(path)).points()
    assert point.serving.prefill_node_link == point.serving.mixed_node_link == str(folder / "slow-net.yaml")


def test_the_point_wide_node_link_is_unread_by_a_fleet_that_names_its_own():
    """16 H100s on a what-if NVLink of 16 fit one node; the fleet's 16 A100s span two: they read the point's node link
    unless they name their own, which then is what they read."""
    one_node = (("domain_devices", 16),)
    fleet = ServingSpec(mixed_device="a100-sxm-80gb", mixed_replicas=1)
    assert node_link_readers("h100-sxm", "", 16, 1, one_node, fleet) == ["the a100-sxm-80gb replicas, which span nodes"]
    own = replace(fleet, mixed_node_link="infiniband-hdr")
    assert node_link_readers("h100-sxm", "", 16, 1, one_node, own) == []
    assert pool_node_link_readers("mixed", "h100-sxm", "", 16, 1, one_node, own) == ["its 16 devices, which span nodes"]
    prefill = ServingSpec(prefill_replicas=1, prefill_node_link="infiniband-hdr")
    assert pool_node_link_readers("prefill", "h100-sxm", "", 2, 1, (), prefill) == ["its KV handover"]
    assert pool_node_link_readers("prefill", "h100-sxm", "", 2, 1, (), replace(prefill, kv_link="roce-400g")) == []


@pytest.mark.parametrize("serving, needle", [
    ("prefill_replicas: 1, prefill_node_link: nope",
     "pools.yaml:5: serving.prefill_node_link: found 'nope', allowed: a link preset that joins devices"),
    ("prefill_replicas: 1, prefill_node_link: [infiniband-hdr, nvme-pcie4-x4]",
     "pools.yaml:5: serving.prefill_node_link: found 'nvme-pcie4-x4', a storage tier that joins no devices, allowed: a "
     "link preset that joins devices"),
    ("mixed_node_link: infiniband-hdr",
     "pools.yaml:5: serving.mixed_node_link: found 'infiniband-hdr' with no mixed replicas, allowed: with "
     "mixed_replicas >= 1"),
    ("prefill_node_link: infiniband-hdr",
     "pools.yaml:5: serving.prefill_node_link: found 'infiniband-hdr' with no prefill pool, allowed: with "
     "prefill_replicas >= 1"),
])
def test_a_bad_pool_node_link_is_one_line(tmp_path, capsys, serving, needle):
    path = tmp_path / "pools.yaml"
    path.write_text("name: pools\nmodel: llama-2-7b\ndevice: h100-sxm\nexecution: graphs\n"
                    f"serving: {{requests: 1, rate: 1, prompt: 32, output: 4, {serving}}}\nparallel: {{tp: 16}}\n")
    assert main(["check", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert needle in line, line


def test_run_names_a_pools_own_node_link_and_what_reads_it(tmp_path, capsys):
    """explore run's header says the prefill pool's own node link and its reader; a fleet's within one node,
    unread."""
    model = write_tiny_model(tmp_path)
    base = ["run", "--model", model, "--device", "h100-sxm", "--execution", "graphs", "--serving", "--requests", "2",
            "--rate", "1", "--prompt", "32", "--output", "4"]
    assert main([*base, "--prefill-replicas", "1", "--prefill-node-link", "ethernet-100g"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    # Ethernet 100G's 100 Gb/s / 8 a port, below an H100's PCIe 5 x16: no cap.
    assert ("1 prefill replica (h100-sxm, --prefill-node-link ethernet-100g (12.5 GB/s a device) read by its KV "
            "handover) handing KV over ethernet-100g (12.5 GB/s a device)") in header, header
    assert main([*base, "--mixed-replicas", "1", "--mixed-device", "l4", "--mixed-node-link", "ethernet-100g"]) == 0
    assert "--mixed-node-link ethernet-100g unread" in capsys.readouterr().out.splitlines()[0]
    assert main([*base, "--mixed-node-link", "ethernet-100g"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("explore: error: --mixed-node-link: found 'ethernet-100g' with no mixed replicas"), err


# Llama-3-70B (workloads/presets/llama-3-70b.json, its Hugging Face config.json): 80 decoder layers of hidden size
# 8,192, each all-reducing twice under tensor parallelism (after attention's output projection and after the MLP's
# down projection: Megatron-LM's row-parallel layers, vLLM's RowParallelLinear), in bf16.
LLAMA_3_70B_ALL_REDUCES, LLAMA_3_70B_HIDDEN = 2 * 80, 8192
MIXED_NODE_LINK = Path(__file__).resolve().parents[2] / "examples" / "mixed-node-link.yaml"


def test_the_mixed_node_link_example_prices_the_a100_decode_step_by_hand(evaluator):
    """examples/mixed-node-link.yaml: a decode step of 32 sequences on the A100 replica (16 GPUs, two nodes of 8)
    all-reduces 160 times 32 x 8,192 bf16 values a GPU, each a reduce-scatter and an all-gather within each node (the
    same on every node link) around a ring over the 2 nodes of each GPU's eighth, 65,536 B, sent in 2 steps, each GPU
    reaching its NIC over its PCIe 4 x16 at 31.5 GB/s, below NDR's 50 and RoCE's 45.7. By hand, over RoCE instead of
    the point's NDR the step takes 160 x 2 x (16.5 - 2.7) us = 4.416 ms longer (the same 31.5 GB/s on both), over HDR
    160 x (65,536 / 25e9 - 65,536 / 31.5e9) = 0.087 ms; the H100 replica's step, on the point's NDR, is the same at all
    three."""
    eighth_B = 32 * LLAMA_3_70B_HIDDEN * 2 / 8
    shape = step_shape([], [1000] * 32, sampled=32)
    steps = {}
    for point in load_sweep(str(MIXED_NODE_LINK)).points():
        pools = [pool_point(point, name, own, node_link) for _, _, name, own, node_link in serving_pools(point)]
        assert [pool.device for pool in pools] == ["h100-sxm", "a100-sxm-80gb"]
        steps[point.serving.mixed_node_link] = [evaluator.cost_model(pool, pool.numeric_format).price(shape).time_s
                                                for pool in pools]
    assert list(steps) == ["infiniband-ndr", "infiniband-hdr", "roce-400g"]
    assert len({h100 for h100, _ in steps.values()}) == 1, steps

    def ring_s(GBps: float, latency_s: float) -> float:
        return eighth_B / (GBps * 1e9) + 2 * latency_s

    ndr = ring_s(min(NDR_GBPS, A100_PCIE_GBPS), NDR_LATENCY_S)
    rings = {"infiniband-hdr": ring_s(min(HDR_GBPS, A100_PCIE_GBPS), HDR_LATENCY_S),
             "roce-400g": ring_s(min(ROCE_GBPS, A100_PCIE_GBPS), ROCE_LATENCY_S)}
    for link, ring in rings.items():
        assert steps[link][1] - steps["infiniband-ndr"][1] == pytest.approx(
            LLAMA_3_70B_ALL_REDUCES * (ring - ndr), rel=1e-6), link
