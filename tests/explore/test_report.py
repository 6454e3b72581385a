"""The design report: both files written, every figure embedded as a decodable PNG, CSV rows accepted."""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from pathlib import Path

import pytest

from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from explore.report import normalize_row, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = 5  # roofline, latency breakdown, energy breakdown, energy per token, TTFT/TPOT against batch


@pytest.fixture(scope="module")
def rows(evaluator: Evaluator) -> list[dict]:
    """A small real sweep: llama-2-7b on two GPUs at batch 1 and 4, plus a point that does not fit. Replayed from
    CUDA graphs: in PyTorch eager these decode steps all wait on the same host dispatch."""
    points = [DesignPoint(model="llama-2-7b", device=device, batch=batch, prompt=128, output=8, execution="graphs")
              for device in ("h100-sxm", "a100-sxm-80gb") for batch in (1, 4)]
    # Shrinking the L4's memory makes the point infeasible without tracing a second model.
    points.append(DesignPoint(model="llama-2-7b", device="l4", batch=1, prompt=128, output=8, execution="graphs",
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


def test_report_without_evaluator_skips_the_roofline(tmp_path: Path, rows: list[dict],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from explore.report_detail import DETAIL_FILE

    page = _check_report(tmp_path, rows, None, FIGURES - 2)  # nothing stored: no roofline, no energy breakdown
    assert page.count(f"Not drawn: {DETAIL_FILE} holds no") == 2
    # ... and one logged line names them
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        f"{tmp_path}: figures not drawn: roofline, energy_breakdown"]
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


# ---- objectives: synthetic rows, no evaluation ---------------------------------------------------------------

def _synthetic(device: str, batch: int, tpot: float, energy: float, ttft: float, fits: bool = True) -> dict:
    """A hand-made results row; an infeasible one has NaN metrics."""
    nan = float("nan")
    metrics = {"ttft_s": ttft, "tpot_s": tpot, "e2e_s": ttft + 8 * tpot, "tokens_per_s": batch / tpot,
               "energy_per_token_J": energy, "avg_power_W": 300.0, "peak_memory_B": 2e10, "time_gemm_s": 8 * tpot,
               "time_attention_s": ttft}
    return {"model": "m", "device": device, "batch": batch, "prompt": 128, "output": 8, "weight_bits": 16,
            "act_bits": 16, "kv_bits": 16, "execution": "eager", "fits_in_memory": fits,
            "infeasible_reason": "" if fits else "needs 90 GB, has 80 GB"} | (
        metrics if fits else dict.fromkeys(metrics, nan))


# (device, batch): (tpot_s, energy_per_token_J, ttft_s). With "ttft_s <= 0.5" and both objectives minimized the
# front is A, B, C, F: D is dominated by C, G by B, E (which dominates everything) breaks the constraint.
SYNTHETIC = {
    "A": ("gpu-a", 1, 0.010, 5.0, 0.10), "B": ("gpu-a", 2, 0.012, 3.0, 0.20), "C": ("gpu-a", 4, 0.020, 2.0, 0.40),
    "D": ("gpu-a", 8, 0.030, 2.5, 0.45), "E": ("gpu-b", 1, 0.005, 1.0, 0.90), "F": ("gpu-b", 2, 0.040, 1.5, 0.30),
    "G": ("gpu-b", 4, 0.016, 4.0, 0.30),
}
OBJECTIVES = {"minimize": ["tpot_s", "energy_per_token_J"]}
CONSTRAINTS = ["ttft_s <= 0.5"]


@pytest.fixture()
def synthetic() -> list[dict]:
    return [_synthetic(*values) for values in SYNTHETIC.values()] + [_synthetic("gpu-b", 8, 1, 1, 1, fits=False)]


def _label(key: str) -> str:
    device, batch = SYNTHETIC[key][:2]
    return f"m / {device} / b{batch} / w16a16kv16"


def _table(page: str, title: str) -> list[list[str]]:
    """The body cells of the HTML table under the heading `title`."""
    section = page.split(f"<h2>{html.escape(title)}</h2>", 1)[1].split("</table>", 1)[0]
    return [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", section) if "<td>" in row]


def _decoded(page: str) -> list[tuple[int, int]]:
    """Each embedded PNG decoded: its size in pixels."""
    from PIL import Image
    sizes = []
    for png in _embedded_pngs(page):
        with Image.open(io.BytesIO(png)) as image:
            image.load()
            sizes.append(image.size)
    return sizes


def test_report_with_objectives_adds_pareto_and_sensitivity(tmp_path: Path, synthetic: list[dict]) -> None:
    html_path, md_path = write_report(tmp_path, synthetic, title="objectives", objectives=OBJECTIVES,
                                      constraints=CONSTRAINTS)
    page, markdown = html_path.read_text(), md_path.read_text()
    # 1 Pareto pair + 2 sensitivity figures + breakdown, energy, batch (no evaluator: no roofline, no energy
    # breakdown).
    sizes = _decoded(page)
    assert len(sizes) == 6 and all(w > 300 and h > 200 for w, h in sizes)
    referenced = re.findall(r"!\[[^\]]*\]\((figures/[a-z0-9_]+\.png)\)", markdown)
    assert len(referenced) == 6 and "figures/pareto_tpot_s_energy_per_token_j.png" in referenced
    assert {"figures/sensitivity_tpot_s.png", "figures/sensitivity_energy_per_token_j.png"} <= set(referenced)
    assert all((tmp_path / name).read_bytes().startswith(PNG_SIGNATURE) for name in referenced)
    cells = _table(page, "Pareto-optimal designs")
    assert [row[0] for row in cells] == [_label(k) for k in "ABCF"]  # sorted by tpot_s; E breaks the constraint
    assert [row[1:3] for row in cells] == [["10", "5"], ["12", "3"], ["20", "2"], ["40", "1.5"]]  # TPOT in ms
    assert [row[3] for row in cells] == ["best tpot_s", "", "balanced", "best energy_per_token_J"]
    # The Pareto table comes before the top-designs tables, and the constraint is named.
    assert page.index("Pareto-optimal designs") < page.index("Highest throughput")
    assert "Constraints: ttft_s &lt;= 0.5 (TTFT &lt;= 500 ms)." in page
    assert "1 feasible point breaking a constraint left out" in page


def test_without_constraints_the_violator_dominates(tmp_path: Path, synthetic: list[dict]) -> None:
    page = write_report(tmp_path, synthetic, title="t", objectives=OBJECTIVES)[0].read_text()
    cells = _table(page, "Pareto-optimal designs")
    assert [row[0] for row in cells] == [_label("E")]
    assert cells[0][3] == "best tpot_s, best energy_per_token_J, balanced"


def test_one_objective_ranks_and_three_give_three_pairs(tmp_path: Path, synthetic: list[dict]) -> None:
    page = write_report(tmp_path / "one", synthetic, title="t", objectives={"maximize": ["tokens_per_s"]},
                        constraints=CONSTRAINTS)[0].read_text()
    assert len(_decoded(page)) == 1 + 1 + 3  # ranking, sensitivity, the usual three
    ranked = [row[0] for row in _table(page, "Best designs by tokens/s")]
    assert ranked == [_label(k) for k in "DGCBAF"]  # batch / tpot, E left out
    three = {"minimize": ["tpot_s", "energy_per_token_J"], "maximize": ["tokens_per_s"]}
    page = write_report(tmp_path / "three", synthetic, title="t", objectives=three)[0].read_text()
    assert len(_decoded(page)) == 3 + 3 + 3 and page.count("<h2>Pareto front:") == 3


def test_without_objectives_the_report_is_unchanged(tmp_path: Path, synthetic: list[dict]) -> None:
    with_objectives = write_report(tmp_path, synthetic, title="t", objectives=OBJECTIVES)[0].read_text()
    assert len(_decoded(with_objectives)) == 6
    plain = write_report(tmp_path, synthetic, title="t")[0].read_text()
    assert len(_decoded(plain)) == FIGURES - 2 and "Pareto" not in plain and "Sensitivity" not in plain
    # Constraints without objectives still keep the points that break them out of the best-design tables.
    constrained = write_report(tmp_path, synthetic, title="t", constraints=CONSTRAINTS)[0].read_text()
    assert write_report(tmp_path, synthetic, title="t", objectives={"minimize": []},
                        constraints=CONSTRAINTS)[0].read_text() == constrained != plain
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.png")) == ["batch.png", "breakdown.png",
                                                                           "energy.png"]  # stale ones removed


def test_tables_head_each_metric_as_the_figures_label_it(tmp_path: Path, synthetic: list[dict]) -> None:
    """A metric has one name: the design tables head their columns with the metric registry's label and the unit the
    figures show (explore/metrics.py: energy per output token in J/token, average power in W, seconds as ms)."""
    markdown = write_report(tmp_path, synthetic, title="t")[1].read_text()
    section = markdown.split("## Highest throughput\n", 1)[1]
    header = next(line for line in section.splitlines() if line.startswith("|"))
    assert [cell.strip() for cell in header.strip("|").split("|")] == [
        "model", "device", "batch", "prompt/output", "format", "tokens/s", "TTFT (ms)", "TPOT (ms)",
        "energy per output token (J/token)", "average power (W)", "peak memory (GB)", "tokens/USD"]


def test_every_figure_of_an_earlier_report_is_removed(tmp_path: Path, synthetic: list[dict]) -> None:
    """Figures an earlier report in the folder drew and this one does not (a static report's decode-time and what-if
    figures, a serving report's) are gone; the three this one draws are written."""
    figures = tmp_path / "figures"
    figures.mkdir()
    for name in ("decode_time", "whatif", "serving_cdf", "roofline"):
        (figures / f"{name}.png").write_bytes(b"stale")
    write_report(tmp_path, synthetic, title="t")
    assert sorted(p.name for p in figures.glob("*.png")) == ["batch.png", "breakdown.png", "energy.png"]


def test_bad_constraint_is_a_clear_error(tmp_path: Path, synthetic: list[dict]) -> None:
    with pytest.raises(ValueError, match="METRIC OP NUMBER"):
        write_report(tmp_path, synthetic, title="t", objectives=OBJECTIVES, constraints=["ttft_s about 1"])


def test_roofline_shows_the_chosen_designs(evaluator: Evaluator, rows: list[dict]) -> None:
    """With objectives, the roofline panels are the chosen designs with their roles, not one per device."""
    from explore.report import roofline_panels
    from explore.report_pareto import chosen_designs

    typed = [normalize_row(row) for row in rows]
    objectives = {"minimize": ["tpot_s"], "maximize": ["tokens_per_s"]}
    chosen = chosen_designs(typed, objectives, None)
    # Lowest TPOT is the H100 at batch 1 (fastest GPU, smallest step); most tokens/s the H100 at batch 4.
    best = {role: (row["device"], row["batch"]) for row, roles in chosen for role in roles}
    assert best["best tpot_s"] == ("h100-sxm", 1) and best["best tokens_per_s"] == ("h100-sxm", 4)
    panels = roofline_panels(evaluator, typed, chosen)
    assert len(panels) == len(chosen) and all("best" in p.title or "balanced" in p.title for p in panels)
    # Without objectives: one panel per device with a feasible point (the infeasible L4 has none).
    assert len(roofline_panels(evaluator, typed)) == 2


def test_the_summary_says_how_many_points_wait_on_the_host(evaluator, rows, tmp_path):
    """The same Llama-2-7B points run eagerly: a batch-1 decode waits on PyTorch's dispatch longer than its kernels
    run (1,298 kernels at 21.6 us: 28 ms, against 10 and 13 ms of kernels on these GPUs), and the report's summary
    says so, also of a point whose long prefill (8 prompts of 2,048 tokens) is most of its time while each of its
    decode steps still waits, so that both GPUs give it one TPOT; replayed from CUDA graphs no point waits."""
    eager = [DesignPoint(model="llama-2-7b", device=device, batch=1, prompt=128, output=8)
             for device in ("h100-sxm", "a100-sxm-80gb")]
    eager_rows = [point.row() | evaluator.evaluate(point).metrics for point in eager]
    assert all(row["time_host_wait_s"] > row["e2e_s"] / 2 for row in eager_rows)
    long = [DesignPoint(model="llama-2-7b", device=device, batch=8, prompt=2048, output=8)
            for device in ("h100-sxm", "a100-sxm-80gb")]
    long_rows = [point.row() | evaluator.evaluate(point).metrics for point in long]
    assert all(0 < row["time_host_wait_s"] < row["e2e_s"] / 2 for row in long_rows)
    assert long_rows[0]["tpot_s"] == pytest.approx(long_rows[1]["tpot_s"], rel=1e-9)  # the host's time on both
    _, md = write_report(tmp_path / "eager", eager_rows + long_rows + rows, title="mixed")
    assert "4 of 8 feasible points wait on the host" in md.read_text()
    # A point that offloads waits on the host link, which no launch mode removes: not counted as the dispatch's.
    from explore.report import host_wait_note

    assert host_wait_note(eager_rows[:1]).startswith("1 of 1 feasible points wait on the host")
    assert host_wait_note([eager_rows[0] | {"offloaded_B": 1e9}]) == ""
    _, md = write_report(tmp_path / "graphs", rows, title="graphs")
    assert "wait on the host" not in md.read_text().split("##", 1)[0]
