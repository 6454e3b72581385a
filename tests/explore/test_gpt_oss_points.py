"""gpt-oss design points: a static batch's KV cache, held or offloaded, counts each layer's window; a serving run is
refused in one line."""

from __future__ import annotations

import json

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from sim.workload import BatchWorkload

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


def test_a_serving_run_is_refused_in_one_line(capsys):
    assert main(["run", "--model", "gpt-oss-20b", "--device", "h200", "--serving", "--rate", "10", "--requests", "4",
                 "--prompt", "64", "--output", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("explore: error: --model: found 'gpt-oss-20b', whose attention windows differ by layer")
    assert "allowed: a static batch" in err and err.count("\n") == 1


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
