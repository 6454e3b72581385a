"""The published whole runs shipped in data/published/ (batch_run rows), scored as `explore validate` scores them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from explore.calibrate_cmd import predict_steps
from kernels.measured import MeasuredKernel, read_table

PUBLISHED = Path(__file__).resolve().parents[2] / "data" / "published"


def published_runs(name: str) -> list[MeasuredKernel]:
    """The rows of data/published/NAME."""
    return read_table(PUBLISHED / name)


def time_errors(evaluator, runs: list[MeasuredKernel], device: str) -> np.ndarray:
    """Each run's simulated makespan over the published one, minus 1 (negative: ours is shorter)."""
    predicted = predict_steps(device, runs, device, evaluator)
    return predicted / np.array([run.time_s for run in runs]) - 1.0
