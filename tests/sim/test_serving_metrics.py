"""Serving-run metrics: latency percentiles, SLO attainment, goodput, Little's law and iteration logs, by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from sim.serving_metrics import (
    PERCENTILES,
    SLO,
    SUMMARY_METRICS,
    SUMMARY_UNITS,
    URGENT_METRICS,
    IterationLog,
    RequestRecords,
    in_system_area,
    mean_in_system,
    pool_figures,
    summarize,
)


def records(**overrides) -> RequestRecords:
    """Four requests with hand-chosen times (intervals in system: [0, 4.5], [1, 2], [2, 7.5], [3, 10])."""
    columns = dict(
        arrival_s=[0.0, 1.0, 2.0, 3.0],
        scheduled_s=[0.0, 1.5, 2.0, 4.0],
        first_token_s=[0.5, 2.0, 3.5, 6.0],
        finish_s=[4.5, 2.0, 7.5, 10.0],
        prompt_tokens=[10, 20, 30, 40],
        output_tokens=[5, 1, 3, 5],
        preemptions=[0, 0, 1, 2],
    )
    return RequestRecords(**{**columns, **overrides})


def test_derived_columns_by_hand():
    r = records()
    np.testing.assert_allclose(r.ttft_s, [0.5, 1.0, 1.5, 3.0])
    np.testing.assert_allclose(r.e2e_s, [4.5, 1.0, 5.5, 7.0])
    np.testing.assert_allclose(r.queue_s, [0.0, 0.5, 0.0, 1.0])
    # (finish - first) / (output - 1): 4/4, one token -> NaN, 4/2, 4/4.
    np.testing.assert_allclose(r.tpot_s, [1.0, math.nan, 2.0, 1.0])
    assert len(r) == 4 and r.output_tokens.dtype == np.int64


def test_wait_adds_the_decode_pools_admission_by_hand():
    """Served whole, a request waits its queue_s only; handed to a decode pool, also from its first token to the
    decode pool's admission: request 0 waits 0 + (1.5 - 0.5), request 2 waits 0 + (4.0 - 3.5)."""
    assert np.all(np.isnan(records().decode_admitted_s))
    np.testing.assert_allclose(records().wait_s, records().queue_s)
    handed = records(decode_admitted_s=[1.5, math.nan, 4.0, math.nan])
    np.testing.assert_allclose(handed.wait_s, [1.0, 0.5, 0.5, 1.0])


def test_summary_latencies_by_hand():
    s = summarize(records(), makespan_s=10.0)
    assert tuple(s) == SUMMARY_METRICS
    # numpy's linear rule: position p/100 * (n - 1) in the sorted values, interpolated between neighbours.
    # TTFT sorted [0.5, 1, 1.5, 3], n = 4: p50 at 1.5 -> 1 + 0.5*0.5 = 1.25; p90 at 2.7 -> 1.5 + 0.7*1.5 = 2.55;
    # p99 at 2.97 -> 1.5 + 0.97*1.5 = 2.955; mean 6/4 = 1.5.
    assert s["ttft_mean_s"] == pytest.approx(1.5)
    assert s["ttft_p50_s"] == pytest.approx(1.25)
    assert s["ttft_p90_s"] == pytest.approx(2.55)
    assert s["ttft_p99_s"] == pytest.approx(2.955)
    # TPOT ignores the one-token request: sorted [1, 1, 2], n = 3: mean 4/3; p50 at 1 -> 1; p90 at 1.8 -> 1.8;
    # p99 at 1.98 -> 1.98.
    assert s["tpot_mean_s"] == pytest.approx(4 / 3)
    assert s["tpot_p50_s"] == pytest.approx(1.0)
    assert s["tpot_p90_s"] == pytest.approx(1.8)
    assert s["tpot_p99_s"] == pytest.approx(1.98)
    # E2E sorted [1, 4.5, 5.5, 7]: mean 18/4 = 4.5; p50 -> 4.5 + 0.5*1 = 5; p90 -> 5.5 + 0.7*1.5 = 6.55;
    # p99 -> 5.5 + 0.97*1.5 = 6.955.
    assert s["e2e_mean_s"] == pytest.approx(4.5)
    assert s["e2e_p50_s"] == pytest.approx(5.0)
    assert s["e2e_p90_s"] == pytest.approx(6.55)
    assert s["e2e_p99_s"] == pytest.approx(6.955)
    # Queueing sorted [0, 0, 0.5, 1]: mean 0.375; p50 -> 0.25; p90 -> 0.5 + 0.7*0.5 = 0.85; p99 -> 0.985.
    assert s["queue_mean_s"] == pytest.approx(0.375)
    assert s["queue_p50_s"] == pytest.approx(0.25)
    assert s["queue_p90_s"] == pytest.approx(0.85)
    assert s["queue_p99_s"] == pytest.approx(0.985)


def test_summary_rates_without_slo():
    s = summarize(records(), makespan_s=10.0)
    assert s["requests_per_s"] == pytest.approx(0.4)  # 4 requests / 10 s
    assert s["output_tokens_per_s"] == pytest.approx(1.4)  # (5 + 1 + 3 + 5) tokens / 10 s
    assert s["goodput_rps"] == s["requests_per_s"]
    assert math.isnan(s["slo_attainment"]) and math.isnan(s["meets_slo"])
    assert s["preemptions"] == 3.0 and isinstance(s["preemptions"], float)


def test_slo_met_attainment_and_goodput_by_hand():
    r = records()
    slo = SLO(ttft_s=1.5, tpot_s=1.5, attainment=0.5)
    # ttft [0.5, 1, 1.5, 3] <= 1.5 (inclusive): T T T F; tpot [1, NaN, 2, 1] <= 1.5 with NaN passing: T T F T.
    np.testing.assert_array_equal(slo.met(r), [True, True, False, False])
    s = summarize(r, makespan_s=10.0, slo=slo)
    assert s["slo_attainment"] == pytest.approx(0.5)
    assert s["goodput_rps"] == pytest.approx(0.2)  # 2 good requests / 10 s
    assert s["meets_slo"] == 1.0  # 0.5 >= 0.5
    assert summarize(r, makespan_s=10.0, slo=SLO(ttft_s=1.5, tpot_s=1.5))["meets_slo"] == 0.0  # 0.5 < 0.9
    # Only a TTFT limit: the slow-TPOT request now counts.
    np.testing.assert_array_equal(SLO(ttft_s=1.5).met(r), [True, True, True, False])
    assert summarize(r, makespan_s=10.0, slo=SLO(ttft_s=1.5))["slo_attainment"] == pytest.approx(0.75)
    # No limits at all: every request meets them.
    assert SLO().met(r).all()


def test_pool_figures_by_hand():
    """Requests 0 and 2 (the urgent ones, priority 0) served by pool 0, 1 and 3 by pool 1, a third pool serving none;
    an SLO of TPOT <= 5 s, the urgent requests' 1.5 s. Pool 0: TTFT 0.5 and 1.5 s (p50 1.0), TPOT 1.0 and 2.0 s
    (p50 1.5), request 2 missing its class's limit: 1 good over the 10 s run. Pool 1: TTFT 1.0 and 3.0 s, TPOT 1.0 s
    (request 1 has one token), both good. A pool judges each request by its own class's limit, though it serves one
    class alone."""
    figures = pool_figures(records(pool=[0, 1, 0, 1], priority=[0, 1, 0, 1]), 3, makespan_s=10.0,
                           slo=SLO(tpot_s=5.0, urgent_tpot_s=1.5))
    assert figures[:2] == [
        {"requests": 2, "ttft_p50_s": 1.0, "tpot_p50_s": 1.5, "tpot_p90_s": pytest.approx(1.9), "goodput_rps": 0.1},
        {"requests": 2, "ttft_p50_s": 2.0, "tpot_p50_s": 1.0, "tpot_p90_s": 1.0, "goodput_rps": 0.2}]
    assert figures[2]["requests"] == 0 and figures[2]["goodput_rps"] == 0.0 and math.isnan(figures[2]["ttft_p50_s"])
    # Without a pool column every request is pool 0's.
    assert pool_figures(records(), 1, makespan_s=10.0)[0]["requests"] == 4


def test_summary_units_cover_every_metric():
    assert set(SUMMARY_UNITS) == set(SUMMARY_METRICS) | set(URGENT_METRICS)
    assert set(SUMMARY_UNITS.values()) == {"s", "1/s", "fraction", "count"}
    assert len(SUMMARY_METRICS) == 4 * (1 + len(PERCENTILES)) + 6
    assert SUMMARY_UNITS["ttft_p99_s"] == "s" and SUMMARY_UNITS["goodput_rps"] == "1/s"


def test_undefined_metrics_are_nan_without_warnings():
    one_token = records(output_tokens=[1, 1, 1, 1], finish_s=[0.5, 2.0, 3.5, 6.0])
    empty = RequestRecords(arrival_s=[], scheduled_s=[], first_token_s=[], finish_s=[], prompt_tokens=[],
                           output_tokens=[], preemptions=[])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = summarize(one_token, makespan_s=10.0, slo=SLO(tpot_s=0.1))
        e = summarize(empty, makespan_s=1.0, slo=SLO(ttft_s=1.0))
    assert all(math.isnan(s[f"tpot_{stat}_s"]) for stat in ("mean", "p50", "p90", "p99"))
    assert s["slo_attainment"] == 1.0  # no TPOT to miss
    assert all(math.isnan(e[k]) for k in SUMMARY_METRICS[:16] + ("slo_attainment", "meets_slo"))
    assert e["requests_per_s"] == 0.0 and e["goodput_rps"] == 0.0 and e["preemptions"] == 0.0


def test_mean_in_system_by_hand():
    r = records()
    # Window [2, 6]: in system 2..3 -> requests 0, 2 (2 x 1 s); 3..4.5 -> 0, 2, 3 (3 x 1.5 s);
    # 4.5..6 -> 2, 3 (2 x 1.5 s); request 1 leaves at 2. Area 2 + 4.5 + 3 = 9.5 over 4 s.
    assert mean_in_system(r, start_s=2.0, end_s=6.0) == pytest.approx(9.5 / 4)
    # A window before any arrival, and one after everything finished.
    assert mean_in_system(r, start_s=-5.0, end_s=0.0) == 0.0
    assert mean_in_system(r, start_s=10.0, end_s=20.0) == 0.0


def test_littles_law_on_random_run():
    rng = np.random.default_rng(7)
    n = 500
    arrival = np.cumsum(rng.exponential(0.1, n))
    scheduled = arrival + rng.exponential(0.05, n)
    first = scheduled + rng.exponential(0.2, n)
    finish = first + rng.exponential(1.0, n)
    r = RequestRecords(arrival_s=arrival, scheduled_s=scheduled, first_token_s=first, finish_s=finish,
                       prompt_tokens=np.full(n, 100), output_tokens=rng.integers(1, 50, n), preemptions=np.zeros(n))
    makespan = float(finish.max())
    # The sweep and the e2e sum agree on a window covering the whole run (and on a wider one).
    assert in_system_area(r) == pytest.approx(r.e2e_s.sum())
    assert mean_in_system(r, start_s=0.0, end_s=makespan) == pytest.approx(in_system_area(r) / makespan)
    assert mean_in_system(r, start_s=-1.0, end_s=makespan + 1) == pytest.approx(in_system_area(r) / (makespan + 2))
    # L = lambda * W.
    s = summarize(r, makespan_s=makespan)
    assert mean_in_system(r, start_s=0.0, end_s=makespan) == pytest.approx(s["requests_per_s"] * s["e2e_mean_s"])


def test_iteration_log_by_hand():
    log = IterationLog(start_s=[0.0, 1.0, 4.0], duration_s=[1.0, 3.0, 0.0], batch_size=[2, 6, 100],
                       tokens=[512, 6, 100], kv_blocks_used=[10, 30, 40], kv_blocks_total=40)
    np.testing.assert_allclose(log.kv_utilization(), [0.25, 0.75, 1.0])
    # (2 x 1 s + 6 x 3 s + 100 x 0 s) / 4 s = 5; an unweighted mean would be 36.
    assert log.mean_batch_size() == pytest.approx(5.0)
    assert len(log) == 3
    idle = IterationLog(start_s=[], duration_s=[], batch_size=[], tokens=[], kv_blocks_used=[], kv_blocks_total=1)
    assert math.isnan(idle.mean_batch_size())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(arrival_s=[0.0, 1.0, 2.0]), "differ in length"),
        (dict(finish_s=[4.5, 1.5, 7.5, 10.0]), "request 1 breaks"),  # finishes before its first token
        (dict(scheduled_s=[0.0, 0.5, 2.0, 4.0]), "request 1 breaks"),  # scheduled before it arrived
        (dict(finish_s=[4.5, 2.0, math.nan, 10.0]), "finite"),
        (dict(output_tokens=[5, 0, 3, 5]), "output_tokens >= 1"),
        (dict(arrival_s=[[0.0, 1.0, 2.0, 3.0]]), "1-D"),
        (dict(decode_admitted_s=[0.4, math.nan, math.nan, math.nan]), "decode_admitted_s"),  # before its first token
        (dict(decode_admitted_s=[math.nan, math.nan, math.nan, 10.5]), "decode_admitted_s"),  # after its finish
    ],
)
def test_bad_records_fail_loudly(overrides, message):
    with pytest.raises(ValueError, match=message):
        records(**overrides)


def test_bad_arguments_fail_loudly():
    with pytest.raises(ValueError, match="makespan_s"):
        summarize(records(), makespan_s=0.0)
    with pytest.raises(ValueError, match="end_s > start_s"):
        mean_in_system(records(), start_s=1.0, end_s=1.0)
    with pytest.raises(ValueError, match="attainment"):
        SLO(attainment=1.5)
    with pytest.raises(ValueError, match="kv_blocks_total"):
        IterationLog(start_s=[0.0], duration_s=[1.0], batch_size=[1], tokens=[1], kv_blocks_used=[1],
                     kv_blocks_total=0)


# ---- peak power over a window (POWER_WINDOW_S) ----------------------------------------------------------------


def test_peak_window_power_by_hand():
    """Two iterations, 100 J over [0, 0.5) s and 300 J over [2, 2.5) s, in a 4 s run: the busiest second holds the
    300 J. Two replicas overlapping, 100 J each over [0, 1) and [0.5, 1.5): any second from 0 to 0.5 holds 150 J.
    A run shorter than the window: its mean, 10 J over 0.5 s."""
    from sim.serving_metrics import peak_window_power_W

    assert peak_window_power_W([0, 2], [0.5, 0.5], [100, 300], 4.0) == pytest.approx(300.0)
    assert peak_window_power_W([0, 0.5], [1, 1], [100, 100], 3.0) == pytest.approx(150.0)
    assert peak_window_power_W([0], [0.2], [10], 0.5) == pytest.approx(20.0)


def test_peak_window_power_is_the_busiest_window_of_a_fine_scan():
    """Random overlapping iterations: the peak is at least what any window of a fine scan of window starts holds,
    and more by no more than the scan's step can miss (two ends moving by a step, each at the highest power any
    iteration draws); it is never below the run's mean power."""
    from sim.serving_metrics import peak_window_power_W

    rng = np.random.default_rng(7)
    start = np.sort(rng.uniform(0, 9, 60))
    duration = rng.uniform(0.01, 0.4, 60)
    energy = rng.uniform(1, 50, 60)
    span = float((start + duration).max())
    peak = peak_window_power_W(start, duration, energy, span)
    starts = np.linspace(0, span - 1.0, 20001)[:, None]
    overlap = np.clip(np.minimum(start + duration, starts + 1.0) - np.maximum(start, starts), 0, None)
    scanned = (energy / duration * overlap).sum(axis=1)  # joules in each 1 s window: its mean power
    step = span / 20000
    assert scanned.max() - 1e-9 <= peak <= scanned.max() + 2 * step * (energy / duration).sum()
    assert peak >= energy.sum() / span


def test_window_power_conserves_energy_and_stays_under_the_peak():
    """Mean power in consecutive windows covering a run adds back up to its energy (power x width), and no 1 s window
    of a fixed grid holds more than the busiest second found anywhere (peak_window_power_W)."""
    from sim.serving_metrics import peak_window_power_W, window_power_W

    rng = np.random.default_rng(11)
    start = np.sort(rng.uniform(0, 20, 200))
    duration = rng.uniform(0.01, 0.3, 200)
    energy = rng.uniform(1, 80, 200)
    span = float((start + duration).max())
    edges = np.linspace(0, span, 137)
    assert (window_power_W(start, duration, energy, edges) * np.diff(edges)).sum() == pytest.approx(energy.sum())
    seconds = np.arange(0, np.floor(span) + 1)
    assert window_power_W(start, duration, energy, seconds).max() <= peak_window_power_W(start, duration, energy,
                                                                                          span) * (1 + 1e-12)


def test_two_phase_peak_power_is_the_busiest_window_of_the_two_phases():
    """A static batch's prefill then decode, each drawing evenly: the closed form over arrays of them equals
    peak_window_power_W of the two as iterations, whichever phase draws more, longer or shorter than the window."""
    from sim.serving_metrics import peak_window_power_W, two_phase_peak_power_W

    rng = np.random.default_rng(5)
    first_s, second_s = rng.uniform(0.05, 3.0, 200), rng.uniform(0.05, 3.0, 200)
    first_J, second_J = rng.uniform(1, 900, 200), rng.uniform(1, 900, 200)
    closed = two_phase_peak_power_W(first_s, first_J, second_s, second_J)
    each = [peak_window_power_W([0.0, a], [a, b], [e, f], a + b)
            for a, e, b, f in zip(first_s, first_J, second_s, second_J, strict=True)]
    np.testing.assert_allclose(closed, each, rtol=1e-9)
    scalars = [two_phase_peak_power_W(float(a), float(e), float(b), float(f))  # one point's path, in floats
               for a, e, b, f in zip(first_s, first_J, second_s, second_J, strict=True)]
    np.testing.assert_allclose(scalars, each, rtol=1e-9)
