"""KV policies (kernels/kv_policy.py): what a sequence keeps under a window or a retrieval/streaming head mix."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.kv_policy import KVPolicy, kept_tokens


def test_windows_by_hand():
    assert kept_tokens(1000, None) == 1000
    assert kept_tokens(1000, 64) == 64
    assert kept_tokens(10, 64) == 10
    # A quarter of the heads keep 1000 tokens, the rest 320: 250 + 240.
    assert kept_tokens(1000, KVPolicy(window=320, full_heads=0.25)) == pytest.approx(490.0)
    # Every head capped by the model's own sliding window of 500: 125 + 240.
    assert kept_tokens(1000, KVPolicy(window=320, full_heads=0.25, limit=500)) == pytest.approx(365.0)


def test_prefill_share_by_hand():
    """A prompt of 4 with a window of 2: causal pairs 1+2+3+4 = 10, windowed 1+2+2+2 = 7; half the heads
    streaming: 0.5 + 0.5 x 0.7 = 0.85."""
    assert KVPolicy(window=2, full_heads=0.5).prefill_attention_share(4) == pytest.approx(0.85)
    assert KVPolicy(window=8, full_heads=0.0).prefill_attention_share(4) == pytest.approx(1.0)
    assert KVPolicy(window=2, full_heads=0.0).prefill_attention_share(4) == 1.0  # StreamingLLM: the whole prompt


@pytest.mark.parametrize("bad", [dict(window=0), dict(window=8, full_heads=1.5)])
def test_bad_policies_are_refused(bad):
    with pytest.raises(ValueError, match="found"):
        KVPolicy(**bad)


@pytest.mark.parametrize("full_heads", [0.0, 0.25, 0.5, 1.0])
def test_a_smaller_budget_never_keeps_more(full_heads):
    tokens = np.arange(1, 5000, 37)
    kept = [kept_tokens(tokens, KVPolicy(window=w, full_heads=full_heads)) for w in (16, 64, 320, 1024, 8192)]
    for smaller, larger in zip(kept, kept[1:], strict=False):
        assert (smaller <= larger).all()
    more_heads = [kept_tokens(tokens, KVPolicy(window=64, full_heads=f)) for f in (0.0, 0.25, 0.5, 1.0)]
    for fewer, more in zip(more_heads, more_heads[1:], strict=False):
        assert (fewer <= more).all()
