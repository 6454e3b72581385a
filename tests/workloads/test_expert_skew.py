"""aiconfigurator's power-law routing (workloads/expert_skew.py): the draw against a line-by-line port of its
collector's loop, by hand, seeded, and the power_law routing model's layout of the busiest EP device's share.

The reference is aiconfigurator's collector/helper.py _generate_power_law_distribution and
_round_robin_adjust_per_rank (ai-dynamo/aiconfigurator at 006afd781a07), transcribed below one row at a time as it
runs them; the module under test moves whole levels of rows at once.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernels.aiconfigurator_routing import routed_on_rank0
from kernels.moe import device_routing
from workloads.expert_skew import (
    POWER_LAW_DEFAULT,
    power_law_draws,
    power_law_expert_load,
    power_law_popularity,
    power_law_ranks,
    reach_chances,
    topk_marginals,
)
from workloads.model_config import POWER_LAW, balanced_expert_load, expert_load, experts_reached


def _collector(tokens: int, topk: int, experts: int, ep: int, alpha: float, u: np.ndarray) -> np.ndarray:
    """The collector's rows per expert [ep, experts / ep] for the uniforms `u`, one row at a time as it loops."""
    x_min, x_max = (1.0, tokens * 0.8) if tokens * topk > experts else (0.01, 2.0)
    sample = ((x_max ** (1 - alpha) - x_min ** (1 - alpha)) * u + x_min ** (1 - alpha)) ** (1 / (1 - alpha))
    target = tokens * topk
    counts = np.round(sample / sample.sum() * target).astype(np.int64)
    overflow = int(np.maximum(counts - tokens, 0).sum())
    counts = np.minimum(counts, tokens).reshape(ep, experts // ep)

    def round_robin(remaining, is_valid, pick, step):
        while remaining > 0:
            progressed = False
            for rank in range(ep):
                valid = np.flatnonzero(is_valid(counts[rank]))
                if valid.size == 0:
                    continue
                counts[rank, valid[pick(counts[rank][valid])]] += step
                remaining -= 1
                progressed = True
                if remaining == 0:
                    break
            if not progressed:
                break

    if overflow:
        round_robin(overflow, lambda c: c < tokens, np.argmin, 1)
    delta = target - int(counts.sum())
    if delta > 0:
        round_robin(delta, lambda c: c < tokens, np.argmin, 1)
    elif delta < 0:
        round_robin(-delta, lambda c: c > 0, np.argmax, -1)
    top = int(np.argmax(counts.sum(axis=1)))
    counts[[0, top]] = counts[[top, 0]]
    return counts


class _Uniforms:
    """A generator whose random() returns given uniforms."""

    def __init__(self, u: np.ndarray):
        self.u = u

    def random(self, shape) -> np.ndarray:
        return self.u.reshape(shape)


def test_draws_are_the_collectors_loop():
    """Each rank's loads (as a multiset: a rank's experts are interchangeable) equal the collector's loop on the same
    uniforms, over shapes on both sides of tokens x k = E, with caps, overflow and either sign of rounding."""
    rng = np.random.default_rng(7)
    for _ in range(300):
        experts = int(rng.choice([8, 16, 64, 128, 256]))
        ep = int(rng.choice([d for d in (1, 2, 4, 8, 16, 32) if experts % d == 0]))
        topk, tokens = int(rng.choice([1, 2, 4, 8])), int(rng.choice([1, 2, 3, 4, 8, 16, 33, 64, 200, 1000]))
        alpha = float(rng.choice([1.01, 1.2, 2.5]))
        u = rng.random((3, experts))
        got = power_law_ranks(tokens, topk, experts, ep, alpha, _Uniforms(u), draws=3)
        for d in range(3):
            want = np.sort(_collector(tokens, topk, experts, ep, alpha, u[d]), axis=1)
            assert (got[d] == want).all(), (tokens, topk, experts, ep, alpha)


def test_a_draw_by_hand():
    # 2 tokens, top-2 of 8 experts on 2 ranks (4 rows <= 8 experts: x in [0.01, 2]). Expert 0 draws u = 1 (x = 2), the
    # others u = 0 (x = 0.01): 4 x 2 / 2.07 = 3.86 rounds to 4, capped at 2 tokens (overflow 2), the others' 0.019 to
    # 0. The 2 rows go one a rank: rank 0's least loaded (1 row, beside expert 0's 2), rank 1's first. Rank 0 has 3
    # rows, the busiest: 2 experts touched, 3 rows. (Without the cap a token would take expert 0 twice.)
    u = np.array([1.0] + [0.0] * 7)
    rows = power_law_ranks(2, 2, 8, 2, 1.2, _Uniforms(u[None, :]))[0]
    assert rows.tolist() == [[0, 0, 1, 2], [0, 0, 0, 1]]
    # Equal weights: 1 token, top-2 of 8 on 2 ranks: each 2/8 rounds to 0, the 2 rows go one to each rank.
    rows = power_law_ranks(1, 2, 8, 2, 1.2, _Uniforms(np.full((1, 8), 0.5)))[0]
    assert rows.tolist() == [[0, 0, 0, 1], [0, 0, 0, 1]]


def test_few_rows_spread_over_the_ranks_as_balanced_routing_does():
    """A decode step of 1 token, top-8 of 256 on 8 ranks: every weight rounds to zero, so the 8 rows go one a rank and
    the timed rank gets one expert, as under balanced routing (the measured power-law rows match the balanced ones
    there within a few percent; the replay before put all 8 on rank 0)."""
    for alpha in ("1.01", "1.2"):
        assert routed_on_rank0(1, 8, 256, 8, f"power_law_{alpha}") == routed_on_rank0(1, 8, 256, 8, "balanced")
        assert routed_on_rank0(1, 8, 256, 8, f"power_law_{alpha}") == (1.0, 1.0)


def test_draws_are_seeded_by_the_shape():
    a = power_law_draws(32, 8, 256, 8, POWER_LAW_DEFAULT)
    assert (a == power_law_draws(32, 8, 256, 8, POWER_LAW_DEFAULT)).all()
    assert not (a == power_law_draws(32, 8, 256, 8, "power_law_1.2")).all()
    assert (a.sum(axis=(1, 2)) == 32 * 8).all() and (a <= 32).all()


CASES = [(t, 8, 256) for t in (1, 2, 4, 8, 32, 64, 1024)] + [(t, 8, 128) for t in (1, 16, 64)] + \
        [(t, 2, 8) for t in (1, 3, 64, 4096)] + [(t, 8, 160) for t in (4, 32)]


@pytest.mark.parametrize(("tokens", "k", "experts"), CASES)
def test_power_law_routes_every_row_and_no_expert_twice_a_token(tokens, k, experts):
    loads = np.array(expert_load(POWER_LAW, tokens, k, experts))
    assert loads.sum() == tokens * k and (loads >= 0).all() and loads.max() <= tokens
    # One token reaches exactly its k experts; no routing reaches more than balanced routing's min(E, tokens x k).
    touched = int((loads > 0).sum())
    assert touched <= min(experts, tokens * k) and (touched == k if tokens == 1 else touched >= k)
    # The layer builds the experts through the last reached one.
    assert experts_reached(tokens, k, experts, POWER_LAW) == int(np.flatnonzero(loads)[-1]) + 1


@pytest.mark.parametrize(("tokens", "k", "experts"), CASES)
def test_each_ep_share_is_the_busiest_ranks_expectation(tokens, k, experts):
    """Every ep-th expert (the devices' shares device_routing takes) holds the collector's busiest rank's expected
    experts and rows, within rounding and the nesting of the shares; skew never lightens the busiest device below
    balanced routing's (the busiest rank holds at least the mean)."""
    ep = 1
    while experts % ep == 0:
        touched, rows = device_routing(tokens, k, experts, experts // ep, POWER_LAW)
        want_touched, want_rows = routed_on_rank0(tokens, k, experts, ep, POWER_LAW_DEFAULT)
        assert abs(rows - want_rows) <= max(1.0, 0.02 * want_rows), (ep, rows, want_rows)
        assert abs(touched - want_touched) <= max(1.5, 0.05 * want_touched), (ep, touched, want_touched)
        balanced = np.array(balanced_expert_load(tokens, k, experts))[::ep]
        assert rows >= balanced.sum() - 1
        ep *= 2


def test_power_law_expert_load_is_the_registrys():
    assert expert_load(POWER_LAW, 32, 8, 256) == power_law_expert_load(32, 8, 256)


def test_a_tokens_top_2_without_replacement_picks_each_expert_with_its_hand_worked_chance():
    """Weights 0.4, 0.2, 0.1, 0.1, 0.05 x 4, a token's 2 experts drawn without replacement by weight: expert i is
    picked first with chance w_i or second after j with w_j w_i / (1 - w_j), 0.673099, 0.419883, 0.223830 and
    0.114839 by hand (tests/sim/test_offload.py HAND_POPULARITY); the estimate over 262,144 tokens has a standard
    error under 0.001 (twice each weight, 0.8 for the first, would fail)."""
    weights = np.array([0.4, 0.2, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05])
    chances = topk_marginals(weights, 2, np.random.default_rng(7), 2 ** 18)
    want = [0.673099, 0.419883, 0.223830, 0.223830, 0.114839, 0.114839, 0.114839, 0.114839]
    assert chances == pytest.approx(want, abs=0.004)
    assert chances.sum() == pytest.approx(2.0)


@pytest.mark.parametrize("k, experts", [(2, 8), (1, 16), (4, 32), (8, 256)])
def test_the_power_law_popularity_is_a_tokens_k_picks_most_popular_first(k, experts):
    """Each expert's chance of being among a token's k: they sum to k, none exceeds 1, they fall from the most
    popular, and the most popular is picked more often than under no preference (k / E)."""
    popularity = np.array(power_law_popularity(k, experts))
    assert popularity.sum() == pytest.approx(k) and (popularity <= 1.0).all() and (popularity > 0).all()
    assert (np.diff(popularity) <= 0).all()
    assert popularity[0] > k / experts


def test_a_step_reaches_an_expert_unless_every_token_passes_it_by():
    """A step of T tokens routed one by one reaches an expert of chance p with 1 - (1 - p)^T: p itself at one token,
    0.75 at two tokens of 0.5, 1 at a chance of 1, 0 at a chance of 0."""
    assert reach_chances((0.5, 1.0, 0.0, 0.25), 1) == pytest.approx((0.5, 1.0, 0.0, 0.25))
    assert reach_chances((0.5, 1.0, 0.0, 0.25), 2) == pytest.approx((0.75, 1.0, 0.0, 0.4375))
