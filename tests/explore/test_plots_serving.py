"""Serving figures (explore/plots_serving.py): capacity bars mark the capacities their search could not judge."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba

from explore.plots_serving import (
    AT_TOP_MARK,
    NOT_JUDGED_MARK,
    Panel,
    RateSeries,
    SeriesStyle,
    capacity_figure,
    rate_figure,
)

GROUPS = ["h100-sxm", "a100-sxm-80gb"]
COLORS = {"chunked": "#d62728", "continuous": "#1f77b4"}
CAPACITY_RPS = {"chunked": [8.0, 4.97], "continuous": [6.0, math.nan]}


def _bars(fig) -> tuple[list, list[str], list[str]]:
    """The drawn bars (in series order, group by group), the labels on them and the legend's entries."""
    ax = fig.axes[0]
    labels = [text.get_text() for text in ax.texts]
    return list(ax.patches), labels, [text.get_text() for text in fig.legends[0].get_texts()]


def test_unjudged_capacity_is_a_hollow_bar_with_a_dagger_and_a_legend_entry() -> None:
    fig = capacity_figure(GROUPS, CAPACITY_RPS, COLORS, {"chunked": [True, False], "continuous": [False, True]})
    bars, labels, legend = _bars(fig)
    white = to_rgba("white")
    # chunked on the H100 is judged: filled in its scheduler's color; chunked on the A100 and continuous on the H100
    # are not: white inside, outlined in their scheduler's color.
    assert bars[0].get_facecolor() == to_rgba(COLORS["chunked"])
    assert bars[1].get_facecolor() == white and bars[1].get_edgecolor() == to_rgba(COLORS["chunked"])
    assert bars[2].get_facecolor() == white and bars[2].get_edgecolor() == to_rgba(COLORS["continuous"])
    assert labels == ["8", f"4.97{NOT_JUDGED_MARK}", f"6{NOT_JUDGED_MARK}", ""]  # NaN: no bar, no label
    assert legend[:2] == ["chunked", "continuous"]
    assert len(legend) == 3 and "not judged" in legend[2] and "raise the number of requests" in legend[2]


def test_capacities_without_verdicts_draw_as_before() -> None:
    """No `judged` (a folder written before capacity_judged existed), or every capacity judged: filled bars, plain
    labels, one legend entry per scheduler."""
    for judged in (None, {"chunked": [True, True], "continuous": [True, True]}):
        bars, labels, legend = _bars(capacity_figure(GROUPS, CAPACITY_RPS, COLORS, judged))
        assert [bar.get_facecolor() for bar in bars[:3]] == [to_rgba(COLORS[s]) for s in
                                                             ("chunked", "chunked", "continuous")]
        assert labels == ["8", "4.97", "6", ""] and legend == ["chunked", "continuous"]


def test_a_capacity_at_the_top_of_its_range_reads_at_least_with_a_legend_entry() -> None:
    """chunked on the H100 sustained the top of its search range: its label reads at least 8, and the legend says
    what the mark means; the others read as before."""
    at_top = {"chunked": [True, False], "continuous": [False, False]}
    bars, labels, legend = _bars(capacity_figure(GROUPS, CAPACITY_RPS, COLORS, None, at_top))
    assert labels == [f"{AT_TOP_MARK}8", "4.97", "6", ""]
    assert len(legend) == 3 and legend[2].startswith(f"{AT_TOP_MARK}: the top of the searched range")


def test_zero_capacity_not_judged_reads_none_with_the_mark() -> None:
    bars, labels, legend = _bars(capacity_figure(["l4"], {"chunked": [0.0]}, COLORS, {"chunked": [False]}))
    assert labels == [f"none{NOT_JUDGED_MARK}"] and "not judged" in legend[-1]


def test_the_rate_panels_keep_their_height_however_long_the_legend() -> None:
    """Sixteen designs with labels too long for two legend columns: the figure grows by the legend's rows, so the
    panels keep the height they have with two designs (their y labels were clipped when it grew by half a row a
    design)."""
    def figure(count: int):
        series = [RateSeries(label=f"l4 (sibling fit) / chunked / prefix_groups {i} / queue_policy fcfs and more words",
                             style=SeriesStyle(color=f"C{i % 10}"), rate_per_s=np.array([4.0]),
                             values={"goodput_rps": np.array([1.0])}, meets_slo=np.array([1.0])) for i in range(count)]
        panels = [Panel(metric="goodput_rps", title="goodput", ylabel="goodput (requests/s meeting the SLO)")]
        return rate_figure(series, panels)

    def panel_height_in(fig) -> float:
        FigureCanvasAgg(fig).draw()
        return fig.axes[0].get_position().height * fig.get_size_inches()[1]

    assert panel_height_in(figure(16)) >= 0.9 * panel_height_in(figure(2))


def test_many_capacity_groups_with_long_labels_do_not_overlap() -> None:
    """Nineteen fleet designs whose labels run to four wrapped lines (a sweep over replicas, mixed replicas and
    routers): no two tick labels overlap, as none do for two short ones."""
    for groups in (GROUPS, [f"h100-sxm + l4 (sibling fit) / replicas {r} / mixed_device l4 / mixed_replicas {m} / "
                            f"router least_kv_usage" for r in (1, 2) for m in range(10)][:19]):
        fig = capacity_figure(groups, {"continuous": [10.0 + i for i in range(len(groups))]}, COLORS)
        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw(renderer)
        boxes = [text.get_window_extent(renderer) for text in fig.axes[0].get_xticklabels()]
        assert len(boxes) == len(groups)
        overlaps = [(i, i + 1) for i in range(len(boxes) - 1) if boxes[i].overlaps(boxes[i + 1])]
        assert not overlaps, overlaps
