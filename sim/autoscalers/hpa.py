"""Kubernetes' Horizontal Pod Autoscaler (HPA) scaling a model server's pods on a server metric: GKE's recommended
queue size or batch size, vLLM's num_requests_waiting and num_requests_running (GKE's "Best practices for
autoscaling LLM inference workloads with GPUs").

Every sync period it sums the metric over the replicas that serve, counting those still starting (which report no
metric yet) as 0 where it would scale up and as at the target where it would scale down (the HPA's rule for pods
missing metrics), and wants ceil(sum / target) replicas within [replicas, max_replicas], or as many as now where the
mean per replica is within TOLERANCE of the target or the starting ones' reading reverses the direction. It scales up
at once, by at most max(SCALE_UP_PODS, as many as it has) a period (the default scale-up policies), and down to the
most it wanted over the last SCALE_DOWN_WINDOW_S (the default stabilization window). Its constants are Kubernetes'
defaults (the HPA's documentation and kube-controller-manager's flags).

A pool whose least replicas are 0 scales to and from zero as KEDA does beside the HPA (its ScaledObject's defaults,
with the HTTP add-on's interceptor holding requests at the gateway while no replica serves): every
KEDA_POLLING_S it starts one replica where it holds none and a request waits at the gateway, and gives every replica
back once none of its polls has found a request in the pool (waiting at the gateway or held by a replica) for
KEDA_COOLDOWN_S, as KEDA checks its trigger at its polls only (a request that comes and goes between two goes
unseen); between one replica and max_replicas the HPA scales as
above (KEDA sets its least to 1).
"""

from __future__ import annotations

import math
from collections import deque

from sim.autoscalers.base import Autoscaler, Autoscaling, Policy, Traffic

SYNC_PERIOD_S = 15.0  # --horizontal-pod-autoscaler-sync-period
TOLERANCE = 0.1  # --horizontal-pod-autoscaler-tolerance
SCALE_DOWN_WINDOW_S = 300.0  # behavior.scaleDown.stabilizationWindowSeconds
SCALE_UP_PODS = 4  # behavior.scaleUp policies: 4 pods or 100% a period, whichever adds more
KEDA_POLLING_S = 30.0  # ScaledObject pollingInterval
KEDA_COOLDOWN_S = 300.0  # ScaledObject cooldownPeriod: since the trigger was last active, before scaling to zero


class HPA(Policy):
    """The HPA on a server metric per replica, `scaling.metric` near `scaling.target`."""

    name = "hpa"
    default_interval_s = SYNC_PERIOD_S
    on_metric = True
    scales_to_zero = True

    def __init__(self, scaling: Autoscaling, role: str, traffic: Traffic | None):
        super().__init__(scaling, role, traffic)
        # A pool of at most one replica (scaled from zero by KEDA alone) reads no target.
        if scaling.max_replicas > 1 and (scaling.target is None or not scaling.target > 0):
            raise ValueError(f"target: found {scaling.target}, allowed: a metric per replica > 0")
        self.recommended: deque[tuple[float, int]] = deque()  # (time, replicas desired), over the window
        # Where the pool may scale to zero, KEDA polls it on a clock of its own beside the HPA's syncs: the next of
        # each, and the last poll that found a request in the pool.
        self.next_sync_s, self.next_poll_s = self.interval_s, KEDA_POLLING_S
        self.active_s = 0.0

    def wait_s(self, scaler: Autoscaler) -> float:
        if scaler.minimum > 0:
            return self.interval_s
        return max(min(self.next_sync_s, self.next_poll_s) - scaler.env.now, 0.0)

    def wanted(self, scaler: Autoscaler) -> int:
        held = scaler.count("ready", "starting")
        if scaler.minimum == 0:
            now = scaler.env.now
            # A clock's time, reached up to rounding (each wait is its next time less now).
            synced, polled = (now >= due - 1e-9 for due in (self.next_sync_s, self.next_poll_s))
            while self.next_sync_s <= now + 1e-9:
                self.next_sync_s += self.interval_s
            while self.next_poll_s <= now + 1e-9:
                self.next_poll_s += KEDA_POLLING_S
            if polled and scaler.outstanding():  # KEDA checks its trigger at its polls only
                self.active_s = now
            if polled:
                if not held:
                    return 1 if scaler.at_gateway() else 0
                if not scaler.outstanding() and now - self.active_s >= KEDA_COOLDOWN_S - 1e-9:
                    self.recommended.clear()
                    return 0
            if not synced or not scaler.count("ready") or self.scaling.max_replicas == 1:
                return held  # KEDA's poll alone, no metric to read yet, or no replica past the one KEDA holds
        return self.limited(scaler, self.desired(scaler))

    def _metric(self, scaler: Autoscaler, r: int) -> int:
        """Replica `r`'s metric over its engines: its running requests, or its waiting ones, those handed over whose KV
        is still crossing included, as vLLM's num_requests_waiting (its scheduler's len(self.waiting)) counts them:
        its decode engine keeps such a request in its waiting queue as WAITING_FOR_REMOTE_KVS until the KV has arrived
        (vllm/v1/core/sched/scheduler.py schedule() and make_stats(), vllm-project/vllm at 00024d31)."""
        queues = ("waiting", "pulling") if self.scaling.metric == "waiting" else (self.scaling.metric,)
        return sum(len(getattr(engine.state, queue)) for engine in scaler.replicas[r] for queue in queues)

    def desired(self, scaler: Autoscaler) -> int:
        """The replicas the metric asks for now, before the scaling policies and the window."""
        ready = [r for r, state in enumerate(scaler.state) if state == "ready"]
        starting, target = scaler.count("starting"), self.scaling.target
        current = len(ready) + starting
        total = sum(self._metric(scaler, r) for r in ready)
        ratio = total / (len(ready) * target)  # over the replicas that report the metric
        # A starting replica reports none yet: read as 0 where the pool would scale up, as at the target where it would
        # scale down; no change where that brings the ratio within the tolerance or across 1.
        read = (total + (starting * target if ratio < 1.0 else 0.0)) / (current * target)
        if abs(read - 1.0) <= TOLERANCE or (ratio - 1.0) * (read - 1.0) < 0:
            return current
        # KEDA sets the HPA's least to 1 where the pool's is 0 (KEDA alone scales to zero).
        return min(max(math.ceil(read * current), scaler.minimum, 1), self.scaling.max_replicas)

    def limited(self, scaler: Autoscaler, desired: int) -> int:
        """The replicas to hold, `desired` now: up by at most the scale-up policies' step, down to the most desired
        over the stabilization window."""
        now = scaler.env.now
        self.recommended.append((now, desired))
        while self.recommended[0][0] < now - SCALE_DOWN_WINDOW_S:
            self.recommended.popleft()
        current = scaler.count("ready", "starting")
        if desired > current:
            return min(desired, current + max(SCALE_UP_PODS, current))
        return min(max(wanted for _, wanted in self.recommended), current)
