"""Autoscaling: a serving pool whose replicas come and go with its load, as Kubernetes' Horizontal Pod Autoscaler (HPA)
scales a model server's pods on a server metric: GKE's recommended queue size or batch size, vLLM's
num_requests_waiting and num_requests_running (GKE's "Best practices for autoscaling LLM inference workloads with
GPUs").

Every SYNC_PERIOD_S the autoscaler sums the metric over the replicas that serve, counting those still starting (which
report no metric yet) as 0 where it would scale up and as at the target where it would scale down (the HPA's rule for
pods missing metrics), and wants ceil(sum / target) replicas within [replicas, max_replicas], or as many as now where
the mean per replica is within TOLERANCE of the target or the starting ones' reading reverses the direction. It scales
up at once, by at most max(SCALE_UP_PODS, as many as it has) a period (the HPA's default scale-up policies); a new
replica serves after cold_start_s. It scales down to the most it wanted over the last SCALE_DOWN_WINDOW_S (the default
stabilization window): a starting replica first, else the ready one started last (a ReplicaSet deletes not-ready
pods, then the newest), which stops taking requests and is released once its last one has left, as a server drains
on SIGTERM (a termination grace period cutting it short is not modeled). Its constants are Kubernetes' defaults
(the HPA's documentation and kube-controller-manager's flags).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence as Sequence_
from dataclasses import dataclass

import simpy

from sim.replica import Replica

SYNC_PERIOD_S = 15.0  # --horizontal-pod-autoscaler-sync-period
TOLERANCE = 0.1  # --horizontal-pod-autoscaler-tolerance
SCALE_DOWN_WINDOW_S = 300.0  # behavior.scaleDown.stabilizationWindowSeconds
SCALE_UP_PODS = 4  # behavior.scaleUp policies: 4 pods or 100% a period, whichever adds more
# The server metric scaled on: requests waiting (queue size) or running (batch size) on a replica's engines.
METRICS = ("waiting", "running")


@dataclass(frozen=True, kw_only=True)
class Autoscaling:
    """How a pool scales: up to `max_replicas`, keeping `metric` near `target` per replica; a new replica serves
    `cold_start_s` after the autoscaler asks for it (loading its weights, starting its engine)."""

    max_replicas: int
    target: float
    metric: str = "waiting"
    cold_start_s: float = 0.0

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric: found {self.metric!r}, allowed: {', '.join(METRICS)}")
        if not self.target > 0 or not self.cold_start_s >= 0 or self.max_replicas < 1:
            raise ValueError(f"found target {self.target}, cold_start_s {self.cold_start_s}, max_replicas "
                             f"{self.max_replicas}, allowed: a target > 0, a cold start >= 0, a replica or more")


class Autoscaler:
    """The replicas of one pool (each its engines) as the autoscaler holds them: serving ('ready'), starting, draining
    or released ('off'); `routable` holds the engines of the serving ones, which the pool's router picks among."""

    def __init__(self, env: simpy.Environment, replicas: Sequence_[Sequence_[Replica]], minimum: int,
                 scaling: Autoscaling, routable: list[Replica], start_s: float):
        if not 1 <= minimum <= scaling.max_replicas == len(replicas):
            raise ValueError(f"replicas: found {minimum} of {len(replicas)} made, allowed: 1 to max_replicas "
                             f"({scaling.max_replicas}), every one made")
        self.env, self.replicas, self.minimum, self.scaling, self.routable = env, replicas, minimum, scaling, routable
        self.state = ["ready"] * minimum + ["off"] * (len(replicas) - minimum)
        # Each replica's spans held, [from, until] (until: inf while held).
        self.held: list[list[list[float]]] = [[[start_s, math.inf]] if r < minimum else []
                                              for r in range(len(replicas))]
        self.wanted: deque[tuple[float, int]] = deque()
        self.draining_since: dict[int, float] = {}
        self.starts = [0] * len(replicas)  # how many times each replica was asked to start
        self.routable[:] = [engine for r in range(minimum) for engine in replicas[r]]

    def run(self):
        while True:
            yield self.env.timeout(SYNC_PERIOD_S)
            self._release_drained()
            self._scale(self._desired())

    def _count(self, *states: str) -> int:
        return sum(state in states for state in self.state)

    def _metric(self, r: int) -> int:
        return sum(len(getattr(engine.state, self.scaling.metric)) for engine in self.replicas[r])

    def _desired(self) -> int:
        ready = [r for r, state in enumerate(self.state) if state == "ready"]
        starting, target = self._count("starting"), self.scaling.target
        current = len(ready) + starting
        total = sum(self._metric(r) for r in ready)
        ratio = total / (len(ready) * target)  # over the replicas that report the metric
        # A starting replica reports none yet: read as 0 where the pool would scale up, as at the target where it would
        # scale down; no change where that brings the ratio within the tolerance or across 1.
        read = (total + (starting * target if ratio < 1.0 else 0.0)) / (current * target)
        if abs(read - 1.0) <= TOLERANCE or (ratio - 1.0) * (read - 1.0) < 0:
            return current
        return min(max(math.ceil(read * current), self.minimum), self.scaling.max_replicas)

    def _scale(self, desired: int) -> None:
        now = self.env.now
        self.wanted.append((now, desired))
        while self.wanted[0][0] < now - SCALE_DOWN_WINDOW_S:
            self.wanted.popleft()
        current = self._count("ready", "starting")
        if desired > current:
            for r in [r for r, state in enumerate(self.state) if state == "off"][
                    :min(desired, current + max(SCALE_UP_PODS, current)) - current]:
                self.state[r] = "starting"
                self.held[r].append([now, math.inf])
                self.starts[r] += 1
                self.env.process(self._start(r, self.starts[r]))
            return
        stable = max(wanted for _, wanted in self.wanted)
        for _ in range(current - stable):
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
        self._release_drained()

    def _start(self, r: int, start: int):
        yield self.env.timeout(self.scaling.cold_start_s)
        if self.state[r] == "starting" and self.starts[r] == start:  # not given back (and started again) meanwhile
            self.state[r] = "ready"
            self.routable.extend(self.replicas[r])

    def _release_drained(self) -> None:
        """Release the draining replicas whose requests have all left, from when the last left (or it began to
        drain, holding none)."""
        for r, state in enumerate(self.state):
            engines = self.replicas[r]
            if state == "draining" and not any(engine.outstanding for engine in engines):
                self.state[r] = "off"
                left = max((engine.left_s[-1] for engine in engines if engine.left_s), default=0.0)
                self.held[r][-1][1] = max(left, self.draining_since.pop(r))

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
