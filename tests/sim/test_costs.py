"""The iteration cost model's choices (sim/costs.py): an iteration that may cascade a shared prefix does so only
where that is the cheaper, as an engine decides per step."""

from __future__ import annotations

import pytest

from kernels.shapes import step_shape


@pytest.mark.parametrize(("seqs", "prefix", "own"), [(2, 32, 4), (8, 96, 40), (64, 1024, 100), (64, 4096, 100)])
def test_a_cascadable_iteration_costs_the_cheaper_of_cascade_and_paged(costs, seqs, prefix, own):
    """The tiny Llama's decode of `seqs` sequences after a shared prefix: priced as the cheaper of reading the prefix
    once (one kernel more) and per sequence; where the extra kernel's launch outweighs the bytes it saves (short
    prefixes, few sequences) that is the paged price exactly, as vLLM's use_cascade_attention declines to cascade."""
    kv = [prefix + own] * seqs
    cascade = step_shape(decode_kv=kv, sampled=seqs, shared_prefix=prefix)
    paged = step_shape(decode_kv=kv, sampled=seqs)
    assert cascade.paged() == paged
    assert costs.price(cascade).time_s == min(costs.price(paged).time_s, costs._price_kernels(cascade).time_s)
    if seqs == 2:
        assert costs.price(cascade).time_s == costs.price(paged).time_s


def test_a_long_prefix_over_many_sequences_cascades(costs):
    """64 sequences after 4,096 shared tokens: reading the prefix once is the cheaper, and the cost model takes it."""
    kv = [4096 + 100] * 64
    cascade = step_shape(decode_kv=kv, sampled=64, shared_prefix=4096)
    assert costs.price(cascade).time_s < costs.price(step_shape(decode_kv=kv, sampled=64)).time_s
