"""Request rejection (load shedding) at the gateway, as NVIDIA Dynamo's frontend does it (its request-rejection
design document): a replica is busy while the share of its KV blocks in use is over `kv_usage`, or the prompt tokens it
has still to prefill are over `prefill_tokens`; a request arriving while every replica it may join is busy is rejected
(HTTP 503, its client to retry later), and otherwise joins one of those not busy. A request handed from a prefill pool
to a decode pool, or a conversation's later turn going to the replica that served it, is never rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.replica import Replica


@dataclass(frozen=True, kw_only=True)
class Admission:
    """Busy thresholds (None: not read): a share of a replica's KV blocks in use, and its prompt tokens to prefill."""

    kv_usage: float | None = None
    prefill_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.kv_usage is None and self.prefill_tokens is None:
            raise ValueError("found no threshold, allowed: kv_usage, prefill_tokens or both")
        if self.kv_usage is not None and not 0.0 < self.kv_usage <= 1.0:
            raise ValueError(f"kv_usage: found {self.kv_usage}, allowed: a share of the KV blocks in (0, 1]")
        if self.prefill_tokens is not None and self.prefill_tokens < 0:
            raise ValueError(f"prefill_tokens: found {self.prefill_tokens}, allowed: tokens >= 0")

    def busy(self, replica: Replica) -> bool:
        """Whether `replica` is over either threshold."""
        state = replica.state
        kv = state.kv
        if self.kv_usage is not None and kv.in_use_blocks > self.kv_usage * kv.capacity_blocks:
            return True
        if self.prefill_tokens is None:
            return False
        prefill = sum(seq.remaining_prefill for queue in (state.running, state.waiting, state.swapped) for seq in queue
                      if seq.in_prefill)
        return prefill > self.prefill_tokens

    def free(self, replicas: list[Replica]) -> list[Replica]:
        """The replicas of `replicas` that are not busy."""
        return [replica for replica in replicas if not self.busy(replica)]
