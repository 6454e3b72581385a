"""The design report: both files written, every figure embedded as a decodable PNG, CSV rows accepted."""

from __future__ import annotations

import base64
import csv
import html
import re
from pathlib import Path

import pytest

from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from explore.report import normalize_row, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = 4  # roofline, latency breakdown, energy per token, TTFT/TPOT against batch


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator()


@pytest.fixture(scope="module")
def rows(evaluator: Evaluator) -> list[dict]:
    """A small real sweep: llama-2-7b on two GPUs at batch 1 and 4, plus a point that does not fit."""
    points = [DesignPoint(model="llama-2-7b", device=device, batch=batch, prompt=128, output=8)
              for device in ("h100-sxm", "a100-sxm-80gb") for batch in (1, 4)]
    # Shrinking the L4's memory makes the point infeasible without tracing a second model.
    points.append(DesignPoint(model="llama-2-7b", device="l4", batch=1, prompt=128, output=8,
                              overrides=(("memory.capacity_GB", 8),)))
    return [point.row() | evaluator.evaluate(point).metrics for point in points]


def _csv_round_trip(rows: list[dict], path: Path) -> list[dict]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)]


def _check_report(out_dir: Path, rows: list[dict], evaluator: Evaluator | None, figures: int) -> str:
    html_path, md_path = write_report(out_dir, rows, title="GPU compare <test>", evaluator=evaluator)
    assert html_path == out_dir / "report.html" and md_path == out_dir / "report.md"
    page, markdown = html_path.read_text(), md_path.read_text()
    assert page.count("<img") == figures
    pngs = _embedded_pngs(page)
    assert len(pngs) == figures and all(png.startswith(PNG_SIGNATURE) for png in pngs)
    assert "GPU compare &lt;test&gt;" in page  # escaped
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # nothing fetched: every source is inline
    referenced = re.findall(r"!\[[^\]]*\]\((figures/[a-z_]+\.png)\)", markdown)
    assert len(referenced) == figures
    assert all((out_dir / name).read_bytes().startswith(PNG_SIGNATURE) for name in referenced)
    for row in rows:
        reason = normalize_row(row)["infeasible_reason"]
        assert not reason or (html.escape(reason) in page and reason in markdown)
    assert "5 design points, 4 feasible, 1 infeasible." in page
    return page


def test_report_from_evaluated_rows(tmp_path: Path, rows: list[dict], evaluator: Evaluator) -> None:
    assert sum(bool(row["infeasible_reason"]) for row in rows) == 1
    page = _check_report(tmp_path, rows, evaluator, FIGURES)
    assert "memory.capacity_GB=8" in page  # the override is named in the infeasible table


def test_report_from_csv_rows(tmp_path: Path, rows: list[dict], evaluator: Evaluator) -> None:
    from_csv = _csv_round_trip(rows, tmp_path / "results.csv")
    assert from_csv[0]["fits_in_memory"] == "True" and isinstance(from_csv[0]["batch"], str)
    _check_report(tmp_path / "report", from_csv, evaluator, FIGURES)


def test_report_without_evaluator_skips_the_roofline(tmp_path: Path, rows: list[dict]) -> None:
    page = _check_report(tmp_path, rows, None, FIGURES - 1)
    assert "without an evaluator" in page
    assert not (tmp_path / "figures" / "roofline.png").exists()


def test_report_with_no_feasible_point(tmp_path: Path, rows: list[dict]) -> None:
    infeasible = [row for row in rows if row["infeasible_reason"]]
    html_path, md_path = write_report(tmp_path, infeasible, title="nothing fits")
    page = html_path.read_text()
    assert "<img" not in page and "no feasible design point" in page
    assert html.escape(infeasible[0]["infeasible_reason"]) in page and md_path.exists()


def test_normalize_row_reads_csv_strings() -> None:
    row = normalize_row({"batch": "4", "fits_in_memory": "False", "ttft_s": "nan", "tpot_s": "",
                         "infeasible_reason": "too big", "device.memory.bandwidth_GBps": "4000.0"})
    assert row["batch"] == 4 and row["fits_in_memory"] is False
    assert row["ttft_s"] != row["ttft_s"] and row["tpot_s"] != row["tpot_s"]  # NaN
    assert row["device.memory.bandwidth_GBps"] == 4000 and row["infeasible_reason"] == "too big"
