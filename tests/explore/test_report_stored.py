"""`explore report DIR` reads stored results only: every figure of a finished sweep, the priced detail figures
(roofline, energy breakdown, what-if, serving runs) included, drawn again without torch and identical to the
sweep's own report; a folder without the stored detail says which figures it cannot draw."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_sweep import write_tiny_model

from explore.cli import main
from explore.report_detail import DETAIL_FILE
from workloads.trace_cache import CACHE_ENV

ROOT = Path(__file__).resolve().parents[2]
STATIC = """name: tiny-static
model: {model}
device: h100-sxm
workload: {{batch: [1, 4], prompt: 32, output: 4}}
format: {{weight_bits: [16, 8]}}
execution: graphs
overrides:
  device.memory.bandwidth_GBps: [3350, 6700]
objectives: {{minimize: [tpot_s], maximize: [tokens_per_s]}}
"""
SERVING = """name: tiny-serving
model: {model}
device: h100-sxm
serving:
  requests: 12
  prompt: {{dist: uniform, low: 16, high: 64}}
  output: {{dist: uniform, low: 4, high: 16}}
  rate: [2, 8]
  scheduler: continuous
  max_seqs: 8
  slo: {{ttft_s: 0.5, tpot_s: 0.05}}
overrides:
  device.memory.bandwidth_GBps: [3350, 6700]
objectives: {{maximize: [goodput_rps], minimize: [ttft_p99_s]}}
"""
DETAIL_FIGURES = {"static": {"roofline", "energy_breakdown", "whatif"},
                  "serving": {"serving_cdf", "serving_timeline", "whatif"}}
# A process in which `import torch` fails (and which checks at its end that nothing of torch was imported).
NO_TORCH = """
import sys
sys.modules["torch"] = None
from explore.cli import main
codes = [main(["report", folder]) for folder in sys.argv[1:]]
assert not [m for m in sys.modules if m.startswith("torch.")], "torch imported"
sys.exit(max(codes))
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two finished sweeps of the tiny model, each with the report `explore SWEEP.yaml` writes: a static one with
    formats and a what-if bandwidth, and a serving one."""
    root = tmp_path_factory.mktemp("stored")
    model = write_tiny_model(root)
    for name, text in (("static", STATIC), ("serving", SERVING)):
        (root / f"{name}.yaml").write_text(text.format(model=model))
        assert main([str(root / f"{name}.yaml"), "--out", str(root / name), "--quiet"]) == 0
    return root


def _report(folder: Path) -> tuple[str, dict[str, bytes]]:
    """report.md without its date, and the PNGs."""
    text = re.sub(r"Written \d{4}-\d\d-\d\d\.", "", (folder / "report.md").read_text())
    return text, {path.stem: path.read_bytes() for path in (folder / "figures").glob("*.png")}


@pytest.mark.slow  # a whole run of seconds: run with the slow checks
def test_explore_report_redraws_every_figure_without_torch(swept: Path, tmp_path: Path) -> None:
    before = {kind: _report(swept / kind) for kind in DETAIL_FIGURES}
    assert before["static"][0].startswith("# tiny-static\n")  # titled with the sweep's name, as the redraw must be
    for kind, figures in DETAIL_FIGURES.items():
        assert figures <= set(before[kind][1]), kind  # the sweep drew its detail figures
    stored = {kind: (swept / kind / DETAIL_FILE).read_bytes() for kind in DETAIL_FIGURES}
    env = os.environ | {CACHE_ENV: str(tmp_path / "empty-cache")}  # no trace to be found either
    done = subprocess.run([sys.executable, "-c", NO_TORCH, *(str(swept / kind) for kind in DETAIL_FIGURES)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "not drawn" not in done.stderr and done.stdout.count("report:  ") == 2
    for kind in DETAIL_FIGURES:
        assert _report(swept / kind) == before[kind], kind  # the same tables and the same pictures, to the byte
        assert (swept / kind / DETAIL_FILE).read_bytes() == stored[kind]  # read, not rewritten


def test_a_folder_without_stored_detail_names_the_figures_it_cannot_draw(swept: Path, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    old = shutil.copytree(swept / "static", tmp_path / "old")
    (old / DETAIL_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        assert main(["report", str(old)]) == 0
    figures = set(_report(old)[1])
    assert not figures & DETAIL_FIGURES["static"] and {"breakdown", "energy", "batch"} <= figures
    lines = [record.getMessage() for record in caplog.records if "not drawn" in record.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert all(name in lines[0] for name in DETAIL_FIGURES["static"]) and DETAIL_FILE in lines[0]
    assert (old / "report.md").read_text().count(f"Not drawn: {DETAIL_FILE} holds no") == 3


def test_a_serving_what_if_is_against_the_same_run_without_it(swept: Path) -> None:
    """A serving sweep's what-if figure prices each point's baseline as the sweep's design point without its
    what-ifs: at the H100's own 3,350 GB/s the what-if is that same run (the same seed), so every gain is 1 exactly;
    twice the bandwidth is never slower (the tiny model's iterations wait on the host's dispatch). Read from the
    stored detail alone."""
    from explore.report_detail import DetailSource
    from explore.report_whatif import gains
    from explore.results import read_results

    rows = read_results(swept / "serving")
    pairs = gains(rows, DetailSource(None, rows, swept / "serving"))
    assert pairs is not None and len(pairs) == len(rows) == 4
    for row, gain in pairs:
        if row["device.memory.bandwidth_GBps"] == 3350:
            assert gain == {"tpot_s": 1.0, "ttft_s": 1.0, "energy_per_token_J": 1.0, "shipped_fits": 1.0}, (row, gain)
        else:
            assert gain["tpot_s"] >= 1.0 and gain["ttft_s"] >= 1.0, (row, gain)
