"""The measured tables under ../shared/data that several test modules score, read once per test process: reading
one aiconfigurator gemm_perf.csv.gz (100,000 to 140,000 rows) or moe_perf.csv.gz (50,000 to 70,000), or Vidur's
folder (185,000 rows), takes a second or more. Kept here, not in a test module: a test module another one imports is a
second module object (pytest imports each test file under its own name), whose caches fill again. Each reader returns
a tuple of frozen MeasuredKernels, so no test can change another's rows."""

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
def aic_quantized_moe_rows(gpu: str, device: str) -> tuple[tuple[str, MeasuredKernel], ...]:
    """aiconfigurator's quantized-weight MoE layers of one GPU folder ('b200_sxm'), each with its fit key
    (hw_models/calibration.py gemm_key: 'bf16/w4int', 'fp8/w4fp4'); the 16-bit layers (key '') left out."""
    from hw_models.calibration import gemm_key
    from kernels.aiconfigurator_import import _moe_rows

    keyed = ((gemm_key(r), r) for r in _moe_rows(next((AIC / gpu / "moe").glob("*/*/moe_perf.csv.gz")), device, gpu))
    return tuple((key, r) for key, r in keyed if key)


@functools.cache
def vidur_rows() -> tuple[MeasuredKernel, ...]:
    """Every GEMM and streaming kernel of Vidur's data folder, as kernels/vidur_import.read_vidur reads them."""
    from kernels.vidur_import import read_vidur

    return tuple(read_vidur(VIDUR))
