"""Splitwise's own iteration times: splitwise-sim's profile-driven pricing, as an IterationCostModel.

splitwise-sim (the paper's simulator, github.com/Mutinifni/splitwise-sim @ 378088013a54df6f2052c27ff5ae6ea7619c3ecc,
mirrored as Azure/splitwise-sim) prices each iteration from data/perf_model.csv, vLLM measurements of prompt_time
and token_time (ms) per (model, hardware, tensor_parallel, prompt_size, batch_size, token_size).
performance_model.py DatabasePerformanceModel: per (model, hardware, TP) the median of each column over the rows of
one batch_tokens = prompt_size * batch_size, linearly interpolated (scipy interp1d, extrapolated past the ends);
get_iteration_duration counts an iteration's tokens as its prompt tokens plus one per decoding sequence and prices
a prompt-only iteration at prompt_time(tokens), a decode-only one at token_time(tokens), a mixed one at
1.1 * prompt_time(tokens). The profile's smallest batch_tokens is a 128-token prompt, so a decode step of 1 to 512
sequences is read off single-request rows: it costs the same at any batch, although the batch rows vLLM measured
(prompt 512, batch b) grow 1.6-2.0x from batch 1 to 64 (MEASURED_DECODE_MS).

Here those medians for the TP-8 rows of Llama-2-70B and BLOOM-176B on a100-80gb and h100-80gb (not -pcap), mapped to
our presets, price the iterations our serving simulator schedules (kernels, memory and KV sizes stay ours). Left as
ours: an unloaded request's time between tokens is its batch-1 decode step, where splitwise-sim's baseline reads
token_time at batch_tokens = its prompt (notebooks/perf_model.py add_baseline_perf; 4% slower for a 1K prompt on
an A100), so our TBT slowdowns are up to 4% stricter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from kernels.formats import NumericFormat
from kernels.shapes import StepShape
from sim.costs import TIME_CLASS_NAMES, IterationCost, IterationCostModel

# splitwise-sim mixed iterations: prompt_time of all their tokens, times this (performance_model.py).
MIXED_FACTOR = 1.1
PROFILE_TP = 8  # the tensor parallelism of the rows read (one DGX machine)
BATCH_TOKENS = (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
DECODE_BATCH = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Profile:
    """Medians (ms) of data/perf_model.csv TP-8 rows at each BATCH_TOKENS (rows (b_t, 1) and (512, b_t / 512))."""

    prompt_ms: tuple[float, ...]
    token_ms: tuple[float, ...]


# Keyed by our model and device presets; medians of the 5 (or, at 512, 45 and at 1024-8192, 10) rows each.
PROFILES: dict[tuple[str, str], Profile] = {
    ("llama-2-70b", "a100-sxm-80gb"): Profile(
        prompt_ms=(65.35, 66.76, 93.0, 160.9, 282.7, 708.4, 1781.0, 3524.5, 7554.0),
        token_ms=(43.03, 43.48, 45.03, 44.56, 45.70, 46.48, 48.47, 53.02, 71.61)),
    ("llama-2-70b", "h100-sxm"): Profile(
        prompt_ms=(58.19, 51.66, 53.86, 77.69, 134.4, 376.2, 831.5, 1551.7, 2936.3),
        token_ms=(29.87, 28.27, 30.56, 29.97, 31.64, 31.33, 32.6, 38.62, 50.16)),
    ("bloom-176b", "a100-sxm-80gb"): Profile(
        prompt_ms=(79.67, 99.16, 174.38, 287.5, 536.1, 1332.6, 3591.5, 5782.0, 11251.8),
        token_ms=(47.61, 47.71, 49.31, 49.44, 50.19, 51.6, 54.27, 65.38, 96.58)),
    ("bloom-176b", "h100-sxm"): Profile(
        prompt_ms=(48.28, 51.18, 76.14, 132.2, 252.0, 649.6, 1411.6, 2521.9, 4996.45),
        token_ms=(35.74, 36.15, 36.17, 36.33, 36.74, 37.53, 39.02, 45.84, 63.82)),
}
# token_time (ms) vLLM measured per decode step at batch DECODE_BATCH (rows prompt 512, token 128, TP-8; medians).
MEASURED_DECODE_MS: dict[tuple[str, str], tuple[float, ...]] = {
    ("llama-2-70b", "a100-sxm-80gb"): (44.85, 44.56, 45.79, 46.47, 50.44, 53.02, 71.61),
    ("llama-2-70b", "h100-sxm"): (29.76, 30.26, 31.79, 32.50, 34.17, 38.62, 50.16),
    ("bloom-176b", "a100-sxm-80gb"): (48.76, 49.99, 51.00, 52.95, 57.34, 65.38, 96.58),
    ("bloom-176b", "h100-sxm"): (36.11, 36.91, 38.06, 38.14, 40.64, 45.84, 63.82),
}


def interpolate(x: float, xs, ys) -> float:
    """Piecewise-linear through (xs, ys), extended past either end along its end segment (interp1d's
    fill_value='extrapolate')."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if x < xs[0]:
        return float(ys[0] + (x - xs[0]) * (ys[1] - ys[0]) / (xs[1] - xs[0]))
    if x > xs[-1]:
        return float(ys[-1] + (x - xs[-1]) * (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]))
    return float(np.interp(x, xs, ys))


class ProfileCostModel(IterationCostModel):
    """An iteration's time as splitwise-sim prices it from `profile` (module docstring); `decode_ms`, where given,
    prices decode-only iterations by their sequences instead (DECODE_BATCH). Energy is not profiled (zero)."""

    def __init__(self, base: IterationCostModel, profile: Profile, decode_ms: tuple[float, ...] | None = None):
        super().__init__(base.device, base.template, execution=base.execution, kv_bucket_tokens=base.kv_bucket_tokens)
        self.profile, self.decode_ms = profile, decode_ms

    def launched(self, shape: StepShape) -> StepShape:
        """The shape itself: a profile's times are of passes as the engine ran them, its padding included."""
        return shape

    def _price(self, shape: StepShape) -> IterationCost:
        tokens = shape.prefill_tokens + shape.decode_seqs
        if shape.prefill_seqs == 0 and self.decode_ms is not None:
            time_ms = interpolate(shape.decode_seqs, DECODE_BATCH, self.decode_ms)
        elif shape.prefill_seqs == 0:
            time_ms = interpolate(tokens, BATCH_TOKENS, self.profile.token_ms)
        else:
            time_ms = interpolate(tokens, BATCH_TOKENS, self.profile.prompt_ms)
            time_ms *= MIXED_FACTOR if shape.decode_seqs else 1.0
        return IterationCost(time_s=time_ms / 1e3, compute_J=0.0, memory_J=0.0,
                             class_time_s=np.zeros(len(TIME_CLASS_NAMES)))


class ProfileEvaluator(Evaluator):
    """An Evaluator whose serving iterations are priced from PROFILES (with MEASURED_DECODE_MS decode steps where
    `measured_decode`); everything else (memory, KV sizes, scheduling) as Evaluator's."""

    def __init__(self, *, measured_decode: bool = False) -> None:
        super().__init__()
        self.measured_decode = measured_decode
        self._profiled: dict[tuple, ProfileCostModel] = {}

    def cost_model(self, point: DesignPoint, fmt: NumericFormat, attention: bool = False) -> IterationCostModel:
        key = (point.model, point.device)
        if key not in PROFILES or point.tp != PROFILE_TP:
            raise ValueError(f"{point.model} on {point.device}, tp {point.tp}: found no splitwise-sim profile, "
                             f"allowed: {', '.join(f'{m} on {d}' for m, d in PROFILES)} at tp {PROFILE_TP}")
        if key not in self._profiled:
            decode_ms = MEASURED_DECODE_MS[key] if self.measured_decode else None
            self._profiled[key] = ProfileCostModel(super().cost_model(point, fmt, attention), PROFILES[key], decode_ms)
        return self._profiled[key]
