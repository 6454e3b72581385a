"""gpt-oss design points: a static batch's KV cache counts each layer's window; a serving run is refused in one line."""

from __future__ import annotations

import json

import pytest

from explore.cli import main

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
