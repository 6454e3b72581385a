"""The measured tables under ../shared/data that several test modules score, read once per test process: reading
one aiconfigurator gemm_perf.csv.gz (100,000 to 140,000 rows) or Vidur's folder (185,000 rows) takes a second or
more. Each reader returns a tuple of frozen MeasuredKernels, so no test can change another's rows."""

from __future__ import annotations

import functools
from pathlib import Path

from kernels.measured import MeasuredKernel

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
AIC = DATA / "aiconfigurator"
VIDUR = DATA / "vidur"


@functools.cache
def aic_gemm_rows(gpu: str, device: str) -> tuple[MeasuredKernel, ...]:
    """Every GEMM row of one aiconfigurator GPU folder ('h200_sxm') as the importer reads them, as `device`'s rows."""
    from kernels.aiconfigurator_import import _gemm_rows

    return tuple(_gemm_rows(next((AIC / gpu / "gemm").glob("*/*/gemm_perf.csv.gz")), device, gpu))


@functools.cache
def vidur_rows() -> tuple[MeasuredKernel, ...]:
    """Every GEMM and streaming kernel of Vidur's data folder, as kernels/vidur_import.read_vidur reads them."""
    from kernels.vidur_import import read_vidur

    return tuple(read_vidur(VIDUR))
