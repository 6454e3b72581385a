"""aiconfigurator's measured GEMM tables (../shared/data/aiconfigurator), read once per test process: several modules
score the same GPU's rows, and reading one gemm_perf.csv.gz (100,000 to 140,000 rows) takes a second or more."""

from __future__ import annotations

import functools
from pathlib import Path

from kernels.measured import MeasuredKernel

AIC = Path(__file__).resolve().parents[3] / "shared" / "data" / "aiconfigurator"


@functools.cache
def aic_gemm_rows(gpu: str, device: str) -> tuple[MeasuredKernel, ...]:
    """Every GEMM row of one GPU folder ('h200_sxm') as the importer reads them, as `device`'s rows."""
    from kernels.aiconfigurator_import import _gemm_rows

    return tuple(_gemm_rows(next((AIC / gpu / "gemm").glob("*/*/gemm_perf.csv.gz")), device, gpu))
