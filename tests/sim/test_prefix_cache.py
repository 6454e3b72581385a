"""Prefix caching with several prefixes (sim/kv_cache.py prefix groups) and the lpm admission order
(sim/schedulers/base.py QUEUE_POLICIES), served end to end, against hand counts and invariants.

The tiny Llama on an H100 (conftest `costs`) keeps runs to a fraction of a second; what is checked is which requests
find their prefix cached and what the iterations compute, which the costs do not decide.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim.kv_cache import PagedKVCache
from sim.schedulers import SchedulerLimits, make_scheduler
from sim.serving import Pool, numbered_by_appearance, prefix_group_draws, serve, serve_pools, serving_memory
from workloads.requests import Fixed, Poisson, RequestSet, sample_conversations

BLOCK = 16
PREFIX = 32  # two whole blocks
PROMPT = 48  # the prefix and one block of its own
KV_PER_TOKEN_B = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama)


def _serve(costs, groups, *, blocks: int, prefix_groups: int, policy: str = "fcfs", output: int = 2,
           max_seqs: int = 1, scheduler: str = "continuous", seed: int = 0, in_requests: bool = False,
           preemption: str = "recompute"):
    """Requests of PROMPT tokens arriving together, request i starting with group groups[i]'s prefix (given to the
    run, or `in_requests`, as the requests' own column)."""
    count = len(groups)
    requests = RequestSet(arrival_s=np.zeros(count), prompt_tokens=np.full(count, PROMPT),
                          output_tokens=np.full(count, output), prefix_group=groups if in_requests else None)
    memory = serving_memory(capacity_B=blocks * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    kv = PagedKVCache(capacity_blocks=blocks, block_tokens=BLOCK, prefix_tokens=PREFIX, prefix_groups=prefix_groups)
    limits = SchedulerLimits(max_seqs=max_seqs, queue_policy=policy, watermark=0.0, preemption=preemption)
    return serve(costs, requests, make_scheduler(scheduler, limits), kv, memory, costs.device.idle_power_W,
                 prefix_groups=None if in_requests else np.asarray(groups),
                 host_link_Bps=32e9 if preemption == "swap" else None)


def _computed_tokens(result) -> int:
    return int(result.iterations.tokens.sum())


def _found(result) -> tuple[int, int]:
    """Of the admissions' shareable prefixes, the blocks found cached and the blocks sought."""
    return result.prefix_found_tokens // BLOCK, result.prefix_sought_tokens // BLOCK


def test_alternating_groups_thrash_in_arrival_order_and_stay_together_under_lpm(costs):
    """Two groups' prefixes (2 blocks each) start cached in 5 blocks; one request runs at a time; a request holds 1
    block past its prefix and a second when it decodes, which it takes from the other group's idle chain, its last
    block. In arrival order (groups 0, 1, 0, 1, 0, 1) each request after the first finds 1 of its 2 prefix blocks,
    computes the other (it rejoins the chain) and its decode takes the other group's last block again: 2 + 5 x 1 = 7
    of 12 blocks found. lpm admits the longest cached prefix first: group 0's three requests each find 2 blocks and,
    the first's decode having shortened group 1's chain to 1, leave it alone; group 1's first finds 1, rebuilds the
    chain and takes a block of group 0's, and its other two find 2: 11 of 12."""
    groups = [0, 1, 0, 1, 0, 1]
    fcfs = _serve(costs, groups, blocks=5, prefix_groups=2, policy="fcfs")
    lpm = _serve(costs, groups, blocks=5, prefix_groups=2, policy="lpm")
    assert _found(fcfs) == (7, 12) and _found(lpm) == (11, 12)
    assert fcfs.metrics()["prefix_hit_rate"] == pytest.approx(7 / 12)
    assert lpm.metrics()["prefix_hit_rate"] == pytest.approx(11 / 12)
    # Each iteration computes a prefill's uncached tokens or one decode token.
    decodes = 6 * (2 - 1)
    assert _computed_tokens(fcfs) == 16 + 5 * 32 + decodes
    assert _computed_tokens(lpm) == 5 * 16 + 32 + decodes
    # lpm reorders: group 0's requests finish before group 1's second.
    finish = lpm.records.finish_s
    assert max(finish[[0, 2, 4]]) < min(finish[[3, 5]])


def test_every_request_finds_its_prefix_where_every_group_stays_cached(costs):
    """With room for every group's prefix beside the requests, nothing is evicted: every admission finds its whole
    prefix, and the iterations compute each prompt past it and each decode token (a hand sum), in either order."""
    rng = np.random.default_rng(3)
    groups = rng.integers(8, size=40).tolist()
    for policy in ("fcfs", "lpm"):
        result = _serve(costs, groups, blocks=8 * 2 + 40 * 3, prefix_groups=8, policy=policy, max_seqs=40,
                        output=5, scheduler="chunked")
        assert _found(result) == (80, 80)
        assert _computed_tokens(result) == 40 * (PROMPT - PREFIX) + 40 * (5 - 1)


def test_prefills_and_decodes_conserve_tokens_under_eviction(costs):
    """Under eviction pressure (16 groups, room for a few prefixes beside the requests) every prompt is computed past
    what its admission found cached, whatever the order: computed tokens = 60 x 48 - found blocks x 16 + decodes (no
    preemption: each request's whole KV fits beside the others at max_seqs 4)."""
    groups = np.random.default_rng(5).integers(16, size=60).tolist()
    for policy in ("fcfs", "lpm"):
        result = _serve(costs, groups, blocks=4 * 2 + 4 * 4 + 8, prefix_groups=16, policy=policy, max_seqs=4,
                        output=4)
        found, sought = _found(result)
        assert result.records.preemptions.sum() == 0 and sought == 60 * 2
        assert _computed_tokens(result) == 60 * PROMPT - found * BLOCK + 60 * (4 - 1)
        assert 0 < found < sought


def test_a_swap_in_is_no_admission_of_its_prefix(costs):
    """Five groups, three cached at the start in 7 blocks; two requests of the fifth arrive together. Both find
    nothing and prefill together (3 blocks each, evicting the cached prefixes but one block); the first's prefix
    becomes the group's, the second keeps its own copy. Decoding, the first takes the last cached block for its
    fourth; the second finds none, is swapped out, and comes back beside the first as it left. Two admissions sought
    2 prefix blocks each and found none: a swap-in is no admission."""
    result = _serve(costs, [4, 4], blocks=7, prefix_groups=5, max_seqs=2, output=3, preemption="swap")
    assert result.records.preemptions.tolist() == [0, 1]
    assert _found(result) == (0, 4)


def test_lpm_never_finds_less_than_arrival_order_on_an_offline_batch(costs):
    """12 groups over 80 requests in 22 blocks: the warm cache holds 11 prefixes, which the first requests' blocks
    partly evict. lpm finds more than arrival order, and no more than every prefix but the first computation of each
    group the warm cache missed."""
    groups = np.random.default_rng(11).integers(12, size=80).tolist()
    fcfs = _serve(costs, groups, blocks=3 * 2 + 4 * 4, prefix_groups=12, policy="fcfs", max_seqs=4, output=4)
    lpm = _serve(costs, groups, blocks=3 * 2 + 4 * 4, prefix_groups=12, policy="lpm", max_seqs=4, output=4)
    assert _found(lpm)[0] > _found(fcfs)[0]
    assert _found(lpm)[0] <= 80 * 2 - 2 * (len(set(groups)) - 11)


def test_group_draws_are_even_seeded_and_apart_from_one_group():
    assert not prefix_group_draws(50, 1, seed=4).any()
    draws = prefix_group_draws(20_000, 8, seed=4)
    assert np.array_equal(draws, prefix_group_draws(20_000, 8, seed=4))
    assert not np.array_equal(draws, prefix_group_draws(20_000, 8, seed=5))
    counts = np.bincount(draws, minlength=8)
    assert counts.size == 8 and np.all(np.abs(counts - 2500) < 5 * np.sqrt(2500))  # five sigma of a binomial


def test_the_requests_own_groups_are_numbered_by_first_appearance():
    assert numbered_by_appearance(np.array([7, 3, 7, 9, 3, 0])).tolist() == [0, 1, 0, 2, 1, 3]


def test_groups_a_trace_gives_serve_as_the_same_groups_given_to_the_run(costs):
    """Trace labels 42 and 5 alternate as groups 0 and 1 do above: the same blocks found, by hand (7 of 12)."""
    result = _serve(costs, [42, 5, 42, 5, 42, 5], blocks=5, prefix_groups=2, in_requests=True)
    assert _found(result) == (7, 12)


# ---- conversations: each turn arrives after the previous answer and finds the conversation so far ---------------

def _conversations(costs, *, replicas: int = 1, blocks: int = 10_000, router: str = "round_robin", count: int = 12,
                   turns: int = 3, think_s: float = 0.25, requests: RequestSet | None = None):
    if requests is None:
        requests = sample_conversations(arrivals=Poisson(rate_per_s=40.0), prompt=Fixed(tokens=70),
                                        output=Fixed(tokens=9), count=count, turns=turns, think_s=think_s, seed=4)
    memory = serving_memory(capacity_B=blocks * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    pool = Pool(name="serve", role="serve", replicas=replicas, costs=costs, scheduler="chunked",
                limits=SchedulerLimits(), memory=memory, idle_power_W=costs.device.idle_power_W, router=router)
    return requests, serve_pools([pool], requests)


def test_a_turn_arrives_think_s_after_the_previous_answer(costs):
    requests, result = _conversations(costs)
    records = result.records
    for index in range(len(requests)):
        if index % 3:  # a later turn: the previous answer's finish plus the think time
            assert records.arrival_s[index] == pytest.approx(records.finish_s[index - 1] + 0.25)
        else:
            assert records.arrival_s[index] == requests.arrival_s[index]


def test_every_turn_finds_its_conversation_where_memory_keeps_it_even_on_several_replicas(costs):
    """With memory to spare every later turn finds the whole blocks of the previous turn's cache: it computes only
    the rest of its prompt (a hand sum), although round robin would send each arrival elsewhere: a conversation
    stays on the replica that served its first turn."""
    for replicas in (1, 3):
        requests, result = _conversations(costs, replicas=replicas)
        shared = requests.shared_tokens
        found = shared // BLOCK * BLOCK
        assert result.prefix_sought_tokens == result.prefix_found_tokens == found.sum() > 0
        prefill = int((requests.prompt_tokens - found).sum())
        assert _computed_tokens(result) == prefill + int((requests.output_tokens - 1).sum())


def test_a_trace_of_conversations_serves_as_the_conversations_themselves(costs):
    """The same conversations given as a request set's columns without the generator's source (as a trace gives
    them) serve to the same records and prefix tokens."""
    requests, result = _conversations(costs, replicas=2)
    traced = RequestSet(arrival_s=requests.arrival_s, prompt_tokens=requests.prompt_tokens,
                        output_tokens=requests.output_tokens, prefix_group=requests.prefix_group * 7 + 3,
                        shared_tokens=requests.shared_tokens, after_previous_s=requests.after_previous_s)
    _, again = _conversations(costs, replicas=2, requests=traced)
    assert np.array_equal(again.records.finish_s, result.records.finish_s)
    assert again.prefix_found_tokens == result.prefix_found_tokens > 0


def test_a_document_s_first_question_leaves_the_document_for_the_next_that_shares_it(costs):
    """Questions on one 64-token document (four blocks), one at a time, as a trace writes them: the first shares
    nothing with earlier requests (there are none), each later one shares the document. The first computes the
    document and leaves its four blocks cached, so the two later questions each find all four (8 of 8 sought) and
    compute only their own 16 tokens: by hand, 80 + 16 + 16 prompt tokens and one per further output token."""
    requests = RequestSet(arrival_s=np.array([0.0, 1.0, 2.0]), prompt_tokens=np.array([80, 80, 80]),
                          output_tokens=np.array([2, 2, 2]), prefix_group=np.array([9, 9, 9]),
                          shared_tokens=np.array([0, 64, 64]))
    memory = serving_memory(capacity_B=100 * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    pool = Pool(name="serve", role="serve", replicas=1, costs=costs, scheduler="chunked", limits=SchedulerLimits(),
                memory=memory, idle_power_W=costs.device.idle_power_W)
    result = serve_pools([pool], requests)
    assert _found(result) == (8, 8)
    assert _computed_tokens(result) == 80 + 16 + 16 + 3 * 1


def test_every_conversation_finds_the_system_prompt_it_starts_with(costs):
    """12 requests as 4 conversations of 3 turns after a 64-token system prompt (4 blocks), held once as the root of
    every conversation's chain. Every first turn finds the whole system prompt and every later turn the whole blocks of
    its conversation so far (memory to spare): each computes only the rest of its prompt, a hand sum."""
    system = 64
    requests = sample_conversations(arrivals=Poisson(rate_per_s=40.0), prompt=Fixed(tokens=70), output=Fixed(tokens=9),
                                    count=12, turns=3, think_s=0.25, seed=4, system_tokens=system)
    assert (requests.prompt_tokens[::3] == system + 70).all() and (requests.shared_tokens[::3] == system).all()
    memory = serving_memory(capacity_B=10_000 * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    pool = Pool(name="serve", role="serve", replicas=1, costs=costs, scheduler="chunked", limits=SchedulerLimits(),
                memory=memory, idle_power_W=costs.device.idle_power_W, prefix_tokens=system,
                prefix_groups=4, root=True)
    result = serve_pools([pool], requests)
    found = requests.shared_tokens // BLOCK * BLOCK
    assert result.prefix_sought_tokens == result.prefix_found_tokens == found.sum()
    prefill = int((requests.prompt_tokens - found).sum())
    assert _computed_tokens(result) == prefill + int((requests.output_tokens - 1).sum())


def test_a_turn_arrives_its_own_think_time_after_the_previous_answer(costs):
    """With exponential think times (cv 1) each later turn arrives its drawn think time after the previous answer."""
    requests = sample_conversations(arrivals=Poisson(rate_per_s=40.0), prompt=Fixed(tokens=70), output=Fixed(tokens=9),
                                    count=12, turns=3, think_s=0.25, seed=4, think_cv=1.0)
    _, result = _conversations(costs, requests=requests)
    records = result.records
    for index in range(len(requests)):
        if index % 3:
            assert records.arrival_s[index] == pytest.approx(records.finish_s[index - 1]
                                                             + requests.after_previous_s[index])
    assert len(set(requests.after_previous_s[1::3])) == 4  # drawn, not all 0.25
