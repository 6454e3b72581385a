"""Fixtures the explore tests share: the tiny Llama's config.json, written once, and one Evaluator for it."""

from __future__ import annotations

import pytest

from explore.evaluate import Evaluator
from tests.explore.tiny_sweep import write_tiny_model


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> str:
    """Path of the tiny Llama's config.json (tests/explore/tiny_sweep.py)."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_evaluator() -> Evaluator:
    """An Evaluator the tests of the tiny model share: its memoized traces and tables are pure functions of
    their keys."""
    return Evaluator()
