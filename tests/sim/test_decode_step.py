"""A decode step's batched bookkeeping (Scheduler._grow_decodes through PagedKVCache.grow_each, Replica._apply)
serves exactly as the plain per-sequence steps do: a reference of each, kept here only, serves the same requests
under KV pressure to the same records, iterations and token gaps, float for float."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from sim.kv_cache import PagedKVCache
from sim.replica import Replica
from sim.schedulers import SchedulerLimits, make_scheduler
from sim.serving import serve, serving_memory
from workloads.requests import Poisson, Uniform, sample_requests

BLOCK = 16
KV_PER_TOKEN = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama)


def _grow_one_by_one(scheduler):
    """The reference of Scheduler._grow_decodes: each decoding sequence in turn grows by can_hold then hold, the
    newest running sequence preempted while it cannot."""
    def grow_decodes(state, decoding):
        kv, kept, pending = state.kv, [], list(decoding)
        while pending:
            seq = pending.pop(0)
            while not kv.can_hold(seq.index, seq.computed + 1):
                victim = state.running[-1]
                scheduler._preempt(state, victim)
                if victim is seq:
                    break
                for waiting in (pending, kept):
                    if victim in waiting:
                        waiting.remove(victim)
            else:
                kv.hold(seq.index, seq.computed + 1)
                kept.append(seq)
        return kept

    scheduler._grow_decodes = grow_decodes
    return scheduler


def _apply_token_by_token(replica, batch, now_s):
    """The reference of Replica._apply (no speculation, no prefill pool): each finished prefill, then each decode,
    samples its token in turn."""
    def sample(seq):
        seq.generated += 1
        if math.isnan(seq.first_token_s):
            seq.first_token_s = now_s
        else:
            replica.token_gaps.append(now_s - seq.last_token_s)
        seq.last_token_s = now_s
        if seq.generated >= seq.output:
            seq.finish_s = now_s
            replica._leave(seq)
            replica.on_finish(seq)

    for seq, chunk in batch.prefills:
        seq.computed += chunk
        replica.state.kv.publish(seq.index, seq.computed)
        if seq.computed >= seq.target:
            sample(seq)
    for seq in batch.decodes:
        if seq.generated < seq.output:
            seq.computed += 1
            seq.target += 1
            sample(seq)


def _serve(costs, scheduler: str, reference: bool, window: int | None, prefix: int):
    """30 requests within ~15 ms needing up to 191 tokens (12 blocks) each, on 48 blocks: many preemptions."""
    requests = sample_requests(arrivals=Poisson(rate_per_s=2000.0), prompt=Uniform(low=32, high=64),
                               output=Uniform(low=64, high=128), count=30, seed=2)
    memory = serving_memory(capacity_B=48 * BLOCK * KV_PER_TOKEN, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN, block_tokens=BLOCK)
    kv = PagedKVCache(capacity_blocks=48, block_tokens=BLOCK, prefix_tokens=prefix, window=window)
    policy = make_scheduler(scheduler, SchedulerLimits(max_seqs=32, chunk_tokens=48))
    return serve(costs, requests, _grow_one_by_one(policy) if reference else policy, kv, memory,
                 costs.device.idle_power_W, window=window)


@pytest.mark.parametrize("scheduler", ["continuous", "chunked"])
@pytest.mark.parametrize("window, prefix", [(None, 0), (80, 0), (None, 32)])
def test_batched_decode_steps_serve_as_one_sequence_at_a_time(costs, monkeypatch, scheduler, window, prefix):
    batched = _serve(costs, scheduler, False, window, prefix)
    monkeypatch.setattr(Replica, "_apply", _apply_token_by_token)
    reference = _serve(costs, scheduler, True, window, prefix)
    assert int(reference.records.preemptions.sum()) > 2  # the cache ran out, again and again
    for part in ("records", "iterations"):
        for field in dataclasses.fields(getattr(reference, part)):
            np.testing.assert_array_equal(getattr(getattr(batched, part), field.name),
                                          getattr(getattr(reference, part), field.name), err_msg=field.name)
    np.testing.assert_array_equal(batched.token_gaps_s, reference.token_gaps_s)
    metrics, expected = batched.metrics(), reference.metrics()
    assert list(metrics) == list(expected)
    np.testing.assert_array_equal(list(metrics.values()), list(expected.values()))
