"""SGLang's longest-prefix-match admission (sim/schedulers/base.py, lpm) in its two guards, against hand cases: a
request sharing an uncached prefix with an earlier waiting one waits behind the rest (in-batch prefix caching), and
past 128 waiting requests the order is arrival order."""

from __future__ import annotations

from sim.kv_cache import PagedKVCache
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler

BLOCK = 16


Path = list[tuple[int, int]]


def _admitted(paths: list[Path], policy: str, cached: Path | None = None) -> list[int]:
    """The order a continuous scheduler admits requests whose prompts pass through `paths` (node, end token), all
    waiting at once, after a finished request cached the path `cached`."""
    kv = PagedKVCache(capacity_blocks=100_000, block_tokens=BLOCK)
    if cached:
        kv.assign_path(10**6, cached)
        kv.hold(10**6, cached[-1][1])
        kv.publish(10**6, cached[-1][1])
        kv.release(10**6)
    state = EngineState(kv=kv)
    for index, path in enumerate(paths):
        kv.assign_path(index, path)
        state.waiting.append(Sequence(index=index, arrival_s=0.0, prompt=path[-1][1] + 1, output=4))
    limits = SchedulerLimits(max_seqs=1000, max_batched_tokens=10**7, queue_policy=policy)
    batch = make_scheduler("continuous", limits).next_batch(state)
    return [seq.index for seq, _ in batch.prefills]


def test_a_request_sharing_an_uncached_prefix_with_an_earlier_one_waits_behind_the_rest():
    """Requests 0 and 1 start with the same 64 tokens (node 1), none cached; request 2 shares nothing. lpm admits 0,
    then 2, then 1 (which will find 0's prefix cached where it prefills after it); fcfs keeps arrival order."""
    paths = [[(1, 64), (2, 80)], [(1, 64), (3, 80)], [(5, 64)]]
    assert _admitted(paths, "lpm") == [0, 2, 1]
    assert _admitted(paths, "fcfs") == [0, 1, 2]
    # Sharing 16 tokens (one block), under the 32-token threshold, holds nobody back.
    assert _admitted([[(1, 16), (2, 80)], [(1, 16), (3, 80)], [(5, 64)]], "lpm") == [0, 1, 2]


def test_past_128_waiting_requests_lpm_admits_in_arrival_order():
    """The last request finds 64 cached tokens (node 7), every other none: lpm takes it first among 128 waiting, and
    among 129 keeps arrival order."""
    for waiting, first in ((128, 127), (129, 0)):
        paths = [[(1000 + i, 48)] for i in range(waiting - 1)] + [[(7, 64), (8, 100)]]
        assert _admitted(paths, "lpm", cached=[(7, 64)])[0] == first
