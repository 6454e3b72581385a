"""`explore validate` of a CPU's measured-kernel table (what `explore measure` writes on a CPU): its kernels are priced
by the CPU model and scored, as a GPU's are."""

from __future__ import annotations

import json

import pytest

from explore.cli import main
from kernels.measured import MeasuredKernel, write_table

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

DEVICE = "ci-host-cpu"


def _rows(scale: float) -> list[MeasuredKernel]:
    return [MeasuredKernel(device=DEVICE, kernel="gemm", dtype="fp32", time_s=1e-3 * scale, source="test", m=1,
                           n=4096, k=4096),
            MeasuredKernel(device=DEVICE, kernel="elementwise", dtype="fp32", time_s=2e-4 * scale, source="test",
                           bytes=3 * 4 * 1024 * 4096.0)]


def _summary(rows, tmp_path, capsys) -> dict:
    table = tmp_path / "cpu.csv"
    write_table(table, rows)
    assert main(["validate", str(table), "--json", "--out", str(tmp_path / "v")]) == 0
    return json.loads(capsys.readouterr().out)[DEVICE]


def test_a_cpu_table_is_scored(tmp_path, capsys):
    """Doubling every measured time turns each prediction's error e into (1 + e) / 2 - 1: the rows are scored against
    one prediction each, whatever they measured."""
    once, twice = _summary(_rows(1.0), tmp_path, capsys), _summary(_rows(2.0), tmp_path, capsys)
    assert set(once) == {"gemm", "elementwise"}
    for kind in once:
        assert once[kind]["n"] == 1
        assert twice[kind]["median_bias"] == pytest.approx((1 + once[kind]["median_bias"]) / 2 - 1, rel=1e-9)


def test_a_device_file_in_a_folder_is_scored(tmp_path, capsys):
    """A table naming a device YAML by a path with folders (as `explore measure --cpu-preset` writes it) validates,
    and its figure is named by the file."""
    folder = tmp_path / "presets"
    folder.mkdir()
    device = folder / "my-cpu.yaml"
    device.write_text(f"base: {DEVICE}\nname: my-cpu\n")
    rows = [MeasuredKernel(**{**row.__dict__, "device": str(device)}) for row in _rows(1.0)]
    table = tmp_path / "cpu.csv"
    write_table(table, rows)
    assert main(["validate", str(table), "--device", str(device), "--out", str(tmp_path / "v")]) == 0
    assert (tmp_path / "v" / "validate-my-cpu.png").is_file()
