"""Autoscaler kinds, one module each, found by name through AUTOSCALERS; the replicas they hold: base.py."""

from __future__ import annotations

from collections.abc import Sequence as Sequence_

import simpy

from sim.autoscalers.base import METRICS, Autoscaler, Autoscaling, Policy, Traffic, held_timeline
from sim.autoscalers.hpa import HPA
from sim.autoscalers.load_planner import LoadPlanner, SLALoadPlanner
from sim.autoscalers.load_predictors import LOAD_PREDICTORS
from sim.autoscalers.sla_planner import SLAPlanner
from sim.replica import Replica

AUTOSCALERS: dict[str, type[Policy]] = {cls.name: cls for cls in (HPA, SLAPlanner, LoadPlanner, SLALoadPlanner)}


def on_metric(kind: str | None) -> bool:
    """Whether the autoscaler kind named `kind` (None: the HPA; an unknown name counts as one, for its own check to
    refuse) scales on a server metric's target."""
    return kind is None or kind not in AUTOSCALERS or AUTOSCALERS[kind].on_metric


def make_autoscaler(env: simpy.Environment, replicas: Sequence_[Sequence_[Replica]], minimum: int,
                    scaling: Autoscaling, routable: list[Replica], start_s: float, role: str = "serve",
                    traffic: Traffic | None = None) -> Autoscaler:
    """An Autoscaler of `replicas` (each its engines) of a pool of `role`, of the kind `scaling.policy` names, reading
    `traffic` where the kind reads the requests."""
    if scaling.policy not in AUTOSCALERS:
        raise ValueError(f"policy: found {scaling.policy!r}, allowed: {', '.join(AUTOSCALERS)}")
    policy = AUTOSCALERS[scaling.policy](scaling, role, traffic)
    return Autoscaler(env, replicas, minimum, scaling, routable, start_s, policy)


def forecasts(kind: str | None) -> bool:
    """Whether the autoscaler kind named `kind` (None: the HPA) forecasts the load (an unknown name counts as one
    that does not)."""
    return kind in AUTOSCALERS and AUTOSCALERS[kind].forecasts


__all__ = ["AUTOSCALERS", "LOAD_PREDICTORS", "METRICS", "Autoscaler", "Autoscaling", "Policy", "Traffic", "forecasts",
           "held_timeline", "make_autoscaler", "on_metric"]
