"""A replica speculating beside vLLM v1's hybrid KV cache groups (sim/hybrid_kv.py): each verification holds slots for
its k + 1 tokens in every group, and a sliding-window group counts the blocks it skips from the tokens the request has
computed (vLLM's num_computed_tokens, rejected drafts taken back), not from the slots it held; figures by hand."""

from __future__ import annotations

import simpy

from sim.hybrid_kv import KVGroups
from sim.kv_cache import PagedKVCache
from sim.replica import Replica
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler
from sim.schedulers.base import Batch
from sim.speculative import ServingSpeculation, Speculation

BLOCK = 16
WINDOW = 32


def _replica(computed: int, acceptance: float) -> Replica:
    """A chunked replica holding one sequence of `computed` prompt tokens, its first token sampled, in a full group and
    one of a 32-token window, blocks of 16 tokens, speculating 2 drafts a step (Medusa's heads: no lookahead slots of
    a draft's own, 2 slots past the next token for the drafts it verifies), each accepted at `acceptance`."""
    kv = PagedKVCache(capacity_blocks=400, block_tokens=BLOCK, groups=KVGroups(windows=(WINDOW, None), layers=1))
    state = EngineState(kv=kv)
    seq = Sequence(index=0, arrival_s=0.0, prompt=computed, output=50)
    seq.computed, seq.generated, seq.scheduled_s, seq.first_token_s, seq.last_token_s = computed, 1, 0.0, 0.0, 0.0
    kv.hold(0, computed)
    state.running.append(seq)
    speculation = ServingSpeculation(Speculation(drafted=2, acceptance=acceptance))
    limits = SchedulerLimits(max_seqs=8, chunk_tokens=64, lookahead_slots=speculation.lookahead_slots)
    return Replica(simpy.Environment(), None, make_scheduler("chunked", limits), state, window=None,
                   swap_s_per_token=0.0, on_finish=lambda seq: None, speculation=speculation)


def _step(replica: Replica) -> int:
    """Schedule and apply one iteration; the blocks in use while it ran."""
    batch = replica.scheduler.next_batch(replica.state)
    used = replica.state.kv.used_blocks
    replica._apply(batch, 1.0)
    return used


def test_a_rejected_draft_leaves_the_window_its_blocks():
    """93 tokens computed: the verification of tokens 93 to 95 holds 96 slots, 6 blocks in the full group and in the
    sliding one the blocks from that of token 93 - 31 = 62 (block 3) on, 3: 9. Both drafts rejected, 94 computed: the
    next verification's first query, token 94, attends to tokens 63 to 94, and token 63 is in block 3 (tokens 48 to
    63), so the sliding group keeps blocks 3 to 6 of 97 slots' 7, and the full group 7: 11 (before: 10, block 3 freed
    as though the rejected drafts had been computed)."""
    replica = _replica(93, acceptance=0.0)
    assert _step(replica) == 6 + 3
    assert replica.state.running[0].computed == 94
    assert _step(replica) == 7 + 4


def test_accepted_drafts_free_what_a_plain_decode_of_as_many_tokens_would():
    """Every draft accepted, 93 + 3 = 96 computed: the next verification holds 99 slots, 7 blocks in the full group and
    in the sliding one those from token 96 - 31 = 65's (block 4) on, 3: 10."""
    replica = _replica(93, acceptance=1.0)
    _step(replica)
    assert replica.state.running[0].computed == 96
    assert _step(replica) == 7 + 3


def test_a_draft_models_windowed_layers_attend_at_their_window():
    """A draft model with a 32-token window in some layers (gpt-oss-shaped), after the target verified 2 drafts of a
    sequence of 100 computed tokens: its first step runs the 3 verified tokens and its slot (4 queries at positions
    100 to 103), which in a windowed layer read the keys of the 4 queries' windows, 32 + 4 - 1 = 35 of its 104; its
    next step, one query at 101 (the draft it sampled; the keys it wrote for the accepted tokens are not known here,
    taken as none: computed + 1 + 1), reads 32 of 102. Before, the draft's windowed layers read every key (window_kv
    0, each layer priced full)."""
    seq = Sequence(index=0, arrival_s=0.0, prompt=100, output=50)
    seq.computed, seq.generated = 100, 1
    first, later = Batch(decodes=[seq]).draft_shapes(None, first_query=4, chunk_slots=1, layer_window=WINDOW)
    assert (first.decode_kv, first.window_kv) == (104, 35)
    assert (later.decode_kv, later.window_kv) == (102, 32)
