"""Which experts aiconfigurator's measured MoE layers routed their tokens to: a replay of its collector's routing.

The collector (aiconfigurator, collector/vllm/collect_moe.py with collector/helper.py) does not route by a
router: it builds the top-k expert ids of every token itself, in one of two ways, and times vLLM's
`fused_experts` on them with the experts of EP rank 0 (experts 0 .. E/ep - 1, vLLM's `determine_expert_map`):

- balanced (`balanced_logits`): with stride = ceil(E / k), token t takes experts (t + i x stride) mod E for
  i < k when tokens >= stride, else floor(t x stride / tokens + i x stride) mod E: every expert gets
  tokens x k / E rows, or tokens x k distinct experts one row each when there are fewer rows than experts;
- power_law_<alpha> (`_generate_power_law_distribution`): each expert's load is drawn from a power law of
  exponent alpha by inverse CDF, x = ((x_max^(1-a) - x_min^(1-a)) u + x_min^(1-a))^(1/(1-a)) with u uniform,
  x_min 1 and x_max 0.8 x tokens (x_min 0.01 and x_max 2 when tokens x k <= E), scaled to tokens x k rows and
  rounded (the rounding remainder added to the largest, or taken from the smallest); the EP group of E/ep
  consecutive experts with the most rows is swapped to rank 0. A measurement averages 5 such draws (one per
  call, five calls per timed graph).

From the replayed loads of rank 0's experts a row keeps what the cost model needs: the experts touched and
the rows routed, averaged over draws for the power law (DRAWS draws from a generator seeded by the row's
shape: the same table always gives the same numbers).
"""

from __future__ import annotations

import functools
import hashlib
import math

import numpy as np

BALANCED = "balanced"
POWER_LAW = "power_law_"
# Draws averaged per power-law shape: the collector times 5; more make the expectation steadier (at 64 draws
# the touched-expert count of a 256-expert layer moves by under 1% between seeds).
DRAWS = 64


def routing_names_ok(routing: str) -> bool:
    """Whether `routing` is a routing the replay knows: 'balanced' or 'power_law_<alpha>' with alpha > 1."""
    if routing == BALANCED:
        return True
    try:
        return routing.startswith(POWER_LAW) and float(routing.removeprefix(POWER_LAW)) > 1.0
    except ValueError:
        return False


def _balanced_loads(tokens: int, topk: int, experts: int) -> np.ndarray:
    """Rows per expert of the collector's balanced_logits (duplicate ids of a token counted as drawn)."""
    stride = math.ceil(experts / topk)
    t = np.arange(tokens, dtype=float)[:, None]
    i = np.arange(topk, dtype=float)[None, :]
    ids = (t + i * stride) if tokens >= stride else np.floor(t * stride / tokens + i * stride)
    return np.bincount((ids.astype(np.int64) % experts).ravel(), minlength=experts)


def _power_law_loads(tokens: int, topk: int, experts: int, ep: int, alpha: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Rows per expert of one draw of the collector's _generate_power_law_distribution, max-load group first."""
    x_min, x_max = (1.0, tokens * 0.8) if tokens * topk > experts else (0.01, 2.0)
    u = rng.random(experts)
    a = 1.0 - alpha
    sample = ((x_max ** a - x_min ** a) * u + x_min ** a) ** (1.0 / a)
    target = tokens * topk
    loads = np.round(sample / sample.sum() * target).astype(np.int64)
    delta = target - int(loads.sum())
    order = np.argsort(-loads, kind="stable")
    if delta > 0:
        np.add.at(loads, order[np.arange(delta) % experts], 1)
    for j in range(-delta):  # too many rows: take them from the smallest loads that have one
        e = order[-(j % experts) - 1]
        loads[e if loads[e] > 0 else int(np.argmax(loads))] -= 1
    groups = loads.reshape(ep, experts // ep)
    top = int(np.argmax(groups.sum(axis=1)))
    groups[[0, top]] = groups[[top, 0]]
    return groups.ravel()


@functools.lru_cache(maxsize=65536)
def routed_on_rank0(tokens: int, topk: int, experts: int, ep: int, routing: str) -> tuple[float, float]:
    """(touched experts, routed rows) of EP rank 0 (experts 0 .. experts/ep - 1) under the collector's routing,
    averaged over DRAWS draws for a power law."""
    held = experts // ep
    if routing == BALANCED:
        local = _balanced_loads(tokens, topk, experts)[:held]
        return float((local > 0).sum()), float(local.sum())
    alpha = float(routing.removeprefix(POWER_LAW))
    seed = int.from_bytes(hashlib.sha256(f"{tokens}:{topk}:{experts}:{ep}:{routing}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    draws = np.array([_power_law_loads(tokens, topk, experts, ep, alpha, rng)[:held] for _ in range(DRAWS)])
    return float((draws > 0).sum(axis=1).mean()), float(draws.sum(axis=1).mean())
