"""The chunked scheduler's cap on one request's tokens an iteration (SchedulerLimits.long_prefill_tokens), worked by
hand against vLLM v1's scheduler (vllm/v1/core/sched/scheduler.py schedule(), commit 00024d31 of vllm-project/vllm):
each request's num_new_tokens is cut to long_prefill_token_threshold where that is above 0, then to the budget left,
for the running requests and the waiting ones alike."""

from __future__ import annotations

import numpy as np
import pytest

from sim.kv_cache import PagedKVCache
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler
from sim.serving import Pool, serve_pools, serving_memory
from workloads.requests import RequestSet

BLOCK = 16
KV_PER_TOKEN_B = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama)


def _served(costs, requests: RequestSet, **limits):
    """The requests on one chunked replica with room for every request's KV (nothing is preempted)."""
    memory = serving_memory(capacity_B=10_000 * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    pool = Pool(name="serve", role="serve", replicas=1, costs=costs, scheduler="chunked",
                limits=SchedulerLimits(max_seqs=8, **limits), memory=memory, idle_power_W=costs.device.idle_power_W)
    return serve_pools([pool], requests)


def _three_short_and_one_long() -> RequestSet:
    """Three 16-token prompts that decode 20 tokens, then a 10,000-token prompt, all arriving at once."""
    return RequestSet(arrival_s=np.zeros(4), prompt_tokens=np.array([16, 16, 16, 10_000]),
                      output_tokens=np.array([20, 20, 20, 2]))


def test_a_long_prompt_takes_a_chunk_of_the_threshold_an_iteration_beside_the_decodes(costs):
    """Budget 8,192, threshold 2,048. By hand, v1's waiting loop in the first step: the three short prompts take 16
    each, then the long one min(10,000, 2,048) = 2,048 (8,144 left of the budget: the cap, not the budget, cuts it).
    Next steps, the running loop: the three decode a token each, then the long one 2,048, 2,048, 2,048 and the last
    10,000 - 4 x 2,048 = 1,808: ceil(10,000 / 2,048) = 5 steps, the three decoding beside it in each. Without the
    threshold: 8,144 in the first step beside the short prompts, then 1,856 beside the three decodes."""
    log = _served(costs, _three_short_and_one_long(), chunk_tokens=8192, long_prefill_tokens=2048).iterations
    assert log.prefill_tokens[:5].tolist() == [48 + 2048, 2048, 2048, 2048, 1808]
    assert (log.tokens - log.prefill_tokens)[:5].tolist() == [0, 3, 3, 3, 3]
    assert log.batch_size[:5].tolist() == [4, 4, 4, 4, 4]
    plain = _served(costs, _three_short_and_one_long(), chunk_tokens=8192).iterations
    assert plain.prefill_tokens[:2].tolist() == [48 + 8144, 1856]
    assert (plain.tokens - plain.prefill_tokens)[:2].tolist() == [0, 3]


def _waiting(state: EngineState, index: int, prompt: int) -> Sequence:
    seq = Sequence(index=index, arrival_s=float(index), prompt=prompt, output=20)
    state.waiting.append(seq)
    return seq


def test_the_budget_a_capped_prompt_leaves_goes_to_the_next_one_capped_too():
    """Two 10,000-token prompts waiting, budget 8,192, threshold 2,048: v1's waiting loop gives the first 2,048, then
    (token_budget 6,144 > 0) the second min(10,000, 2,048) = 2,048, so both prefill at once; without the threshold the
    first takes the whole budget and the second waits."""
    def first_batch(threshold: int) -> list[tuple[int, int]]:
        state = EngineState(kv=PagedKVCache(capacity_blocks=10_000, block_tokens=BLOCK))
        _waiting(state, 0, 10_000)
        _waiting(state, 1, 10_000)
        limits = SchedulerLimits(max_seqs=8, chunk_tokens=8192, long_prefill_tokens=threshold, watermark=0.0)
        batch = make_scheduler("chunked", limits).next_batch(state)
        return [(seq.index, tokens) for seq, tokens in batch.prefills]

    assert first_batch(2048) == [(0, 2048), (1, 2048)]
    assert first_batch(0) == [(0, 8192)]


def test_a_prefill_under_way_is_capped_before_a_waiting_one_is_admitted():
    """A running prompt of 5,000 with 1,000 computed, a 3,000-token prompt waiting; budget 4,096, threshold 1,500:
    v1's running loop gives the first min(4,000, 1,500) = 1,500, its waiting loop the second min(3,000, 1,500,
    2,596) = 1,500, leaving 1,096 of the budget unused."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=10_000, block_tokens=BLOCK))
    running = Sequence(index=0, arrival_s=0.0, prompt=5000, output=20, computed=1000)
    state.kv.hold(0, 1000)
    state.running.append(running)
    _waiting(state, 1, 3000)
    limits = SchedulerLimits(max_seqs=8, chunk_tokens=4096, long_prefill_tokens=1500, watermark=0.0)
    batch = make_scheduler("chunked", limits).next_batch(state)
    assert [(seq.index, tokens) for seq, tokens in batch.prefills] == [(0, 1500), (1, 1500)]


def test_the_latency_predictor_reads_one_prompt_in_chunks_of_the_threshold():
    """prompt_alone, the longest chunk one prompt takes beside decodes: what 3 decodes leave of 8,192 (8,189) cut to
    the threshold, 2,048; 8,189 without it."""
    capped = make_scheduler("chunked", SchedulerLimits(chunk_tokens=8192, long_prefill_tokens=2048))
    assert capped.prompt_alone(3) == 2048
    assert make_scheduler("chunked", SchedulerLimits(chunk_tokens=8192)).prompt_alone(3) == 8189


@pytest.mark.parametrize("threshold", [3000, 3019])
def test_a_threshold_no_request_reaches_runs_as_none(costs, threshold):
    """Invariant: where no request has more tokens to compute than the threshold (prompts up to 3,000, 20 outputs,
    nothing preempted), every iteration and every request's times are the run without it."""
    rng = np.random.default_rng(7)
    requests = RequestSet(arrival_s=np.sort(rng.uniform(0, 0.05, 24)), prompt_tokens=rng.integers(1, 3001, 24),
                          output_tokens=rng.integers(1, 21, 24))
    assert requests.prompt_tokens.max() <= threshold
    capped, plain, lower = (_served(costs, requests, chunk_tokens=4096, long_prefill_tokens=t)
                            for t in (threshold, 0, 1000))
    assert plain.records.preemptions.sum() == 0
    # A threshold some prompt passes changes the run: the check below can tell.
    assert lower.iterations.prefill_tokens.tolist() != plain.iterations.prefill_tokens.tolist()
    assert capped.iterations.prefill_tokens.tolist() == plain.iterations.prefill_tokens.tolist()
    assert capped.iterations.tokens.tolist() == plain.iterations.tokens.tolist()
    for name in ("first_token_s", "finish_s"):
        assert np.array_equal(getattr(capped.records, name), getattr(plain.records, name)), name
