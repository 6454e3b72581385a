"""Power-law routing skew: the rows each expert gets in one draw of aiconfigurator's power-law routing.

aiconfigurator's collector times its power-law MoE rows on routings it draws itself (collector/helper.py
_generate_power_law_distribution, ai-dynamo/aiconfigurator at 006afd781a07), and its estimates of serving use the
same skew. One draw:

1. each expert's weight x is drawn from a power law of exponent alpha by inverse CDF,
   x = ((x_max^(1-a) - x_min^(1-a)) u + x_min^(1-a))^(1/(1-a)), u uniform: x_min 1 and x_max 0.8 x tokens when
   tokens x k > E, else x_min 0.01 and x_max 2;
2. the weights are scaled to tokens x k rows and rounded (half to even, torch.round), and each expert capped at
   `tokens` rows (a token picks an expert once), the rows cut off handed out again;
3. rows handed out or taken back go round-robin over the EP ranks (E / ep consecutive experts each), one a rank in
   turn (_round_robin_adjust_per_rank): within a rank to its least loaded expert under the cap, or taken from its most
   loaded one. When tokens x k rows are fewer than the experts, every weight rounds to zero and step 3 places all of
   them: ceil(tokens x k / ep) one-row experts on the first ranks, as balanced routing spreads them;
4. the rank with the most rows (the first such) swaps its experts with rank 0's.

A rank's experts are interchangeable to the kernel (each whole, with its rows), so a draw is kept as each rank's
loads in ascending order; steps 2-3 move whole levels of loads as the one-row-at-a-time loop does.

Each draw draws new weights, so no expert identity is popular from one step to the next. Where identities matter (a
device holding fixed experts, sim/offload.py), power_law_popularity keeps the draws' weights on fixed experts and
routes each token by them.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

POWER_LAW_PREFIX = "power_law_"
# The weights' bounds (x_min, x_max) of a draw whose rows (tokens x k) are no more than the experts.
FEW_ROWS_BOUNDS = (0.01, 2.0)
# Draws averaged per shape: the collector times 5 a row; more make the expectation steadier (at 64 draws the touched
# expert count of a 256-expert layer moves by under 1% between seeds).
DRAWS = 64


def power_law_alpha(routing: str) -> float | None:
    """The exponent of a 'power_law_<alpha>' routing name with alpha > 1 (the inverse CDF needs alpha != 1), else
    None."""
    if not routing.startswith(POWER_LAW_PREFIX):
        return None
    try:
        alpha = float(routing.removeprefix(POWER_LAW_PREFIX))
    except ValueError:
        return None
    return alpha if alpha > 1.0 else None


def _round_robin(capacity: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """Rows each rank gets (per draw: capacity [draws, ep], remaining [draws]) when `remaining` rows go round-robin,
    one a rank in rank order, to the ranks with room: q whole rounds, where sum(min(capacity, q)) <= remaining, then
    one each to the first ranks with room left."""
    ranks = capacity.shape[1]
    cs = np.sort(capacity, axis=1)
    below = np.concatenate([np.zeros((len(cs), 1), dtype=cs.dtype), np.cumsum(cs, axis=1)], axis=1)
    # Rows given when every rank is filled to the j-th smallest capacity: nondecreasing in j.
    given_at = below[:, :-1] + cs * (ranks - np.arange(ranks))
    j = (given_at <= remaining[:, None]).sum(axis=1)  # capacities filled whole
    open_ranks = np.maximum(ranks - j, 1)
    floor = np.where(j > 0, cs[np.arange(len(cs)), np.maximum(j - 1, 0)], 0)
    given = below[np.arange(len(cs)), j] + floor * (ranks - j)
    q = np.where(j < ranks, floor + (remaining - given) // open_ranks, cs[:, -1])
    share = np.minimum(capacity, q[:, None])
    left = remaining - share.sum(axis=1)
    room = capacity > q[:, None]
    share += room & (np.cumsum(room, axis=1) <= left[:, None])
    return share


def _raise(rows: np.ndarray, add: np.ndarray) -> np.ndarray:
    """Loads (rows of ascending loads, any leading shape) after `add` single rows go to a row's least loaded expert in
    turn (water filling; the rows given never exceed the room under the cap, so no load passes it)."""
    prefix = np.cumsum(rows, axis=-1)
    cost = np.arange(1, rows.shape[-1] + 1) * rows - prefix  # rows to lift the k lowest to the k-th's level
    k = (cost <= add[..., None]).sum(axis=-1)
    level, extra = np.divmod(add + np.take_along_axis(prefix, k[..., None] - 1, axis=-1)[..., 0], k)
    col = np.arange(rows.shape[-1])
    # The last `extra` of the lifted ones one higher, so that the loads stay ascending.
    lifted = level[..., None] + (col >= (k - extra)[..., None])
    return np.where(col < k[..., None], lifted, rows)


def _lower(rows: np.ndarray, take: np.ndarray) -> np.ndarray:
    """Loads (rows of ascending loads) after `take` single rows are taken from a row's most loaded expert in turn."""
    return -_raise(-rows[..., ::-1], take)[..., ::-1]


def _seeded(shape: str) -> np.random.Generator:
    """A generator seeded by a shape's description: the same shape always gives the same draws."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256(shape.encode()).digest()[:8], "little"))


def _power_law_weights(bounds: tuple[float, float], alpha: float, rng: np.random.Generator, draws: int,
                       experts: int) -> np.ndarray:
    """Step 1 of a draw: each expert's weight, [draws, experts], by inverse CDF of the power law of exponent `alpha`
    on bounds (x_min, x_max)."""
    (x_min, x_max), a = bounds, 1.0 - alpha
    return ((x_max ** a - x_min ** a) * rng.random((draws, experts)) + x_min ** a) ** (1.0 / a)


def power_law_ranks(tokens: int, topk: int, experts: int, ep: int, alpha: float, rng: np.random.Generator,
                    draws: int = 1) -> np.ndarray:
    """`draws` draws of the collector's power-law routing: rows per expert as [draws, ep, experts / ep], each rank's
    loads ascending, the busiest rank first (module docstring)."""
    bounds = (1.0, tokens * 0.8) if tokens * topk > experts else FEW_ROWS_BOUNDS
    sample = _power_law_weights(bounds, alpha, rng, draws, experts)
    target = tokens * topk
    loads = np.round(sample / sample.sum(axis=1, keepdims=True) * target).astype(np.int64)
    overflow = np.maximum(loads - tokens, 0).sum(axis=1)
    rows = np.sort(np.minimum(loads, tokens).reshape(draws, ep, experts // ep), axis=2)
    room = tokens * rows.shape[2] - rows.sum(axis=2)
    rows = _raise(rows, _round_robin(room, overflow))
    delta = target - rows.sum(axis=(1, 2))
    room = tokens * rows.shape[2] - rows.sum(axis=2)
    rows = _raise(rows, _round_robin(room, np.maximum(delta, 0)))
    rows = _lower(rows, _round_robin(rows.sum(axis=2), np.maximum(-delta, 0)))
    top = np.argmax(rows.sum(axis=2), axis=1)
    d = np.arange(draws)
    rows[d, 0], rows[d, top] = rows[d, top].copy(), rows[d, 0].copy()
    return rows


def power_law_draws(tokens: int, topk: int, experts: int, ep: int, routing: str) -> np.ndarray:
    """DRAWS draws of power_law_ranks, [DRAWS, ep, experts / ep], from a generator seeded by the shape: the same
    shape always gives the same draws."""
    rng = _seeded(f"{tokens}:{topk}:{experts}:{ep}:{routing}")
    return power_law_ranks(tokens, topk, experts, ep, power_law_alpha(routing), rng, DRAWS)


# The skew aiconfigurator estimates serving with: its models' workload_distribution 'power_law' (sdk ModelConfig's
# default) at alpha 1.01 (each MoE model's _power_law_alpha), looked up as its 'power_law_1.01' measurements.
POWER_LAW_DEFAULT = f"{POWER_LAW_PREFIX}1.01"


def topk_marginals(weights: np.ndarray, topk: int, rng: np.random.Generator, tokens: int) -> np.ndarray:
    """Each expert's chance of being among a token's `topk` experts when the token picks them without replacement,
    each pick in proportion to the weights left (Plackett-Luce), estimated over `tokens` tokens: a token's experts are
    the topk largest log-weights plus Gumbel noise, which samples exactly that (Kool et al., "Stochastic Beams and
    Where to Find Them: The Gumbel-Top-k Trick for Sampling Sequences Without Replacement", ICML 2019)."""
    keys = np.log(weights) + rng.gumbel(size=(tokens, len(weights)))
    picked = np.argpartition(-keys, topk - 1, axis=1)[:, :topk]
    return np.bincount(picked.ravel(), minlength=len(weights)) / tokens


# Gumbel keys drawn for a popularity: 2^21 / experts tokens (262,144 of 8 experts, 8,192 of 256), so that each
# chance's standard error stays under 0.005.
PROFILE_FLOATS = 2 ** 21


@functools.lru_cache(maxsize=256)
def power_law_popularity(topk: int, experts: int, routing: str = POWER_LAW_DEFAULT) -> tuple[float, ...]:
    """Each of a layer's experts' chance of being among a token's topk, the most popular first, where the experts'
    identities keep their power-law weights from step to step: the weights are the draws' (step 1, at the bounds a
    draw of few rows takes, FEW_ROWS_BOUNDS, the one range that does not scale with a step's tokens), each draw's
    sorted and scaled to sum to 1, in expectation over DRAWS draws; a token picks its topk of them without
    replacement by weight (topk_marginals). The chances sum to topk; none exceeds 1."""
    rng = _seeded(f"popularity:{topk}:{experts}:{routing}")
    draws = _power_law_weights(FEW_ROWS_BOUNDS, power_law_alpha(routing), rng, DRAWS, experts)
    ranked = -np.sort(-draws / draws.sum(axis=1, keepdims=True), axis=1)
    chances = topk_marginals(ranked.mean(axis=0), topk, rng, PROFILE_FLOATS // experts)
    return tuple(np.sort(chances)[::-1].tolist())  # the estimate's noise can swap near-equal neighbours


def reach_chances(popularity: tuple[float, ...], tokens: float) -> tuple[float, ...]:
    """Each expert's chance that a step of `tokens` tokens, each routed on its own by `popularity` (each expert's
    chance of being among a token's experts), reaches it: 1 - (1 - p)^tokens."""
    return tuple((1.0 - (1.0 - np.asarray(popularity)) ** tokens).tolist())


def _expert_parallel_sizes(experts: int) -> list[int]:
    """The EP sizes 1, 2, 4, ... that divide `experts`: each one's devices hold every ep-th expert of a fill order,
    and each's experts are a subset of the last's."""
    sizes = [1]
    while experts % (sizes[-1] * 2) == 0:
        sizes.append(sizes[-1] * 2)
    return sizes


@functools.lru_cache(maxsize=4096)
def _nested_loads(tokens: int, topk: int, experts: int, routing: str) -> tuple[int, ...]:
    """power_law_expert_load's loads, found once a shape."""
    loads = np.zeros(experts, dtype=np.int64)
    total = tokens * topk
    if total == 0:
        return tuple(loads.tolist())
    touched = rows = 0
    sizes = _expert_parallel_sizes(experts)
    for ep in reversed(sizes):
        rank0 = power_law_draws(tokens, topk, experts, ep, routing)[:, 0]
        want_touched = round(float((rank0 > 0).sum(axis=1).mean()))
        want_rows = total if ep == 1 else round(float(rank0.sum(axis=1).mean()))
        places = np.arange(0, experts, ep)
        if ep != sizes[-1]:
            places = places[places % (2 * ep) != 0]  # the finer sizes' experts hold their loads already
        new_rows = min(max(want_rows - rows, 0), total - rows)
        new_touched = min(max(want_touched - touched, 1 if new_rows else 0, -(-new_rows // tokens)), len(places),
                          new_rows)
        if new_touched:
            base, extra = divmod(new_rows, new_touched)
            loads[places[:new_touched]] = base + (np.arange(new_touched) < extra)
        touched, rows = touched + new_touched, rows + new_rows
    return tuple(loads.tolist())


def power_law_expert_load(tokens: int, experts_per_token: int, num_experts: int) -> list[int]:
    """Tokens routed to each expert under aiconfigurator's power-law skew (POWER_LAW_DEFAULT), in expectation over
    power_law_draws: laid out so that every ep-th expert from the first, for each EP size ep = 1, 2, 4, ... dividing
    the experts, holds the busiest EP rank's expected touched experts and rows (rounded to whole experts and rows),
    as expert_parallel_share takes a device's experts; the smaller sizes' shares nest in the larger ones'. Each share
    adds the experts and rows of its size's busiest rank over those of the next finer one, spread evenly."""
    return list(_nested_loads(tokens, experts_per_token, num_experts, POWER_LAW_DEFAULT))
