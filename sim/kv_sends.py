"""The KV a prefill engine has handed over, which the decode side reads from its blocks (vLLM v1, NIXL connector).

Under a scheduler that holds a handed-over request's blocks until its KV is sent (Scheduler.holds_until_sent), the
engine keeps them, not evictable, and frees them once it notices that the decode side has read them. It notices at a
poll: NIXL's worker learns of finished reads in get_finished (nixl_connector.py, commit 002a1057 of
vllm-project/vllm), which the model runner calls in each engine step, one without a forward pass too
(kv_connector_no_forward), and the scheduler frees the blocks as it processes that step's output
(_update_from_kv_xfer_finished, at the end of update_from_output: vllm/v1/core/sched/scheduler.py, commit 00024d31).
The engine steps only while its scheduler has requests (EngineCore.step returns at once unless
scheduler.has_requests(); run_busy_loop blocks on its input queue while it has no work: vllm/v1/engine/core.py,
commit 00080ee1), and a request whose blocks are held for a send is neither waiting nor running, so an engine holding
nothing else parks: the reads it has not yet noticed free their blocks at the end of its first step once a request
arrives. An engine holding requests it cannot batch steps without a forward pass, sleeping 1 ms between steps
(_process_engine_step), so it notices a read, or an expiry, within a millisecond: modeled as at once.

An unread send's blocks expire ABORT_TIMEOUT_S after its request finished (NIXL's request_finished sets the deadline;
get_finished frees the blocks of each send past it, "Releasing expired KV blocks"); the decode side still reads them
when it comes to (its read succeeds, the blocks may hold another request's KV by then: the prefill engine logs
"Potentially invalid KV blocks ... They may have expired"), so its timing is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.schedulers import Sequence

# VLLM_NIXL_ABORT_REQUEST_TIMEOUT's default (vllm/envs.py): seconds a prefill engine holds an unread send's blocks.
ABORT_TIMEOUT_S = 480.0


@dataclass
class Send:
    """A handed-over request whose KV the decode side reads from its prefill engine's blocks."""

    seq: Sequence
    expires_s: float  # when its blocks are freed unread (ABORT_TIMEOUT_S after its request finished)
    read: bool = False  # the decode side has read its KV
    held: bool = True  # its blocks are held (not yet freed)


class KVSends:
    """An engine's sends, from its hand-over of a request until the decode side has read its KV and the engine has
    freed the blocks it held for it."""

    def __init__(self) -> None:
        self.sends: dict[int, Send] = {}  # by request index
        self.last_read_s = -math.inf  # when the decode side last finished reading one

    def hand_over(self, seq: Sequence, now_s: float) -> None:
        """`seq`'s request finished here at `now_s`: its blocks are held for the decode side to read."""
        self.sends[seq.index] = Send(seq, now_s + ABORT_TIMEOUT_S)

    def read(self, seq: Sequence, now_s: float) -> None:
        """The decode side has read `seq`'s KV at `now_s`; the engine frees its blocks at its next poll."""
        send = self.sends[seq.index]
        send.read = True
        self.last_read_s = now_s
        if not send.held:  # expired before: nothing left to free
            del self.sends[seq.index]

    def poll(self, now_s: float) -> list[Sequence]:
        """The sequences whose blocks the engine frees at a poll at `now_s`: those read, and those unread past their
        deadline (NIXL's get_finished reports both done sending)."""
        freed = [send for send in self.sends.values() if send.held and (send.read or send.expires_s <= now_s)]
        for send in freed:
            send.held = False
            if send.read:
                del self.sends[send.seq.index]
        return [send.seq for send in freed]

    @property
    def unread(self) -> bool:
        """Whether the decode side has yet to read a send's KV from the engine's memory (its replica is needed)."""
        return any(not send.read for send in self.sends.values())

    @property
    def holding(self) -> bool:
        """Whether an unread send holds blocks (a read or an expiry will free them)."""
        return any(send.held and not send.read for send in self.sends.values())

    def next_expiry_s(self) -> float:
        """When the blocks of the first unread send still held expire (inf: none)."""
        return min((send.expires_s for send in self.sends.values() if send.held and not send.read), default=math.inf)
