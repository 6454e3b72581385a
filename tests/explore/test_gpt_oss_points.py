"""gpt-oss design points: a static batch's KV cache, held or offloaded, counts each layer's window; a serving run
holds vLLM's hybrid KV groups and prices each layer's attention at its window, its prefix cache taking hits as vLLM's
hybrid groups do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from sim.workload import BatchWorkload
from tests.explore.tiny_sweep import PRESETS, write_tiny_model

RUN = ["run", "--model", "gpt-oss-20b", "--device", "h200", "--batch", "2", "--prompt", "512", "--execution", "engine",
       "--json"]


def _peak_memory_B(capsys, output: int) -> float:
    assert main([*RUN, "--output", str(output)]) == 0
    return json.loads(capsys.readouterr().out)["peak_memory_B"]


def test_more_output_tokens_grow_the_full_layers_kv_alone(capsys):
    """1,024 more output tokens (all past the 128-token window) add KV in gpt-oss-20b's 12 full layers only: 2
    sequences x 1,024 tokens x 12 layers x 8 KV heads x 64 x 2 (K and V) x 2 bytes; the weights and the prefill's
    activations stay as they were."""
    grown = _peak_memory_B(capsys, 1088) - _peak_memory_B(capsys, 64)
    assert grown == pytest.approx(2 * 1024 * 12 * 8 * 64 * 2 * 2, rel=1e-12)


def _tiny_gpt_oss(folder: Path, layer_types: list[str]) -> str:
    """A config.json of gpt-oss-20b's architecture at toy sizes: 4 layers, a 32-token window where a layer has one."""
    data = json.loads((PRESETS / "gpt-oss-20b.json").read_text()) | dict(
        hidden_size=64, intermediate_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_local_experts=4, experts_per_token=2, num_experts_per_tok=2, vocab_size=128, num_hidden_layers=4,
        layer_types=layer_types, sliding_window=32)
    return write_tiny_model(folder / "_".join(sorted(set(layer_types))), data)


def _served(capsys, model: str, *extra: str) -> dict:
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "200", "--requests", "24",
                 "--prompt", "256", "--output", "64", "--execution", "engine", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_tiny_gpt_oss_serves_in_less_kv_and_attention_than_full_layers(tmp_path, capsys):
    """Served (before: refused in one line), sliding layers beside full ones hold less KV at their busiest (vLLM's
    hybrid KV groups: sim/hybrid_kv.py) and spend less time in attention than the same model with every layer full,
    the requests alike."""
    windowed = _served(capsys, _tiny_gpt_oss(tmp_path, ["sliding_attention", "full_attention"] * 2))
    full = _served(capsys, _tiny_gpt_oss(tmp_path, ["full_attention"] * 4))
    assert 0 < windowed["kv_utilization_max"] < full["kv_utilization_max"]
    assert 0 < windowed["time_attention_s"] < full["time_attention_s"]


def test_a_tiny_gpt_oss_finds_its_shared_prefix_cached(tmp_path, capsys):
    """Prefix caching beside the hybrid groups (before: refused in one line): 24 requests of 256 tokens sharing their
    first 192 (a warm prefix: 12 whole blocks of 16 in the full group, the 2 sliding blocks before its end, cdiv(32 -
    1, 16)) find all 12 blocks, so each computes 64 tokens where it computed 256: time to first token falls, no
    request waits longer, and the requests running at once hold the prefix's blocks once, less KV in use."""
    model = _tiny_gpt_oss(tmp_path, ["sliding_attention", "full_attention"] * 2)
    plain = _served(capsys, model)
    shared = _served(capsys, model, "--prefix-tokens", "192")
    assert plain["prefix_hit_rate"] is None and shared["prefix_hit_rate"] == 1  # None: nothing sought
    assert shared["ttft_mean_s"] < plain["ttft_mean_s"] and shared["ttft_p99_s"] <= plain["ttft_p99_s"]
    assert shared["kv_utilization_mean"] < plain["kv_utilization_mean"]


@pytest.mark.parametrize("extra,message", [
    (("--prefix-tokens", "32", "--host-cache-GB", "1"), "--host-cache-GB: found 1 with 'gpt-oss-20b'"),
    (("--prefix-tokens", "32", "--prefix-attention", "cascade"), "--prefix-attention: found 'cascade' with "
                                                                 "'gpt-oss-20b'"),
])
def test_a_host_tier_or_cascade_beside_layer_windows_is_refused_in_one_line(capsys, extra, message):
    assert main(["run", "--model", "gpt-oss-20b", "--device", "h200", "--serving", "--rate", "10", "--requests", "4",
                 "--prompt", "64", "--output", "8", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"explore: error: {message}, whose attention windows differ by layer, allowed: ")
    assert err.count("\n") == 1


def test_an_offloaded_cache_moves_each_layers_window():
    """gpt-oss-20b, 16 sequences of 8,192 prompt tokens on an H100 cut to 46 GB: part of the KV cache lives in host
    memory. The prefill sends it there as 4,160 tokens' worth of what one decode token sends, (12 full layers x
    8,192 + 12 sliding layers x 128) / 24, and each decode step reads back as much (its full layers' share growing by
    half a token a step), not 8,192 tokens' worth."""
    evaluator = Evaluator()
    point = DesignPoint(model="gpt-oss-20b", device="h100-sxm", batch=16, prompt=8192, output=4, execution="engine",
                        knobs=(("offload", "kv"),), overrides=(("memory.capacity_GB", 46),))
    device, workload = evaluator.point_device(point), BatchWorkload(batch=16, prompt_len=8192, output_len=4)
    memory = evaluator.batch_memory(point, device, workload, evaluator.kv_window(point))
    held, reason, traffic = evaluator.offloaded(point, device, workload, memory)
    assert not reason and held.offloaded_B > 0
    token_B = traffic.decode_to_host_B[0]
    assert traffic.prefill_B[1] / token_B == pytest.approx((12 * 8192 + 12 * 128) / 24)
    assert (traffic.decode_to_device_B / token_B).tolist() == pytest.approx([4160, 4160.5, 4161])


def test_a_tiny_gpt_oss_speculates_with_medusa_in_less_kv_and_attention_than_full_layers(tmp_path, capsys):
    """Medusa's 2 heads beside sliding layers (before: refused in one line): each verification of 3 tokens a sequence
    reads 32 + 2 keys in a sliding layer (kernels/shapes.py step_shape), its blocks held in vLLM's hybrid KV groups;
    the same requests with every layer full hold more KV and spend longer in attention."""
    medusa = ("--spec-draft", "medusa", "--spec-tokens", "2", "--acceptance", "0.7")
    windowed = _served(capsys, _tiny_gpt_oss(tmp_path, ["sliding_attention", "full_attention"] * 2), *medusa)
    full = _served(capsys, _tiny_gpt_oss(tmp_path, ["full_attention"] * 4), *medusa)
    assert 0 < windowed["kv_utilization_max"] < full["kv_utilization_max"]
    assert 0 < windowed["time_attention_s"] < full["time_attention_s"]


def test_a_draft_model_beside_layer_windows_is_refused_in_one_line(capsys):
    """A draft model's layers would join the target's in vLLM's KV cache groups, which is not modeled."""
    assert main(["run", "--model", "gpt-oss-120b", "--device", "h200", "--serving", "--rate", "10", "--requests",
                 "4", "--prompt", "64", "--output", "8", "--spec-draft", "gpt-oss-20b"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("explore: error: --spec-draft: found 'gpt-oss-20b' with 'gpt-oss-120b', whose attention "
                          "windows differ by layer, allowed: none or medusa")
    assert err.count("\n") == 1
