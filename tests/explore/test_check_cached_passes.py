"""explore check counts, of a group of passes partly in the trace cache, only the passes it lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from explore.cli import main
from explore.evaluate import Evaluator
from explore.runner import run_sweep
from explore.sweep import load_sweep
from tests.explore.tiny_sweep import write_sweep, write_tiny_model
from workloads.trace_cache import CACHE_ENV

# The claims here are about the counts and the cache's files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")


def _cached(cache: Path) -> set[Path]:
    """The trace files in the trace cache under `cache` (its LLM_CODESIGN_CACHE), one a pass captured."""
    return set(cache.rglob("*.json.gz"))


def test_a_group_with_its_prefill_cached_counts_its_decode_alone(tmp_path, monkeypatch, capsys):
    """Batches 1 and 2 of one prompt: two groups of a prefill and a decode each, 4 traces. With batch 1's prefill in
    the cache (captured through Evaluator.trace, as a run captures it), the run has 3 left to capture: batch 1's decode
    and batch 2's two. A rule counting a partly cached group whole would say 4 ("up to 4"), one leaving it out 2."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))  # empty: nothing traced yet
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: part\nmodel: {model}\ndevice: h100-sxm\n"
                                 "workload: {batch: [1, 2], prompt: 16, output: 2}\n")
    Evaluator().trace(model, "prefill", 1, 16)
    before = _cached(cache)
    assert len(before) == 1
    assert main(["check", path]) == 0
    out = capsys.readouterr().out
    assert "3 of 4 traces to capture (the others are in the trace cache)" in out, out
    # The count is what the run then captures: three new files in the cache, the prefill's kept.
    run_sweep(load_sweep(path), tmp_path / "out")
    after = _cached(cache)
    assert before < after and len(after - before) == 3
