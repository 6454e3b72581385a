"""Serving schedulers, one module each, found by name through SCHEDULERS."""

from __future__ import annotations

from sim.schedulers.base import QUEUE_POLICIES, Batch, EngineState, Scheduler, SchedulerLimits, Sequence
from sim.schedulers.chunked import ChunkedPrefillScheduler
from sim.schedulers.continuous import ContinuousScheduler
from sim.schedulers.orca import OrcaScheduler
from sim.schedulers.static import StaticScheduler

SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.name: cls for cls in (StaticScheduler, ContinuousScheduler, OrcaScheduler, ChunkedPrefillScheduler)
}


def make_scheduler(name: str, limits: SchedulerLimits) -> Scheduler:
    """The scheduler registered under `name`."""
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler: found {name!r}, allowed: {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name](limits)


__all__ = ["QUEUE_POLICIES", "SCHEDULERS", "Batch", "EngineState", "Scheduler", "SchedulerLimits", "Sequence",
           "make_scheduler"]
