"""Pools for the autoscaler tests: the tiny Llama's costs stretched to a chosen speed, one continuous-batching
replica to start from, a replica alone, requests finished as chosen."""

from __future__ import annotations

from dataclasses import replace

import simpy

from sim.autoscalers import Autoscaling
from sim.kv_cache import PagedKVCache
from sim.replica import Replica
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler
from sim.serving import Pool, serving_memory

BLOCK = 16
KV_PER_TOKEN_B = 2 * 2 * 16 * 2 * 2  # the tiny Llama's (tests/sim/conftest.py)


class Slower:
    """Another cost model's iterations, each `factor` times as long (its other attributes its own)."""

    def __init__(self, costs, factor: float):
        self._costs, self._factor = costs, factor

    def __getattr__(self, name):
        return getattr(self._costs, name)

    def price(self, shape):
        cost = self._costs.price(shape)
        return replace(cost, time_s=cost.time_s * self._factor)


def pool(costs, scaling: Autoscaling | None, *, replicas: int = 1, max_seqs: int = 1, role: str = "serve",
         idle_power_W: float = 100.0) -> Pool:
    """A pool of `role` (named after it) of `replicas` replicas with 4,000 KV blocks each."""
    memory = serving_memory(capacity_B=4000 * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    return Pool(name=role, role=role, replicas=replicas, costs=costs, scheduler="continuous",
                limits=SchedulerLimits(max_seqs=max_seqs), memory=memory, idle_power_W=idle_power_W,
                autoscaling=scaling)


def engine(env: simpy.Environment, costs, max_seqs: int, scheduler: str = "continuous",
           chunk_tokens: int = 512) -> Replica:
    """A replica of 4,000 KV blocks (continuous batching, or another scheduler; a chunked one of `chunk_tokens`'
    budget), holding nothing."""
    kv = PagedKVCache(capacity_blocks=4000, block_tokens=BLOCK)
    limits = SchedulerLimits(max_seqs=max_seqs, chunk_tokens=chunk_tokens)
    return Replica(env, costs, make_scheduler(scheduler, limits), EngineState(kv=kv),
                   window=None, swap_s_per_token=0.0, on_finish=lambda seq: None)


def finished(count: int, prompt: int, output: int, ttft_s: float, itl_s: float, at_s: float = 0.0) -> list[Sequence]:
    """`count` requests of `prompt` and `output` tokens arrived at `at_s`, each its first token `ttft_s` after and the
    others `itl_s` apart."""
    seqs = []
    for index in range(count):
        seq = Sequence(index=index, arrival_s=at_s, prompt=prompt, output=output)
        seq.generated = output
        seq.first_token_s = at_s + ttft_s
        seq.finish_s = seq.first_token_s + (output - 1) * itl_s
        seqs.append(seq)
    return seqs
