"""Metrics of a serving run: per-request records -> TTFT, TPOT, E2E and queueing percentiles, goodput under an SLO.

Everything here is a pure function of numpy columns; times are float seconds. `in_system_area` and
`mean_in_system` measure the same quantity two ways so that simulated runs can be checked against Little's law
(L = lambda * W): the time-average number of requests in the system equals the arrival rate times the mean E2E.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # types only: sim/slowdown.py imports this module (its records), so this one calls it through SLO
    from sim.slowdown import SlowdownSLO, Unloaded

PERCENTILES = (50, 90, 99)
_LATENCIES = ("ttft", "tpot", "e2e", "queue")

# Keys of `summarize`, in this order (the results columns of a serving run), and their units.
_LATENCY_KEYS = tuple(f"{m}_{stat}_s" for m in _LATENCIES for stat in ("mean", *(f"p{p}" for p in PERCENTILES)))
SUMMARY_METRICS: tuple[str, ...] = (
    *_LATENCY_KEYS,
    "requests_per_s",
    "output_tokens_per_s",
    "goodput_rps",
    "slo_attainment",
    "meets_slo",
    "preemptions",
)
# Of the most urgent requests (the lowest priority value) where requests differ in priority: their TTFT and TPOT
# percentiles and the share of them meeting the SLO; NaN where every request has one priority.
URGENT_METRICS: tuple[str, ...] = ("urgent_ttft_p90_s", "urgent_ttft_p99_s", "urgent_tpot_p90_s", "urgent_tpot_p99_s",
                                   "urgent_slo_attainment")
SUMMARY_UNITS: dict[str, str] = {
    **dict.fromkeys(_LATENCY_KEYS, "s"),
    "requests_per_s": "1/s",
    "output_tokens_per_s": "1/s",
    "goodput_rps": "1/s",
    "slo_attainment": "fraction",
    "meets_slo": "fraction",  # 1.0 or 0.0: whether slo_attainment reaches SLO.attainment
    "preemptions": "count",
    **dict.fromkeys(URGENT_METRICS[:4], "s"),
    "urgent_slo_attainment": "fraction",
}


def _columns(obj: object, names: tuple[str, ...], dtypes: dict[str, type]) -> int:
    """Coerce the named fields of a frozen dataclass to 1-D numpy arrays of one length; return that length."""
    lengths = set()
    for name in names:
        column = np.asarray(getattr(obj, name), dtype=dtypes.get(name, float))
        if column.ndim != 1:
            raise ValueError(f"{type(obj).__name__}.{name} must be 1-D, got shape {column.shape}")
        object.__setattr__(obj, name, column)
        lengths.add(len(column))
    if len(lengths) > 1:
        sizes = ", ".join(f"{name}={len(getattr(obj, name))}" for name in names)
        raise ValueError(f"{type(obj).__name__} columns differ in length: {sizes}")
    return lengths.pop() if lengths else 0


@dataclass(frozen=True, kw_only=True)
class RequestRecords:
    """Per-request timings of a serving run as numpy columns (one entry per completed request, in the requests'
    order: arrival order, but for a conversation's later turns, which arrive when the previous answer is done).

    Times are absolute simulation times in seconds and must satisfy
    arrival_s <= scheduled_s <= first_token_s <= finish_s; every request produces at least one output token.
    decode_admitted_s is NaN for a request served whole by one replica, else between first_token_s and finish_s.
    """

    arrival_s: np.ndarray
    scheduled_s: np.ndarray  # first entry into a running batch
    first_token_s: np.ndarray  # end of the iteration that finished its prefill
    finish_s: np.ndarray  # when its last output token was produced
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    preemptions: np.ndarray  # times it was preempted
    # When a decode pool admitted it after a prefill pool's replica prefilled it (None: NaN, served whole).
    decode_admitted_s: np.ndarray | None = None
    priority: np.ndarray | None = None  # its priority, lower first (None: every request 0)
    # The pool whose replica sampled its last token, by its place among the run's pools (sim/serving.py serve_pools):
    # a fleet's serving pool, or the decode pool a prefill pool handed it to (None: every request 0).
    pool: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.decode_admitted_s is None:
            object.__setattr__(self, "decode_admitted_s", np.full(np.shape(self.arrival_s), np.nan))
        for name in ("priority", "pool"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.zeros(np.shape(self.arrival_s), dtype=np.int64))
        ints = {"prompt_tokens": np.int64, "output_tokens": np.int64, "preemptions": np.int64, "priority": np.int64,
                "pool": np.int64}
        _columns(self, tuple(f.name for f in fields(self)), ints)
        times = np.stack([self.arrival_s, self.scheduled_s, self.first_token_s, self.finish_s])
        if not np.all(np.isfinite(times)):
            raise ValueError("RequestRecords times must be finite (records hold completed requests only)")
        bad = np.flatnonzero(np.any(np.diff(times, axis=0) < 0, axis=0))
        if bad.size:
            raise ValueError(f"RequestRecords request {bad[0]} breaks arrival_s <= scheduled_s <= first_token_s"
                             f" <= finish_s: {times[:, bad[0]].tolist()}")
        if np.any(self.output_tokens < 1) or np.any(self.prompt_tokens < 0) or np.any(self.preemptions < 0):
            raise ValueError("RequestRecords needs output_tokens >= 1, prompt_tokens >= 0 and preemptions >= 0")
        handed = ~np.isnan(self.decode_admitted_s)
        if np.any(self.decode_admitted_s[handed] < self.first_token_s[handed]) or np.any(
                self.decode_admitted_s[handed] > self.finish_s[handed]):
            raise ValueError("RequestRecords needs first_token_s <= decode_admitted_s <= finish_s where a decode pool "
                             "admitted a request")

    def __len__(self) -> int:
        return len(self.arrival_s)

    def take(self, which: np.ndarray) -> RequestRecords:
        """The records of the requests `which` selects (a bool mask or indices), in their order."""
        return RequestRecords(**{f.name: getattr(self, f.name)[which] for f in fields(self)})

    @property
    def ttft_s(self) -> np.ndarray:
        """Time to first token: first_token_s - arrival_s."""
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> np.ndarray:
        """End-to-end latency: finish_s - arrival_s."""
        return self.finish_s - self.arrival_s

    @property
    def queue_s(self) -> np.ndarray:
        """Queueing delay before first entering a running batch: scheduled_s - arrival_s."""
        return self.scheduled_s - self.arrival_s

    @property
    def wait_s(self) -> np.ndarray:
        """Time waiting outside any running batch: queue_s, plus for a request handed to a decode pool the time
        from its first token to its admission there (the KV transfer included)."""
        return self.queue_s + np.nan_to_num(self.decode_admitted_s - self.first_token_s)

    @property
    def tpot_s(self) -> np.ndarray:
        """Mean time per output token after the first; NaN for requests with a single output token."""
        decode_steps = (self.output_tokens - 1).astype(float)
        out = np.full(len(self), np.nan)
        np.divide(self.finish_s - self.first_token_s, decode_steps, out=out, where=decode_steps > 0)
        return out


@dataclass(frozen=True, kw_only=True)
class SLO:
    """Per-request latency limits (None = no limit) and the fraction of requests that must meet all of them, and
    limits on percentiles of each request's slowdown over its run alone (sim/slowdown.py; None = none).

    The urgent requests (those of the lowest priority, where requests differ in priority: urgent_requests) may have
    limits of their own, as a request carries its own SLO to llm-d's gateway (x-slo-ttft-ms, x-slo-tpot-ms):
    `urgent_ttft_s` and `urgent_tpot_s`, None where they take the others' limit."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    attainment: float = 0.9
    slowdown: SlowdownSLO | None = None
    urgent_ttft_s: float | None = None
    urgent_tpot_s: float | None = None

    @property
    def per_request(self) -> bool:
        """Whether the SLO limits each request's latencies (an attainment to reach), not only slowdowns."""
        return any(limit is not None for limit in (self.ttft_s, self.tpot_s, self.urgent_ttft_s, self.urgent_tpot_s))

    def __post_init__(self) -> None:
        if not 0.0 <= self.attainment <= 1.0:
            raise ValueError(f"SLO.attainment must be in [0, 1], got {self.attainment}")
        for name in ("ttft_s", "tpot_s", "urgent_ttft_s", "urgent_tpot_s"):
            limit = getattr(self, name)
            if limit is not None and not limit >= 0:
                raise ValueError(f"SLO.{name} must be >= 0 or None, got {limit}")

    def limits(self, urgent: bool) -> tuple[float | None, float | None]:
        """The TTFT and TPOT limits of an urgent request, or of another (None: no limit)."""
        if not urgent:
            return self.ttft_s, self.tpot_s
        return (self.ttft_s if self.urgent_ttft_s is None else self.urgent_ttft_s,
                self.tpot_s if self.urgent_tpot_s is None else self.urgent_tpot_s)

    def met(self, records: RequestRecords, urgent: np.ndarray | None = None) -> np.ndarray:
        """Bool per request: meets every limit of its class (limits are inclusive; a NaN TPOT meets the TPOT
        limit); `urgent` the class of each (None: urgent_requests)."""
        urgent = urgent_requests(records) if urgent is None else urgent
        ok = np.ones(len(records), dtype=bool)
        for latencies, other, own in ((records.ttft_s, self.limits(False)[0], self.limits(True)[0]),
                                      (records.tpot_s, self.limits(False)[1], self.limits(True)[1])):
            limit = np.where(urgent, math.inf if own is None else own, math.inf if other is None else other)
            ok &= ~(latencies > limit)  # NaN > x is False: a one-token request has no TPOT to miss
        return ok


def urgent_requests(records: RequestRecords) -> np.ndarray:
    """Bool per request: of the lowest priority, where requests differ in priority (none urgent where they do not)."""
    if len(records) == 0 or records.priority.min() == records.priority.max():
        return np.zeros(len(records), dtype=bool)
    return records.priority == records.priority.min()


def _mean_and_percentiles(values: np.ndarray) -> list[float]:
    """Mean then PERCENTILES of the non-NaN values (numpy's linear rule); NaNs when there are none."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return [float("nan")] * (1 + len(PERCENTILES))
    return [float(values.mean()), *(float(v) for v in np.percentile(values, PERCENTILES))]


def summarize(records: RequestRecords, *, makespan_s: float, slo: SLO | None = None,
              unloaded: Unloaded | None = None, rejected: int = 0, rejected_urgent: int = 0,
              urgent: np.ndarray | None = None) -> dict[str, float]:
    """Summary metrics with SI units in the names; keys are SUMMARY_METRICS in order, NaN where undefined, then
    with an SLO that limits slowdowns sim/slowdown.py's SLOWDOWN_METRICS (over `unloaded`, the same requests
    each served alone).

    Latency means and percentiles are over requests (TPOT ignores one-token requests). Rates divide by
    makespan_s. Without per-request limits every request counts as good: goodput_rps = requests_per_s and
    slo_attainment is NaN. meets_slo is 1 where the attainment reaches the SLO's (of the urgent requests too, where
    the SLO gives them limits of their own: each class meets its SLO) and every slowdown limit holds (NaN without an
    SLO). `rejected` requests (`rejected_urgent` of them urgent), turned away on arrival and not in `records`, each
    miss the SLO. `urgent`: which of `records` are urgent (None: urgent_requests), where the requests served alone
    cannot tell (a rejected class).
    """
    if not makespan_s > 0:
        raise ValueError(f"makespan_s must be > 0, got {makespan_s}")
    stats: list[float] = []
    for name in _LATENCIES:
        stats += _mean_and_percentiles(getattr(records, f"{name}_s"))
    n = len(records)
    good, attainment, meets, slowdown = n, float("nan"), float("nan"), {}
    if slo is not None and slo.per_request:
        urgent = urgent_requests(records) if urgent is None else urgent
        met = slo.met(records, urgent)
        good = int(met.sum())
        attainment = good / (n + rejected) if n else float("nan")
        meets = float(attainment >= slo.attainment) if n else float("nan")
        if (urgent.any() or rejected_urgent) and slo.limits(True) != slo.limits(False):
            meets = float(meets == 1.0 and met[urgent].sum() / (urgent.sum() + rejected_urgent) >= slo.attainment)
    if slo is not None and slo.slowdown is not None:
        if unloaded is None:
            raise ValueError("unloaded: found none with a slowdown SLO, allowed: the requests' latencies alone")
        slowdown, held = slo.slowdown.measure(records, unloaded)
        meets = float(held and meets != 0.0) if n else float("nan")
    values = [*stats, n / makespan_s, float(records.output_tokens.sum()) / makespan_s, good / makespan_s,
              attainment, meets, float(records.preemptions.sum())]
    return dict(zip(SUMMARY_METRICS, values, strict=True)) | slowdown


# Of each pool's requests (RequestRecords.pool): how many, their TTFT and TPOT percentiles, and those meeting the SLO
# per second of the whole run (summed over the pools: the run's goodput_rps).
POOL_FIGURES: tuple[str, ...] = ("requests", "ttft_p50_s", "tpot_p50_s", "tpot_p90_s", "goodput_rps")


def pool_figures(records: RequestRecords, pools: int, *, makespan_s: float, slo: SLO | None = None,
                 urgent: np.ndarray | None = None) -> list[dict[str, float]]:
    """POOL_FIGURES of each of `pools` pools, by place (`summarize` over its requests alone: NaN latencies where it
    served none); `urgent`: which of `records` are urgent (None: urgent_requests of them all, so that a pool serving
    one class alone judges it by that class's limits)."""
    urgent = urgent_requests(records) if urgent is None else urgent
    # A slowdown limit judges the run's percentiles, not a request: a pool's goodput counts the per-request limits.
    per_request = None if slo is None else replace(slo, slowdown=None)
    figures = []
    for pool in range(pools):
        mine = records.pool == pool
        summary = summarize(records.take(mine), makespan_s=makespan_s, slo=per_request, urgent=urgent[mine])
        figures.append({"requests": float(mine.sum())} | {name: summary[name] for name in POOL_FIGURES[1:]})
    return figures


def urgent_metrics(records: RequestRecords, slo: SLO | None = None, rejected: int = 0,
                   urgent: np.ndarray | None = None) -> dict[str, float]:
    """URGENT_METRICS of the requests of the lowest priority where requests differ in priority (NaN elsewhere, and
    the attainment NaN without per-request SLO limits); `rejected` urgent requests, not in `records`, miss the
    SLO; `urgent`: which of `records` are urgent (None: urgent_requests)."""
    values = dict.fromkeys(URGENT_METRICS, float("nan"))
    urgent = urgent_requests(records) if urgent is None else urgent
    if not urgent.any() and not rejected:
        return values
    for name in ("ttft", "tpot"):
        latencies = getattr(records, f"{name}_s")[urgent]
        latencies = latencies[~np.isnan(latencies)]
        if latencies.size:
            values[f"urgent_{name}_p90_s"], values[f"urgent_{name}_p99_s"] = (
                float(v) for v in np.percentile(latencies, (90, 99)))
    if slo is not None and slo.per_request:
        values["urgent_slo_attainment"] = float(slo.met(records, urgent)[urgent].sum() / (urgent.sum() + rejected))
    return values


@dataclass(frozen=True, kw_only=True)
class IterationLog:
    """One row per executed iteration of one replica."""

    start_s: np.ndarray
    duration_s: np.ndarray
    batch_size: np.ndarray  # sequences in the iteration
    # Query tokens computed: prefill chunk tokens + each decode's (one; speculating, the tokens it verified: k + 1,
    # fewer where a token budget cut its drafts).
    tokens: np.ndarray
    kv_blocks_used: np.ndarray
    kv_blocks_total: int | np.ndarray  # the replica's KV blocks (per row when replicas differ)
    # Which replica ran each row, an index into replica_names ('' names: one replica, rows all 0).
    replica: np.ndarray | None = None
    replica_names: tuple[str, ...] = ("",)
    dynamic_J: np.ndarray | None = None  # each iteration's dynamic energy (compute and memory); None: not priced (0)
    # Of its tokens, its prefill chunks' (0: a decode-only iteration); None: not recorded (0).
    prefill_tokens: np.ndarray | None = None

    def __post_init__(self) -> None:
        rows = len(np.asarray(self.start_s))
        if self.replica is None:
            object.__setattr__(self, "replica", np.zeros(rows, dtype=np.int64))
        if self.dynamic_J is None:
            object.__setattr__(self, "dynamic_J", np.zeros(rows))
        if self.prefill_tokens is None:
            object.__setattr__(self, "prefill_tokens", np.zeros(rows, dtype=np.int64))
        ints = {"batch_size": np.int64, "tokens": np.int64, "kv_blocks_used": np.int64, "replica": np.int64,
                "prefill_tokens": np.int64}
        _columns(self, ("start_s", "duration_s", "batch_size", "tokens", "kv_blocks_used", "replica", "dynamic_J",
                        "prefill_tokens"), ints)
        if np.any(np.asarray(self.kv_blocks_total) <= 0):
            raise ValueError(f"IterationLog.kv_blocks_total must be > 0, got {self.kv_blocks_total}")
        if np.any(self.duration_s < 0):
            raise ValueError("IterationLog.duration_s must be >= 0")

    def __len__(self) -> int:
        return len(self.start_s)

    def kv_utilization(self) -> np.ndarray:
        """Fraction of the KV cache's blocks in use, per iteration."""
        return self.kv_blocks_used / self.kv_blocks_total

    def mean_batch_size(self) -> float:
        """Batch size averaged over busy time (weighted by iteration duration); NaN with no busy time."""
        busy_s = float(self.duration_s.sum())
        # A sum of products, not np.dot: BLAS splits a long dot over threads, and the sum then depends on how many.
        return float((self.batch_size * self.duration_s).sum()) / busy_s if busy_s > 0 else float("nan")


# The window a GPU's power reading averages over: NVML's nvmlDeviceGetPowerUsage (nvidia-smi's power.draw) "returns
# power averaged over 1 sec interval" on Ampere (but GA100) and newer GPUs (NVIDIA cuda-python NVML bindings,
# device_get_power_usage): the telemetry a power budget is watched by.
POWER_WINDOW_S = 1.0


def peak_window_power_W(start_s, duration_s, energy_J, span_s: float, window_s: float = POWER_WINDOW_S) -> float:
    """The highest mean power of iterations (each drawing energy_J[i] evenly over [start_s[i], start_s[i] +
    duration_s[i]), several at once where replicas overlap) over any `window_s` within [0, span_s]: the run's mean
    where the run is shorter than the window. The energy in a window is piecewise linear in where it starts, so the
    highest is at a start where the window's start or end meets an iteration's start or end. An iteration of no
    duration draws nothing."""
    window = min(window_s, span_s)
    if window <= 0:
        return 0.0
    times, drawn = _energy_drawn(start_s, duration_s, energy_J)
    starts = np.clip(np.concatenate([times, times - window]), 0.0, span_s - window)
    in_window = np.interp(starts + window, times, drawn) - np.interp(starts, times, drawn)
    return float(max(in_window.max(), 0.0)) / window


def two_phase_peak_power_W(first_s, first_J, second_s, second_J, window_s: float = POWER_WINDOW_S):
    """peak_window_power_W of two phases back to back, each drawing its energy evenly (a static batch's prefill,
    then its decode), over arrays of them at once: the busiest window lies flush with the start of the run where the
    first phase draws the more power, else with its end, and covers as much of that phase as it can."""
    if all(isinstance(a, float | int) for a in (first_s, first_J, second_s, second_J)):
        return _two_phase_peak(float(first_s), float(first_J), float(second_s), float(second_J), window_s)
    first_s, first_J, second_s, second_J = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (
        first_s, first_J, second_s, second_J)))
    window = np.minimum(window_s, first_s + second_s)
    first_W = np.divide(first_J, first_s, out=np.zeros_like(first_J), where=first_s > 0)
    second_W = np.divide(second_J, second_s, out=np.zeros_like(second_J), where=second_s > 0)
    high_W, high_s = np.where(first_W >= second_W, first_W, second_W), np.where(first_W >= second_W, first_s, second_s)
    low_W = np.where(first_W >= second_W, second_W, first_W)
    covered = np.minimum(window, high_s)
    drawn = high_W * covered + low_W * (window - covered)
    return np.divide(drawn, window, out=np.zeros_like(drawn), where=window > 0)


def _two_phase_peak(first_s: float, first_J: float, second_s: float, second_J: float, window_s: float) -> float:
    """two_phase_peak_power_W of one pair, in floats (one design point's metrics: numpy's fixed cost is the larger)."""
    window = min(window_s, first_s + second_s)
    if window <= 0:
        return 0.0
    first_W = first_J / first_s if first_s > 0 else 0.0
    second_W = second_J / second_s if second_s > 0 else 0.0
    (high_W, high_s), low_W = ((first_W, first_s), second_W) if first_W >= second_W else ((second_W, second_s), first_W)
    covered = min(window, high_s)
    return (high_W * covered + low_W * (window - covered)) / window


def window_power_W(start_s, duration_s, energy_J, edges_s) -> np.ndarray:
    """The mean power the iterations (peak_window_power_W's) draw within each window between consecutive edges."""
    times, drawn = _energy_drawn(start_s, duration_s, energy_J)
    edges = np.asarray(edges_s, dtype=float)
    return np.diff(np.interp(edges, times, drawn)) / np.diff(edges)


def _energy_drawn(start_s, duration_s, energy_J) -> tuple[np.ndarray, np.ndarray]:
    """The energy iterations have drawn by each of their starts and ends (and time 0), each drawing evenly over its
    duration: exact there and linear between them, so np.interp gives it at any time."""
    start, duration, energy = (np.asarray(a, dtype=float) for a in (start_s, duration_s, energy_J))
    timed = duration > 0
    times = np.concatenate([start[timed], start[timed] + duration[timed]])
    slopes = np.concatenate([energy[timed] / duration[timed], -energy[timed] / duration[timed]])
    order = np.argsort(times, kind="stable")
    times, slopes = np.concatenate([[0.0], times[order]]), np.concatenate([[0.0], slopes[order]])
    return times, np.concatenate([[0.0], np.cumsum(np.cumsum(slopes)[:-1] * np.diff(times))])


def decode_span_s(first_token_s, finish_s) -> float:
    """Decode time of a set of requests: the length of the union of their [first_token_s, finish_s] intervals,
    the time during which at least one request has its first token and not yet its last.

    Decode tokens (every output token after a request's first) over this time is the decode throughput
    (`decode_tokens_per_s`). For a static batch, whose requests all get their first token from one prefill, it
    is the latest finish minus that first token. Intervals are sorted by start: each adds the part of it past
    the latest end before it (the interval that reaches that end starts no later, so it covers the rest).
    """
    if len(first_token_s) == 1:  # one interval (a static batch decoded whole): its own length, in floats
        return max(0.0, float(finish_s[0]) - float(first_token_s[0]))
    start, end = np.asarray(first_token_s, dtype=float), np.asarray(finish_s, dtype=float)
    if start.size == 0:
        return 0.0
    order = np.argsort(start, kind="stable")
    start, end = start[order], end[order]
    before = np.concatenate([[-np.inf], np.maximum.accumulate(end)[:-1]])
    return float(np.maximum(0.0, end - np.maximum(start, before)).sum())


def per_decode_second(decode_tokens: float, span_s: float) -> float:
    """Decode tokens per second of decode time (decode_span_s); NaN without decode tokens or decode time."""
    return decode_tokens / span_s if decode_tokens > 0 and span_s > 0 else float("nan")


def in_system_area(records: RequestRecords) -> float:
    """Integral over time of the number of requests in the system (arrived, not finished) = sum of e2e_s.

    Little's law over a run of length T: L = area / T, lambda = n / T, W = mean e2e_s, so L = lambda * W.
    """
    return float(records.e2e_s.sum())


def mean_in_system(records: RequestRecords, *, start_s: float, end_s: float) -> float:
    """Time-average number of requests in the system over [start_s, end_s], by a sweep over arrival/finish events.

    Independent of the e2e sum (used to check Little's law): events are clipped to the window, sorted, and the
    running count is integrated piecewise between consecutive events.
    """
    if not end_s > start_s:
        raise ValueError(f"mean_in_system needs end_s > start_s, got [{start_s}, {end_s}]")
    times = np.clip(np.concatenate([records.arrival_s, records.finish_s]), start_s, end_s)
    steps = np.concatenate([np.ones(len(records)), -np.ones(len(records))])
    order = np.argsort(times, kind="stable")
    times, count = times[order], np.cumsum(steps[order])  # count[i]: requests in system just after event i
    area = float((count[:-1] * np.diff(times)).sum()) if times.size else 0.0  # as mean_batch_size: no BLAS dot
    return area / (end_s - start_s)
