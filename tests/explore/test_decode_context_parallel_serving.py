"""Decode context parallelism in serving runs (the dcp knob with serving:): a replica's KV blocks as vLLM's KV manager
counts them, a long-context run holding more sequences at once, a sweep crossing dcp, and what it is refused beside.
The tiny llama (4 query and 2 KV heads of 16 dimensions, 2 layers) on 4 H100s: each KV head on 2 devices, a token's
keys and values 2 layers x 2 x 2 heads x 16 x 2 B = 256 B, held twice over the 4 devices at dcp 1, once at dcp 2."""

from __future__ import annotations

from dataclasses import replace

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from sim.serving_spec import ServingSpec
from workloads.requests import Fixed

TOKEN_B = 2 * 2 * 2 * 16 * 2


def _point(model: str, dcp: int, scheduler: str = "continuous", **serving) -> DesignPoint:
    """24 requests of 1,500 prompt and 100 output tokens, all at once, on 4 H100s each of which a what-if leaves
    0.002 GiB: a replica's KV blocks hold a few of them."""
    spec = ServingSpec(scheduler=scheduler, requests=24, rate_per_s=1000.0, prompt=Fixed(tokens=1500),
                       output=Fixed(tokens=100), max_seqs=64, max_batched_tokens=2048, **serving)
    return DesignPoint(model=model, device="h100-sxm", batch=1, prompt=0, output=0, tp=4, execution="graphs",
                       serving=spec, knobs=(("dcp", dcp),) if dcp > 1 else (),
                       overrides=(("memory.usable_GiB", 0.002),))


@pytest.mark.parametrize("scheduler", ["continuous", "chunked"])
def test_dcp_2_holds_as_many_blocks_of_twice_the_tokens_and_more_sequences_at_once(evaluator, tiny_config,
                                                                                    scheduler):
    """vLLM's KV manager counts blocks of block_size x dcp tokens, as many as a device's memory holds pages of
    block_size (vllm/v1/core/kv_cache_coordinator.py, commit 52b9a57d): a block of 16 tokens x 2 copies x 256 B =
    8,192 B at dcp 1, of 32 tokens x 1 copy x 256 B = 8,192 B at dcp 2, so as many blocks, each of twice the tokens;
    a 1,600-token request takes 100 of them at dcp 1 and 50 at dcp 2, so more run at once."""
    copies, split = (evaluator.evaluate(_point(tiny_config, dcp, scheduler)).result for dcp in (1, 2))
    assert (copies.memory.block_tokens, split.memory.block_tokens) == (16, 32)
    assert copies.memory.kv_block_B == split.memory.kv_block_B == 16 * 2 * TOKEN_B
    assert split.memory.kv_blocks == copies.memory.kv_blocks > 0
    assert split.iterations.batch_size.max() > copies.iterations.batch_size.max()
    assert split.metrics()["preemptions"] <= copies.metrics()["preemptions"]


def test_a_serving_sweep_crosses_dcp(tmp_path, tiny_config, capsys):
    from explore.results import read_results
    from tests.explore.tiny_sweep import write_sweep

    path = write_sweep(tmp_path, f"name: dcp\nmodel: {tiny_config}\ndevice: h100-sxm\nexecution: graphs\n"
                                 "parallel: {tp: 4, dcp: [1, 2]}\nserving:\n  requests: 6\n  prompt: 256\n"
                                 "  output: 8\n  rate: 50\n  scheduler: chunked\n")
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = {int(row["dcp"]): row for row in read_results(tmp_path / "out")}
    assert sorted(rows) == [1, 2] and not any(row["infeasible_reason"] for row in rows.values())
    # The exchanges dcp adds to each decode take link time.
    assert float(rows[2]["time_communication_s"]) > float(rows[1]["time_communication_s"])
    capsys.readouterr()


@pytest.mark.parametrize("change, named", [
    (dict(knobs=(("dcp", 2), ("spec_draft", "ngram"))), "spec_draft: found 'ngram' with dcp 2"),
    (dict(serving=dict(prefill_replicas=1)), "prefill_replicas: found 1 with dcp 2"),
    (dict(serving=dict(mixed_replicas=1, mixed_device="a100-sxm-80gb")), "mixed_replicas: found 1 with dcp 2"),
    (dict(serving=dict(attention_device="h20", attention_devices=2)), "attention_device: found 'h20' with dcp 2"),
    (dict(knobs=(("dcp", 2), ("attention_parallel", "data"))), "attention_parallel: found 'data' with dcp 2"),
    (dict(serving=dict(prefix_attention="cascade", prefix_tokens=64)), "prefix_attention: found 'cascade' with dcp 2"),
])
def test_what_dcp_is_not_modeled_beside_in_serving_is_recorded_unjudged(tiny_config, change, named):
    point = _point(tiny_config, 2)
    if "serving" in change:
        point = replace(point, serving=replace(point.serving, **change["serving"]))
    else:
        point = replace(point, **change)
    assert point.unjudged().startswith(named), point.unjudged()


def test_a_model_of_hybrid_kv_groups_is_refused_with_dcp():
    """gpt-oss's layers alternate a sliding window with full attention: vLLM's hybrid KV coordinator asserts dcp 1."""
    point = DesignPoint(model="gpt-oss-20b", device="h100-sxm", batch=1, prompt=0, output=0, tp=8,
                        serving=ServingSpec(requests=4), knobs=(("dcp", 2),))
    assert point.unjudged().startswith("model: found 'gpt-oss-20b' with dcp 2")
