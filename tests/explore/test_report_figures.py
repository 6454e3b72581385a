"""What the report's figures and tables show (issue 16): constraint-breaking points kept out of the best tables
and marked, no figure silently dropping the chosen designs, one scale for sensitivity, device and format encoded
on the Pareto plots, every format's roof, what-if speed-ups, the energy breakdown, ms throughout, a re-drawn
report that re-prices nothing, and Chrome-trace events that say what each kernel is."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from tiny_sweep import write_tiny_model

from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from explore.report import report_tables, write_report
from explore.rows import metric_axis_label, normalize_row, point_label

NAN = float("nan")


def _row(model: str, device: str, batch: int, bits: tuple[int, int, int], tpot: float, ttft: float,
         energy: float) -> dict:
    """A hand-made feasible results row."""
    weight, act, kv = bits
    return normalize_row({
        "model": model, "device": device, "batch": batch, "prompt": 128, "output": 8, "weight_bits": weight,
        "act_bits": act, "kv_bits": kv, "execution": "eager", "fits_in_memory": True, "infeasible_reason": "",
        "ttft_s": ttft, "tpot_s": tpot, "e2e_s": ttft + 7 * tpot, "tokens_per_s": batch / tpot,
        "energy_per_token_J": energy, "avg_power_W": 300.0, "peak_memory_B": 2e10, "time_gemm_s": 7 * tpot,
        "time_attention_s": ttft})


# ---- constraint-breaking points ------------------------------------------------------------------------------

def test_best_tables_leave_out_and_mark_points_that_break_a_constraint() -> None:
    ok = [_row("m", "gpu-a", b, (16, 16, 16), 0.01 * b, 0.1, 1.0 / b) for b in (1, 2, 4)]
    fast = _row("m", "gpu-b", 64, (16, 16, 16), 0.01, 0.9, 0.01)  # best on both, but TTFT 900 ms > 500 ms
    lead, tail = report_tables(ok + [fast], ["ttft_s <= 0.5"])
    for table in lead:
        assert table.cells and all(cells[1] != "gpu-b" for cells in table.cells), table.title
        assert "1 feasible point that break a constraint are left out" in table.note
    broken = next(t for t in tail if t.title == "Points that break a constraint")
    assert [cells[1] for cells in broken.cells] == ["gpu-b"]
    assert broken.headers[-1] == "breaks" and broken.cells[0][-1] == "ttft_s <= 0.5 (TTFT is 900 ms)"


def test_best_tables_that_list_no_point_say_why() -> None:
    """A constraint no point meets, or no feasible point at all: the best tables said 'The 0 feasible points meeting
    the constraints with the most tokens/s.'; they now say there are none and why."""
    rows = [_row("m", "gpu", b, (16, 16, 16), 0.01, 0.9, 1.0) for b in (1, 2)]  # TTFT 900 ms
    lead, _ = report_tables(rows, ["ttft_s <= 0.5"])
    for table in lead:
        assert not table.cells and table.note.startswith("None: no feasible point meets the constraints. 2 feasible "
                                                         "points that break a constraint are left out"), table.note
    unfit = [normalize_row({**row, "fits_in_memory": False, "infeasible_reason": "needs more"}) for row in rows]
    lead, _ = report_tables(unfit)
    assert [table.note for table in lead] == ["None: no design point is feasible."] * 2
    lead, _ = report_tables(rows)
    assert lead[0].note == "The 2 feasible points with the most tokens/s."


def test_best_tables_name_the_generic_knobs_a_point_sets() -> None:
    """Points that differ only in a generic knob (here how a tensor-parallel system all-reduces) are told apart by a
    knobs column, which names each knob a point sets to other than its default; a table of points that set none has
    no such column."""
    nccl = normalize_row({**_row("m", "gpu", 1, (16, 16, 16), 0.012, 0.25, 1.0), "tp": 4, "allreduce": "nccl"})
    custom = normalize_row({**_row("m", "gpu", 1, (16, 16, 16), 0.010, 0.25, 0.9), "tp": 4, "allreduce": "custom"})
    alone = normalize_row({**_row("m", "gpu", 1, (16, 16, 16), 0.02, 0.3, 1.1), "tp": 1, "allreduce": "custom"})
    lead, _ = report_tables([nccl, custom, alone])
    table = lead[0]
    knobs = [dict(zip(table.headers, cells, strict=True))["knobs"] for cells in table.cells]
    assert knobs == ["allreduce=custom", "", ""]  # one device (tp 1) all-reduces nothing: custom changes nothing
    plain, _ = report_tables([_row("m", "gpu", 1, (16, 16, 16), 0.012, 0.25, 1.0)])
    assert "knobs" not in plain[0].headers


def test_lines_against_tp_keep_points_of_different_knobs_apart() -> None:
    """The scaling figure draws one line per device, batch, format and set of generic knobs: NCCL and custom
    all-reduces are two lines, each with its own points in tp order."""
    from explore.report_static import batch_panels

    rows = [normalize_row({**_row("m", "gpu", 1, (16, 16, 16), 0.01 / tp * (0.8 if ar == "custom" else 1.0), 0.1, 1.0),
                           "tp": tp, "allreduce": ar}) for ar in ("nccl", "custom") for tp in (1, 2, 4)]
    (panel,), _, _ = batch_panels(rows, [], lambda row: [], knob="tp")
    assert len(panel.series) == 2
    for series in panel.series:
        assert list(series.batch) == [1, 2, 4] and all(series.tpot_s[:-1] > series.tpot_s[1:]), series.label
    assert {("allreduce=custom" in s.label) for s in panel.series} == {True, False}


def test_lines_against_tp_caption_says_the_line_style_is_batch_and_format() -> None:
    """Against tp, two batches of one format on one device are two lines told apart by line style alone, so the
    caption names batch beside format as what the style encodes."""
    from explore.report_static import batch_panels

    rows = [normalize_row({**_row("m", "gpu", batch, (16, 16, 16), 0.01 / tp, 0.1, 1.0), "tp": tp})
            for batch in (1, 32) for tp in (2, 4)]
    (panel,), caption, _ = batch_panels(rows, [], lambda row: [], knob="tp")
    assert len({s.color_key for s in panel.series}) == 1 and len({s.style_key for s in panel.series}) == 2
    assert "(color: device, line style and marker: batch and format)" in caption



def test_lines_against_tp_name_their_pipeline_stages_not_one_system() -> None:
    """A line through tp 1, 2 and 4 on two pipeline stages runs on 2, 4 and 8 devices: its name says 'pp2', not
    'gpu x2 (tp1 pp2)' (the system at its first point only); one stage names the device alone."""
    from explore.report_static import batch_panels

    rows = [normalize_row({**_row("m", "gpu", 1, (16, 16, 16), 0.01 / tp, 0.1, 1.0), "tp": tp, "pp": pp})
            for pp in (1, 2) for tp in (1, 2, 4)]
    (panel,), _, _ = batch_panels(rows, [], lambda row: [], knob="tp")
    assert sorted(s.color_key for s in panel.series) == ["gpu", "gpu / pp2"]
    assert all("tp1" not in s.label and list(s.batch) == [1, 2, 4] for s in panel.series)

# ---- no figure drops the chosen designs ----------------------------------------------------------------------

def _many_lines() -> list[dict]:
    """Two models on 3 devices in 8 formats at 3 batches: 24 lines per model, 48 in all."""
    formats = [(w, a, kv) for w in (16, 8, 4, 2) for a in (16,) for kv in (16, 8)]
    return [_row(model, device, batch, bits, 0.02 + 0.001 * i + 0.0001 * batch, 0.1 * batch, 1.0 / batch)
            for model in ("small", "large") for i, device in enumerate(("gpu-a", "gpu-b", "gpu-c"))
            for bits in formats for batch in (1, 8, 32)]


def test_batch_figure_keeps_the_chosen_designs_and_names_its_subset() -> None:
    from explore.report_static import batch_panels

    rows = _many_lines()
    chosen = [(rows[-1], ["best energy_per_token_J"])]  # the last line of the last model: dropped by 'first 16'
    panels, caption, subset = batch_panels(rows, chosen, lambda row: [])
    assert [p.title for p in panels] == ["small", "large"]  # one panel per model
    assert all(len(p.series) == 16 for p in panels) and subset
    assert any(bool(np.any(s.chosen)) for s in panels[1].series)
    assert "large: 16 of 24 lines (the 1 holding a chosen design and the 15 others with the lowest TPOT" in caption
    assert point_label(rows[-1]) in caption  # the stars are named
    _, caption, _ = batch_panels(rows, [], lambda row: [])  # no objectives: no design is chosen
    assert "large: 16 of 24 lines (the 16 with the lowest TPOT;" in caption and "the 0 holding" not in caption
    few = [row for row in rows if row["model"] == "small" and row["weight_bits"] == 16]
    panels, caption, subset = batch_panels(few, [], lambda row: [])
    assert len(panels[0].series) == 6 and not subset and "small: all 6 lines" in caption
    # Color is the device and line style the format; with what-if values, color is the device as changed, and the
    # caption says so.
    assert len({s.color_key for s in panels[0].series}) == 3 and len({s.style_key for s in panels[0].series}) == 2
    assert "(color: device, line style" in caption
    what_if = [normalize_row(dict(row, **{"device.memory.bandwidth_GBps": bw})) for row in few for bw in (1000, 6000)]
    panels, caption, _ = batch_panels(what_if, [], lambda row: [])
    assert len({s.color_key for s in panels[0].series}) == 6 and "(color: device and its what-if values," in caption


def test_latency_breakdown_keeps_the_chosen_design() -> None:
    from explore.report_static import MAX_BARS, breakdown_rows

    rows = _many_lines()
    best = rows[-1]
    shown, what = breakdown_rows(rows, [(best, ["best tpot_s"])])
    assert len(shown) <= MAX_BARS and shown[0] is best
    assert all(row["batch"] == best["batch"] for row in shown)
    assert what.startswith(f"{len(shown)} of {len(rows)} feasible design points: the 1 chosen design")


def test_energy_figure_shows_every_format_and_the_best_point() -> None:
    from explore.report_static import energy_panels

    rows = _many_lines()
    panels, caption = energy_panels(rows, [])
    assert [p.title for p in panels] == ["small", "large"]
    assert all(len(p.energy_J) == 8 and len(p.devices) == 3 for p in panels)  # every format, every device
    lowest = min(r["energy_per_token_J"] for r in rows)
    assert min(min(v) for p in panels for v in p.energy_J.values()) == lowest
    assert panels[0].notes["w16a16kv16"] == ["b32"] * 3 and "lowest energy" in caption
    assert "what-if of its device" not in caption  # no overrides: every bar is a device as shipped
    what_if = [normalize_row(dict(row, **{"device.memory.bandwidth_GBps": 6000})) for row in rows]
    assert "A bar may be a what-if of its device" in energy_panels(what_if, [])[1]
    # Formats are colored apart from the devices' palette, which colors devices in every other figure.
    from matplotlib.colors import to_rgba

    from explore.plots import energy_figure, palette

    fig = energy_figure(panels)
    format_colors = {text.get_text(): handle.get_facecolor() for legend in fig.legends
                     for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True)}
    device_colors = {to_rgba(c) for c in palette(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]).values()}
    assert len(format_colors) == 8 and not {tuple(c) for c in format_colors.values()} & device_colors


# ---- sensitivity on one scale --------------------------------------------------------------------------------

def test_sensitivity_puts_every_knob_on_one_scale() -> None:
    from explore.plots_objectives import Effect, sensitivity_figure
    from explore.sensitivity import effect_sizes

    # Batch doubles TPOT; the KV-cache width moves it by 0.8%.
    rows = [_row("m", "gpu", b, (16, 16, kv), 0.01 * (2 if b == 8 else 1) * (1.008 if kv == 16 else 1.0), 0.1, 1)
            for b in (1, 8) for kv in (16, 8)]
    effects = [Effect(knob=k, values=[(str(v), r) for v, r in points]) for k, points in effect_sizes(rows, "tpot_s")]
    assert [e.knob for e in effects] == ["batch", "kv_bits"]
    assert effects[0].spread == pytest.approx(2.0) and effects[1].spread == pytest.approx(1.008)
    fig = sensitivity_figure("tpot_s", effects)
    assert len(fig.axes) == 1  # one axis for every knob: no panel gets its own y range


def test_sensitivity_value_names_never_overlap_and_name_both_ends() -> None:
    """A 12-value what-if knob's dots sit within a tenth of the axis: each name drawn keeps clear of the others on
    its side, the ends are always named; widely spaced dots are all named."""
    from explore.plots_objectives import Effect, label_sides, sensitivity_figure

    positions = [0.50 + 0.008 * i for i in range(12)]
    widths = [0.05] * 12  # each name a twentieth of the axis wide
    sides = label_sides(positions, widths)
    assert 0 in sides and 11 in sides
    for side in (1, -1):
        drawn = sorted(positions[i] for i, s in sides.items() if s == side)
        assert all(b - a >= 0.05 for a, b in zip(drawn, drawn[1:], strict=False))
    assert len(label_sides([0.1, 0.3, 0.5, 0.7, 0.9], [0.05] * 5)) == 5
    # In the figure: the 12 names of the example grid's bandwidths are not all drawn on top of each other.
    effect = Effect(knob="device.memory.bandwidth_GBps",
                    values=[(f"{1000 + 454.55 * i:g}", 0.8 + 0.02 * i) for i in range(12)])
    fig = sensitivity_figure("tokens_per_s", [effect])
    names = [t for t in fig.axes[0].texts if t.get_text() and not t.get_text().endswith("×")]
    assert 2 <= len(names) < 12


# ---- Pareto plots encode device and format -------------------------------------------------------------------

def test_pareto_colors_devices_and_shapes_formats() -> None:
    from explore.plots_objectives import pareto_figure
    from explore.report_pareto import pareto_points

    rows = [_row("m", d, b, bits, 0.01 * b * (1 + i), 0.1, 1.0 / b + i)
            for i, d in enumerate(("gpu-a", "gpu-b")) for b in (1, 4) for bits in ((16, 16, 16), (8, 8, 8))]
    points = pareto_points(rows[:-1], rows[-1:], rows[:1], "tpot_s", "energy_per_token_J")
    assert points.device[0] == "gpu-a" and points.fmt[1] == "w8a8kv8" and not points.meets[-1]
    fig = pareto_figure("tpot_s", "energy_per_token_J", points, True, True, [])
    faces = {tuple(np.round(c.get_facecolor()[0], 3)) for c in fig.axes[0].collections if len(c.get_facecolor())}
    shapes = {id(c.get_paths()[0]) for c in fig.axes[0].collections}
    assert len(faces - {(1.0, 1.0, 1.0, 0.85)}) >= 2 and len(shapes) >= 2  # colors per device, markers per format
    assert fig.axes[0].get_xlabel() == "TPOT (ms) (lower is better)"


def test_units_are_ms_in_figures_and_tables() -> None:
    assert [metric_axis_label(n) for n in ("ttft_s", "tpot_s", "time_gemm_s", "energy_per_token_J", "avg_power_W")] \
        == ["TTFT (ms)", "TPOT (ms)", "time gemm (ms)", "energy per output token (J/token)", "average power (W)"]
    lead, _ = report_tables([_row("m", "gpu", 1, (16, 16, 16), 0.012, 0.25, 1.0)])
    cells = dict(zip(lead[0].headers, lead[0].cells[0], strict=True))
    assert cells["TTFT (ms)"] == "250" and cells["TPOT (ms)"] == "12"


# ---- priced detail: roofline roofs, energy breakdown, what-if, cache -----------------------------------------

@pytest.fixture(scope="module")
def tiny_rows(tmp_path_factory: pytest.TempPathFactory, evaluator: Evaluator) -> list[dict]:
    """The tiny model on an H100 in 16 and 8 bits, at its shipped HBM bandwidth and at twice it."""
    model = write_tiny_model(tmp_path_factory.mktemp("tiny"))
    points = [DesignPoint(model=model, device="h100-sxm", batch=b, prompt=32, output=4, weight_bits=w, act_bits=w,
                          kv_bits=w, execution="graphs", overrides=o)
              for b in (1, 8) for w in (16, 8) for o in ((), (("memory.bandwidth_GBps", 6700),))]
    return [normalize_row(p.row() | evaluator.evaluate(p).metrics) for p in points]


def test_roofline_has_every_formats_roof_and_kernels_sized_by_time(tiny_rows: list[dict], evaluator) -> None:
    from explore.plots import ROOF_DECADES
    from explore.report_detail import DetailSource
    from explore.report_static import roofline_panels

    detail = DetailSource(evaluator, tiny_rows, None)
    panel = roofline_panels(detail, tiny_rows, [(tiny_rows[0], ["best tpot_s"])])[0]
    assert [roof.bits for roof in panel.roofs] == [8, 16] and "int8" in panel.roofs[0].label  # 8-bit is faster
    for phase in ("prefill", "decode"):  # shares of the pass's time (kernels without FLOPs are not drawn)
        assert 0.5 < panel.time_share[panel.phase == phase].sum() <= 1.0 + 1e-9
    (low_x, high_x), (low_y, high_y) = panel.ranges
    assert math.log10(high_y / low_y) <= ROOF_DECADES + math.log10(3) + 1e-9
    assert low_x <= panel.intensity.min() and high_x >= max(r.flops for r in panel.roofs) / panel.bandwidth_Bps


def test_energy_breakdown_adds_up_and_what_if_is_against_the_shipped_preset(tiny_rows, evaluator) -> None:
    from explore.report_detail import DetailSource
    from explore.report_whatif import gains

    detail = DetailSource(evaluator, tiny_rows, None)
    for row in tiny_rows:
        parts = detail.energy_parts(row)
        assert set(parts) == {"static", "memory", "compute"}
        assert sum(parts.values()) == pytest.approx(row["energy_per_token_J"], rel=1e-9)
    pairs = gains(tiny_rows, detail)
    assert len(pairs) == 4 and detail.computed == len(tiny_rows)  # every baseline is a shipped row of the sweep
    assert all(g["tpot_s"] > 1.0 for _, g in pairs)  # twice the HBM bandwidth: faster decode
    detail = DetailSource(evaluator, [row for row in tiny_rows if row.get("device.memory.bandwidth_GBps")], None)
    priced = gains([row for row in tiny_rows if row.get("device.memory.bandwidth_GBps")], detail)
    assert [g["tpot_s"] for _, g in priced] == pytest.approx([g["tpot_s"] for _, g in pairs], rel=1e-9)


def test_a_steered_searchs_what_if_caption_says_its_points_are_where_it_looked(tiny_rows, evaluator) -> None:
    """The what-if figure's medians are over every other knob only in a grid; an NSGA-II or TPE search's points are
    where it looked, as the sensitivity figure's caption says too."""
    from explore.report_detail import DetailSource
    from explore.report_whatif import whatif_section

    detail = DetailSource(evaluator, tiny_rows, None)
    for search, steered in (("grid", False), ("random", False), ("nsga2", True), ("tpe", True)):
        (figure,) = whatif_section(tiny_rows, detail, search)
        assert (f"the points the {search} search chose, not every combination" in figure.caption) == steered


def test_a_redrawn_report_reuses_what_was_priced(tiny_rows: list[dict], evaluator, tmp_path: Path) -> None:
    from explore.report_detail import DETAIL_FILE

    write_report(tmp_path, tiny_rows, title="t", evaluator=evaluator)
    assert (tmp_path / DETAIL_FILE).is_file()
    figures = {p.name: p.read_bytes() for p in (tmp_path / "figures").glob("*.png")}
    assert {"roofline.png", "energy_breakdown.png", "whatif.png"} <= set(figures)
    # No evaluator the second time: the roofline, energy breakdown and what-if come from the stored detail, the
    # same pictures to the byte.
    write_report(tmp_path, tiny_rows, title="t", evaluator=None)
    assert {p.name: p.read_bytes() for p in (tmp_path / "figures").glob("*.png")} == figures
    # Other results (a metric changed): the stored detail is not used.
    changed = [dict(row, tpot_s=row["tpot_s"] * 2) for row in tiny_rows]
    page = write_report(tmp_path, changed, title="t", evaluator=None)[0].read_text()
    assert f"Not drawn: {DETAIL_FILE} holds no kernels" in page and not (tmp_path / "figures" / "roofline.png").exists()


# ---- Chrome trace --------------------------------------------------------------------------------------------

def test_chrome_trace_events_say_what_each_kernel_is(tmp_path: Path, evaluator: Evaluator) -> None:
    from sim.chrome_trace import chrome_trace_events

    point = DesignPoint(model=write_tiny_model(tmp_path), device="h100-sxm", batch=2, prompt=16, output=3)
    evaluation = evaluator.evaluate(point, event_sim=True, timeline=True)
    events = [e for e in chrome_trace_events(evaluation.result, "h100-sxm", tables=evaluation.tables,
                                             device=evaluator.point_device(point)) if e["ph"] == "X"]
    assert all({"class", "kind", "flops", "bytes", "bound"} <= set(e["args"]) for e in events)
    assert {e["args"]["bound"] for e in events} <= {"compute", "memory", "overhead"}
    attention = [e for e in events if e["args"]["class"] == "attention"]
    assert attention and all(e["name"].startswith(("attention_prefill ", "attention_decode ")) for e in attention)
    assert all(e["cat"] == e["args"]["class"] for e in events)
    gemm = next(e for e in events if e["args"]["kind"] == "gemm")
    assert gemm["args"]["flops"] > 0 and gemm["args"]["bytes"] > 0
    # Without the tables the traced op's name stays, but attention is named as attention.
    plain = [e["name"] for e in chrome_trace_events(evaluation.result, "h100-sxm") if e["ph"] == "X"]
    assert not any("scaled_dot_product" in name for name in plain) and any(n.startswith("attention ") for n in plain)


@pytest.mark.parametrize("shipped", [None, 2039.0])
def test_what_if_legend_names_the_shipped_value_only_where_it_is_drawn(shipped) -> None:
    """Over several devices no one shipped value exists, and the legend does not name a line it did not draw."""
    from explore.plots_objectives import SpeedupLine, SpeedupPanel, speedup_figure

    x = np.array([1000.0, 3000.0])
    line = SpeedupLine(label="a100-sxm-80gb", x=x, median=np.array([0.8, 1.2]), low=x * 0, high=x * 0)
    fig = speedup_figure([[SpeedupPanel(knob="device.memory.bandwidth_GBps", title="TPOT speed-up", lines=[line],
                                        shipped=shipped)]])
    labels = [text.get_text() for legend in fig.legends for text in legend.get_texts()]
    dotted = [line for ax in fig.axes for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert ("the shipped value of the knob" in labels) == (shipped is not None) == bool(dotted)


def test_what_if_gains_that_differ_by_rounding_read_as_one_value() -> None:
    """A what-if that moves nothing prices the same work twice: gains of 1 +- 1e-13 (float rounding) are drawn as a
    constant 1x is, on a view of a few percent with ticks of at most two decimals, not labelled to the 13th."""
    from explore.plots_objectives import SpeedupLine, SpeedupPanel, speedup_figure

    x = np.array([256.0])
    lines = [SpeedupLine(label=label, x=x, median=np.array([gain]), low=np.array([gain]), high=np.array([gain]))
             for label, gain in (("a100-sxm-80gb", 1.0 + 1e-13), ("neupims", 1.0 - 2e-13), ("versal-vhk158", 1.0))]
    exact = [SpeedupLine(label="neupims", x=x, median=np.ones(1), low=np.ones(1), high=np.ones(1))]
    fig = speedup_figure([[SpeedupPanel(knob="device.memory.capacity_GB", title="TPOT speed-up", lines=lines),
                           SpeedupPanel(knob="device.memory.capacity_GB", title="TTFT speed-up", lines=exact)]])
    fig.canvas.draw()
    noisy, constant = fig.axes[:2]
    assert noisy.get_ylim() == pytest.approx(constant.get_ylim(), rel=1e-9)
    low, high = noisy.get_ylim()
    assert low < 0.99 and high > 1.01
    labels = [t.get_text() for t in noisy.get_yticklabels() if t.get_text()]
    assert labels and all(len(label.rstrip("×").partition(".")[2]) <= 2 for label in labels), labels


def test_roofline_roofs_are_the_points_own_peak_as_overridden(tmp_path: Path, evaluator) -> None:
    """An fp16 model's 16-bit roof is the device's fp16 peak as the point overrides it (2,000 TFLOP/s, not the H100's
    shipped 989), and no kernel is drawn above it."""
    import json

    from explore.report_detail import DetailSource
    from explore.report_static import roofline_panels
    from tests.explore.tiny_sweep import TINY_CONFIG

    model = tmp_path / "fp16" / "config.json"
    model.parent.mkdir()
    model.write_text(json.dumps(TINY_CONFIG | {"torch_dtype": "float16"}))
    point = DesignPoint(model=str(model), device="h100-sxm", batch=8, prompt=256, output=4, execution="graphs",
                        overrides=(("compute.peak_TFLOPS.fp16", 2000),))
    row = normalize_row(point.row() | evaluator.evaluate(point).metrics)
    panel = roofline_panels(DetailSource(evaluator, [row], None), [row], [(row, ["best tpot_s"])])[0]
    (roof,) = panel.roofs
    assert roof.flops == pytest.approx(2000e12) and "fp16" in roof.label
    assert np.all(panel.achieved_flops <= roof.flops * (1 + 1e-9))


def test_fp4_is_drawn_on_the_roof_of_the_rate_it_runs_at(tmp_path: Path, evaluator) -> None:
    """fp4 on an H100 runs weight-only at the 16-bit rate (vLLM's Marlin W4A16, hw_models/gpu_quant.py): it joins the
    16-bit roof at the datasheet's 989.4 TFLOP/s dense bf16, not the fp8 roof at 1,978.9 where the sweep's fp8 format
    runs; on a B200 its own fp4 tensor cores' 9,000 dense (the presets' NVIDIA datasheet figures)."""
    from explore.report_detail import DetailSource
    from explore.report_static import roofline_panels

    model = write_tiny_model(tmp_path)
    fp8 = (("act_type", "fp8_e4m3"), ("weight_type", "fp8_e4m3"))
    nvfp4 = (("act_type", "fp4_e2m1"), ("group_size", 16), ("scale_type", "e4m3"), ("weight_type", "fp4_e2m1"))
    points = [DesignPoint(model=model, device=device, batch=1, prompt=32, output=4, weight_bits=bits, act_bits=bits,
                          execution="graphs", knobs=knobs)
              for device in ("h100-sxm", "b200") for bits, knobs in ((8, fp8), (4, nvfp4))]
    rows = [normalize_row(p.row() | evaluator.evaluate(p).metrics) for p in points]
    detail = DetailSource(evaluator, rows, None)
    roofs = {row["device"]: {round(roof.flops / 1e12, 1): roof.label
                             for roof in roofline_panels(detail, rows, [(row, ["best"])])[0].roofs}
             for row in (rows[0], rows[2])}
    assert roofs["h100-sxm"] == {1978.9: "8-bit (fp8)", 989.4: "16-bit (bf16, fp4)"}
    assert roofs["b200"] == {9000.0: "4-bit (fp4)", 4500.0: "8-bit (fp8)", 2250.0: "16-bit (bf16)"}


def test_the_roofline_places_gemms_at_the_bytes_the_device_reads(tmp_path: Path, evaluator) -> None:
    """A decode GEMM of m = 1 token, k inputs and n outputs does 2nk FLOPs on nk weights of NVFP4's 4 + 8/16 bits
    (an e4m3 scale per 16) and reads mk inputs and writes mn outputs. An H100 runs NVFP4 weight-only (no fp4 tensor
    cores: vLLM's Marlin W4A16), its inputs read at 16 bits; a B200's fp4 tensor cores read them at NVFP4's 4.5 bits
    (the inputs' e4m3 scales per 16 too). A 2:4
    point on an H100 (its sparse tensor cores) does half the FLOPs on half the 16-bit weights plus a 2-bit position
    each. The tiny model's weight GEMMs (n, k): q and o (64, 64), k and v (32, 64), gate, up and lm_head (128, 64),
    down (64, 128)."""
    from explore.report_detail import DetailSource
    from explore.report_static import roofline_panels

    def intensity(n: int, k: int, weight_B: float, input_B: float, kept: float = 1.0) -> float:
        return 2 * n * k * kept / (n * k * kept * weight_B + k * input_B + n * 2)

    shapes = ((64, 64), (32, 64), (128, 64), (64, 128))
    model = write_tiny_model(tmp_path)
    nvfp4 = (("act_type", "fp4_e2m1"), ("group_size", 16), ("scale_type", "e4m3"), ("weight_type", "fp4_e2m1"))
    points = {"h100-sxm": DesignPoint(model=model, device="h100-sxm", batch=1, prompt=32, output=4, weight_bits=4,
                                      act_bits=4, execution="graphs", knobs=nvfp4),
              "b200": DesignPoint(model=model, device="b200", batch=1, prompt=32, output=4, weight_bits=4, act_bits=4,
                                  execution="graphs", knobs=nvfp4),
              "h100 2:4": DesignPoint(model=model, device="h100-sxm", batch=1, prompt=32, output=4, sparsity="2:4",
                                      execution="graphs")}
    expected = {"h100-sxm": {intensity(n, k, 4.5 / 8, 2.0) for n, k in shapes},
                "b200": {intensity(n, k, 4.5 / 8, 4.5 / 8) for n, k in shapes},
                "h100 2:4": {intensity(n, k, 2.0 * (1 + 2 / 16), 2.0, kept=0.5) for n, k in shapes}}
    for name, point in points.items():
        row = normalize_row(point.row() | evaluator.evaluate(point).metrics)
        panel = roofline_panels(DetailSource(evaluator, [row], None), [row], [(row, ["best"])])[0]
        decode_gemms = (panel.phase == "decode") & (panel.kernel_class == "gemm")
        drawn = {round(x, 4) for x in panel.intensity[decode_gemms].tolist()}
        assert drawn == {round(x, 4) for x in expected[name]}, name


def test_the_roofline_legend_names_one_entry_per_roof_width() -> None:
    """An fp16 model's 16-bit roof and a bf16 model's are one line style: one legend entry naming both dtypes."""
    from explore.plots import Roof, RooflinePanel, _roofline_legend

    def panel(roofs):
        return RooflinePanel(title="", roofs=roofs, peak_vector_flops=1e13, bandwidth_Bps=1e12,
                             intensity=np.array([1.0]), achieved_flops=np.array([1e12]),
                             kernel_class=np.array(["gemm"], dtype=object), phase=np.array(["decode"], dtype=object),
                             time_share=np.array([1.0]))

    fp16 = panel((Roof(dtypes=("int8",), flops=2e15, bits=8), Roof(dtypes=("fp16",), flops=1e15, bits=16)))
    bf16 = panel((Roof(dtypes=("bf16", "fp4"), flops=1e15, bits=16),))
    labels = [h.get_label() for h in _roofline_legend([fp16, bf16]) if h.get_label().endswith(" roof")]
    assert labels == ["8-bit (int8) roof", "16-bit (fp16, bf16, fp4) roof", "fp32 vector roof"]


def test_a_pairs_balanced_point_is_named_apart_from_the_reports_with_more_objectives() -> None:
    """With three objectives each pair's figure has a balanced point of its own: named 'balanced on this pair' in
    its labels and caption, so it is not read as the report's balanced design; with two, the two are one."""
    from explore.report_pareto import PAIR_BALANCED, pareto_figures

    rows = [_row("m", "h100-sxm", b, (16, 16, 16), tpot=0.01 * b ** 0.5, ttft=0.1 / b, energy=1.0 / b)
            for b in (1, 2, 4, 8, 16)]
    three = pareto_figures(rows, {"minimize": ["tpot_s", "ttft_s", "energy_per_token_J"]}, None)
    assert len(three) == 3 and all(PAIR_BALANCED in figure.caption for figure in three)
    two = pareto_figures(rows, {"minimize": ["tpot_s", "ttft_s"]}, None)
    assert PAIR_BALANCED not in two[0].caption


def test_format_figure_names_line_styles_only_where_sparsity_varies() -> None:
    """One line per device where every point is dense (its caption names no sparsity); one per device and pattern
    where a pattern varies, which the caption then says."""
    from explore.report_formats import format_panels

    dense = _many_lines()
    panels, caption = format_panels(dense, lambda row: [])
    assert len(panels[0].series) == 3 and "one line per device (color)" in caption and "sparsity" not in caption
    mixed = dense + [normalize_row(dict(row, sparsity="2:4")) for row in dense]
    panels, caption = format_panels(mixed, lambda row: [])
    assert len(panels[0].series) == 6 and "line style: sparsity" in caption


def test_the_what_if_headline_names_the_metrics_the_what_ifs_move() -> None:
    """A power cap moves TTFT and energy and leaves TPOT: the caption's headline gives those two ranges and no TPOT
    range of 1x to 1x; what-ifs that move nothing say so."""
    from explore.report_whatif import _headline

    def row(cap: float) -> dict:
        return {"device": "h100-sxm", "batch": 8, "device.power.cap_W": cap}

    pairs = [(row(500.0), {"tpot_s": 1.0, "ttft_s": 0.9, "energy_per_token_J": 1.05}),
             (row(350.0), {"tpot_s": 1.0, "ttft_s": 0.8, "energy_per_token_J": 1.12})]
    text = _headline(pairs)
    assert "TTFT speed-up from 0.8× (h100-sxm, power.cap_W=350, batch 8) to 0.9×" in text
    assert "energy per token saved from 1.05×" in text and "TPOT" not in text
    flat = [(row(700.0), {"tpot_s": 1.0, "ttft_s": 1.0, "energy_per_token_J": 1.0})]
    assert _headline(flat) == "No what-if moves TPOT, TTFT or energy per token (1× throughout)."
    # Points whose presets as shipped do not fit: said beside their gains (static points are priced all the same), or
    # in place of them where there are none (NaN: a serving point that does not fit has no metrics).
    unfit = [(row(700.0), {"tpot_s": 1.0, "ttft_s": 1.0, "energy_per_token_J": 1.0, "shipped_fits": 0.0}),
             (row(500.0), {"tpot_s": 1.0, "ttft_s": 1.0, "energy_per_token_J": 1.0, "shipped_fits": 1.0})]
    assert _headline(unfit).endswith("On the presets as shipped 1 of these 2 points do not fit in memory (their "
                                     "timings priced all the same): the what-ifs are what make them run.")
    nan = float("nan")
    none = [(row(700.0), {"tpot_s": nan, "ttft_s": nan, "energy_per_token_J": nan, "shipped_fits": 0.0})]
    assert _headline(none).startswith("No point runs on its presets as shipped")


def test_a_what_if_axis_puts_points_without_the_field_first_then_the_numbers_rising() -> None:
    """A serving sweep crossing attention_device none with attention_device. what-ifs: the none points have no value
    in the column ('default' on the axis). The values sort numbers rising whatever order the rows come in; a missing
    value sorted as NaN compared neither below nor above a number, and landed between 4000 and 8000, breaking the
    H20's line there."""
    import itertools

    from explore.report_whatif import axis_values

    column = "attention_device.memory.bandwidth_GBps"
    for values in itertools.permutations([8000, None, 4000, 2000]):
        assert axis_values([{column: v} for v in values], column) == [None, 2000, 4000, 8000], values
    assert axis_values([{"c": "b"}, {"c": "a"}], "c") == ["a", "b"]  # not numbers: by name


def test_a_what_if_axis_names_points_without_the_pool_and_marks_each_preset_as_shipped() -> None:
    """The shipped value drawn on a what-if axis is the preset's the column changes, read from the rows that set it:
    NVLink 4's 450 GB/s a direction (the H100's default link), the H20's 4.0 TB/s (Lamina, Table 1) for its attention
    devices, though points without attention devices sit on the same axis, named so."""
    from explore.report_whatif import _shipped, _tick

    link_rows = [{"device": "h100-sxm", "link": "default", "link.bandwidth_GBps": value} for value in (100, 900)]
    assert _shipped("link.bandwidth_GBps", link_rows) == 450
    attention_rows = [{"device": "h100-sxm", "attention_device": "h20", "attention_device.memory.bandwidth_GBps": 8e3},
                      {"device": "h100-sxm", "attention_device": None, "attention_device.memory.bandwidth_GBps": None}]
    assert _shipped("attention_device.memory.bandwidth_GBps", attention_rows) == 4000
    assert _tick("attention_device.memory.bandwidth_GBps", None) == "no attention devices"
    assert _tick("prefill_device.power.cap_W", None) == "no prefill pool"
    assert _tick("device.memory.bandwidth_GBps", None) == "default"
