"""The kv_budget knob (StreamingLLM's attention sinks + recent window): decode reads and the cache held stop at
the budget, in static batches and serving runs; a budget at least the context changes nothing; both evaluation
paths agree."""

from __future__ import annotations

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from explore.sweep import load_sweep
from tests.explore.test_blocks import assert_blocks_agree, assert_same
from tests.explore.tiny_sweep import TINY_CONFIG, write_sweep

# The tiny model's KV per token: keys and values of 2 layers x 2 KV heads x 16 dims at 2 bytes.
KV_B_PER_TOKEN = 2 * TINY_CONFIG["num_hidden_layers"] * TINY_CONFIG["num_key_value_heads"] * 16 * 2


@pytest.fixture
def model(tiny_config) -> str:
    return tiny_config


@pytest.fixture
def evaluator(tiny_evaluator) -> Evaluator:
    return tiny_evaluator


def point(model: str, budget: int, **fields) -> DesignPoint:
    return DesignPoint(model=model, device="h100-sxm", batch=4, prompt=200, output=9, execution="engine",
                       knobs=(("kv_budget", budget),) if budget else (), **fields)


def test_the_cache_held_stops_at_the_budget(model, evaluator):
    """4 sequences hold 200 + 8 tokens each; a budget of 64 keeps 64: (208 - 64) x 4 x 256 B less."""
    full, kept = (evaluator.evaluate(point(model, budget)).metrics for budget in (0, 64))
    assert full["peak_memory_B"] - kept["peak_memory_B"] == (208 - 64) * 4 * KV_B_PER_TOKEN


def test_decode_attention_reads_less_and_a_budget_beyond_the_context_changes_nothing(model, evaluator):
    full, kept, roomy = (evaluator.evaluate(point(model, budget)).metrics for budget in (0, 64, 208))
    assert kept["time_attention_s"] < full["time_attention_s"]
    assert kept["tpot_s"] < full["tpot_s"]  # engine decode replays graphs: no host floor hides the reads
    assert kept["ttft_s"] == full["ttft_s"]  # the prefill attends to the whole prompt
    assert_same(full, roomy, "a budget of the whole context")


def test_blocks_agree_with_the_reference(model, evaluator):
    points = [point(model, budget, overrides=(("memory.bandwidth_GBps", bandwidth),))
              for budget in (0, 64) for bandwidth in (1000.0, 3000.0)]
    assert_blocks_agree(evaluator, points)


def test_sweeps_set_it_static_or_serving(model, tmp_path, capsys):
    path = write_sweep(tmp_path, f"name: kv\nmodel: {model}\ndevice: h100-sxm\n"
                                 f"workload: {{batch: 4, prompt: 200, output: 9, kv_budget: [0, 64]}}\n")
    assert sorted(p.knob("kv_budget") for p in load_sweep(path).points()) == [0, 64]
    bad = write_sweep(tmp_path, f"name: kv\nmodel: {model}\ndevice: h100-sxm\nworkload: {{kv_budget: -1}}\n")
    assert main(["check", bad]) == 2
    assert "workload.kv_budget: found -1" in capsys.readouterr().err
    serving = ("serving: {requests: 8, rate: 20, prompt: {dist: fixed, tokens: 200}, output: {dist: fixed, tokens: 8}}"
               "\n")
    path = write_sweep(tmp_path, f"name: kv\nmodel: {model}\ndevice: h100-sxm\nworkload: {{kv_budget: [0, 32]}}\n"
                                 + serving)
    assert sorted(p.knob("kv_budget") for p in load_sweep(path).points()) == [0, 32]
    both = write_sweep(tmp_path, f"name: kv\nmodel: {model}\ndevice: h100-sxm\nworkload: {{batch: 2}}\n" + serving)
    assert main(["check", both]) == 2
    assert "sweep.yaml:4: workload.batch: found 2 with serving:, allowed: left out" in capsys.readouterr().err


def test_a_serving_run_holds_the_budget(model, evaluator):
    """Each of the 8 requests keeps 32 of its 200 + 8 tokens' KV: the most the cache ever holds shrinks."""
    from sim.serving_spec import ServingSpec
    from workloads.requests import Fixed

    spec = ServingSpec(requests=8, rate_per_s=20.0, prompt=Fixed(tokens=200), output=Fixed(tokens=8))
    full, kept = (evaluator.evaluate(DesignPoint(model=model, device="h100-sxm", batch=spec.max_seqs, prompt=0,
                                                 output=0, serving=spec,
                                                 knobs=(("kv_budget", budget),) if budget else ())).metrics
                  for budget in (0, 32))
    assert kept["kv_utilization_max"] < full["kv_utilization_max"]
    assert kept["time_attention_s"] < full["time_attention_s"]
