"""A serving point recorded not run (DesignPoint.unjudged) shows its whole system's hardware, every pool's replicas
and their attention devices, as the run it stands for would: its price is the design's, not one replica's."""

from __future__ import annotations

import math

import pytest

from explore.runner import run_sweep
from explore.sweep import load_sweep
from hw_models.registry import load_device
from tests.explore.tiny_sweep import write_sweep, write_tiny_model

# One prefill replica and two decode replicas, each decode replica with one H20 attending apart; on pp 2 the
# attention devices are not run (DesignPoint._attention_unjudged), on pp 1 they are.
SERVING = ("execution: graphs\nparallel: {{pp: [1, 2]}}\nserving:\n  requests: 6\n  prompt: 32\n  output: 4\n"
           "  rate: 5\n  replicas: 2\n  prefill_replicas: 1\n  attention_device: h20\n{more}")


def _rows(tmp_path, evaluator, more: str = "") -> dict[int, dict]:
    """The rows of the tiny model's pp 1 and pp 2 points on H100s, keyed by pp."""
    path = write_sweep(tmp_path, f"name: pools\nmodel: {write_tiny_model(tmp_path)}\ndevice: h100-sxm\n"
                                 f"{SERVING.format(more=more)}")
    return {row["pp"]: row for row in run_sweep(load_sweep(path), tmp_path / "out", evaluator=evaluator)}


def test_a_point_not_run_prices_every_pool(tmp_path, tiny_evaluator):
    """By hand from the presets: a replica on pp stages holds pp H100s; the prefill pool's one replica pp of them, each
    of the two decode replicas pp H100s and one H20. On pp 2: 3 x 2 H100s + 2 H20s, 4.5 x an H100's price; on pp 1
    (run) 3 H100s + 2 H20s."""
    h100, h20 = load_device("h100-sxm"), load_device("h20")
    rows = _rows(tmp_path, tiny_evaluator)
    assert rows[2]["infeasible_reason"].startswith("attention_device: found 'h20' on 2 pipeline stages")
    assert not rows[1]["infeasible_reason"]
    for pp, row in rows.items():
        h100s = 3 * pp
        assert row["usd_per_hour"] == pytest.approx(h100s * h100.price.usd_per_hour + 2 * h20.price.usd_per_hour)
        assert row["tdp_W"] == pytest.approx(h100s * h100.tdp_W + 2 * h20.tdp_W)
        assert row["area_mm2"] == pytest.approx(h100s * h100.area_mm2 + 2 * h20.area_mm2)


def test_an_autoscaled_point_not_run_rents_nothing_it_can_count(tmp_path, tiny_evaluator):
    """An autoscaled pool rents the replica-hours a run holds: a point not run has no such hours, its hourly price
    NaN, while its TDP counts every replica it may scale to (3 decode, 1 prefill: on pp 2, 8 H100s and 3 H20s)."""
    h100, h20 = load_device("h100-sxm"), load_device("h20")
    rows = _rows(tmp_path, tiny_evaluator, "  max_replicas: 3\n  autoscale_target: 2\n")
    assert rows[2]["infeasible_reason"] and math.isnan(rows[2]["usd_per_hour"])
    assert rows[2]["tdp_W"] == pytest.approx(8 * h100.tdp_W + 3 * h20.tdp_W)
