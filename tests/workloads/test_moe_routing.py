"""MoE routing models (workloads/model_config.py expert_load): balanced against uniform, by hand, against a seeded
Monte Carlo of independent top-k picks, and against each other.

Uniform routing: each token picks k distinct experts of E uniformly at random, independently of the other tokens. An
expert is missed by one token with probability 1 - k/E, by t tokens with (1 - k/E)^t, so E (1 - (1 - k/E)^t) experts
are touched in expectation; the layer rounds that to whole experts. Balanced routing touches min(E, t k).
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest

from workloads.model_config import (
    BALANCED,
    UNIFORM,
    balanced_expert_load,
    expert_load,
    experts_reached,
    load_model_config,
    uniform_expert_load,
    uniform_touched,
)
from workloads.trace_cache import trace_key

# (tokens, top-k, experts): DeepSeek-V3 (8 of 256) at a decode step of 1 to 64 sequences, Qwen3-30B-A3B (8 of 128),
# Mixtral (2 of 8), and a prefill's thousands of tokens.
CASES = [(t, 8, 256) for t in (1, 2, 3, 4, 8, 32, 64, 1024)] + [(t, 8, 128) for t in (1, 4, 16, 64)] + \
        [(t, 2, 8) for t in (1, 2, 3, 5, 64, 4096)]


def test_expected_touched_by_hand():
    # Mixtral, 3 tokens: 8 (1 - (6/8)^3) = 8 x 37/64 = 4.625; DeepSeek-V3, 2 tokens: 256 (1 - (248/256)^2) = 15.75
    # (a second token misses each of the first's 8 experts with probability 248/256: 8 + 8 x 248/256).
    assert uniform_touched(3, 2, 8) == pytest.approx(float(8 * Fraction(37, 64)), rel=1e-12)
    assert uniform_touched(2, 8, 256) == pytest.approx(8 + 8 * 248 / 256, rel=1e-12)
    # DeepSeek-V3, 32 tokens: (31/32)^32 = exp(32 ln(31/32)) = exp(-1.01596) = 0.36205, 256 x 0.63795 = 163.3
    assert uniform_touched(32, 8, 256) == pytest.approx(163.31, abs=0.01)
    # One token touches its k exactly.
    assert uniform_touched(1, 8, 256) == pytest.approx(8.0, rel=1e-12)


def _sampled_touched(tokens: int, k: int, experts: int, draws: int, rng: np.random.Generator) -> float:
    """Mean experts touched by `tokens` tokens, each picking k distinct experts uniformly at random (the k smallest of
    E uniform scores: a uniformly random k-subset), over `draws` independent batches."""
    touched, chunk = 0, max(1, 2_000_000 // (tokens * experts))
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        picks = np.argpartition(rng.random((n, tokens, experts)), k - 1, axis=-1)[..., :k]
        hit = np.zeros((n, experts), dtype=bool)
        np.put_along_axis(hit, picks.reshape(n, tokens * k), True, axis=1)
        touched += int(hit.sum())
    return touched / draws


@pytest.mark.parametrize(("tokens", "k", "experts", "draws"), [
    (32, 8, 256, 20_000), (64, 8, 256, 10_000), (4, 8, 256, 100_000), (3, 2, 8, 100_000), (16, 8, 128, 20_000)])
def test_expected_touched_against_sampled_routing(tokens, k, experts, draws):
    """A seeded Monte Carlo of independent top-k picks (100,000 tokens' picks at least) agrees within 1%, and the
    layer's whole number of experts is the expectation rounded (within half an expert)."""
    mean = _sampled_touched(tokens, k, experts, draws, np.random.default_rng(2024))
    assert uniform_touched(tokens, k, experts) == pytest.approx(mean, rel=0.01)
    assert abs(experts_reached(tokens, k, experts, UNIFORM) - mean) <= 0.5 + 0.01 * mean


@pytest.mark.parametrize(("tokens", "k", "experts"), CASES)
def test_uniform_never_touches_more_experts_than_balanced(tokens, k, experts):
    """Both route every row (tokens x k), as evenly as they go over the experts they touch, the touched ones first;
    uniform touches no more (E (1 - (1 - k/E)^t) <= t k by Bernoulli's inequality, and <= E)."""
    balanced, uniform = balanced_expert_load(tokens, k, experts), uniform_expert_load(tokens, k, experts)
    assert sum(uniform) == sum(balanced) == tokens * k
    for load in (balanced, uniform):
        busy = [n for n in load if n]
        assert load[:len(busy)] == busy and max(busy) - min(busy) <= 1
    assert experts_reached(tokens, k, experts, UNIFORM) <= experts_reached(tokens, k, experts, BALANCED) == min(
        experts, tokens * k)
    assert expert_load(UNIFORM, tokens, k, experts) == uniform and expert_load(BALANCED, tokens, k, experts) == balanced


@pytest.mark.parametrize(("tokens", "k", "experts"), CASES)
def test_small_batches_agree_where_collisions_round_away(tokens, k, experts):
    """Balanced touches t k; uniform loses at most C(t, 2) k^2 / E of them in expectation to collisions (Bonferroni:
    1 - (1 - p)^t >= t p - C(t, 2) p^2 with p = k/E), so where that is under half an expert the two agree after
    rounding."""
    if tokens * (tokens - 1) / 2 * k * k / experts < 0.5:
        assert experts_reached(tokens, k, experts, UNIFORM) == tokens * k


def test_where_the_two_differ_at_small_batches():
    """Both touch exactly k at 1 token, and agree at 2 tokens of DeepSeek-V3 (15.75 -> 16); from 4 tokens of it on they
    differ (30.5 -> 31 of 32), and at 3 of Mixtral's (4.6 -> 5 of 6; at 2, 3.5 rounds up to balanced's 4)."""
    for k, experts in ((8, 256), (8, 128), (2, 8)):
        assert experts_reached(1, k, experts, UNIFORM) == experts_reached(1, k, experts, BALANCED) == k
    assert experts_reached(2, 8, 256, UNIFORM) == 16
    assert experts_reached(4, 8, 256, UNIFORM) == 31
    assert experts_reached(32, 8, 256, UNIFORM) == 163
    assert experts_reached(2, 2, 8, UNIFORM) == 4
    assert experts_reached(3, 2, 8, UNIFORM) == 5


def test_a_trace_is_cached_apart_for_each_routing(tiny_mixtral):
    """The trace cache's key holds the routing model (a config field): a uniform trace never loads a balanced one."""
    shape = dict(phase="decode", batch=3, seq_len=1, context_len=16)
    balanced = trace_key(tiny_mixtral, **shape)
    assert balanced["config"]["moe_routing"] == BALANCED
    assert trace_key(replace(tiny_mixtral, moe_routing=UNIFORM), **shape) != balanced


@pytest.mark.parametrize("routing", [BALANCED, UNIFORM])
def test_a_model_without_experts_reaches_none(routing):
    """A dense model's MoE layers are none, so its passes reach no expert under either routing (explore check's
    estimate counts the experts each pass of any model reaches)."""
    config = load_model_config("llama-3-8b")
    assert not config.is_moe
    assert expert_load(routing, 32, config.experts_per_token, config.num_experts) == []
    assert experts_reached(32, config.experts_per_token, config.num_experts, routing) == 0
