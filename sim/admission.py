"""What the gateway does with a request arriving while every replica it may join is busy: reject it (load shedding,
as NVIDIA Dynamo's frontend does: its request-rejection design document; HTTP 503, its client to retry later), or hold
it at the gateway until a replica is not (llm-d's flow control: the Gateway API Inference Extension's saturation
detector and flow-control queues), the most urgent first (the lowest priority, each level apart), in arrival order
within a priority. A replica is busy while the share of its KV blocks in use is over `kv_usage`, the prompt tokens it
has still to prefill are over `prefill_tokens` (Dynamo's thresholds), or the requests waiting on it are over
`waiting_requests` (the saturation detector's queue depth); an arrival that finds some replica free joins one of the
free ones. A request handed from a prefill pool to a decode pool, or a conversation's later turn going to the replica
that served it, is never held or rejected.

A rejected request's client may retry it (`retries`), as OpenAI's Python client retries an HTTP 503: the n-th retry
(from 0) comes min(retry_s x 2^n, 8 s) x (1 - 0.25 u) after the rejection, u uniform in [0, 1) (openai-python
_base_client.py `_calculate_retry_timeout`; _constants.py: INITIAL_RETRY_DELAY 0.5 s, MAX_RETRY_DELAY 8 s,
DEFAULT_MAX_RETRIES 2). A retried request keeps its first arrival, so its wait counts in its TTFT; it is rejected for
good when its last retry is.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.replica import Replica

# OpenAI's Python client (openai-python src/openai/_constants.py): the first retry's delay and the most any waits.
CLIENT_RETRY_S = 0.5
MAX_RETRY_DELAY_S = 8.0


@dataclass(frozen=True, kw_only=True)
class Admission:
    """Busy thresholds (None: not read): a share of a replica's KV blocks in use, its prompt tokens to prefill, its
    requests waiting; whether a request finding every replica busy waits at the gateway (`hold`) or is rejected; and
    how many times a rejected request's client retries it, the first after `retry_s`."""

    kv_usage: float | None = None
    prefill_tokens: int | None = None
    waiting_requests: int | None = None
    hold: bool = False
    retries: int = 0
    retry_s: float = CLIENT_RETRY_S

    def __post_init__(self) -> None:
        if self.kv_usage is None and self.prefill_tokens is None and self.waiting_requests is None:
            raise ValueError("found no threshold, allowed: kv_usage, prefill_tokens, waiting_requests")
        if self.kv_usage is not None and not 0.0 < self.kv_usage <= 1.0:
            raise ValueError(f"kv_usage: found {self.kv_usage}, allowed: a share of the KV blocks in (0, 1]")
        for name, value in (("prefill_tokens", self.prefill_tokens), ("waiting_requests", self.waiting_requests)):
            if value is not None and value < 0:
                raise ValueError(f"{name}: found {value}, allowed: a count >= 0")
        if self.retries < 0:
            raise ValueError(f"retries: found {self.retries}, allowed: a count >= 0")
        if self.retries and self.hold:
            raise ValueError(f"retries: found {self.retries} with hold, allowed: 0 (a gateway that holds requests "
                             f"rejects none)")
        if not self.retry_s > 0.0:
            raise ValueError(f"retry_s: found {self.retry_s}, allowed: seconds > 0")

    def retry_delay_s(self, retry: int, draw: float) -> float:
        """How long after its rejection a client retries a request for the `retry`-th time (from 0), `draw` uniform in
        [0, 1): exponential backoff capped at MAX_RETRY_DELAY_S, less up to a quarter of it as jitter."""
        return min(self.retry_s * 2.0 ** retry, MAX_RETRY_DELAY_S) * (1.0 - 0.25 * draw)

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
