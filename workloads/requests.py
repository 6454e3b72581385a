"""Request sources for a serving simulation: seeded synthetic requests (an arrival process and two length
distributions) and request traces read from CSV files (three public traces ship in workloads/traces) or from
Mooncake's JSON-lines traces, whose requests name their prompts' blocks by hash (a prefix tree).

Synthetic arrivals start at the first inter-arrival gap, not at 0 (a trace's first request may arrive at any
time too); `RequestSet.scaled_to_rate` moves the first arrival to 0.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from workloads.errors import InputError, did_you_mean, found_json, found_key, found_value

TRACE_FOLDER = Path(__file__).parent / "traces"
SHIPPED_TRACES: dict[str, str] = {
    "splitwise-conv": "splitwise_conv.csv.gz",
    "splitwise-code": "splitwise_code.csv.gz",
    "arxiv-summarization": "arxiv_summarization.csv.gz",
}
# Accepted column names of a trace CSV, ours first, then Vidur/Splitwise's.
ARRIVAL_COLUMNS = ("arrival_s", "arrived_at")
PROMPT_COLUMNS = ("prompt_tokens", "num_prefill_tokens")
OUTPUT_COLUMNS = ("output_tokens", "num_decode_tokens")
# The prefix a request starts with (a system prompt, a shared document, a conversation), as a group number: requests
# of one group share it (sim/kv_cache.py caches it); how many tokens of its prompt it shares with its group's earlier
# requests; and seconds after the previous request of its group finishes that it arrives (empty: at its arrival time).
GROUP_COLUMNS = ("prefix_group",)
SHARED_COLUMNS = ("shared_tokens",)
AFTER_PREVIOUS_COLUMNS = ("after_previous_s",)
# A request's priority: a whole number, lower first, as vLLM's `priority` (its --scheduling-policy priority orders the
# waiting requests by (priority, arrival)); empty column: every request alike.
PRIORITY_COLUMNS = ("priority",)
# What each column's cells may hold: (a test of the float values, the allowed text).
_CELLS = {
    "time": (lambda v: np.isfinite(v) & (v >= 0), "a time in seconds >= 0"),
    "length": (lambda v: (v >= 1) & (v <= MAX_TOKENS) & (v == np.floor(v)), "a whole number of tokens >= 1"),
    "count": (lambda v: (v >= 0) & (v <= MAX_TOKENS) & (v == np.floor(v)), "a whole number >= 0"),
    "gap": (lambda v: np.isnan(v) | (np.isfinite(v) & (v >= 0)), "seconds >= 0, or empty for a group's first"),
    "rank": (lambda v: (np.abs(v) <= MAX_TOKENS) & (v == np.floor(v)), "a whole number (lower is served first)"),
}
MAX_TOKENS = 2**53  # largest count a float64 column holds exactly; longer "lengths" are corrupt data
# Tokens one hash id of a Mooncake trace names: 512 (kvcache-ai/Mooncake FAST25-release/traces README: "block size
# 512"; NVIDIA Dynamo's data generator and AIPerf take the same default); a prompt's last id names its remainder.
MOONCAKE_BLOCK_TOKENS = 512
URGENT_STREAM = 8  # the seed stream of RequestSet.with_urgent, apart from arrivals', lengths' and prefix groups' (7)
ADAPTER_STREAM = 9  # the seed stream of RequestSet.with_adapters, apart from every other draw's
# Keys of a multi-turn session's rows (AIPerf's Mooncake variant: a turn's new input only, after the previous turn's
# answer); refused, since a row here is a whole prompt at its timestamp.
MOONCAKE_SESSION_KEYS = ("session_id", "delay")


def _number(name: str, value: object, *, above: float | None = None, at_least: float | None = None) -> float:
    """`value` as a finite float above (or at least) a bound, or an InputError naming `name`."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (above is None or value > above) and (at_least is None or value >= at_least)
    if not ok:
        bound = f"> {above:g}" if above is not None else f">= {at_least:g}"
        raise InputError(f"{name}: found {found_value(value)}, allowed: a finite number {bound}")
    return float(value)  # type: ignore[arg-type]


def _integer(name: str, value: object, *, at_least: int, what: str = "") -> int:
    """`value` as an int >= at_least, or an InputError naming `name` (`what` explains the bound)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < at_least:
        raise InputError(f"{name}: found {found_value(value)}, allowed: an integer >= {what or at_least}")
    return int(value)


def _length(name: str, value: object, *, at_least: int = 1, what: str = "") -> int:
    """A length in tokens: an int from at_least to MAX_TOKENS (a longer one overflowed numpy's int64 when sampled, a
    traceback rather than a refusal), or an InputError naming `name`."""
    length = _integer(name, value, at_least=at_least, what=what)
    if length > MAX_TOKENS:
        raise InputError(f"{name}: found {length}, allowed: at most {MAX_TOKENS:,} tokens")
    return length


def _frozen(values: np.ndarray) -> np.ndarray:
    """A read-only copy, so that frozen dataclasses holding arrays stay frozen."""
    values = np.array(values)
    values.setflags(write=False)
    return values


def _token_column(name: str, values: object) -> np.ndarray:
    """Token counts as read-only int64, or an InputError naming the first bad entry."""
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "iuf":
        raise InputError(f"{name}: found shape {array.shape} of {array.dtype}, allowed: a non-empty 1-D "
                         f"array of integers >= 1")
    bad = np.flatnonzero(~((array >= 1) & (array <= MAX_TOKENS) & (array == np.floor(array))))
    if bad.size:
        raise InputError(f"{name}: found {found_value(array[bad[0]].item())} at index {bad[0]}, allowed: integers >= 1")
    return _frozen(array.astype(np.int64))


@dataclass(frozen=True, kw_only=True, eq=False)
class RequestSet:
    """Requests in arrival order as numpy columns (read-only arrays; equality is identity).

    `has_arrivals` is False for a trace without arrival times (all arrive at 0, the arrival times mean
    nothing): give it some with `with_arrivals`.
    """

    arrival_s: np.ndarray  # float64, non-decreasing, >= 0; the first is not necessarily 0
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    source: str = ""  # human-readable: the generator's parameters or the trace's name
    has_arrivals: bool = True
    # Each request's prefix group (int64 >= 0), where the source gives them; None: the serving run draws them.
    prefix_group: np.ndarray | None = None
    # Conversations (sample_conversations): each request's tokens it shares with its group's earlier requests (the
    # turns before it, int64 below its prompt), and for a turn after the first the seconds it arrives after the
    # previous request of its group finishes (NaN for a first turn, which arrives at arrival_s; a later turn's
    # arrival_s is its first turn's). None: requests of a group share the serving run's prefix_tokens, and each
    # arrives at its arrival_s.
    shared_tokens: np.ndarray | None = None
    after_previous_s: np.ndarray | None = None
    # Beside prefix_group, each request's root: which of several system prompts its group's prefix starts with
    # (sample_conversations' system_groups; int64 >= 0). None: every group behind one.
    prefix_root: np.ndarray | None = None
    # A prefix tree (a Mooncake trace): each request's prompt as the nodes it passes through, in order, each node (an
    # id >= 0, one per distinct prefix) `tree_block_tokens` of its tokens, the last node the rest. None: no tree.
    prefix_nodes: tuple[tuple[int, ...], ...] | None = None
    tree_block_tokens: int = MOONCAKE_BLOCK_TOKENS
    # Each request's priority (int64, lower first: vLLM's), where the source gives them or with_urgent drew them;
    # None: every request alike.
    priority: np.ndarray | None = None
    # Each request's LoRA adapter (int64 >= 0), where with_adapters drew them; None: every request runs the base model.
    adapter: np.ndarray | None = None

    def __post_init__(self) -> None:
        prompt = _token_column("prompt_tokens", self.prompt_tokens)
        output = _token_column("output_tokens", self.output_tokens)
        arrival = np.asarray(self.arrival_s, dtype=np.float64)
        if arrival.shape != prompt.shape or output.shape != prompt.shape:
            raise InputError(f"RequestSet: found {arrival.shape[0] if arrival.ndim else 0} arrivals, "
                             f"{prompt.size} prompts and {output.size} outputs, allowed: one of each per request")
        bad = np.flatnonzero(~(np.isfinite(arrival) & (arrival >= np.maximum.accumulate(np.r_[0.0, arrival[:-1]]))))
        if bad.size:
            raise InputError(f"arrival_s: found {found_value(arrival[bad[0]].item())} at index {bad[0]}, allowed: "
                             f"finite times >= 0 in non-decreasing order")
        object.__setattr__(self, "arrival_s", _frozen(arrival))
        object.__setattr__(self, "prompt_tokens", prompt)
        object.__setattr__(self, "output_tokens", output)
        if self.prefix_group is not None:
            groups = np.asarray(self.prefix_group)
            bad = np.flatnonzero(~((groups >= 0) & (groups == np.floor(groups)))) if groups.shape == prompt.shape \
                else None
            if bad is None or groups.dtype.kind not in "iuf":
                raise InputError(f"prefix_group: found {groups.shape} of {groups.dtype}, allowed: one integer >= 0 "
                                 f"per request")
            if bad.size:
                raise InputError(f"prefix_group: found {found_value(groups[bad[0]].item())} at index {bad[0]}, "
                                 f"allowed: integers >= 0")
            object.__setattr__(self, "prefix_group", _frozen(groups.astype(np.int64)))
        if self.prefix_group is None and (self.shared_tokens is not None or self.after_previous_s is not None):
            raise InputError("RequestSet: found shared_tokens or after_previous_s without prefix_group, allowed: "
                             "them beside prefix_group")
        if self.shared_tokens is not None:
            shared = np.asarray(self.shared_tokens)
            if shared.shape != prompt.shape or np.any(shared < 0) or np.any(shared >= prompt):
                raise InputError("RequestSet: found shared_tokens out of range, allowed: one per request, 0 <= "
                                 "shared_tokens < prompt_tokens")
            object.__setattr__(self, "shared_tokens", _frozen(shared.astype(np.int64)))
        if self.after_previous_s is not None:
            gaps = np.asarray(self.after_previous_s, dtype=np.float64)
            if gaps.shape != prompt.shape or np.any(gaps[~np.isnan(gaps)] < 0):
                raise InputError("RequestSet: found after_previous_s out of range, allowed: one per request, seconds "
                                 ">= 0 or NaN")
            object.__setattr__(self, "after_previous_s", _frozen(gaps))
        if self.prefix_root is not None:
            roots = np.asarray(self.prefix_root)
            if self.prefix_group is None or roots.shape != prompt.shape or roots.dtype.kind not in "iu" or \
                    np.any(roots < 0):
                raise InputError("RequestSet: found prefix_root out of range, allowed: beside prefix_group, one "
                                 "integer >= 0 per request")
            object.__setattr__(self, "prefix_root", _frozen(roots.astype(np.int64)))
        if self.prefix_nodes is not None:
            self._check_prefix_nodes()
        if self.priority is not None:
            ranks = np.asarray(self.priority)
            if ranks.shape != prompt.shape or ranks.dtype.kind not in "iu":
                raise InputError(f"priority: found {ranks.shape} of {ranks.dtype}, allowed: one integer per request")
            object.__setattr__(self, "priority", _frozen(ranks.astype(np.int64)))

    def _check_prefix_nodes(self) -> None:
        """A prefix tree: one node per `tree_block_tokens` of each prompt (the last node the rest), beside no groups."""
        if self.prefix_group is not None:
            raise InputError("RequestSet: found prefix_nodes beside prefix_group, allowed: one of them (a prefix tree "
                             "names every request's shared prefix itself)")
        block = _integer("tree_block_tokens", self.tree_block_tokens, at_least=1)
        nodes = tuple(tuple(path) for path in self.prefix_nodes)
        if len(nodes) != len(self):
            raise InputError(f"prefix_nodes: found {len(nodes)} paths for {len(self)} requests, allowed: one each")
        for index, (path, prompt) in enumerate(zip(nodes, self.prompt_tokens.tolist(), strict=True)):
            if len(path) != -(-prompt // block):
                raise InputError(f"prefix_nodes: found {len(path)} nodes for request {index}'s {prompt}-token prompt, "
                                 f"allowed: {-(-prompt // block)} (one per {block} tokens)")
        object.__setattr__(self, "prefix_nodes", nodes)

    def prefix_path(self, index: int) -> tuple[tuple[int, int], ...]:
        """Request `index`'s prefix-tree nodes, each with the token its stretch of the prompt ends at (what
        sim/kv_cache.py assign_path takes); empty where there is no tree."""
        if self.prefix_nodes is None:
            return ()
        prompt, block = int(self.prompt_tokens[index]), self.tree_block_tokens
        return tuple((node, min((k + 1) * block, prompt)) for k, node in enumerate(self.prefix_nodes[index]))

    def __len__(self) -> int:
        return int(self.prompt_tokens.size)

    def head(self, count: int) -> RequestSet:
        """The first `count` requests (all of them when there are fewer)."""
        count = _integer("count", count, at_least=1)
        def cut(column: np.ndarray | None) -> np.ndarray | None:
            return None if column is None else column[:count]

        return replace(self, arrival_s=self.arrival_s[:count], prompt_tokens=self.prompt_tokens[:count],
                       output_tokens=self.output_tokens[:count], prefix_group=cut(self.prefix_group),
                       shared_tokens=cut(self.shared_tokens), after_previous_s=cut(self.after_previous_s),
                       prefix_root=cut(self.prefix_root), priority=cut(self.priority), adapter=cut(self.adapter),
                       prefix_nodes=None if self.prefix_nodes is None else self.prefix_nodes[:count])

    @property
    def rate_per_s(self) -> float:
        """Mean arrival rate (n - 1) / (last - first arrival) of the n requests, the arrivals those at their
        arrival_s (a later turn arrives after its previous one, whatever its arrival_s says, so conversations'
        turns arrive at about this rate); inf when all arrive together (or just one)."""
        timed = self.arrival_s if self.after_previous_s is None else self.arrival_s[np.isnan(self.after_previous_s)]
        span = float(timed[-1] - timed[0]) if timed.size else 0.0
        return (len(self) - 1) / span if span > 0 else math.inf

    def scaled_to_rate(self, rate_per_s: float) -> RequestSet:
        """Same requests in the same order, the first arriving at 0 and every gap scaled by one factor so
        that the mean rate is `rate_per_s` (a single request just moves to 0)."""
        rate = _number("rate_per_s", rate_per_s, above=0)
        if len(self) > 1 and math.isinf(self.rate_per_s):
            raise InputError(f"rate_per_s: {self.source or 'this request set'} has no inter-arrival times "
                             f"(all requests arrive together), allowed: a request set with arrivals "
                             f"(give it some with with_arrivals)")
        factor = self.rate_per_s / rate if len(self) > 1 else 0.0
        return replace(self, arrival_s=(self.arrival_s - self.arrival_s[0]) * factor,
                       source=f"{self.source}, scaled to {rate:g} req/s")

    def clipped_to_context(self, max_tokens: int) -> tuple[RequestSet, int]:
        """Requests that fit a model's context of `max_tokens` (prompt plus output), and how many were cut:
        an output keeps at most half the context, the prompt is cut to what is left (as Vidur clips traces)."""
        output = np.minimum(self.output_tokens, max(1, max_tokens // 2))
        prompt = np.minimum(self.prompt_tokens, max_tokens - output)
        clipped = int(np.count_nonzero((prompt < self.prompt_tokens) | (output < self.output_tokens)))
        if not clipped:
            return self, 0
        shared = None if self.shared_tokens is None else np.minimum(self.shared_tokens, prompt - 1)
        nodes = None if self.prefix_nodes is None else tuple(  # a cut prompt keeps the nodes it still reaches
            path[:-(-cut // self.tree_block_tokens)] for path, cut in zip(self.prefix_nodes, prompt.tolist(),
                                                                         strict=True))
        return replace(self, prompt_tokens=prompt, output_tokens=output, shared_tokens=shared, prefix_nodes=nodes,
                       source=f"{self.source}, {clipped} clipped to {max_tokens} tokens"), clipped

    def with_arrivals(self, arrivals: ArrivalProcess, *, seed: int) -> RequestSet:
        """Same requests in the same order, arriving at times drawn from `arrivals` (the same draws as
        `sample_requests` with this seed gives)."""
        rng = _streams(seed)[0]
        return replace(self, arrival_s=arrivals.times(rng, len(self)), source=f"{self.source}, {arrivals} arrivals",
                       has_arrivals=True)

    def with_urgent(self, fraction: float, *, seed: int) -> RequestSet:
        """Same requests, each urgent (priority 0, the rest 1) with probability `fraction`, drawn from a stream of
        `seed` apart from arrivals' and lengths'; a conversation's turns (after_previous_s) take their first turn's
        draw, as a user's session keeps its tier."""
        if not (isinstance(fraction, int | float) and not isinstance(fraction, bool) and 0 <= fraction <= 1):
            raise InputError(f"priority_fraction: found {found_value(fraction)}, allowed: a fraction in [0, 1]")
        draws = np.random.default_rng([_integer("seed", seed, at_least=0), URGENT_STREAM]).random(len(self))
        if self.after_previous_s is not None:
            _, first, inverse = np.unique(self.prefix_group, return_index=True, return_inverse=True)
            draws = draws[first][inverse]
        return replace(self, priority=np.where(draws < fraction, 0, 1).astype(np.int64),
                       source=f"{self.source}, {fraction:g} urgent")

    def with_adapters(self, adapters: int, alpha: float, *, seed: int) -> RequestSet:
        """Same requests, each running one of `adapters` LoRA adapters drawn as S-LoRA's synthetic workload draws them
        (S-LoRA/S-LoRA benchmarks/trace.py at 2a2786b9, generate_requests: "probs = np.random.power(alpha, tot_req); ind
        = (probs * num_adapters).astype(int)"): alpha 1 is uniform, a smaller alpha crowds the requests onto the first
        adapters. From a stream of `seed` apart from every other draw."""
        count = _integer("lora_adapters", adapters, at_least=1)
        power = _number("lora_alpha", alpha, above=0)
        draws = np.random.default_rng([_integer("seed", seed, at_least=0), ADAPTER_STREAM]).power(power, len(self))
        return replace(self, adapter=np.minimum((draws * count).astype(np.int64), count - 1),
                       source=f"{self.source}, {count} adapters (alpha {power:g})")


class LengthDistribution(Protocol):
    """Token counts of prompts or outputs."""

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` int64 token counts >= 1."""
        ...


class ArrivalProcess(Protocol):
    """When requests arrive."""

    def times(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` non-decreasing float64 arrival times in seconds."""
        ...


@dataclass(frozen=True, kw_only=True)
class Fixed:
    """Every request has `tokens` tokens."""

    tokens: int

    def __post_init__(self) -> None:
        _length("tokens", self.tokens)

    def __str__(self) -> str:
        return f"fixed {self.tokens}"

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return np.full(count, self.tokens, dtype=np.int64)


@dataclass(frozen=True, kw_only=True)
class Uniform:
    """Integers from `low` to `high`, both included, equally likely."""

    low: int
    high: int

    def __post_init__(self) -> None:
        _length("low", self.low)
        _length("high", self.high, at_least=self.low, what=f"low ({self.low})")

    def __str__(self) -> str:
        return f"uniform {self.low}-{self.high}"

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.integers(self.low, self.high, size=count, endpoint=True, dtype=np.int64)


@dataclass(frozen=True, kw_only=True)
class LogNormal:
    """exp(N(ln median, sigma)) rounded to the nearest integer and clipped to [low, high]."""

    median: float
    sigma: float
    low: int = 1
    high: int | None = None

    def __post_init__(self) -> None:
        _number("median", self.median, above=0)
        _number("sigma", self.sigma, at_least=0)
        _length("low", self.low)
        if self.high is not None:
            _length("high", self.high, at_least=self.low, what=f"low ({self.low})")

    def __str__(self) -> str:
        return f"lognormal median {self.median:g} sigma {self.sigma:g} in [{self.low}, {self.high or 'inf'}]"

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        values = np.rint(self.median * np.exp(self.sigma * rng.standard_normal(count)))
        return np.clip(values, self.low, self.high or MAX_TOKENS).astype(np.int64)


@dataclass(frozen=True, kw_only=True, eq=False)
class Empirical:
    """Observed token counts (e.g. a trace's column) resampled with replacement."""

    values: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _token_column("values", self.values))

    def __str__(self) -> str:
        return f"empirical ({self.values.size} values, mean {self.values.mean():.1f})"

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.choice(self.values, size=count, replace=True)


@dataclass(frozen=True, kw_only=True)
class Poisson:
    """Exponential gaps with mean 1/rate_per_s; the first request arrives after one gap."""

    rate_per_s: float

    def __post_init__(self) -> None:
        _number("rate_per_s", self.rate_per_s, above=0)

    def __str__(self) -> str:
        return f"poisson {self.rate_per_s:g} req/s"

    def times(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return np.cumsum(rng.exponential(1.0 / self.rate_per_s, size=count))


@dataclass(frozen=True, kw_only=True)
class Gamma:
    """Gamma-distributed gaps with mean 1/rate_per_s and coefficient of variation `cv` (shape 1/cv**2):
    cv = 1 is Poisson, cv > 1 is bursty. The first request arrives after one gap."""

    rate_per_s: float
    cv: float

    def __post_init__(self) -> None:
        _number("rate_per_s", self.rate_per_s, above=0)
        _number("cv", self.cv, above=0)

    def __str__(self) -> str:
        return f"gamma {self.rate_per_s:g} req/s cv {self.cv:g}"

    def times(self, rng: np.random.Generator, count: int) -> np.ndarray:
        shape = 1.0 / self.cv**2
        return np.cumsum(rng.gamma(shape, 1.0 / (shape * self.rate_per_s), size=count))


def phases_label(phases: Sequence[tuple[float, float]]) -> str:
    """A rate profile's (duration_s, multiplier) phases in words: 'x1 for 600 s then x3 for 300 s, repeating'."""
    return " then ".join(f"x{multiplier:g} for {duration_s:g} s" for duration_s, multiplier in phases) + ", repeating"


@dataclass(frozen=True, kw_only=True)
class Phased:
    """Another process's arrivals at a rate that rises and falls in phases, repeating: each (duration_s, multiplier)
    phase runs the process at `multiplier` times its rate (0: none arrive), as a day's load does. The process's own
    times are stretched through the phases' cumulative rate (the time-rescaling theorem: exact for a Poisson process,
    which becomes the non-homogeneous one of that rate; a gamma process keeps its burstiness within each phase)."""

    base: Poisson | Gamma
    phases: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError("phases: found none, allowed: (duration_s, multiplier) pairs")
        for duration_s, multiplier in self.phases:
            _number("a phase's duration_s", duration_s, above=0)
            _number("a phase's multiplier", multiplier, at_least=0)
        if not any(multiplier > 0 for _, multiplier in self.phases):
            raise ValueError(f"phases: found {list(self.phases)}, allowed: some phase with a multiplier > 0")

    def __str__(self) -> str:
        return f"{self.base}, {phases_label(self.phases)}"

    def times(self, rng: np.random.Generator, count: int) -> np.ndarray:
        durations = np.array([duration_s for duration_s, _ in self.phases], dtype=float)
        multipliers = np.array([multiplier for _, multiplier in self.phases], dtype=float)
        starts = np.concatenate([[0.0], np.cumsum(durations)])  # each phase's start within a cycle, in seconds
        load = np.concatenate([[0.0], np.cumsum(durations * multipliers)])  # and in the base process's time
        cycles, within = np.divmod(self.base.times(rng, count), load[-1])
        # The phase each arrival falls in: the last starting at or before it (phases without arrivals take none).
        phase = np.searchsorted(load, within, side="right") - 1
        return cycles * starts[-1] + starts[phase] + (within - load[phase]) / multipliers[phase]


@dataclass(frozen=True, kw_only=True)
class Together:
    """Every request arrives at t = 0 (a static batch)."""

    def __str__(self) -> str:
        return "all at t=0"

    def times(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return np.zeros(count)


# Registries for configuration files' `kind:` keys.
ARRIVAL_KINDS: dict[str, type] = {"poisson": Poisson, "gamma": Gamma, "together": Together}
LENGTH_KINDS: dict[str, type] = {"fixed": Fixed, "uniform": Uniform, "lognormal": LogNormal,
                                 "empirical": Empirical}


def _streams(seed: int) -> list[np.random.Generator]:
    """Independent generators for arrivals, prompts and outputs: changing one part leaves the others' draws."""
    seed = _integer("seed", seed, at_least=0)
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]


def sample_requests(*, arrivals: ArrivalProcess, prompt: LengthDistribution, output: LengthDistribution,
                    count: int, seed: int) -> RequestSet:
    """`count` synthetic requests; the same arguments give the same requests, and each of arrivals, prompt
    and output draws from its own stream (a new rate does not change the lengths)."""
    count = _integer("count", count, at_least=1)
    arrival_rng, prompt_rng, output_rng = _streams(seed)
    return RequestSet(arrival_s=arrivals.times(arrival_rng, count), prompt_tokens=prompt.sample(prompt_rng, count),
                      output_tokens=output.sample(output_rng, count),
                      source=f"{arrivals}, prompts {prompt}, outputs {output}, seed {seed}")


def think_times(think_s: float, cv: float, seed: int, count: int) -> np.ndarray:
    """`count` think times of mean `think_s`: each think_s where `cv` is 0, else gamma-distributed with coefficient of
    variation `cv` (1: exponential, a closed-loop benchmark's user), from a stream of `seed` apart from the arrivals',
    prompts' and outputs' (the same seed draws the same conversations with or without it)."""
    think_s = _number("think_s", think_s, at_least=0)
    cv = _number("think_cv", cv, at_least=0)
    if not cv or not think_s:
        return np.full(count, think_s)
    shape = 1.0 / cv**2
    rng = np.random.default_rng(np.random.SeedSequence(_integer("seed", seed, at_least=0)).spawn(4)[3])
    return rng.gamma(shape, think_s / shape, size=count)


def sample_conversations(*, arrivals: ArrivalProcess, prompt: LengthDistribution, output: LengthDistribution,
                         count: int, turns: int, think_s: float, seed: int, system_tokens: int = 0,
                         think_cv: float = 0.0, system_groups: int = 1) -> RequestSet:
    """`count` requests as conversations of `turns` turns (the last one shorter where `turns` does not divide
    `count`), each conversation's turns consecutive. A conversation's first turn arrives by `arrivals`; each later turn
    `think_s` seconds after the previous one's answer is finished (on average, its think time drawn with coefficient of
    variation `think_cv`: think_times). Each turn adds a message of `prompt` tokens to the
    conversation so far (a system prompt of `system_tokens` every conversation starts with, every earlier message and
    answer) and answers with `output` tokens; it shares with its conversation the context the previous turn's KV cache
    holds (its prompt and all but its last output token, which is never fed back), a first turn the system prompt.
    With `system_groups` system prompts each conversation draws one, evenly (RequestSet.prefix_root), from a stream of
    the seed apart from the others. The draws are sample_requests's: the same arguments give the same conversations."""
    count = _integer("count", count, at_least=1)
    turns = _integer("turns", turns, at_least=1)
    think_s = _number("think_s", think_s, at_least=0)
    system_tokens = _integer("system_tokens", system_tokens, at_least=0)
    system_groups = _integer("system_groups", system_groups, at_least=1)
    arrival_rng, prompt_rng, output_rng = _streams(seed)
    messages, answers = prompt.sample(prompt_rng, count), output.sample(output_rng, count)
    conversation = np.arange(count) // turns
    opens = np.arange(count) % turns == 0
    starts = arrivals.times(arrival_rng, int(opens.sum()))
    prompts, shared = np.empty(count, dtype=np.int64), np.zeros(count, dtype=np.int64)
    context = 0
    for i in range(count):
        if opens[i]:
            shared[i] = system_tokens
            context = system_tokens
        else:
            shared[i] = context - 1  # the previous turn's cached tokens
        prompts[i] = context + messages[i]
        context = prompts[i] + answers[i]
    system = f" after a {system_tokens}-token system prompt" if system_tokens else ""
    roots = None
    if system_groups > 1:
        system = f" after one of {system_groups} {system_tokens}-token system prompts"
        root_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(5)[4])  # apart from think_times' (3)
        roots = root_rng.integers(system_groups, size=int(opens.sum()))[conversation]
    return RequestSet(arrival_s=starts[conversation], prompt_tokens=prompts, output_tokens=answers,
                      prefix_group=conversation, shared_tokens=shared, prefix_root=roots,
                      after_previous_s=np.where(opens, np.nan, think_times(think_s, think_cv, seed, count)),
                      source=f"{arrivals} conversations of {turns} turns{system}, {think_s:g} s apart"
                             f"{f' (cv {think_cv:g})' if think_cv else ''}, messages {prompt}, answers {output}, "
                             f"seed {seed}")


def resolve_trace(name_or_path: str) -> Path:
    """The file of a shipped trace (a SHIPPED_TRACES name) or a user's existing file."""
    if name_or_path in SHIPPED_TRACES:
        return TRACE_FOLDER / SHIPPED_TRACES[name_or_path]
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix in (".csv", ".gz", ".jsonl") or len(path.parts) > 1:
        raise InputError(f"{name_or_path}: no such file, allowed: an existing CSV or JSON-lines file or a shipped "
                         f"trace ({', '.join(SHIPPED_TRACES)})")
    hint = did_you_mean(name_or_path, SHIPPED_TRACES)
    raise InputError(f"trace: found {found_value(name_or_path)}{hint}, which is no file and no shipped trace, allowed: "
                     f"a path to a CSV file or one of {', '.join(SHIPPED_TRACES)}")


def _read_text(path: Path, kind: str) -> str:
    """A trace file's text, gunzipped if named .gz, or an InputError naming the file (`kind`: what it must be)."""
    try:
        data = path.read_bytes()
        return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (offset {err.start}), allowed: a UTF-8 {kind}") from None
    except (OSError, EOFError) as err:
        raise InputError(f"{path}: cannot read: {getattr(err, 'strerror', None) or err}") from None


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, non-blank data rows and their 1-based data row numbers of a CSV, gzipped if named .gz."""
    reader = csv.reader(io.StringIO(_read_text(path, "CSV file")))
    rows: list[list[str]] = []
    row_numbers: list[int] = []
    try:
        header = [name.strip() for name in next(reader, [])]
        for row in reader:
            if row:
                if len(row) != len(header):
                    raise InputError(f"{path}: row {reader.line_num - 1}: found {len(row)} fields, allowed: "
                                     f"{len(header)} as in the header")
                rows.append(row)
                row_numbers.append(reader.line_num - 1)
    except csv.Error as err:
        raise InputError(f"{path}: row {reader.line_num - 1}: not CSV ({err}), allowed: a CSV file") from None
    if not header or not rows:
        raise InputError(f"{path}: found {'no header' if not header else 'a header and no rows'}, allowed: a "
                         f"header row and one row per request")
    return header, rows, row_numbers


def _find_column(path: Path, header: list[str], accepted: tuple[str, ...], required: bool) -> int | None:
    """Index of the one column named by `accepted`; None if optional and absent."""
    found = [name for name in accepted if name in header]
    if len(found) > 1:
        raise InputError(f"{path}: found columns {' and '.join(found)}, allowed: only one of them")
    if not found and required:
        raise InputError(f"{path}: found columns {', '.join(header)}, allowed: columns including "
                         f"{' or '.join(accepted)}")
    return header.index(found[0]) if found else None


def _column(path: Path, rows: list[list[str]], row_numbers: list[int], name: str, index: int,
            kind: str) -> np.ndarray:
    """One column as float64 whose cells hold what `kind` (_CELLS) allows, or an InputError naming the first bad row
    and its value; arrival times must not decrease."""
    cells = [row[index] for row in rows]
    empty = [not cell.strip() for cell in cells]
    if kind == "gap":
        cells = ["nan" if blank else cell for cell, blank in zip(cells, empty, strict=True)]
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:
        values = np.array([_as_float(cell) for cell in cells])
    test, allowed = _CELLS[kind]
    bad = np.flatnonzero(~test(values))
    if kind == "gap":  # NaN stands for an empty cell only: text that is no number is refused
        text = [i for i, blank in enumerate(empty) if not blank and math.isnan(values[i])]
        bad = np.union1d(bad, np.array(text, dtype=np.int64))
    if bad.size:
        raise InputError(f"{path}: row {row_numbers[bad[0]]}, column {name}: found {found_value(cells[bad[0]][:40])}, "
                         f"allowed: {allowed}")
    late = np.flatnonzero(np.diff(values) < 0) + 1
    if kind == "time" and late.size:
        row = late[0]
        raise InputError(f"{path}: row {row_numbers[row]}, column {name}: found {found_value(cells[row][:40])} after "
                         f"{cells[row - 1][:40]!r} in row {row_numbers[row - 1]}, allowed: non-decreasing "
                         f"arrival times (sort the file by arrival)")
    return values


def _check_shared_within_previous(path: Path, row_numbers: list[int], group: np.ndarray, prompt: np.ndarray,
                                  output: np.ndarray, shared: np.ndarray) -> None:
    """A request shares with its group at most what the group's previous request cached: its prompt and all but its
    last output token (an InputError naming the first row that shares more)."""
    previous: dict[float, int] = {}
    for row, label in enumerate(group.tolist()):
        if label in previous:
            before = previous[label]
            cached = int(prompt[before] + output[before] - 1)
            if shared[row] > cached:
                raise InputError(f"{path}: row {row_numbers[row]}, column shared_tokens: found {int(shared[row])}, "
                                 f"allowed: at most the {cached} tokens the previous request of its group (row "
                                 f"{row_numbers[before]}) cached")
        previous[label] = row


def _as_float(cell: str) -> float:
    """float(cell), or NaN for text that is no number (the caller refuses it with its row)."""
    try:
        return float(cell)
    except ValueError:
        return math.nan


def read_request_trace(path: str | Path) -> RequestSet:
    """Requests from a CSV (gzipped if the name ends in .gz) with a prompt and an output token column
    (prompt_tokens or num_prefill_tokens, output_tokens or num_decode_tokens) and optionally arrival times in
    seconds (arrival_s or arrived_at, non-decreasing) and each request's prefix group (prefix_group, a whole number
    >= 0: requests of one group start with the same prefix), with, beside it, the tokens of its prompt it shares with
    its group's earlier requests (shared_tokens) and the seconds after the previous request of its group finishes
    that it arrives (after_previous_s; empty for a group's first, which arrives at its arrival time), and each
    request's priority (priority, a whole number: lower is served first where the queue policy is 'priority'); other
    columns are ignored. Without arrivals every request arrives at 0 and `has_arrivals` is False. A file named .jsonl
    (or .jsonl.gz) is a Mooncake trace (read_mooncake_trace)."""
    path = Path(path)
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        return read_mooncake_trace(path)
    if path.name.endswith((".json", ".json.gz")):
        raise InputError(f"{path}: found a .json file, allowed: a CSV trace, or a Mooncake trace of one JSON object a "
                         f"line named .jsonl")
    header, rows, row_numbers = _read_rows(path)
    columns = ((ARRIVAL_COLUMNS, "time"), (PROMPT_COLUMNS, "length"), (OUTPUT_COLUMNS, "length"),
               (GROUP_COLUMNS, "count"), (SHARED_COLUMNS, "count"), (AFTER_PREVIOUS_COLUMNS, "gap"),
               (PRIORITY_COLUMNS, "rank"))
    indices = [_find_column(path, header, accepted, required=accepted in (PROMPT_COLUMNS, OUTPUT_COLUMNS))
               for accepted, _ in columns]
    arrival, prompt, output, group, shared, after, priority = (
        None if index is None else _column(path, rows, row_numbers, header[index], index, kind)
        for index, (_, kind) in zip(indices, columns, strict=True))
    if group is None and (shared is not None or after is not None):
        raise InputError(f"{path}: found shared_tokens or after_previous_s without prefix_group, allowed: a "
                         f"prefix_group column beside them (whose earlier requests they refer to)")
    if after is not None:
        _, firsts = np.unique(group, return_index=True)
        if (given := firsts[~np.isnan(after[firsts])]).size:
            row = int(given.min())
            raise InputError(f"{path}: row {row_numbers[row]}, column after_previous_s: found {after[row]:g} for the "
                             f"first request of prefix_group {int(group[row])}, allowed: empty (a group's first "
                             f"request arrives at its arrival time)")
    if shared is not None and np.any(bad := shared >= prompt):
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path}: row {row_numbers[row]}, column shared_tokens: found {int(shared[row])}, allowed: "
                         f"fewer than its prompt's {int(prompt[row])} tokens")
    if shared is not None:
        _check_shared_within_previous(path, row_numbers, group, prompt, output, shared)
    return RequestSet(arrival_s=np.zeros(len(rows)) if arrival is None else arrival, prompt_tokens=prompt,
                      output_tokens=output, source=f"trace {path.name}", has_arrivals=arrival is not None,
                      prefix_group=group, shared_tokens=shared, after_previous_s=after,
                      priority=None if priority is None else priority.astype(np.int64))


def _mooncake_field(path: Path, line: int, record: dict, key: str, at_least: int) -> int:
    """A Mooncake record's whole-number field, or an InputError naming the file, line and key."""
    value = record.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not at_least <= value <= MAX_TOKENS:
        raise InputError(f"{path}: line {line}, key {key}: {found_key(record, key, json=True)}, allowed: a whole "
                         f"number >= {at_least}")
    return value


def read_mooncake_trace(path: str | Path) -> RequestSet:
    """Requests from a Mooncake trace (JSON lines, gzipped if named .gz; kvcache-ai/Mooncake FAST25-release/traces):
    each line an object with `timestamp` (milliseconds since the first request, non-decreasing; left out on every
    line: no arrivals), `input_length` and `output_length` (tokens) and `hash_ids`, one id per MOONCAKE_BLOCK_TOKENS
    of the prompt (the last id its remainder), ids alike where prompts agree up to that block's end. The ids become a
    prefix tree (RequestSet.prefix_nodes: a node per distinct prefix). A multi-turn session's rows
    (MOONCAKE_SESSION_KEYS) are refused; other keys are ignored."""
    path = Path(path)
    text = _read_text(path, "JSON-lines file")
    block = MOONCAKE_BLOCK_TOKENS
    arrivals, prompts, outputs, paths = [], [], [], []
    nodes: dict[tuple[int, int], int] = {}  # (the node before, hash id) -> node id
    timed: bool | None = None
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: line {line}: not JSON ({err.msg}), allowed: one JSON object per line") from None
        if not isinstance(record, dict):
            raise InputError(f"{path}: line {line}: found {type(record).__name__}, allowed: a JSON object with "
                             f"input_length, output_length and hash_ids")
        prompt = _mooncake_field(path, line, record, "input_length", 1)
        output = _mooncake_field(path, line, record, "output_length", 1)
        for key in MOONCAKE_SESSION_KEYS:
            if key in record:
                raise InputError(f"{path}: line {line}, key {key}: found {found_json(record[key])}, allowed: none "
                                 f"(a session's row, as AIPerf's multi-turn traces write, gives its turn's new input "
                                 f"only; give each request's whole prompt in input_length and hash_ids, at its "
                                 f"timestamp)")
        ids = record.get("hash_ids")
        wanted = -(-prompt // block)
        if not isinstance(ids, list) or len(ids) != wanted:
            found = f"found {len(ids)} ids" if isinstance(ids, list) else found_key(record, "hash_ids", json=True)
            raise InputError(f"{path}: line {line}, key hash_ids: {found}, allowed: {wanted} integers, one per "
                             f"{block} tokens of its input_length {prompt}")
        odd = [i for i in ids if not isinstance(i, int) or isinstance(i, bool)]
        if odd:
            raise InputError(f"{path}: line {line}, key hash_ids: found {found_json(odd[0])}, allowed: integers "
                             f"(hash ids)")
        stamp = record.get("timestamp")
        if timed is None:
            timed = stamp is not None
        if timed != (stamp is not None):
            raise InputError(f"{path}: line {line}, key timestamp: {found_key(record, 'timestamp', json=True)}, "
                             f"allowed: a timestamp on every line or on none")
        if timed:
            if not isinstance(stamp, int | float) or isinstance(stamp, bool) or not math.isfinite(stamp) or stamp < 0:
                raise InputError(f"{path}: line {line}, key timestamp: found {found_json(stamp)}, allowed: "
                                 f"milliseconds >= 0")
            if arrivals and stamp / 1000 < arrivals[-1]:
                raise InputError(f"{path}: line {line}, key timestamp: found {found_json(stamp)} after "
                                 f"{arrivals[-1] * 1000:g}, allowed: non-decreasing timestamps (sort the file by "
                                 f"timestamp)")
            arrivals.append(stamp / 1000)
        node_path, before = [], -1
        for hash_id in ids:
            before = nodes.setdefault((before, hash_id), len(nodes))
            node_path.append(before)
        prompts.append(prompt)
        outputs.append(output)
        paths.append(tuple(node_path))
    if not prompts:
        raise InputError(f"{path}: found no requests, allowed: one JSON object per line")
    return RequestSet(arrival_s=np.array(arrivals) if timed else np.zeros(len(prompts)),
                      prompt_tokens=np.array(prompts), output_tokens=np.array(outputs), source=f"trace {path.name}",
                      has_arrivals=bool(timed), prefix_nodes=tuple(paths), tree_block_tokens=block)
