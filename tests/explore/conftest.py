"""Fixtures the explore tests share: the tiny Llama's config.json, written once, and one Evaluator for it."""

from __future__ import annotations

import pytest

from explore.evaluate import Evaluator
from tests.explore.tiny_sweep import write_tiny_model
from tests.explore.undrawn import undrawn_figures


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> str:
    """Path of the tiny Llama's config.json (tests/explore/tiny_sweep.py)."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_evaluator() -> Evaluator:
    """An Evaluator the tests of the tiny model share: its memoized traces and tables are pure functions of
    their keys."""
    return Evaluator()


@pytest.fixture
def figures_undrawn():
    """For a module whose claims are about rows, columns, messages and files, not about what a figure shows: the
    report's figures are still built from the rows (every data-to-artist step runs) but not rasterized, and each PNG
    file holds one white pixel (tests/explore/undrawn.py). Drawing (matplotlib's text layout and PNG encoding) was
    about two thirds of the CPU time of tests/explore/test_sweep_rerun.py; the report's own tests (test_report*.py,
    test_plots*.py, test_quality.py) draw every figure for real."""
    with undrawn_figures():
        yield
