"""`explore run` says when a point's average power is above what its hardware is rated to draw (power.tdp_W): energy
is priced per action and as idle power x time, and nothing caps their sum at the TDP."""

from __future__ import annotations

import json

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from sim.serving_spec import ServingSpec

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

# Two Llama-shaped layers of hidden 4096 (0.9 GB of bf16 weights): more than the M2 Ultra's 96 MB of system-level
# cache, so a batch-1 decode streams them from DRAM.
MODEL = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 2,
         "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
         "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16", "hidden_act": "silu"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("two-layers") / "config.json"
    path.write_text(json.dumps(MODEL))
    return str(path)


def _run(capsys, model: str, device: str) -> tuple[dict, str]:
    code = main(["run", "--model", model, "--device", device, "--prompt", "64", "--output", "32", "--execution",
                 "engine", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out), err


def test_run_says_when_average_power_is_above_the_tdp(model, capsys):
    # m2-ultra-tmac's DRAM at its 800 GB/s and 20.3 pJ/bit (Horowitz's 45 nm figure) draws 800e9 x 8 x 20.3e-12 =
    # 130 W, above the 61 W its preset rates the chip for (Ars Technica's all-core CPU load): a decode that streams
    # its weights goes over, and the run says so with both numbers.
    metrics, err = _run(capsys, model, "m2-ultra-tmac")
    assert metrics["avg_power_W"] > 61
    assert "above the 61 W the hardware is rated for (power.tdp_W" in err
    assert f"average power {metrics['avg_power_W']:.1f} W" in err
    # A GPU's FLOP energy is derived from its TDP (hw_models/gpu.py), so its preset stays under it: no notice.
    metrics, err = _run(capsys, model, "h100-sxm")
    assert metrics["avg_power_W"] < 700
    assert "power.tdp_W" not in err


def test_the_power_limit_counts_every_device(evaluator):
    # Datasheet TDPs: A100 SXM 400 W, H100 SXM 700 W.
    point = DesignPoint(model="llama-2-7b", device="a100-sxm-80gb", batch=1, prompt=64, output=4)
    assert evaluator.evaluate(point).metrics["tdp_W"] == 400
    assert evaluator.evaluate(DesignPoint(model="llama-2-7b", device="a100-sxm-80gb", batch=1, prompt=64,
                                          output=4, tp=4)).metrics["tdp_W"] == 4 * 400
    serving = ServingSpec(replicas=2, prefill_replicas=3, prefill_device="a100-sxm-80gb", requests=20, rate_per_s=2.0)
    point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=256, prompt=0, output=0, serving=serving, tp=2)
    assert evaluator.evaluate(point).metrics["tdp_W"] == 2 * 2 * 700 + 3 * 2 * 400


def test_a_sweep_counts_its_points_above_their_rated_power(model, tmp_path, capsys):
    """The sweep's rows carry tdp_W, and its end says how many feasible points draw more: the M2 Ultra's decode (130 W
    of DRAM power at full bandwidth, by hand above) and not the H100's."""
    from explore.results import read_results
    from tests.explore.tiny_sweep import write_sweep

    sweep = write_sweep(tmp_path, f"name: power\nmodel: {model}\ndevice: [m2-ultra-tmac, h100-sxm]\n"
                                  "execution: engine\nworkload: {batch: 1, prompt: 64, output: 32}\n")
    assert main([sweep, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "note: 1 of 2 feasible points draw more on average than their hardware is rated for" in \
        capsys.readouterr().err
    rows = {row["device"]: row for row in read_results(tmp_path / "out")}
    assert rows["h100-sxm"]["tdp_W"] == 700 and rows["m2-ultra-tmac"]["avg_power_W"] > rows["m2-ultra-tmac"]["tdp_W"]


@pytest.mark.parametrize("cap_W", [None, 250.0])
def test_a_serving_runs_peak_power_lies_between_its_mean_and_its_limit(evaluator, model, cap_W):
    """The busiest second of a serving run on an H100 draws no less than the run's mean power, and under a power
    limit no more than the limit: every kernel runs at a clock that keeps its draw within it (hw_models/gpu_power.py),
    static power included, so no second's mean can exceed it."""
    spec = ServingSpec(requests=200, rate_per_s=40.0, max_seqs=64)
    point = DesignPoint(model=model, device="h100-sxm", batch=64, prompt=0, output=0, serving=spec,
                        execution="engine", overrides=(("power.cap_W", cap_W),) if cap_W else ())
    metrics = evaluator.evaluate(point).metrics
    assert metrics["avg_power_W"] <= metrics["power_peak_W"] * (1 + 1e-12)
    if cap_W is not None:
        assert metrics["power_peak_W"] <= cap_W * (1 + 1e-9)


@pytest.mark.parametrize("cap_W", [None, 250.0])
def test_a_static_batchs_peak_power_lies_between_its_mean_and_its_limit(evaluator, model, cap_W):
    """A static batch's busiest second (its prefill, then its decode, each drawing evenly) draws no less than the
    run's mean power and, under a power limit, no more than the limit."""
    point = DesignPoint(model=model, device="h100-sxm", batch=16, prompt=512, output=64, execution="engine",
                        overrides=(("power.cap_W", cap_W),) if cap_W else ())
    metrics = evaluator.evaluate(point).metrics
    assert metrics["avg_power_W"] <= metrics["power_peak_W"] * (1 + 1e-12)
    if cap_W is not None:
        assert metrics["power_peak_W"] <= cap_W * (1 + 1e-9)
