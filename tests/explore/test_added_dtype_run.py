"""`explore run --set compute.peak_TFLOPS.fp8=624` on an A100 (whose preset has no fp8 rate): the what-if adds the
rate, the header names it and what prices the fp8 GEMMs, the point's key holds it; a dtype the GPU model does not know
(fp6) is refused in one line that names the dtypes a what-if may add."""

from __future__ import annotations

import pytest

from explore.cli import main
from explore.design_point import DesignPoint

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

FP8_FLAGS = ["--weight-bits", "8", "--act-bits", "8", "--act-type", "fp8_e4m3", "--weight-type", "fp8_e4m3"]


def _run(tiny_config: str, *flags: str) -> list[str]:
    return ["run", "--model", tiny_config, "--device", "a100-sxm-80gb", "--prompt", "16", "--output", "2", *flags]


def test_an_fp8_what_if_on_an_a100_runs_and_says_how_it_is_priced(tiny_config, capsys):
    assert main(_run(tiny_config, *FP8_FLAGS, "--set", "compute.peak_TFLOPS.fp8=624")) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "what-if (--set): compute.peak_TFLOPS.fp8 = 624 (a100-sxm-80gb: unset)" in header
    # No fp8 GEMM was measured on an A100: its GEMMs take the 16-bit fit at the what-if's fp8 peak, and say so.
    assert "GEMMs with no measurement of their own on a100-sxm-80gb, priced on another fit: w8a8 (fp8): 16-bit fit" \
        in header
    assert "weight-only" not in header  # native fp8 math, not the A100's weight-only fallback


def test_an_unknown_dtype_is_refused_in_one_line_naming_the_addable_ones(tiny_config, capsys):
    assert main(_run(tiny_config, "--set", "compute.peak_TFLOPS.fp6=1")) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("explore: error: --set: device.compute.peak_TFLOPS.fp6: no such field to override")
    assert "compute.peak_TFLOPS.fp8" in line and "compute.peak_TFLOPS.fp4" in line


def test_the_added_rate_is_in_the_point_key(tiny_config):
    shipped = DesignPoint(model=tiny_config, device="a100-sxm-80gb", batch=1, prompt=16, output=2)
    added = DesignPoint(model=tiny_config, device="a100-sxm-80gb", batch=1, prompt=16, output=2,
                        overrides=(("compute.peak_TFLOPS.fp8", 624),))
    assert shipped.point_id != added.point_id
