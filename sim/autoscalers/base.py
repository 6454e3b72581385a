"""Autoscaling: a serving pool whose replicas come and go with its load. The Autoscaler holds the pool's replicas
(starting, serving, draining, released); every interval its policy (an autoscaler kind: sim/autoscalers/) says how
many to hold, and it starts or gives back replicas to that many.

A new replica serves cold_start_s after it is asked for. A replica given back is a starting one first, else the ready
one started last (a ReplicaSet deletes not-ready pods, then the newest), which stops taking requests and is released
once its last one has left, as a server drains on SIGTERM (a termination grace period cutting it short is not
modeled), and a prefill replica once the decode side has read the KV of every request it handed over from its
memory (sim/kv_sends.py). vLLM's own drain does not wait for those reads (EngineCoreProc._handle_shutdown exits once
has_work() is false, and a request held for a send is not work: vllm/v1/engine/core.py, commit 00080ee1); the decode
side's reads from a replica released before them would fail (its kv_load_failure_policy), which is not modeled.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Sequence as Sequence_
from dataclasses import dataclass

import simpy

from sim.replica import Replica
from sim.schedulers import Sequence

# The server metric an HPA scales on: requests waiting (queue size) or running (batch size) on a replica's engines.
METRICS = ("waiting", "running")


@dataclass(frozen=True, kw_only=True)
class Autoscaling:
    """How a pool scales: up to `max_replicas`, as the autoscaler kind `policy` says (sim/autoscalers AUTOSCALERS),
    deciding every `interval_s` (None: the kind's own); a new replica serves `cold_start_s` after it is asked for
    (loading its weights, starting its engine). An HPA keeps `metric` near `target` per replica; Dynamo's planners
    hold the SLO's `ttft_s` and `tpot_s`."""

    max_replicas: int
    policy: str = "hpa"
    target: float | None = None
    metric: str = "waiting"
    cold_start_s: float = 0.0
    interval_s: float | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    predictor: str = "constant"  # how an SLA planner forecasts the next interval's load (load_predictors.py)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric: found {self.metric!r}, allowed: {', '.join(METRICS)}")
        if not self.cold_start_s >= 0 or self.max_replicas < 1 or not (self.interval_s is None or self.interval_s > 0):
            raise ValueError(f"found cold_start_s {self.cold_start_s}, max_replicas {self.max_replicas}, interval_s "
                             f"{self.interval_s}, allowed: a cold start >= 0, a replica or more, an interval > 0")


@dataclass(frozen=True)
class Traffic:
    """What an autoscaler may read of a run's requests, as a gateway's metrics tell it: every arrival's time (in
    order) and the requests finished so far, in the order they finished (a list the run appends to)."""

    arrival_s: Sequence_[float]
    finished: list[Sequence]


class Policy:
    """An autoscaler kind: every `interval_s` it says how many replicas the pool should hold (serving or starting)."""

    name: str = ""
    default_interval_s: float = 0.0
    on_metric: bool = False  # whether it scales on a server metric's target (Autoscaling.target, .metric)
    scales_to_zero: bool = False  # whether a pool of it may hold no replica (its least replicas 0)
    slo_limits: tuple[str, ...] = ()  # the SLO's limits it reads (Autoscaling.ttft_s, .tpot_s)
    forecasts: bool = False  # whether it forecasts the load (Autoscaling.predictor)

    def __init__(self, scaling: Autoscaling, role: str, traffic: Traffic | None):
        self.scaling, self.role, self.traffic = scaling, role, traffic
        self.interval_s = scaling.interval_s or self.default_interval_s

    def wanted(self, scaler: Autoscaler) -> int:
        raise NotImplementedError

    def wait_s(self, scaler: Autoscaler) -> float:
        """Seconds from now to its next decision: an interval, unless it decides on a clock of its own too."""
        return self.interval_s


class Autoscaler:
    """The replicas of one pool (each its engines) as the autoscaler holds them: serving ('ready'), starting, draining
    or released ('off'); `routable` holds the engines of the serving ones, which the pool's router picks among."""

    def __init__(self, env: simpy.Environment, replicas: Sequence_[Sequence_[Replica]], minimum: int,
                 scaling: Autoscaling, routable: list[Replica], start_s: float, policy: Policy):
        if not (0 if policy.scales_to_zero else 1) <= minimum <= scaling.max_replicas == len(replicas):
            raise ValueError(f"replicas: found {minimum} of {len(replicas)} made, allowed: "
                             f"{0 if policy.scales_to_zero else 1} to max_replicas ({scaling.max_replicas}), every one "
                             f"made")
        self.env, self.replicas, self.minimum, self.scaling, self.routable = env, replicas, minimum, scaling, routable
        self.policy = policy
        # Requests held at the gateway while the pool serves on no replica (a pool scaled to zero), and what the run
        # does once a replica serves again (dispatch them): the caller's.
        self.at_gateway: Callable[[], int] = lambda: 0
        self.on_ready: Callable[[], None] = lambda: None
        # What the run does with the engines of a replica that begins to drain (drops conversations' affinity to it).
        self.on_drain: Callable[[Sequence_[Replica]], None] = lambda engines: None
        self.state = ["ready"] * minimum + ["off"] * (len(replicas) - minimum)
        # Each replica's spans held, [from, until] (until: inf while held).
        self.held: list[list[list[float]]] = [[[start_s, math.inf]] if r < minimum else []
                                              for r in range(len(replicas))]
        self.draining_since: dict[int, float] = {}
        self.starts = [0] * len(replicas)  # how many times each replica was asked to start
        self.routable[:] = [engine for r in range(minimum) for engine in replicas[r]]

    def run(self):
        while True:
            yield self.env.timeout(self.policy.wait_s(self))
            self._release_drained()
            self.hold(self.policy.wanted(self))

    def count(self, *states: str) -> int:
        return sum(state in states for state in self.state)

    def outstanding(self) -> int:
        """Requests in the pool: held by its replicas (serving or draining) or waiting at the gateway for one."""
        return self.at_gateway() + sum(engine.outstanding for engines in self.replicas for engine in engines)

    def hold(self, wanted: int) -> None:
        """Start released replicas, or give back starting then serving ones (the newest first), until the pool holds
        `wanted` (serving or starting)."""
        now = self.env.now
        current = self.count("ready", "starting")
        if wanted > current:
            for r in [r for r, state in enumerate(self.state) if state == "off"][:wanted - current]:
                self.state[r] = "starting"
                self.held[r].append([now, math.inf])
                self.starts[r] += 1
                self.env.process(self._start(r, self.starts[r]))
            return
        for _ in range(current - wanted):
            starting = [r for r, state in enumerate(self.state) if state == "starting"]
            if starting:
                self.state[starting[-1]] = "off"
                self.held[starting[-1]][-1][1] = now
                continue
            # A ReplicaSet deletes the most recently started of its ready pods first (ties: the last made).
            ready = [r for r, state in enumerate(self.state) if state == "ready"]
            r = max(ready, key=lambda r: (self.held[r][-1][0], r))
            self.state[r] = "draining"
            self.draining_since[r] = now
            self.routable[:] = [engine for engine in self.routable if engine not in self.replicas[r]]
            self.on_drain(self.replicas[r])
        self._release_drained()

    def _start(self, r: int, start: int):
        yield self.env.timeout(self.scaling.cold_start_s)
        if self.state[r] == "starting" and self.starts[r] == start:  # not given back (and started again) meanwhile
            self.state[r] = "ready"
            self.routable.extend(self.replicas[r])
            self.on_ready()

    def _release_drained(self) -> None:
        """Release the draining replicas whose requests have all left and whose KV the decode side has all read (a
        prefill replica's sends read from its memory: sim/kv_sends.py), from when the last left or was read (or it
        began to drain, holding none)."""
        for r, state in enumerate(self.state):
            engines = self.replicas[r]
            if state == "draining" and not any(engine.outstanding or engine.sends.unread for engine in engines):
                self.state[r] = "off"
                left = max((engine.left_s[-1] for engine in engines if engine.left_s), default=0.0)
                read = max(engine.sends.last_read_s for engine in engines)
                self.held[r][-1][1] = max(left, read, self.draining_since.pop(r))

    def held_s(self, end_s: float) -> float:
        """Replica-seconds held (starting, serving or draining) up to `end_s`."""
        return sum(max(min(stop, end_s) - begin, 0.0) for spans in self.held for begin, stop in spans)

    def spans(self) -> list[tuple[float, float]]:
        """Every span a replica was held, (from, until; inf while held)."""
        return [(begin, stop) for spans in self.held for begin, stop in spans]


def held_timeline(spans: Sequence_[tuple[float, float]], end_s: float) -> tuple[tuple[float, int], ...]:
    """(time, replicas held from then) at each change of the replicas held over `spans` (from, until), up to
    `end_s`."""
    changes = sorted([(begin, 1) for begin, _ in spans] + [(stop, -1) for _, stop in spans if stop < end_s])
    steps: list[tuple[float, int]] = []
    held = 0
    for time_s, step in changes:
        held += step
        if steps and steps[-1][0] == time_s:
            steps[-1] = (time_s, held)
        else:
            steps.append((time_s, held))
    return tuple(steps)
