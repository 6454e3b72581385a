"""Dual-batch overlap as design points run it (`overlap: dual_batch` beside `attention_parallel: data`: explore/
evaluate.py, sim/data_parallel.py): a sweep's points with it run, splitting only the iterations vLLM splits, and the
combinations it does not model are refused in one line.

The tiny Mixtral (tests/explore/test_data_parallel_attention.py) on two H100s, its experts spread (ep 2)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from explore.cli import main
from explore.runner import run_sweep
from explore.sweep import load_sweep
from tests.explore.test_data_parallel_attention import SPEC, _point, tiny_moe  # noqa: F401 (tiny_moe: a fixture)
from tests.explore.tiny_sweep import write_sweep
from workloads.requests import Fixed

# 128 requests at once of 40 + 64 tokens: after their prefills each rank decodes 64 sequences an iteration, past
# vLLM's 32-token decode threshold, so those iterations split.
BUSY = replace(SPEC, requests=128, rate_per_s=1e6, prompt=Fixed(tokens=40), output=Fixed(tokens=64))


def test_a_light_load_never_reaches_the_thresholds_and_runs_as_without_overlap(tiny_evaluator, tiny_moe):  # noqa: F811
    """Six requests of 40 + 4 tokens: no rank ever holds 32 decodes or a 512-token prefill, so no iteration splits and
    every metric is the one without overlap."""
    none, dual = (tiny_evaluator.evaluate(_point(tiny_moe, overlap=overlap)).metrics
                  for overlap in ("none", "dual_batch"))
    numbers = [name for name, value in none.items() if isinstance(value, float) and not math.isnan(value)]
    assert "ttft_s" in numbers and "energy_per_token_J" in numbers
    assert {name: dual[name] for name in numbers} == {name: none[name] for name in numbers}


def test_a_busy_load_splits_the_iterations_past_the_thresholds(tiny_evaluator, tiny_moe):  # noqa: F811
    """Each rank's 64-sequence decode iterations run as two micro-batches of 32, each reading every weight again: with
    the tiny model's launch-bound kernels the split costs more than the all-to-alls of a few microseconds it hides, so
    decoding is slower and each token costs more energy (vLLM splits above its thresholds whether or not that pays)."""
    runs = [tiny_evaluator.evaluate(_point(tiny_moe, serving=BUSY, overlap=overlap))
            for overlap in ("none", "dual_batch")]
    none, dual = (run.metrics for run in runs)
    assert dual["tpot_s"] > none["tpot_s"] and dual["energy_per_token_J"] > none["energy_per_token_J"]
    assert [len(run.result.records.finish_s) for run in runs] == [BUSY.requests] * 2


@pytest.mark.parametrize(("fields", "knobs", "message"), [
    ({}, {"attention_parallel": "tensor"}, "overlap: found 'dual_batch' with attention_parallel 'tensor', allowed: "
     "none or token_split (dual_batch overlaps data-parallel ranks' all-to-alls"),
    ({"ep": 1}, {}, "ep: found 1 with overlap 'dual_batch', allowed: 2, the tp (dual_batch overlaps spread experts' "
     "all-to-alls"),
])
def test_what_dual_batch_does_not_model_is_not_run(tiny_evaluator, tiny_moe, fields, knobs, message):  # noqa: F811
    metrics = tiny_evaluator.evaluate(replace(_point(tiny_moe, overlap="dual_batch", **knobs), **fields)).metrics
    assert metrics["infeasible_reason"].startswith(message), metrics["infeasible_reason"]
    assert math.isnan(metrics["ttft_s"])


def test_a_sweep_runs_dual_batch_points_and_explore_run_refuses_a_tensor_one(tmp_path, capsys, tiny_evaluator,
                                                                            tiny_moe):  # noqa: F811
    """A sweep crossing overlap with the attention's parallelism runs three of its four points (dual_batch beside
    tensor parallelism recorded not run, its reason saying why); `explore run` refuses that point in one line."""
    path = write_sweep(tmp_path, f"name: dbo\nmodel: {tiny_moe}\ndevice: h100-sxm\nexecution: graphs\n"
                                 f"parallel: {{tp: 2, ep: spread, overlap: [none, dual_batch], "
                                 f"attention_parallel: [tensor, data]}}\n"
                                 f"serving:\n  requests: 6\n  prompt: 32\n  output: 4\n  rate: 5\n")
    rows = run_sweep(load_sweep(path), tmp_path / "out", evaluator=tiny_evaluator)
    ran = sorted((row["overlap"], row["attention_parallel"]) for row in rows if not row["infeasible_reason"])
    assert ran == [("dual_batch", "data"), ("none", "data"), ("none", "tensor")]
    assert all(row["ttft_s"] > 0 for row in rows if not row["infeasible_reason"])
    assert main(["run", "--model", tiny_moe, "--device", "h100-sxm", "--tp", "2", "--ep", "2", "--overlap",
                 "dual_batch", "--serving", "--requests", "4", "--prompt", "32", "--output", "4", "--rate", "5"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "--overlap: found 'dual_batch' with --attention-parallel 'tensor', allowed: none or token_split" in err, err


def test_explore_run_names_the_ep_that_dual_batch_needs(tiny_moe, capsys):  # noqa: F811
    """Data-parallel ranks with their experts split (--ep 1): the one line names --ep, the setting to change, and the
    value dual_batch runs beside, the tp."""
    assert main(["run", "--model", tiny_moe, "--device", "h100-sxm", "--tp", "2", "--ep", "1", "--overlap",
                 "dual_batch", "--attention-parallel", "data", "--serving", "--requests", "4", "--prompt", "32",
                 "--output", "4", "--rate", "5"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "--ep: found 1 with --overlap 'dual_batch', allowed: 2, the tp (" in err, err
