"""SimResult: per-request timings, per-kernel timeline, energy and memory; metrics derived from them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from sim.memory import MemoryFootprint
from sim.serving_metrics import per_decode_second, two_phase_peak_power_W

PHASES = ("prefill", "decode")


# What a simulation reports of a design point, in this order (SimResult.metrics). Two throughputs:
# tokens_per_s is end to end (every output token, the first included, over the makespan, prefill included);
# decode_tokens_per_s counts decode only (output tokens after each request's first, over the decode time).
RESULT_METRICS = ("ttft_s", "tpot_s", "e2e_s", "tokens_per_s", "decode_tokens_per_s", "energy_per_token_J",
                  "avg_power_W", "power_peak_W", "peak_memory_B")


@dataclass(frozen=True, kw_only=True)
class RequestTiming:
    """Timings of one request, or of `count` requests that arrive, start and finish together (a sub-batch)."""

    arrival_s: float
    first_token_s: float
    finish_s: float
    output_tokens: int
    count: int = 1

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float:
        """Mean time per output token after the first (NaN with a single output token)."""
        if self.output_tokens < 2:
            return math.nan
        return (self.finish_s - self.first_token_s) / (self.output_tokens - 1)


@dataclass(frozen=True, kw_only=True)
class Timeline:
    """One row per executed kernel: start, duration, index into the pass's kernel table, phase, step, the
    execution unit it ran on and the decode sub-batch it belongs to."""

    start_s: np.ndarray
    duration_s: np.ndarray
    kernel_index: np.ndarray
    phase: np.ndarray  # index into PHASES
    step: np.ndarray  # decode step (-1 for prefill)
    unit: np.ndarray  # index into SimResult.unit_names
    sub_batch: np.ndarray  # decode sub-batch (0 for the prefill and for a batch decoded whole)


@dataclass(frozen=True, kw_only=True)
class SimResult:
    request_groups: tuple[RequestTiming, ...]  # requests with equal timings grouped (`count` each)
    makespan_s: float
    energy_parts_J: dict[str, float]  # compute_J, memory_J, static_J
    time_by_class_s: dict[str, float]  # busy time by kernel class (gemm, attention, norm, ...)
    memory: MemoryFootprint
    timeline: Timeline | None = None
    # (phase index, sub-batch) -> label of each kernel of the table that pass ran
    kernel_names: dict[tuple[int, int], tuple[str, ...]] = field(default_factory=dict)
    unit_names: tuple[str, ...] = ("device",)
    prefill_dynamic_J: float = 0.0  # of energy_parts_J's compute and memory energy, the prefill's

    @property
    def energy_J(self) -> float:
        return sum(self.energy_parts_J.values())

    @cached_property
    def requests(self) -> tuple[RequestTiming, ...]:
        """One entry per request."""
        return tuple(replace(group, count=1) for group in self.request_groups for _ in range(group.count))

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens * r.count for r in self.request_groups)

    def metrics(self) -> dict[str, float]:
        """The metrics of the results table (RESULT_METRICS), SI units in the names.

        ttft_s, tpot_s and e2e_s are means over requests. tokens_per_s is end to end: output tokens (the first
        of each request included) over the makespan, prefill included. decode_tokens_per_s is decode only:
        output tokens after each request's first over the decode time, from the first token to the last finish
        (sim/serving_metrics.py decode_span_s; here, every request's first token from one prefill, to the makespan):
        for a static batch of B requests of O output tokens B x (O - 1) / (makespan_s - ttft_s). Decoded as one
        batch (no decode sub-batches, no speculation, whose sequences finish apart while their timing is a
        sequence's in expectation) makespan_s = e2e_s, so B x (O - 1) / (e2e_s - ttft_s) = B / tpot_s.
        NaN with one output token (nothing decoded).
        """
        groups = self.request_groups  # a few groups of requests with equal timings: plain sums over them
        if len(groups) == 1:  # a static batch decoded whole: the same sums of one term, without a generator each
            (g,) = groups
            requests, tokens, decode_tokens = g.count, g.output_tokens * g.count, g.count * (g.output_tokens - 1)
            totals = (g.ttft_s * g.count, g.tpot_s * g.count, (g.finish_s - g.arrival_s) * g.count)
        else:
            requests, tokens = sum(g.count for g in groups), self.output_tokens
            decode_tokens = sum(g.count * (g.output_tokens - 1) for g in groups)
            totals = (sum(g.ttft_s * g.count for g in groups), sum(g.tpot_s * g.count for g in groups),
                      sum((g.finish_s - g.arrival_s) * g.count for g in groups))
        # Every group's first token comes from the one prefill, and the last finish is the makespan's (a speculative
        # batch's timing is a sequence's in expectation, ending before it).
        decode_s = max(0.0, self.makespan_s - min(g.first_token_s for g in groups))
        energy_J = self.energy_J
        static_J = self.energy_parts_J["static_J"]
        # Two phases drawing evenly: the prefill up to the first token, then the decode (every group's first token
        # comes from the one prefill).
        prefill_s = groups[0].first_token_s - groups[0].arrival_s
        peak_W = static_J / self.makespan_s + float(two_phase_peak_power_W(
            prefill_s, self.prefill_dynamic_J, self.makespan_s - prefill_s,
            energy_J - static_J - self.prefill_dynamic_J))
        return dict(zip(RESULT_METRICS, (
            totals[0] / requests, totals[1] / requests, totals[2] / requests,  # ttft_s, tpot_s, e2e_s
            tokens / self.makespan_s,
            per_decode_second(decode_tokens, decode_s),
            energy_J / tokens,
            energy_J / self.makespan_s,
            peak_W,
            float(self.memory.total_B),
        ), strict=True))
