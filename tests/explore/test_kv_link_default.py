"""kv_link left out: a prefill pool hands its KV to the decode pool over the pools' devices' node link (A100s: HDR,
hw_models/link.py default_node_link), the slower port where the two pools' differ; keyed as that link, so a point
stored when every pool's default was NDR is not taken for one priced over HDR."""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import write_tiny_model
from workloads.requests import Fixed


def _point(model: str, device: str, kv_link: str | None = None, prefill_device: str = "") -> DesignPoint:
    """One request of 32 prompt and 4 output tokens, a prefill replica handing its KV to a decode replica."""
    serving = ServingSpec(requests=1, rate_per_s=1.0, prompt=Fixed(tokens=32), output=Fixed(tokens=4),
                          prefill_replicas=1, prefill_device=prefill_device, kv_link=kv_link)
    return DesignPoint(model=model, device=device, batch=1, prompt=0, output=0, serving=serving, execution="graphs")


@pytest.mark.parametrize(("device", "prefill_device", "link"), [
    ("a100-sxm-80gb", "", "infiniband-hdr"),  # DGX A100: a ConnectX-6 (HDR) port per GPU
    ("h100-sxm", "", "infiniband-ndr"),  # DGX H100: a ConnectX-7 (NDR) port per GPU, the key stored points have
    ("a100-sxm-80gb", "h100-sxm", "infiniband-hdr"),  # an H100 prefill pool's NDR port sends to an A100's HDR one
    ("h100-sxm", "a100-sxm-40gb", "infiniband-hdr"),
])
def test_the_kv_link_left_out_is_the_pools_node_link(device, prefill_device, link):
    """Left out, the link is the pools' node link: the same design (one key) as the point naming it, another design
    than the point naming the other InfiniBand."""
    other = "infiniband-ndr" if link == "infiniband-hdr" else "infiniband-hdr"
    unset = _point("llama-2-7b", device, prefill_device=prefill_device)
    assert unset.serving.handoff_link(device) == link
    assert unset.point_id == _point("llama-2-7b", device, link, prefill_device).point_id
    assert unset.point_id != _point("llama-2-7b", device, other, prefill_device).point_id


def test_a100_pools_hand_kv_over_hdr(tmp_path, tiny_evaluator):
    """A100 pools left without kv_link take as long from a request's first token to its decode admission as over a
    named infiniband-hdr, longer than over NDR (its port twice HDR's rate, the same latency)."""
    model = write_tiny_model(tmp_path)

    def handover_s(kv_link: str | None) -> float:
        records = tiny_evaluator.evaluate(_point(model, "a100-sxm-80gb", kv_link)).result.records
        return records.decode_admitted_s[0] - records.first_token_s[0]

    assert handover_s(None) == handover_s("infiniband-hdr") > handover_s("infiniband-ndr")
