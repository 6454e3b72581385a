"""Report figures built but not drawn, for tests whose claims are not about what a figure shows.

Every figure of a report reaches its PNG bytes through explore.plots.figure_png (matplotlib's savefig: text layout,
rasterizing, PNG encoding), which is most of the time of a sweep that writes its report. undrawn_figures() swaps it,
in every module that holds it, for one that returns a one-pixel PNG, and puts the real one back after.
"""

from __future__ import annotations

import importlib
import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# Every module that holds explore.plots.figure_png under its own name (`from explore.plots import figure_png` at
# the top); explore.calibrate_cmd imports it inside the function that draws, so patching explore.plots covers it.
FIGURE_MODULES = ("explore.plots", "explore.report_decode", "explore.report_formats", "explore.report_pareto",
                  "explore.report_serving", "explore.report_static", "explore.report_whatif")


def blank_png() -> bytes:
    """A PNG of one white pixel."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), "white").save(buffer, format="PNG")
    return buffer.getvalue()


@contextmanager
def undrawn_figures() -> Iterator[None]:
    """Inside: figure_png returns blank_png() without drawing the figure. After: the real figure_png everywhere."""
    from explore import plots

    real = plots.figure_png
    blank = blank_png()

    def undrawn(fig, dpi: int = 100) -> bytes:
        return blank

    modules = [importlib.import_module(name) for name in FIGURE_MODULES]  # all imported before any is swapped
    for module in modules:
        assert module.figure_png is real, f"{module.__name__} holds a figure_png that is not explore.plots'"
        module.figure_png = undrawn
    try:
        yield
    finally:
        # A module first imported inside (a later `from explore.plots import figure_png`) gets the real one back too.
        for module in list(sys.modules.values()):
            if getattr(module, "figure_png", None) is undrawn:
                module.figure_png = real
