"""Slowdown SLOs: each request's latencies over those of the same request served alone.

Splitwise (Patel et al., ISCA 2024, arXiv:2311.18677, Section V-A and its SLO table) states its service-level
objectives as percentiles of per-request slowdown rather than absolute times: a request's TTFT, its mean time
between tokens (TBT) and its end-to-end latency, each divided by the same quantity for that request run alone on
one machine (its artifact, Azure/splitwise-sim notebooks/plots.ipynb, `get_slo` and `add_baseline_perf`: the
reference is one unloaded DGX-A100, 8-way tensor parallel, whatever cluster is being judged). A limit on the
median slowdown binds where absolute limits do not: a prefill stalling every running decode doubles the time
between tokens of the requests it interrupts long before any absolute TBT limit notices.

An unloaded run here is what a continuous-batching replica does with one request and nothing else: one
iteration prefills the whole prompt (and samples the first token), then one decode iteration at batch 1 per
further token, the k-th attending to prompt + k keys. A shared prefix (a system prompt every request starts with)
is cached as on the replica, so the prefill computes only the rest of the prompt.

In a sweep the reference is the design point's own device (its format, tensor parallelism and overrides) serving
the request that way, whatever the point's scheduler, pools or speculation: designs on one device share one
reference, as Splitwise judges every cluster against one baseline machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels.kv_policy import Window
from kernels.shapes import step_shape
from sim.costs import IterationCostModel
from sim.serving_metrics import PERCENTILES, RequestRecords

METRICS = ("ttft", "tbt", "e2e")
# Results columns of a run under a slowdown SLO: each metric's slowdown at the percentiles every latency reports
# (Splitwise's table limits these three).
SLOWDOWN_METRICS: tuple[str, ...] = tuple(f"slowdown_{m}_p{p}" for m in METRICS for p in PERCENTILES)
Limits = tuple[tuple[int, float], ...]  # (percentile, highest slowdown allowed at it)


@dataclass(frozen=True, kw_only=True)
class Unloaded:
    """Latencies of requests each served alone: TTFT and mean time between tokens (NaN for one-token requests)."""

    ttft_s: np.ndarray
    tbt_s: np.ndarray
    output_tokens: np.ndarray

    @property
    def e2e_s(self) -> np.ndarray:
        """TTFT plus every further token at the unloaded time between tokens (Splitwise's baseline_e2e)."""
        return self.ttft_s + np.nan_to_num(self.tbt_s) * (self.output_tokens - 1)


def unloaded_latencies(costs: IterationCostModel, prompt_tokens, output_tokens, window: Window = None,
                       prefix_tokens: int = 0, block_tokens: int = 1) -> Unloaded:
    """Each request (`prompt_tokens`, `output_tokens`, aligned arrays) alone on a replica priced by `costs`: a
    prefill of its prompt past the `prefix_tokens` already cached (the replica's shared prefix, in KV blocks of
    `block_tokens`; of it, the whole blocks before the last prompt token, which is computed, as sim/kv_cache.py
    cached_prefix finds), then decode steps at batch 1 (module docstring).
    Decode steps are priced once per KV length and summed through a running total, so thousands of requests cost
    one pass over the lengths."""
    prompts = np.asarray(prompt_tokens, dtype=np.int64)
    outputs = np.asarray(output_tokens, dtype=np.int64)

    def prefill(prompt: int) -> float:
        cached = min(prefix_tokens, (prompt - 1) // block_tokens * block_tokens)
        return costs.price(step_shape([(prompt - cached, cached)], [], sampled=1, window=window,
                                      prefill_window=costs.template.sliding_window, finished=[prompt],
                                      layer_window=costs.template.layer_window)).time_s

    prefill_s = {int(p): prefill(int(p)) for p in np.unique(prompts)}
    longest = int((prompts + outputs - 1).max()) if len(prompts) else 0
    step_s = np.zeros(longest + 1)
    for kv in range(1, longest + 1):  # step_s[kv]: a decode step of one sequence attending to kv keys
        step_s[kv] = costs.price(step_shape([], [kv], sampled=1, window=window,
                                            layer_window=costs.template.layer_window)).time_s
    running = np.cumsum(step_s)
    # The k-th decode step (k = 1 .. output - 1) attends to prompt + k keys.
    decode_s = running[prompts + outputs - 1] - running[prompts]
    steps = outputs - 1
    tbt_s = np.full(len(prompts), np.nan)
    np.divide(decode_s, steps, out=tbt_s, where=steps > 0)
    return Unloaded(ttft_s=np.array([prefill_s[int(p)] for p in prompts]), tbt_s=tbt_s, output_tokens=outputs)


def slowdowns(records: RequestRecords, unloaded: Unloaded) -> dict[str, np.ndarray]:
    """Per-request slowdowns (`METRICS`) of a run over the same requests served alone (aligned, arrival order).
    TBT is each request's mean time between tokens after its first (its TPOT); NaN for one-token requests."""
    if len(records) != len(unloaded.ttft_s):
        raise ValueError(f"records: found {len(records)} requests, allowed: the {len(unloaded.ttft_s)} of the "
                         f"unloaded run")
    return {"ttft": records.ttft_s / unloaded.ttft_s, "tbt": records.tpot_s / unloaded.tbt_s,
            "e2e": records.e2e_s / unloaded.e2e_s}


# Splitwise's SLO table (Section V-A; splitwise-sim notebooks/plots.ipynb get_slo): P50 / P90 / P99 slowdown.
SPLITWISE_TTFT: Limits = ((50, 2.0), (90, 3.0), (99, 6.0))
SPLITWISE_TBT: Limits = ((50, 1.25), (90, 1.5), (99, 5.0))
SPLITWISE_E2E: Limits = ((50, 1.25), (90, 1.5), (99, 5.0))


@dataclass(frozen=True, kw_only=True)
class SlowdownSLO:
    """Highest slowdown allowed at each percentile of each metric (default: Splitwise's table)."""

    ttft: Limits = SPLITWISE_TTFT
    tbt: Limits = SPLITWISE_TBT
    e2e: Limits = SPLITWISE_E2E

    def __post_init__(self) -> None:
        for name in METRICS:
            for percentile, limit in getattr(self, name):
                if not (0 <= percentile <= 100 and limit >= 1.0):
                    raise ValueError(f"{name}: found limit {limit} at p{percentile}, allowed: a slowdown >= 1 at a "
                                     f"percentile in [0, 100]")

    def misses(self, per_request: dict[str, np.ndarray]) -> list[str]:
        """Every limit the slowdowns break, as 'tbt p50 1.31 > 1.25' (empty when the SLO is met). Percentiles
        use numpy's linear rule over the requests that have the metric (as pandas' quantile in Splitwise's)."""
        broken = []
        for name in METRICS:
            values = per_request[name][~np.isnan(per_request[name])]
            for percentile, limit in getattr(self, name):
                value = float(np.percentile(values, percentile)) if len(values) else 1.0
                if value > limit:
                    broken.append(f"{name} p{percentile} {value:.2f} > {limit}")
        return broken

    def met(self, per_request: dict[str, np.ndarray]) -> bool:
        return not self.misses(per_request)

    def measure(self, records: RequestRecords, unloaded: Unloaded) -> tuple[dict[str, float], bool]:
        """A run's SLOWDOWN_METRICS columns (NaN where no request has the metric) and whether it meets every
        limit (sim/serving_metrics.py summarize calls this for an SLO with slowdown limits)."""
        per_request = slowdowns(records, unloaded)
        columns = {}
        for name in METRICS:
            values = per_request[name][~np.isnan(per_request[name])]
            stats = np.percentile(values, PERCENTILES) if len(values) else np.full(len(PERCENTILES), np.nan)
            columns.update({f"slowdown_{name}_p{p}": float(v) for p, v in zip(PERCENTILES, stats, strict=True)})
        return columns, self.met(per_request)


# Named slowdown SLOs a sweep (slo: {slowdown: NAME}) and `explore run --slo-slowdown NAME` may give.
SLOWDOWN_PRESETS: dict[str, SlowdownSLO] = {"splitwise": SlowdownSLO()}
