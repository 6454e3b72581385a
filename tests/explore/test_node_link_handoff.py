"""A user's node_link is the fabric between their nodes: a prefill pool hands its KV to the decode pool over it where
kv_link is left out (ServingSpec.handoff_link), on one device as on many; a point without node_link is keyed and
priced as before (its pools' devices' node link, hw_models/link.py default_node_link)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.sweep import load_sweep
from explore.sweep_notes import sweep_notes
from kernels.formats import NumericFormat
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import TINY_CONFIG, write_tiny_model
from workloads.requests import Fixed

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

# roce-400g (hw_models/presets/links/roce-400g.yaml): Lamina's measured 45.7 GB/s and 16.5 us one way.
ROCE_GBPS, ROCE_LATENCY_S = 45.7, 16.5e-6
# An A100's own PCIe 4 x16 to its NIC, 16 GT/s x 16 lanes x 128/130 / 8 (PCI-SIG): below RoCE's 45.7 GB/s.
A100_PCIE_GBPS = 31.5


def _point(model: str, device: str, node_link: str = "", kv_link: str | None = None, prefill: int = 1,
           tp: int = 1) -> DesignPoint:
    """One request of 32 prompt and 4 output tokens, a prefill replica (or none) handing its KV to a decode replica."""
    serving = ServingSpec(requests=1, rate_per_s=1.0, prompt=Fixed(tokens=32), output=Fixed(tokens=4),
                          prefill_replicas=prefill, kv_link=kv_link)
    return DesignPoint(model=model, device=device, batch=1, prompt=0, output=0, serving=serving, execution="graphs",
                       tp=tp, knobs=(("node_link", node_link),) if node_link else ())


def test_a_left_out_kv_link_hands_kv_over_the_users_node_link(tmp_path, tiny_evaluator):
    """A100 pools (their own node link HDR) with node_link roce-400g hand the prompt's KV over RoCE, each A100 reaching
    its NIC over its PCIe 4 x16 (31.5 GB/s, below RoCE's 45.7): by hand, the tiny model's 32 tokens x 2 layers x 2 KV
    heads x 16 dims x (K, V) x 2 bytes = 8,192 B take 8,192 / 31.5e9 s + 16.5 us = 16.76 us from the first token to the
    decode admission (HDR's would be 3.03 us)."""
    model = write_tiny_model(tmp_path)
    head_dim = TINY_CONFIG["hidden_size"] // TINY_CONFIG["num_attention_heads"]
    kv_B = 32 * TINY_CONFIG["num_hidden_layers"] * TINY_CONFIG["num_key_value_heads"] * head_dim * 2 * 2
    assert kv_B == 8192
    records = tiny_evaluator.evaluate(_point(model, "a100-sxm-80gb", "roce-400g")).result.records
    handover_s = records.decode_admitted_s[0] - records.first_token_s[0]
    assert handover_s == pytest.approx(kv_B / (min(ROCE_GBPS, A100_PCIE_GBPS) * 1e9) + ROCE_LATENCY_S, rel=1e-9)


def test_a_named_kv_link_wins_over_the_node_link():
    """kv_link names the handover's fabric itself; node_link stands for it only where it is left out."""
    spec = _point("llama-2-7b", "a100-sxm-80gb", kv_link="infiniband-ndr").serving
    assert spec.handoff_link("a100-sxm-80gb", "roce-400g") == "infiniband-ndr"
    assert spec.handoff_link("a100-sxm-80gb", "") == "infiniband-ndr"
    assert _point("llama-2-7b", "a100-sxm-80gb").serving.handoff_link("a100-sxm-80gb", "roce-400g") == "roce-400g"


def test_keys_with_and_without_the_node_link():
    """A left-out kv_link beside node_link X is the design naming kv_link X (one key), another than the point without
    node_link; a point without node_link keeps the key of its pools' own link named (DGX A100: HDR, DGX H100: NDR),
    the key stored points have."""
    unset = _point("llama-2-7b", "a100-sxm-80gb", "roce-400g")
    assert unset.point_id == _point("llama-2-7b", "a100-sxm-80gb", "roce-400g", kv_link="roce-400g").point_id
    assert unset.point_id != _point("llama-2-7b", "a100-sxm-80gb", "roce-400g", kv_link="infiniband-hdr").point_id
    for device, own in (("a100-sxm-80gb", "infiniband-hdr"), ("h100-sxm", "infiniband-ndr")):
        assert _point("llama-2-7b", device).point_id == _point("llama-2-7b", device, kv_link=own).point_id
        assert _point("llama-2-7b", device).point_id != _point("llama-2-7b", device, "roce-400g").point_id


def _sweep(tmp_path, prefill: int):
    path = tmp_path / f"sweep-{prefill}.yaml"
    path.write_text("name: nodes\nmodel: llama-2-7b\ndevice: a100-sxm-80gb\nexecution: graphs\n"
                    f"serving: {{requests: 1, rate: 1, prompt: 32, output: 4, prefill_replicas: {prefill}}}\n"
                    "parallel: {node_link: ['', infiniband-hdr, roce-400g]}\n")
    return load_sweep(path)


def test_a_disaggregated_sweep_point_on_one_device_keeps_its_node_link(tmp_path):
    """With a prefill pool on one device a point, each node link is a design of its own (the handover's fabric), the
    one naming the A100s' own HDR the point without it; without a prefill pool the three are one design, the point
    without a node link."""
    points = {point.knob("node_link"): point for point in _sweep(tmp_path, 1).points()}
    ids = {link: point.point_id for link, point in points.items()}
    assert set(ids) == {"", "infiniband-hdr", "roce-400g"}
    assert len(set(ids.values())) == 3
    # The point without a node link is keyed as before: as the point naming its A100s' own HDR as kv_link.
    assert ids[""] == replace(points[""], serving=replace(points[""].serving, kv_link="infiniband-hdr")).point_id
    # The one with roce-400g hands KV over it: the point naming it as kv_link too.
    roce = points["roce-400g"]
    assert ids["roce-400g"] == replace(roce, serving=replace(roce.serving, kv_link="roce-400g")).point_id
    served_whole = [point for point in _sweep(tmp_path, 0).points()]
    assert {point.knob("node_link") for point in served_whole} == {""}
    assert len({point.point_id for point in served_whole}) == 1


def test_no_note_calls_a_disaggregated_sweeps_node_link_idle(tmp_path):
    """A node link with a prefill pool on one device is read by the handover: no note says it changes nothing; served
    whole, it is still noted idle."""
    path = tmp_path / "one.yaml"
    for prefill, noted in ((1, False), (0, True)):
        path.write_text("name: nodes\nmodel: llama-2-7b\ndevice: a100-sxm-80gb\nexecution: graphs\n"
                        f"serving: {{requests: 1, rate: 1, prompt: 32, output: 4, prefill_replicas: {prefill}}}\n"
                        "parallel: {node_link: roce-400g}\n")
        notes = sweep_notes(load_sweep(path))
        assert any("node_link" in note and "nothing" in note for note in notes) == noted, notes


def test_run_takes_a_node_link_with_a_prefill_pool_and_refuses_it_without_in_one_line(tmp_path, capsys):
    """explore run on one device: --node-link beside --prefill-replicas is the handover's fabric, said in the header;
    without a prefill pool it changes nothing and is refused in one line, exit 2."""
    model = write_tiny_model(tmp_path)
    base = ["run", "--model", model, "--device", "a100-sxm-80gb", "--execution", "graphs", "--serving",
            "--requests", "1", "--rate", "1", "--prompt", "32", "--output", "4", "--node-link", "roce-400g"]
    assert main([*base, "--prefill-replicas", "1"]) == 0
    # RoCE's 45.7 GB/s a port behind the A100's PCIe 4 x16 (16 GT/s x 16 x 128/130 / 8 = 31.5 GB/s).
    assert ("handing KV over roce-400g (45.7 GB/s a device, capped at 31.5 GB/s by a100-sxm-80gb's pcie4-x16) to 1 "
            "decode replica") in capsys.readouterr().out
    assert main(base) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("explore: error: --node-link: found 'roce-400g'") \
        and "--prefill-replicas" in err, err


def test_each_pool_spans_nodes_over_its_own_devices_link_unless_the_user_names_one(tiny_evaluator):
    """Pools of different devices, 16 a replica (two nodes of an 8-GPU board), without node_link: the H100 prefill
    pool's nodes joined by NDR (DGX H100), the A100 decode pool's by HDR (DGX A100), the handover over the slower,
    HDR; with node_link roce-400g, every pool's nodes and the handover over it (one fabric, the user's)."""
    from explore.evaluate import pool_point, serving_pools

    def links(node_link: str) -> tuple[list[str], str]:
        point = replace(_point("llama-2-7b", "a100-sxm-80gb", node_link, tp=16),
                        serving=replace(_point("llama-2-7b", "a100-sxm-80gb").serving, prefill_device="h100-sxm"))
        pools = [tiny_evaluator.point_device(pool_point(point, name, own, node_link))
                 for _, _, name, own, node_link in serving_pools(point)]
        return [pool.node_link.spec.name for pool in pools], point.serving.handoff_link(point.device, node_link)

    assert links("") == (["infiniband-ndr", "infiniband-hdr"], "infiniband-hdr")
    assert links("roce-400g") == (["roce-400g", "roce-400g"], "roce-400g")


def test_a_kv_store_is_reached_over_the_users_node_link(evaluator):
    """A replica's KV store fetches cross the network between machines (Mooncake's store over RDMA): the user's
    node_link where the point reads it (tp 2 on A100s, whose own node link is HDR, 25 GB/s a port), each of the two
    devices at its PCIe 4 x16's 31.5 GB/s (below roce-400g's 45.7), 63 GB/s in all by hand; without node_link, HDR's
    2 x 25 = 50 GB/s (below the PCIe link)."""
    def store_point(node_link: str) -> DesignPoint:
        serving = ServingSpec(requests=1, rate_per_s=1.0, prompt=Fixed(tokens=32), output=Fixed(tokens=4),
                              prefix_tokens=16, kv_store_GB=8.0)
        return DesignPoint(model="llama-2-7b", device="a100-sxm-80gb", batch=1, prompt=0, output=0, serving=serving,
                           execution="graphs", tp=2, knobs=(("node_link", node_link),) if node_link else ())

    def fetch_Bps(point: DesignPoint) -> float:
        return evaluator._kv_store_Bps(point, evaluator.point_device(point))

    assert fetch_Bps(store_point("roce-400g")) == pytest.approx(2 * A100_PCIE_GBPS * 1e9, rel=1e-12)
    assert fetch_Bps(store_point("")) == pytest.approx(2 * 25e9, rel=1e-12)


@pytest.mark.parametrize(("device", "GBps"), [("a100-sxm-80gb", A100_PCIE_GBPS), ("h100-sxm", ROCE_GBPS)])
def test_attention_devices_are_reached_at_most_at_the_model_devices_pcie_rate(evaluator, device, GBps):
    """Lamina's attention link (roce-400g, 45.7 GB/s a port) leaves each model device through its NIC: an A100's PCIe
    4 x16 (31.5 GB/s) caps it, an H100's PCIe 5 x16 (63.0) does not, nor does the H20 attention devices' (PCIe 5)."""
    serving = ServingSpec(requests=1, rate_per_s=1.0, prompt=Fixed(tokens=32), output=Fixed(tokens=4),
                          attention_device="h20", attention_devices=2)
    point = DesignPoint(model="llama-2-7b", device=device, batch=1, prompt=0, output=0, serving=serving,
                        execution="graphs", tp=2)
    assert [link.spec.bandwidth_GBps for link in evaluator.attention_pool(point, NumericFormat()).links] == [GBps]
