"""An engine state for the scheduler tests: sequences decoding past a short prompt, each holding its blocks."""

from __future__ import annotations

from sim.kv_cache import PagedKVCache
from sim.schedulers import EngineState, Sequence

PROMPT = 4  # tokens of each decoding sequence's prompt


def decoding_state(decoding: int, *, output: int, capacity_blocks: int) -> EngineState:
    """`decoding` running sequences past a PROMPT-token prompt, each with its first token sampled at time 0 and its
    PROMPT + 1 tokens held, in a cache of `capacity_blocks` blocks of 16 tokens."""
    kv = PagedKVCache(capacity_blocks=capacity_blocks, block_tokens=16)
    state = EngineState(kv=kv)
    for index in range(decoding):
        seq = Sequence(index=index, arrival_s=0.0, prompt=PROMPT, output=output)
        seq.computed, seq.generated, seq.scheduled_s, seq.first_token_s, seq.last_token_s = PROMPT, 1, 0.0, 0.0, 0.0
        kv.hold(index, PROMPT + 1)
        state.running.append(seq)
    return state
