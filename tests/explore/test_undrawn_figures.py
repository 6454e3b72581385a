"""The figures_undrawn fixture (tests/explore/undrawn.py): inside, every report module's figure_png returns one
pixel without drawing; after, the real figure_png is back everywhere; and no module holds figure_png that the fixture
misses."""

from __future__ import annotations

import io
import re
from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image

from tests.explore.undrawn import FIGURE_MODULES, undrawn_figures

EXPLORE = Path(__file__).resolve().parents[2] / "explore"


def _size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_inside_a_figure_is_one_pixel_and_after_it_is_drawn_again():
    from explore import plots, report_serving, report_static

    fig = Figure()  # matplotlib's default 6.4 x 4.8 inches: 640 x 480 pixels at figure_png's 100 dpi
    fig.add_subplot().plot([0, 1], [0, 1])
    with undrawn_figures():
        assert _size(report_static.figure_png(fig)) == _size(plots.figure_png(fig)) == (1, 1)
    assert report_static.figure_png is report_serving.figure_png is plots.figure_png
    assert _size(report_serving.figure_png(fig)) == (640, 480)


def test_every_module_that_imports_figure_png_at_its_top_is_swapped():
    top_import = re.compile(r"^from explore\.plots import (\([^)]*\)|.*$)", re.MULTILINE)
    holders = {f"explore.{path.stem}" for path in EXPLORE.glob("*.py")
               if any(re.search(r"\bfigure_png\b", names) for names in top_import.findall(path.read_text("utf-8")))}
    assert holders | {"explore.plots"} == set(FIGURE_MODULES)
