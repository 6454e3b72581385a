"""Routers: how a pool picks the replica each request joins (an arrival, or a request a prefill pool hands over),
found by name through ROUTERS. A pool makes one router per run, so a router may keep state (round robin's turn)."""

from __future__ import annotations

from collections.abc import Sequence as Sequence_
from dataclasses import dataclass
from typing import ClassVar

from sim.replica import Replica


@dataclass(frozen=True)
class Routed:
    """What a router may know of the request it routes: its prefix group, the tokens it may share with the group
    (None: the pool's prefix), its prompt's tokens, in a prefix tree its path's nodes (RequestSet.prefix_path;
    None: it has none), and the root its group's chain starts with (RequestSet.prefix_root)."""

    group: int = 0
    shareable_tokens: int | None = None
    prompt_tokens: int = 1
    tree_nodes: tuple[tuple[int, int], ...] | None = None
    root: int = 0


class Router:
    """Picks one of a pool's replicas for the next request. Subclasses set `name` and implement `choose`."""

    name: ClassVar[str] = ""

    def choose(self, replicas: Sequence_[Replica], request: Routed = Routed()) -> Replica:
        raise NotImplementedError


class LeastRequests(Router):
    """The replica holding the fewest requests, waiting, running or swapped out (ties: the first)."""

    name = "least_requests"

    def choose(self, replicas: Sequence_[Replica], request: Routed = Routed()) -> Replica:
        return min(replicas, key=lambda replica: replica.outstanding)


class LeastTokens(Router):
    """The replica with the fewest pending tokens (ties: the first): join the shortest queue counted in tokens, as
    Splitwise's cluster-level scheduler routes (Patel et al., ISCA 2024, §4.1). A request's pending tokens are its
    prompt tokens still to prefill plus one for the token it has yet to produce, as the paper's simulator counts them
    (splitwise-sim scheduler.py, TokenJSQScheduler: prompt_size + 1 when routed, less prompt_size when its prompt
    completes); output lengths are unknown to a router, so a decoding request counts one."""

    name = "least_tokens"

    def choose(self, replicas: Sequence_[Replica], request: Routed = Routed()) -> Replica:
        return min(replicas, key=lambda replica: replica.pending_tokens)


class LeastKVUsage(Router):
    """The replica whose KV cache has the smallest share of its blocks in use (ties: the fewest requests held), as the
    Gateway API Inference Extension's kv-cache-utilization-scorer scores a pod 1 - its KV usage and its
    max-score-picker takes the best (llm-d's endpoint picker). Blocks in use are those a sequence reads (vLLM's
    kv_cache_usage: an idle cached prefix counts as free); a replica of a smaller or slower device fills sooner, so it
    takes fewer requests in a fleet of mixed devices."""

    name = "least_kv_usage"

    def choose(self, replicas: Sequence_[Replica], request: Routed = Routed()) -> Replica:
        return min(replicas, key=lambda replica: (replica.state.kv.in_use_blocks / replica.state.kv.capacity_blocks,
                                                  replica.outstanding))


class RoundRobin(Router):
    """Each replica in turn, whatever it holds."""

    name = "round_robin"

    def __init__(self) -> None:
        self.turn = 0

    def choose(self, replicas: Sequence_[Replica], request: Routed = Routed()) -> Replica:
        replica = replicas[self.turn % len(replicas)]
        self.turn += 1
        return replica


class CacheAware(Router):
    """The replica whose prefix cache holds most of the request's prompt, unless the load is out of balance, as the
    cache-aware policy of SGLang's model gateway routes (lightseekorg/smg docs/getting-started/load-balancing.md,
    --policy cache_aware, at its defaults): where the most and the fewest requests a replica holds differ by more
    than BALANCE_ABS and the most exceed BALANCE_REL times the fewest, the replica holding the fewest; else, where
    the best replica's cached share of the prompt reaches CACHE_THRESHOLD, that replica (ties: the fewest requests);
    else the replica with the most free cache space. The gateway tracks each worker's cache with a radix tree of the
    prompts it routed there; here the router reads each replica's cache as it is."""

    name = "cache_aware"
    CACHE_THRESHOLD = 0.3  # --cache-threshold, default: the least matched share of the prompt that routes by cache
    BALANCE_ABS = 64  # --balance-abs-threshold, default: requests
    BALANCE_REL = 1.5  # --balance-rel-threshold, default

    def choose(self, replicas: Sequence_[Replica], request: Routed = Routed()) -> Replica:
        loads = [replica.outstanding for replica in replicas]
        most, fewest = max(loads), min(loads)
        if most - fewest > self.BALANCE_ABS and most > fewest * self.BALANCE_REL:
            return replicas[loads.index(fewest)]
        found = [replica.state.kv.chain_tokens(request.group, request.shareable_tokens, request.tree_nodes,
                                               request.root) for replica in replicas]
        best = max(range(len(replicas)), key=lambda i: (found[i], -loads[i]))
        if found[best] >= self.CACHE_THRESHOLD * request.prompt_tokens:
            return replicas[best]
        return max(replicas, key=lambda replica: replica.state.kv.free_blocks + replica.state.kv.evictable_blocks)


ROUTERS: dict[str, type[Router]] = {cls.name: cls for cls in (LeastRequests, LeastTokens, LeastKVUsage, RoundRobin,
                                                              CacheAware)}
DEFAULT_ROUTER = LeastRequests.name


def make_router(name: str) -> Router:
    """A new router of the kind registered under `name`."""
    if name not in ROUTERS:
        raise ValueError(f"router: found {name!r}, allowed: {', '.join(ROUTERS)}")
    return ROUTERS[name]()
