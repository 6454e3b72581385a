"""The serving report: figures against the arrival rate, capacity bars, per-request detail of re-run designs,
serving tables; static reports keep their own figures."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from explore.evaluate import Evaluator
from explore.knobs import input_columns, knobs
from explore.metrics import metric_names
from explore.plots_serving import timeline_figure, windowed_mean
from explore.report import write_report
from explore.report_detail import DETAIL_FILE
from explore.report_serving import (
    DESIGN_KNOBS,
    FIGURE_TITLES,
    HOW_TO_READ,
    _styles,
    detail_rows,
    rate_series,
    run_detail,
)
from explore.rows import normalize_row
from explore.sweep import load_sweep
from sim.capacity import Capacity, RateVerdict, search_capacity
from sim.stability import Stability

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SLO = {"ttft_s": 2.0, "tpot_s": 0.1, "attainment": 0.9}
STATIC_FIGURES = ("roofline", "breakdown", "energy", "batch")
DETAIL = ("serving_cdf", "serving_timeline")  # the figures of re-run designs


def _serving_row(device: str, scheduler: str, rate: float | None, *, capacity: float = math.nan,
                 reason: str = "") -> dict:
    """A results row of a serving point with made-up metrics that worsen with the rate."""
    load = (rate or capacity or 1.0) / (8.0 if device == "h100-sxm" else 4.0)
    ttft_p99 = 0.1 * math.exp(3 * load) * (50 if scheduler == "static" else 1)
    metrics = dict.fromkeys(metric_names("point", "serving"), math.nan) | {
        "fits_in_memory": not reason, "infeasible_reason": reason, "calibrated": "fitted"}
    if not reason:
        attainment = min(1.0, 1.2 - 0.5 * load)
        metrics |= {
            "ttft_s": ttft_p99 / 3, "tpot_s": 0.02 * (1 + load), "tokens_per_s": 150 * (rate or capacity),
            "energy_per_token_J": 0.1 + 0.2 / (rate or capacity or 1.0), "avg_power_W": 300.0,
            "peak_memory_B": 30e9, "ttft_p99_s": ttft_p99, "tpot_p99_s": 0.03 * (1 + load),
            "goodput_rps": (rate or capacity) * attainment, "slo_attainment": attainment,
            "meets_slo": float(attainment >= 0.9), "requests_per_s": rate or capacity, "capacity_rps": capacity}
    inputs = {"point_id": f"{device}-{scheduler}-{rate}", "model": "llama-2-7b", "device": device, "batch": 64,
              "prompt": 0, "output": 0, "weight_bits": 16, "act_bits": 16, "kv_bits": 16, "sparsity": "dense",
              "execution": "eager", "scheduler": scheduler, "arrival": "poisson", "rate_per_s": rate,
              "requests": 300, "max_seqs": 64, "max_batched_tokens": 8192, "chunk_tokens": 512, "block_tokens": 16,
              "prefix_tokens": 0}
    assert set(input_columns(system=False, serving=False)) <= set(inputs)
    return inputs | metrics


@pytest.fixture
def rate_rows() -> list[dict]:
    rows = [_serving_row(device, scheduler, rate) for device in ("a100-sxm-80gb", "h100-sxm")
            for scheduler in ("static", "continuous", "chunked") for rate in (2, 6, 12)]
    return rows + [_serving_row("l4", "continuous", 2, reason="needs 14.2 GB for weights but the device has 8 GB")]


def _csv_round_trip(rows: list[dict], path: Path) -> list[dict]:
    """Rows as `explore report DIR` reads them: every value a string, None and NaN as ''."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows([{k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                           for k, v in row.items()} for row in rows])
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _drawn(out: Path) -> set[str]:
    names = {path.stem for path in (out / "figures").glob("*.png")}
    assert all((out / "figures" / f"{n}.png").read_bytes().startswith(PNG_SIGNATURE) for n in names)
    return names


def test_serving_report_from_csv_rows(tmp_path: Path, rate_rows: list[dict]) -> None:
    rows = _csv_round_trip(rate_rows, tmp_path / "results.csv")
    html_path, md_path = write_report(tmp_path, rows, title="serving", constraints=["tpot_p99_s <= 0.1"], slo=SLO)
    page, markdown = html_path.read_text(), md_path.read_text()
    assert _drawn(tmp_path) == {"serving_latency", "serving_goodput", "serving_energy"}
    for name in ("serving_latency", "serving_goodput", "serving_energy", "serving_capacity", "serving_cdf"):
        assert f"<h2>{FIGURE_TITLES[name]}</h2>" in page and f"## {FIGURE_TITLES[name]}" in markdown
    assert "Not drawn: the sweep did not search capacity" in page
    assert page.count(f"Not drawn: {DETAIL_FILE} holds no per-request") == 2  # the per-request figures say why
    assert "Roofline" not in page and "against batch size" not in page  # no static-batch figure for serving rows
    assert "One line per design (all 6 shown). 1 infeasible point (listed below) left out." in page
    assert "<th>scheduler</th><th>arrival rate (requests/s)</th>" in page and "<th>p99 TTFT (ms)</th>" in page
    assert "<th>prompt/output</th>" not in page
    assert "needs 14.2 GB for weights" in page  # the infeasible point with its reason
    assert "SLO: TTFT &lt;= 2,000 ms and TPOT &lt;= 100 ms for 90% of requests." in page
    assert "at 2, 6, 12 req/s; schedulers static, continuous, chunked." in page


def test_capacity_sweep_draws_bars_instead_of_rate_lines(tmp_path: Path) -> None:
    rows = [_serving_row(device, scheduler, None, capacity=capacity) for device, scheduler, capacity in
            (("a100-sxm-80gb", "static", 0.0), ("a100-sxm-80gb", "chunked", 5.3), ("h100-sxm", "static", 0.0),
             ("h100-sxm", "chunked", 11.2))]
    page = write_report(tmp_path, rows, title="capacity", slo=SLO)[0].read_text()
    assert _drawn(tmp_path) == {"serving_capacity"}
    assert page.count("capacity instead of sweeping arrival rates") == 3
    assert "Highest capacity" in page and "<th>capacity (requests/s)</th>" in page
    assert "arrival rate (requests/s)</th>" not in page  # no rate to show


def test_rate_series_one_line_per_design_sorted_by_rate(rate_rows: list[dict]) -> None:
    rows = [normalize_row(row) for row in reversed(rate_rows)]
    series, caption = rate_series(rows, ("ttft_p99_s",))
    assert [s.label for s in series][:2] == ["h100-sxm / chunked", "h100-sxm / continuous"]
    assert len(series) == 6 and all(s.rate_per_s.tolist() == [2, 6, 12] for s in series)
    assert all(np.all(np.diff(s.values["ttft_p99_s"]) > 0) for s in series)
    # Color tells schedulers apart, line style the devices: same scheduler, same color.
    colors = {s.label.split(" / ")[1]: s.style.color for s in series}
    assert all(s.style.color == colors[s.label.split(" / ")[1]] for s in series) and len(set(colors.values())) == 3
    assert len({s.style.linestyle for s in series}) == 2


def test_the_caption_says_what_the_colors_tell_apart(rate_rows: list[dict]) -> None:
    """Several schedulers: color is the scheduler, and the caption says so; one scheduler: each design draws in a
    color of its own, and the caption does not claim the colors are schedulers."""
    series, caption = rate_series([normalize_row(row) for row in rate_rows], ("ttft_p99_s",))
    assert "Color is the scheduler" in caption
    one = [normalize_row(row) for row in rate_rows if row["scheduler"] == "chunked"]
    series, caption = rate_series(one, ("ttft_p99_s",))
    assert len(series) == 2 and len({s.style.color for s in series}) == 2
    assert "scheduler" not in caption and "a color of its own" in caption


def test_past_ten_colors_every_series_still_draws_unlike_the_others() -> None:
    """Sixteen designs on one scheduler: the 11th reuses the 1st's color, so its marker (a point alone at one rate
    shows no line style) and line style tell it apart; no two series share color, marker and line style."""
    styles, caption = _styles([("h100-sxm", "chunked", i) for i in range(16)], ["device", "scheduler", "replicas"])
    drawn = {(s.color, s.marker, s.linestyle) for s in styles}
    assert len(drawn) == 16 and styles[10].color == styles[0].color and styles[10].marker != styles[0].marker
    assert "past ten colors a marker" in caption


@pytest.mark.parametrize(("knob", "values"), [("memory_utilization", (0.5, 0.9)),
                                               ("prefix_attention", ("paged", "cascade")),
                                               ("max_decode_preemptions", (0, 4))])
def test_rate_series_tells_apart_designs_of_every_serving_knob_a_sweep_lists(knob: str, values: tuple) -> None:
    """Rows that differ only in a serving knob a sweep may list are two designs, two lines labelled by it (not one
    line with two points at each rate)."""
    rows = [normalize_row(_serving_row("h100-sxm", "orca", rate) | {knob: value, "point_id": f"{value}-{rate}"})
            for value in values for rate in (2, 6)]
    series, _ = rate_series(rows, ("ttft_p99_s",))
    assert [s.label for s in series] == [f"h100-sxm / orca / {knob} {value}" for value in values]
    assert all(s.rate_per_s.tolist() == [2, 6] for s in series)


def test_every_serving_knob_but_the_rate_tells_designs_apart() -> None:
    assert {k.name for k in knobs(scope="serving")} - {"rate_per_s"} <= set(DESIGN_KNOBS)


def test_detail_rows_without_objectives_take_each_scheduler_at_its_highest_rate(rate_rows: list[dict]) -> None:
    rows = [normalize_row(row) for row in rate_rows]
    picked, chosen = detail_rows(rows, [])
    assert not chosen
    assert [(r["device"], r["scheduler"], r["rate_per_s"]) for r, _ in picked] == [
        ("a100-sxm-80gb", "static", 12), ("a100-sxm-80gb", "continuous", 12), ("a100-sxm-80gb", "chunked", 12)]


def test_windowed_mean_weights_by_time_and_counts_idle_as_zero() -> None:
    # Value 4 over [0, 1), idle over [1, 2), value 2 over [2, 4).
    means = windowed_mean(np.array([2.0, 0.0]), np.array([2.0, 1.0]), np.array([2, 4]), np.array([0.0, 2.0, 4.0]))
    assert means.tolist() == pytest.approx([2.0, 2.0])
    halves = windowed_mean(np.array([0.0]), np.array([1.0]), np.array([3]), np.array([0.0, 0.5, 2.0]))
    assert halves.tolist() == pytest.approx([3.0, 1.0])



def test_timeline_averages_engines_whose_iterations_overlap() -> None:
    """Two engines (two replicas, or a pipelined replica's two engines) each hold half their KV blocks and run 4
    sequences, over [0, 1.5) s and [0.5, 2) s: the timeline is their mean per window (never above either engine's
    50%), 25% over [0, 0.5), 50% over [0.5, 1.5), 25% over [1.5, 2), and 2, 4, 2 sequences likewise."""
    data = {"ttft_s": [0.1, 0.1], "tpot_s": [0.1, 0.1], "start_s": [0.0, 0.5], "duration_s": [1.5, 1.5],
            "kv_utilization": [0.5, 0.5], "batch_size": [4, 4], "engine": [0, 1], "engines": 2, "end_s": 2.0}
    figure = timeline_figure([run_detail(data, "A", "C0", 64.0)])
    kv_ax, batch_ax = figure.axes[:2]
    t, kv = kv_ax.lines[0].get_xdata(), kv_ax.lines[0].get_ydata()
    expected = np.where((t > 0.5) & (t < 1.5), 50.0, 25.0)
    np.testing.assert_allclose(kv, expected, atol=1e-6)
    np.testing.assert_allclose(batch_ax.lines[0].get_ydata(), expected / 100 * 8, atol=1e-6)
    # Stored before engines were told apart: one engine's iterations, as before.
    del data["engine"], data["engines"]
    data["start_s"], data["duration_s"] = [0.0, 1.0], [1.0, 1.0]
    one = timeline_figure([run_detail(data, "A", "C0", 64.0)]).axes[0].lines[0].get_ydata()
    np.testing.assert_allclose(one, np.full(len(one), 50.0), atol=1e-6)


def test_timeline_power_is_static_plus_the_overlapping_iterations_energy() -> None:
    """Two replicas of 100 W static power in all, each iteration drawing 150 J over [0, 1.5) s and [0.5, 2) s (100 W
    each): 200 W over [0, 0.5), 300 W over [0.5, 1.5), 200 W over [1.5, 2); its rated 700 W dashed. Stored before
    iterations carried their energy: no power panel."""
    data = {"ttft_s": [0.1, 0.1], "tpot_s": [0.1, 0.1], "start_s": [0.0, 0.5], "duration_s": [1.5, 1.5],
            "kv_utilization": [0.5, 0.5], "batch_size": [4, 4], "engine": [0, 1], "engines": 2, "end_s": 2.0,
            "dynamic_J": [150.0, 150.0], "static_W": 100.0}
    figure = timeline_figure([run_detail(data, "A", "C0", 64.0, rated_W=700.0)])
    power_ax = figure.axes[2]
    t, power = power_ax.lines[0].get_xdata(), power_ax.lines[0].get_ydata()
    np.testing.assert_allclose(power, np.where((t > 0.5) & (t < 1.5), 300.0, 200.0), atol=1e-6)
    assert power_ax.lines[1].get_ydata()[0] == 700.0
    del data["dynamic_J"], data["static_W"]
    assert len(timeline_figure([run_detail(data, "A", "C0", 64.0)]).axes) == 2


def test_timeline_draws_the_arrival_rate_above_the_panels() -> None:
    """10 requests arrive evenly over [0, 1) s and 30 over [1, 2) s: the top panel reads 10 then 30 requests a second
    (averaged over each second's windows); the KV panel is still the next one. Stored before arrivals were: no such
    panel."""
    data = {"ttft_s": [0.1] * 40, "tpot_s": [0.1] * 40, "start_s": [0.0], "duration_s": [2.0],
            "kv_utilization": [0.5], "batch_size": [4], "end_s": 2.0,
            "arrival_s": np.concatenate([np.arange(10) / 10 + 0.01, 1 + np.arange(30) / 30 + 0.01]).tolist()}
    figure = timeline_figure([run_detail(data, "A", "C0", 64.0)])
    rates, edges, _ = figure.axes[0].patches[0].get_data()
    first = edges[:-1] < 1.0 - 1e-9
    assert (rates[first].mean(), rates[~first].mean()) == pytest.approx((10.0, 30.0))
    assert figure.axes[0].get_ylabel() == "requests/s" and figure.axes[1].get_ylabel() == "KV cache in use (%)"
    del data["arrival_s"]
    assert timeline_figure([run_detail(data, "A", "C0", 64.0)]).axes[0].get_ylabel() == "KV cache in use (%)"


SWEEP = """\
name: tiny-serving
model: llama-2-7b
device: h100-sxm
serving:
  requests: 20
  prompt: {dist: uniform, low: 64, high: 512}
  output: {dist: uniform, low: 8, high: 64}
  rate: [2, 8]
  scheduler: [continuous, chunked]
  max_seqs: 16
  slo: {ttft_s: 0.5, tpot_s: 0.05}
objectives: {maximize: [goodput_rps], minimize: [ttft_p99_s]}
"""


def test_report_reruns_chosen_points_for_per_request_figures(tmp_path: Path, evaluator: Evaluator) -> None:
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    sweep = load_sweep(str(tmp_path / "sweep.yaml"))
    points = {p.point_id: p for p in sweep.points()}
    rows = [p.row() | evaluator.evaluate(p).metrics for p in points.values()]
    goals = {"objectives": sweep.spec.objectives.model_dump(), "constraints": sweep.spec.constraints}
    slo = sweep.spec.serving.slo.model_dump()
    page = write_report(tmp_path / "out", rows, title="tiny", evaluator=evaluator, slo=slo, points=points,
                        **goals)[0].read_text()
    drawn = _drawn(tmp_path / "out")
    assert {"serving_latency", "serving_goodput", "serving_energy", "serving_cdf", "serving_timeline"} <= drawn
    assert any(name.startswith("pareto_") for name in drawn) and not drawn & set(STATIC_FIGURES)
    assert "The chosen designs" in page and FIGURE_TITLES["serving_timeline"] in page
    runs = {name: (tmp_path / "out" / "figures" / f"{name}.png").read_bytes() for name in DETAIL}
    # `explore report DIR` has neither design points nor an evaluator: the runs come from the stored detail.
    write_report(tmp_path / "out", rows, title="tiny", slo=slo, **goals)
    assert {name: (tmp_path / "out" / "figures" / f"{name}.png").read_bytes() for name in DETAIL} == runs
    # Nothing stored and no design points to re-run: the per-request figures say so, and earlier PNGs are removed.
    (tmp_path / "out" / DETAIL_FILE).unlink()
    page = write_report(tmp_path / "out", rows, title="tiny", evaluator=evaluator, **goals)[0].read_text()
    assert not set(DETAIL) & _drawn(tmp_path / "out")
    assert page.count("results.csv does not hold the whole serving workload") == 2


def _searched(capacity_rps: float, growth: float, unjudged_above: bool) -> Capacity:
    """A capacity search on [1, 16] whose runs meet the SLO and keep up (queue growth `growth`) up to capacity_rps;
    above it they fail on a growing queue, or (unjudged_above) are too short to judge: sim/capacity.py writes the
    note."""
    def judge(rate: float) -> RateVerdict:
        if rate <= capacity_rps:
            return RateVerdict(meets_slo=True, stability=Stability(judged=True, growth=growth))
        if unjudged_above:
            return RateVerdict(meets_slo=True, stability=Stability(
                judged=False, growth=math.nan, reason="its 200 arrivals span 22 s, under 3 mean end-to-end latencies"))
        return RateVerdict(meets_slo=True, stability=Stability(judged=True, growth=0.4, reason="its queue grows"))

    return search_capacity(judge, low=1.0, high=16.0)


def _capacity_rows(with_columns: bool) -> list[dict]:
    """Two capacity-search rows (a judged one on the H100, an unjudged one on the A100) and an infeasible one;
    without the capacity columns as a folder written before them."""
    rows = []
    for device, capacity, growth, unjudged_above in (("h100-sxm", 8.0, 0.01, False),
                                                      ("a100-sxm-80gb", 5.0, 0.02, True)):
        found = _searched(capacity, growth, unjudged_above)
        row = _serving_row(device, "chunked", None, capacity=found.rate_per_s)
        rows.append(row | (found.metrics() if with_columns else {}))
    infeasible = _serving_row("l4", "chunked", None, reason="needs 14.2 GB for weights but the device has 8 GB")
    return rows + [infeasible | ({"capacity_judged": math.nan, "queue_growth": math.nan, "capacity_note": ""}
                                 if with_columns else {})]


def _md_section(markdown: str, title: str) -> list[list[str]]:
    """The cells of a Markdown table section of the report, header first."""
    lines = markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines
            if line.startswith("|") and not line.startswith("|---")]


def test_tables_head_each_metric_as_the_figures_label_it(tmp_path: Path) -> None:
    """A metric has one name: a serving table heads its columns with the metric registry's label and the unit the
    figures show (explore/metrics.py: 'goodput', requests/s; energy per output token, J/token; seconds as ms), as the
    energy figure's axis reads 'energy per output token (J/token)'; the infeasible points' table too."""
    rows = [_serving_row("h100-sxm", "chunked", 2.0), _serving_row("a100-sxm-80gb", "chunked", 2.0,
                                                                   reason="needs 90 GB, has 80 GB")]
    markdown = write_report(tmp_path, rows, title="serving", slo=SLO)[1].read_text()
    named = ["model", "device", "scheduler", "arrival rate (requests/s)", "format"]
    assert _md_section(markdown, "Highest goodput")[0] == named + [
        "goodput (requests/s)", "SLO attainment", "p99 TTFT (ms)", "p99 TPOT (ms)", "tokens/s",
        "energy per output token (J/token)", "average power (W)", "peak memory (GB)"]
    assert _md_section(markdown, "Infeasible design points")[0] == named + ["peak memory (GB)", "reason"]


def test_unjudged_capacity_is_marked_with_its_note_in_tables_and_figure(tmp_path: Path) -> None:
    rows = _csv_round_trip(_capacity_rows(with_columns=True), tmp_path / "results.csv")
    typed = [normalize_row(r) for r in rows]
    judged, unjudged = typed[0], typed[1]
    assert judged["capacity_judged"] and not unjudged["capacity_judged"]  # the search's own verdicts
    note = unjudged["capacity_note"]
    assert note.startswith("not judged: the run at") and "its 200 arrivals span 22 s" in note
    html_path, md_path = write_report(tmp_path, rows, title="capacity", slo=SLO)
    page, markdown = html_path.read_text(), md_path.read_text()
    assert _drawn(tmp_path) == {"serving_capacity"}
    table = _md_section(markdown, "Highest capacity")
    header = table[0]
    at = header.index("capacity (requests/s)")
    assert header[at + 1] == "queue growth (s/s)"
    by_device = {cells[1]: cells for cells in table[1:]}
    assert by_device["h100-sxm"][at] == f"{judged['capacity_rps']:.4g}"  # judged: no mark
    assert by_device["a100-sxm-80gb"][at] == f"{unjudged['capacity_rps']:.4g} \u2020"
    # The queue growth of the run at each capacity (judged: it kept up), as the search measured it.
    assert by_device["h100-sxm"][at + 1] == "0.01" and by_device["a100-sxm-80gb"][at + 1] == "0.02"
    # The footnote quotes the note of the unjudged capacity only, and says what to do, in both tables and the figure.
    for text in (markdown, page):
        assert text.count(note) == 3  # Highest capacity, Lowest energy per token, the capacity figure's caption
        assert text.count("Raise the number of requests") == 3
        assert "\u2020 marks a capacity not judged (capacity_judged 0)" in text
        assert "A hollow bar and \u2020 mark a capacity not judged" in text
        assert "h100-sxm / chunked at" not in text  # the judged capacity is not footnoted
        assert "the time requests wait for a batch grows by at most 0.05 s per s" in text


def test_folder_without_capacity_columns_renders_as_before(tmp_path: Path) -> None:
    rows = _csv_round_trip(_capacity_rows(with_columns=False), tmp_path / "results.csv")
    html_path, md_path = write_report(tmp_path, rows, title="capacity", slo=SLO)
    page, markdown = html_path.read_text(), md_path.read_text()
    assert _drawn(tmp_path) == {"serving_capacity"}
    assert _md_section(markdown, "Highest capacity")[0] == [
        "model", "device", "scheduler", "format", "goodput (requests/s)", "SLO attainment", "p99 TTFT (ms)",
        "p99 TPOT (ms)", "tokens/s", "energy per output token (J/token)", "average power (W)", "peak memory (GB)",
        "capacity (requests/s)"]
    for text in (markdown, page):
        assert "\u2020" not in text and "queue growth" not in text and "not judged" not in text
        assert "keeps up" not in text and "Raise the number of requests" not in text


def test_rate_series_names_its_subset_without_a_chosen_design() -> None:
    """More designs than lines drawn and no objective: the caption names the first ones drawn, not '0 holding a chosen
    design and the first 16 others'."""
    from explore.report_serving import MAX_SERIES

    rows = [normalize_row(_serving_row("h100-sxm", "orca", rate) | {"max_decode_preemptions": value,
                                                                    "point_id": f"{value}-{rate}"})
            for value in range(MAX_SERIES + 4) for rate in (2, 6)]
    series, caption = rate_series(rows, ("ttft_p99_s",))
    assert len(series) == MAX_SERIES
    assert f"{MAX_SERIES} of {MAX_SERIES + 4} shown: the first {MAX_SERIES} in the sweep's order; the rest are in " \
           "results.csv)." in caption
    assert "holding" not in caption


def test_the_timeline_says_a_data_parallel_replica_is_drawn_per_rank():
    """A data-parallel replica's ranks are engines with their own KV share and max_seqs (sim/replica.py run_lockstep):
    the timeline's batch and KV are each rank's, which its caption must say, as mean_batch_size's help does."""
    assert "data-parallel replica's ranks" in HOW_TO_READ["serving_timeline"]


def test_where_the_urgent_requests_have_limits_of_their_own_each_line_says_whose():
    from explore.report_serving import _slo_limit

    slo = {"ttft_s": 5.0, "urgent_ttft_s": 1.0, "attainment": 0.9}
    assert _slo_limit(slo, "ttft_s")[0].label == "The other requests' SLO limit (90% of requests must meet it)"
    assert _slo_limit(slo, "urgent_ttft_s")[0].label.startswith("The urgent requests' SLO limit")
    assert _slo_limit({"ttft_s": 5.0}, "ttft_s")[0].label == "SLO limit (each request must meet it)"


def test_the_header_names_each_class_limits_where_the_urgent_requests_have_their_own(rate_rows: list[dict]) -> None:
    """examples/slo-classes.yaml's SLO (1 s and 50 ms for the urgent requests, 5 s and 200 ms for the rest): the
    header said only the others' 5 s and 200 ms, as if those were every request's limits."""
    from explore.report_serving import serving_summary

    slo = {"ttft_s": 5.0, "tpot_s": 0.2, "urgent_ttft_s": 1.0, "urgent_tpot_s": 0.05, "attainment": 0.9}
    assert serving_summary(rate_rows, slo)[-1] == ("SLO: the urgent requests TTFT <= 1,000 ms and TPOT <= 50 ms, the "
                                                   "others TTFT <= 5,000 ms and TPOT <= 200 ms, for 90% of each class.")
    # An urgent limit left unset is the others' (README: each unset takes the others' limit); urgent limits alone
    # leave the others free.
    assert serving_summary(rate_rows, {"ttft_s": 5.0, "tpot_s": 0.2, "urgent_ttft_s": 1.0, "attainment": 0.9})[-1] == (
        "SLO: the urgent requests TTFT <= 1,000 ms and TPOT <= 200 ms, the others TTFT <= 5,000 ms and TPOT <= 200 ms, "
        "for 90% of each class.")
    assert serving_summary(rate_rows, {"urgent_ttft_s": 1.0, "attainment": 0.9})[-1] == (
        "SLO: the urgent requests TTFT <= 1,000 ms, the others none, for 90% of each class.")


def test_a_max_seqs_far_above_every_batch_is_named_not_drawn() -> None:
    """examples/autoscaling.yaml's batches of a few sequences under max_seqs 256: the limit's line set the panel's top
    at 256 and flattened them against the axis. Far above every batch (under a quarter of it reached), it is named in
    the title and the panel fits the batches; a batch near it draws it."""
    data = {"ttft_s": [0.1], "tpot_s": [0.1], "start_s": [0.0], "duration_s": [2.0], "kv_utilization": [0.1],
            "batch_size": [8], "end_s": 2.0}
    batch_ax = timeline_figure([run_detail(data, "A", "C0", 256.0)]).axes[1]
    assert batch_ax.get_ylim()[1] < 64 and len(batch_ax.lines) == 1
    assert batch_ax.get_title() == "Running batch size (max_seqs 256: far above every batch, not drawn)"
    batch_ax = timeline_figure([run_detail({**data, "batch_size": [200]}, "A", "C0", 256.0)]).axes[1]
    assert batch_ax.get_ylim()[1] >= 256 and batch_ax.lines[-1].get_ydata()[0] == 256
    assert batch_ax.get_title() == "Running batch size"


def test_a_log_latency_axis_within_two_decades_labels_more_than_one_tick() -> None:
    """examples/slo-classes.yaml's p99 TTFT of 1.7-36 s on a log axis read '10^4' alone: the rate axis turned the
    minor ticks off on both axes, so neither the values nor the 5 s limit could be read. The y axis keeps labelled
    ticks between the powers of ten (2 and 3 x 10^3 among them)."""
    from explore.plots_serving import Panel, RateSeries, SeriesStyle, rate_figure

    series = [RateSeries(label=label, style=SeriesStyle(color=color), rate_per_s=np.array([16.0, 20.0, 24.0]),
                         values={"ttft_p99_s": np.array(values)}, meets_slo=np.array([1.0, 1.0, 0.0]))
              for label, color, values in (("A", "C0", [2.1, 1.7, 3.8]), ("B", "C1", [12.9, 19.7, 36.4]))]
    figure = rate_figure(series, [Panel(metric="ttft_p99_s", title="p99 TTFT", ylabel="ms", scale=1e3)])
    ax = figure.axes[0]
    figure.canvas.draw()
    assert ax.get_yscale() == "log"
    low, high = ax.get_ylim()
    shown = [tick for tick in ax.yaxis.get_majorticklabels() + ax.yaxis.get_minorticklabels()
             if tick.get_text() and low <= tick.get_position()[1] <= high]
    assert len(shown) >= 3, [tick.get_text() for tick in shown]
    assert {2000.0, 3000.0} <= {round(tick.get_position()[1]) for tick in shown}
    assert [tick.get_text() for tick in ax.xaxis.get_majorticklabels()] == ["16", "20", "24"]
    assert not [tick for tick in ax.xaxis.get_minorticklabels() if tick.get_text()]


def test_the_latency_cdf_says_whose_limits_it_draws_where_the_urgent_requests_have_their_own(rate_rows) -> None:
    """The CDF's curves hold every request and its lines are the other requests' limits: with urgent limits of their
    own (slo-classes: 1 s and 50 ms) a curve clearing the lines may leave the urgent class short, which its caption
    ('a curve meets the SLO where ...') did not say."""
    from types import SimpleNamespace

    from explore.report_serving import detail_figures

    data = {"ttft_s": [0.1, 0.2], "tpot_s": [0.02, 0.03], "start_s": [0.0], "duration_s": [1.0],
            "kv_utilization": [0.1], "batch_size": [2], "end_s": 1.0}
    detail = SimpleNamespace(serving_run=lambda row, point: data, can_price=True)
    classes = {"ttft_s": 5.0, "tpot_s": 0.2, "urgent_ttft_s": 1.0, "urgent_tpot_s": 0.05, "attainment": 0.9}
    cdf = detail_figures(rate_rows, detail, (), None, classes)[0]
    assert ("the lines are the other requests' limits, not the urgent requests' own (TTFT 1,000 ms and TPOT 50 ms)"
            in cdf.caption), cdf.caption
    assert "urgent" not in detail_figures(rate_rows, detail, (), None, SLO)[0].caption


def test_the_urgent_requests_tpot_has_a_panel_where_their_slo_limits_it(rate_rows: list[dict], monkeypatch) -> None:
    """Rows whose requests differ in priority: the latency figure adds the urgent requests' p99 TTFT, and their p99
    TPOT only where the SLO gives them a TPOT limit of their own, drawn at that limit."""
    from matplotlib.figure import Figure

    import explore.report_serving
    from explore.report_serving import rate_figures

    drawn: list = []
    monkeypatch.setattr(explore.report_serving, "rate_figure", lambda series, panels: drawn.append(panels) or Figure())
    rows = [row | {"urgent_ttft_p99_s": 0.5, "urgent_tpot_p99_s": 0.04} for row in rate_rows]
    for slo, urgent in (({"ttft_s": 5.0, "tpot_s": 0.2, "urgent_ttft_s": 1.0}, ["urgent_ttft_p99_s"]),
                        ({"ttft_s": 5.0, "tpot_s": 0.2, "urgent_tpot_s": 0.05},
                         ["urgent_ttft_p99_s", "urgent_tpot_p99_s"])):
        drawn.clear()
        rate_figures(rows, slo, None)
        latency = drawn[0]
        assert [panel.metric for panel in latency][2:] == urgent
        limits = {panel.metric: [limit.value for limit in panel.limits] for panel in latency}
        assert limits["urgent_ttft_p99_s"] == [slo.get("urgent_ttft_s", 5.0)]
        assert limits.get("urgent_tpot_p99_s", [0.05]) == [0.05]


def test_serving_tables_write_every_number_from_a_thousand_with_separators_and_the_price_by_its_registry_label():
    """6,387 and 19,923 tokens/s in one column read alike (explore/rows.py format_number), and an autoscaled pool's
    price column is headed as the metric registry names usd_per_hour ('system price (USD/hour)', explore/metrics.py),
    as everywhere else, not 'usd/hour'."""
    from explore.report_serving import serving_tables
    rows = [_serving_row("h100-sxm", "continuous", rate) | {"mean_replicas": 1.5, "usd_per_hour": 6.0}
            for rate in (2, 6)]
    rows[0]["tokens_per_s"], rows[1]["tokens_per_s"] = 6387.0, 19923.0
    top = serving_tables(rows)[0][0]
    cells = [row[top.headers.index("tokens/s")] for row in top.cells]
    assert sorted(cells) == ["19,923", "6,387"]
    assert "usd/hour" not in top.headers
    assert [row[top.headers.index("system price (USD/hour)")] for row in top.cells] == ["6", "6"]
