"""Routers: how a pool picks the replica each request joins (an arrival, or a request a prefill pool hands over),
found by name through ROUTERS. A pool makes one router per run, so a router may keep state (round robin's turn)."""

from __future__ import annotations

from collections.abc import Sequence as Sequence_
from typing import ClassVar

from sim.replica import Replica


class Router:
    """Picks one of a pool's replicas for the next request. Subclasses set `name` and implement `choose`."""

    name: ClassVar[str] = ""

    def choose(self, replicas: Sequence_[Replica]) -> Replica:
        raise NotImplementedError


class LeastRequests(Router):
    """The replica holding the fewest requests, waiting, running or swapped out (ties: the first)."""

    name = "least_requests"

    def choose(self, replicas: Sequence_[Replica]) -> Replica:
        return min(replicas, key=lambda replica: replica.outstanding)


class LeastTokens(Router):
    """The replica with the fewest pending tokens (ties: the first): join the shortest queue counted in tokens, as
    Splitwise's cluster-level scheduler routes (Patel et al., ISCA 2024, §4.1). A request's pending tokens are its
    prompt tokens still to prefill plus one for the token it has yet to produce, as the paper's simulator counts them
    (splitwise-sim scheduler.py, TokenJSQScheduler: prompt_size + 1 when routed, less prompt_size when its prompt
    completes); output lengths are unknown to a router, so a decoding request counts one."""

    name = "least_tokens"

    def choose(self, replicas: Sequence_[Replica]) -> Replica:
        return min(replicas, key=lambda replica: replica.pending_tokens)


class RoundRobin(Router):
    """Each replica in turn, whatever it holds."""

    name = "round_robin"

    def __init__(self) -> None:
        self.turn = 0

    def choose(self, replicas: Sequence_[Replica]) -> Replica:
        replica = replicas[self.turn % len(replicas)]
        self.turn += 1
        return replica


ROUTERS: dict[str, type[Router]] = {cls.name: cls for cls in (LeastRequests, LeastTokens, RoundRobin)}
DEFAULT_ROUTER = LeastRequests.name


def make_router(name: str) -> Router:
    """A new router of the kind registered under `name`."""
    if name not in ROUTERS:
        raise ValueError(f"router: found {name!r}, allowed: {', '.join(ROUTERS)}")
    return ROUTERS[name]()
