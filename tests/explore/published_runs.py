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


def time_errors(evaluator, runs: list[MeasuredKernel]) -> np.ndarray:
    """Each run's simulated makespan on its own device over the published one, minus 1 (negative: ours is shorter),
    in the runs' order."""
    errors = np.empty(len(runs))
    for device in {run.device for run in runs}:
        chosen = [i for i, run in enumerate(runs) if run.device == device]
        on_device = [runs[i] for i in chosen]
        errors[chosen] = predict_steps(device, on_device, device, evaluator) / np.array(
            [run.time_s for run in on_device]) - 1.0
    return errors


def assert_all_within(errors: dict, count: int, tolerance: float) -> None:
    """`count` runs' errors, each within `tolerance` either way (the errors shown where one is not)."""
    assert len(errors) == count and all(abs(e) <= tolerance for e in errors.values()), errors
