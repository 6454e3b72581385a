"""What the gateway does with a request arriving while every replica it may join is busy: reject it (load shedding,
as NVIDIA Dynamo's frontend does: its request-rejection design document; HTTP 503, its client to retry later), or hold
it at the gateway until a replica is not (llm-d's flow control: the Gateway API Inference Extension's saturation
detector and flow-control queues), the most urgent first (the lowest priority, each level apart), in arrival order
within a priority. A replica is busy while the share of its KV blocks in use is over `kv_usage`, the prompt tokens it
has still to prefill are over `prefill_tokens` (Dynamo's thresholds), or the requests waiting on it are over
`waiting_requests` (the saturation detector's queue depth); an arrival that finds some replica free joins one of the
free ones. A request handed from a prefill pool to a decode pool, or a conversation's later turn going to the replica
that served it, is never held or rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.replica import Replica


@dataclass(frozen=True, kw_only=True)
class Admission:
    """Busy thresholds (None: not read): a share of a replica's KV blocks in use, its prompt tokens to prefill, its
    requests waiting; and whether a request finding every replica busy waits at the gateway (`hold`) or is rejected."""

    kv_usage: float | None = None
    prefill_tokens: int | None = None
    waiting_requests: int | None = None
    hold: bool = False

    def __post_init__(self) -> None:
        if self.kv_usage is None and self.prefill_tokens is None and self.waiting_requests is None:
            raise ValueError("found no threshold, allowed: kv_usage, prefill_tokens, waiting_requests")
        if self.kv_usage is not None and not 0.0 < self.kv_usage <= 1.0:
            raise ValueError(f"kv_usage: found {self.kv_usage}, allowed: a share of the KV blocks in (0, 1]")
        for name, value in (("prefill_tokens", self.prefill_tokens), ("waiting_requests", self.waiting_requests)):
            if value is not None and value < 0:
                raise ValueError(f"{name}: found {value}, allowed: a count >= 0")

    def busy(self, replica: Replica) -> bool:
        """Whether `replica` is over any threshold."""
        state = replica.state
        kv = state.kv
        if self.kv_usage is not None and kv.in_use_blocks > self.kv_usage * kv.capacity_blocks:
            return True
        if self.waiting_requests is not None and len(state.waiting) > self.waiting_requests:
            return True
        if self.prefill_tokens is None:
            return False
        prefill = sum(seq.remaining_prefill for queue in (state.running, state.waiting, state.swapped) for seq in queue
                      if seq.in_prefill)
        return prefill > self.prefill_tokens

    def free(self, replicas: list[Replica]) -> list[Replica]:
        """The replicas of `replicas` that are not busy."""
        return [replica for replica in replicas if not self.busy(replica)]
