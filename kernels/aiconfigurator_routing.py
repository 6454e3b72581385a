"""Which experts aiconfigurator's measured MoE layers routed their tokens to: a replay of its collector's routing.

The collector (aiconfigurator, collector/vllm/collect_moe.py with collector/helper.py) does not route by a
router: it builds the top-k expert ids of every token itself, in one of two ways, and times vLLM's
`fused_experts` on them with the experts of EP rank 0 (experts 0 .. E/ep - 1, vLLM's `determine_expert_map`):

- balanced (`balanced_logits`): with stride = ceil(E / k), token t takes experts (t + i x stride) mod E for
  i < k when tokens >= stride, else floor(t x stride / tokens + i x stride) mod E: every expert gets
  tokens x k / E rows, or tokens x k distinct experts one row each when there are fewer rows than experts;
- power_law_<alpha> (`_generate_power_law_distribution`): each expert's load drawn from a power law of exponent
  alpha, capped at `tokens` rows, the rows rounding leaves or caps cut off handed out round-robin over the EP ranks,
  the busiest rank swapped to rank 0 (workloads/expert_skew.py replays the draw). A measurement averages 5 such draws
  (one per call, five calls per timed graph).

From the replayed loads of rank 0's experts a row keeps what the cost model needs: the experts touched and
the rows routed, averaged over draws for the power law (expert_skew.DRAWS draws from a generator seeded by the row's
shape: the same table always gives the same numbers).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from workloads.expert_skew import power_law_alpha, power_law_draws

BALANCED = "balanced"


def routing_names_ok(routing: str) -> bool:
    """Whether `routing` is a routing the replay knows: 'balanced' or 'power_law_<alpha>' with alpha > 1."""
    return routing == BALANCED or power_law_alpha(routing) is not None


def _balanced_loads(tokens: int, topk: int, experts: int) -> np.ndarray:
    """Rows per expert of the collector's balanced_logits (duplicate ids of a token counted as drawn)."""
    stride = math.ceil(experts / topk)
    t = np.arange(tokens, dtype=float)[:, None]
    i = np.arange(topk, dtype=float)[None, :]
    ids = (t + i * stride) if tokens >= stride else np.floor(t * stride / tokens + i * stride)
    return np.bincount((ids.astype(np.int64) % experts).ravel(), minlength=experts)


@functools.lru_cache(maxsize=65536)
def routed_on_rank0(tokens: int, topk: int, experts: int, ep: int, routing: str) -> tuple[float, float]:
    """(touched experts, routed rows) of EP rank 0 (experts 0 .. experts/ep - 1) under the collector's routing,
    averaged over the draws for a power law."""
    if routing == BALANCED:
        local = _balanced_loads(tokens, topk, experts)[:experts // ep]
        return float((local > 0).sum()), float(local.sum())
    rank0 = power_law_draws(tokens, topk, experts, ep, routing)[:, 0]
    return float((rank0 > 0).sum(axis=1).mean()), float(rank0.sum(axis=1).mean())
