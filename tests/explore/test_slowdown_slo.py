"""Slowdown SLOs in serving sweeps (explore/sweep_serving.py ServiceLevel.slowdown, sim/slowdown.py): the schema and
its one-line errors, the slowdown columns of a run, the capacity search under them, and stored results resuming."""

from __future__ import annotations

import json

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.metrics import metric_names
from explore.results import read_results
from explore.sweep import load_sweep
from sim.serving_spec import ServingSpec
from sim.slowdown import SLOWDOWN_METRICS, SlowdownSLO
from tests.explore.tiny_sweep import write_sweep, write_tiny_model
from workloads.requests import Uniform

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

LENGTHS = "  prompt: {dist: uniform, low: 8, high: 64}\n  output: {dist: uniform, low: 2, high: 32}\n"


def _sweep(tmp_path, serving: str, extra: str = "") -> str:
    model = write_tiny_model(tmp_path)
    return write_sweep(tmp_path, f"name: slow\nmodel: {model}\ndevice: h100-sxm\nserving:\n{serving}{extra}")


def test_slowdown_metrics_are_registered_as_sim_computes_them():
    assert metric_names("slowdown") == SLOWDOWN_METRICS


BAD = [
    ("{slowdown: splitwis}", "serving.slo.slowdown: found 'splitwis', allowed: a slowdown preset (splitwise)"),
    ("{slowdown: 3}", "serving.slo.slowdown: found 3"),
    ("{slowdown: {ttft: {p50: 0.5}}}", "serving.slo.slowdown.ttft.p50: found 0.5, allowed: greater than or equal to 1"),
    ("{slowdown: {ttft: {p95: 2}}}", "serving.slo.slowdown.ttft.p95: unknown key"),
    ("{slowdown: {tbtt: {p50: 2}}}", "serving.slo.slowdown.tbtt: unknown key"),
    ("{slowdown: {tbt: {}}}", "serving.slo.slowdown: at least one limit"),
    ("{slowdown: {e2e: {p99: .inf}}}", "serving.slo.slowdown.e2e.p99: found .inf, allowed: a finite number"),
]


def test_bad_slowdown_limits_are_one_line_errors(tmp_path, capsys):
    """Each names the file and line, the key, what it found and what is allowed; exit 2, no traceback."""
    for slo, message in BAD:
        assert main(["check", _sweep(tmp_path, f"  rate: 2\n{LENGTHS}  slo: {slo}\n")]) == 2, slo
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err and "sweep.yaml:" in err and message in err, err


def test_slowdown_metric_goals_need_a_slowdown_slo(tmp_path, capsys):
    """An objective or constraint on a slowdown column the sweep's results would not have: one line, exit 2."""
    serving = f"  rate: 2\n{LENGTHS}  slo: {{ttft_s: 1}}\n"
    for extra in ("objectives: {minimize: [slowdown_tbt_p50]}\n", "constraints: ['slowdown_ttft_p90 <= 3']\n"):
        assert main(["check", _sweep(tmp_path, serving, extra)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "slowdown" in err and "Traceback" not in err, err
    static = write_sweep(tmp_path, f"name: s\nmodel: {write_tiny_model(tmp_path)}\ndevice: h100-sxm\n"
                                   "constraints: ['slowdown_ttft_p90 <= 3']\n")
    assert main(["check", static]) == 2
    assert "serving" in capsys.readouterr().err


def test_run_flag_errors_and_metrics(tmp_path, capsys):
    model = write_tiny_model(tmp_path)
    flags = ["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "50", "--requests", "20",
             "--prompt", "32", "--output", "8", "--json"]
    assert main([*flags, "--slo-slowdown", "splitwis"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--slo-slowdown" in err and "splitwise" in err, err
    assert main([*flags, "--slo-slowdown", "splitwise"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert all(metrics[name] >= 1.0 - 1e-9 for name in SLOWDOWN_METRICS)  # nothing beats running alone
    assert metrics["meets_slo"] in (0.0, 1.0) and metrics["slo_attainment"] is None  # no per-request limit
    assert main(flags) == 0
    assert not set(SLOWDOWN_METRICS) & set(json.loads(capsys.readouterr().out))


def test_a_preset_and_its_limits_written_out_are_one_design_point(tmp_path):
    """`slowdown: splitwise` is Table 6's nine limits (sim/slowdown.py): written out, as integers where they are
    whole, they give the same SlowdownSLO and so the same key; without slowdown limits a point keeps the key it
    had before they existed (tests/explore/test_serving_sweep.py holds one such key)."""
    written = ("{ttft: {p50: 2, p90: 3, p99: 6}, tbt: {p50: 1.25, p90: 1.5, p99: 5}, "
               "e2e: {p50: 1.25, p90: 1.5, p99: 5}}")
    ids = []
    for slowdown in ("splitwise", written):
        path = _sweep(tmp_path, f"  rate: 2\n{LENGTHS}  slo: {{slowdown: {slowdown}}}\n")  # one model, one file
        (point,) = load_sweep(path).points()
        assert point.serving.slo_slowdown == SlowdownSLO()
        ids.append(point.point_id)
    assert ids[0] == ids[1]
    spec = ServingSpec(scheduler="chunked", requests=200, rate_per_s=4.0)
    plain = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=256, prompt=0, output=0, serving=spec)
    assert plain.point_id == "1975a0ffdaf012dc"


def test_two_requests_at_once_on_a_one_sequence_replica_by_hand(tmp_path):
    """Requests A and B, alike, arrive together at a replica running one sequence at a time: A runs as if alone, B
    waits for all of A then runs the same iterations. So B's E2E is twice A's (E2E slowdowns 1 and 2: numpy's
    p50 1.5, p90 1.9, p99 1.99), both decode at the unloaded pace (TBT slowdown 1), and B's TTFT slowdown is
    s = (e + t) / t for A's E2E e and TTFT t, both read from the run's absolute latencies (E2E p50 = 1.5 e,
    TTFT p50 = t + e / 2), so TTFT's pN is 1 + N/100 (s - 1)."""
    trace = tmp_path / "two.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0.0,40,6\n0.0,40,6\n")
    path = _sweep(tmp_path, f"  trace: {trace}\n  arrival: trace\n  scheduler: continuous\n  max_seqs: 1\n"
                            "  slo: {slowdown: splitwise}\n")
    out = tmp_path / "out"
    assert main([path, "--out", str(out), "--quiet"]) == 0
    (row,) = read_results(out)
    e = row["e2e_p50_s"] / 1.5
    t = row["ttft_p50_s"] - e / 2
    s = (e + t) / t
    expected = {"slowdown_e2e_p50": 1.5, "slowdown_e2e_p90": 1.9, "slowdown_e2e_p99": 1.99,
                "slowdown_tbt_p50": 1.0, "slowdown_tbt_p99": 1.0, "slowdown_ttft_p50": 1 + 0.5 * (s - 1),
                "slowdown_ttft_p90": 1 + 0.9 * (s - 1), "slowdown_ttft_p99": 1 + 0.99 * (s - 1)}
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, rel=1e-9), name
    # Splitwise's P50 E2E limit is 1.25x: a median request 1.5x slower breaks it.
    assert row["meets_slo"] == 0.0


def _capacity(evaluator, model: str, slo: SlowdownSLO) -> float:
    # 200 requests: a capacity search judges a rate only with 50 past the warm-up (sim/stability.py).
    spec = ServingSpec(scheduler="continuous", requests=200, rate_per_s=None, prompt=Uniform(low=8, high=64),
                       output=Uniform(low=2, high=32), max_seqs=8, capacity=(1.0, 100000.0), slo_slowdown=slo)
    point = DesignPoint(model=model, device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0, serving=spec)
    return evaluator.evaluate(point).metrics["capacity_rps"]


def test_a_looser_slowdown_slo_never_lowers_capacity(tiny_config, tiny_evaluator):
    """Every limit of Splitwise's SLO halved toward 1, as is, and doubled: each SLO met at a rate is met by the next
    at that rate, so the capacities found by the same bisection never fall. The tightest finds a capacity inside
    the searched range (the check is not on its ends)."""
    def scaled(factor: float) -> SlowdownSLO:
        base = SlowdownSLO()
        return SlowdownSLO(**{name: tuple((p, 1 + (limit - 1) * factor) for p, limit in getattr(base, name))
                              for name in ("ttft", "tbt", "e2e")})

    capacities = [_capacity(tiny_evaluator, tiny_config, scaled(factor)) for factor in (0.5, 1.0, 2.0)]
    assert capacities == sorted(capacities), capacities
    assert 1.0 < capacities[0] < 100000.0


def test_stored_results_resume_with_slowdown_columns_only_where_the_slo_has_limits(tmp_path, capsys):
    """A sweep under a slowdown SLO stores the slowdown columns and a second run evaluates nothing new; a serving
    sweep without one has none (its folders written before them keep their columns and resume). The report says
    the limits and draws the slowdowns against the rate."""
    serving = f"  requests: 30\n{LENGTHS}  rate: [50, 400]\n  max_seqs: 8\n"
    path = _sweep(tmp_path, serving + "  slo: {slowdown: splitwise, ttft_s: 0.05}\n")
    out = tmp_path / "out"
    assert main([path, "--out", str(out), "--quiet"]) == 0
    rows = read_results(out)
    assert len(rows) == 2 and all(set(SLOWDOWN_METRICS) <= set(row) for row in rows)
    assert all(0 <= row["slo_attainment"] <= 1 for row in rows)
    report = (out / "report.md").read_text()
    assert "Slowdown SLO" in report and "TBT p50 <= 1.25x" in report and (out / "figures/serving_slowdown.png").exists()
    capsys.readouterr()
    assert main([path, "--out", str(out), "--quiet"]) == 0
    assert "already stored" in capsys.readouterr().err
    again = read_results(out)
    assert [r["slowdown_tbt_p50"] for r in again] == [r["slowdown_tbt_p50"] for r in rows]
    plain = _sweep(tmp_path, serving + "  slo: {ttft_s: 0.05}\n")
    assert main([plain, "--out", str(tmp_path / "plain"), "--quiet"]) == 0
    assert all(not set(SLOWDOWN_METRICS) & set(row) for row in read_results(tmp_path / "plain"))


def test_report_labels_tell_pools_of_one_device_apart():
    """The example's designs differ only in their pools: mixed machines and split ones are named apart."""
    from explore.rows import point_label

    row = {"model": "llama-2-7b", "device": "h100-sxm", "scheduler": "continuous", "rate_per_s": None,
           "weight_bits": 16, "act_bits": 16, "kv_bits": 16}
    labels = {point_label(row | pools) for pools in ({"replicas": 1, "prefill_replicas": 0},
                                                     {"replicas": 2, "prefill_replicas": 0},
                                                     {"replicas": 1, "prefill_replicas": 1})}
    assert len(labels) == 3 and any("1 prefill + 1 decode replicas" in label for label in labels)
    assert point_label(row | {"replicas": 1, "prefill_replicas": 0}) == point_label(row)  # one replica: as before


def test_a_serving_point_that_does_not_fit_has_nan_slowdowns(tmp_path, capsys):
    """A point whose model does not fit its device is not served: its slowdown columns are NaN (JSON null), as its
    other serving metrics are, not missing."""
    flags = ["run", "--model", "llama-2-70b", "--device", "l4", "--serving", "--rate", "1", "--requests", "4",
             "--prompt", "32", "--output", "4", "--slo-slowdown", "splitwise", "--json"]
    assert main(flags) == 1  # explore run's exit status for a point that cannot run
    metrics = json.loads(capsys.readouterr().out)
    assert not metrics["fits_in_memory"]
    assert all(name in metrics and metrics[name] is None for name in SLOWDOWN_METRICS), metrics
