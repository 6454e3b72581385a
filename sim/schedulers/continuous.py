"""Continuous batching as vLLM schedules it without chunked prefill: new prompts first, then decodes."""

from __future__ import annotations

from sim.schedulers.base import Batch, EngineState, Scheduler


class ContinuousScheduler(Scheduler):
    """Each iteration either prefills waiting prompts whole (FCFS, within the token and sequence limits and
    the free KV blocks, less the watermark) or, when none can start, decodes every running sequence, growing
    the KV cache block by block and preempting the newest sequences by recompute when it is full
    (vLLM's default scheduler before chunked prefill)."""

    name = "continuous"

    def schedule(self, state: EngineState) -> Batch:
        batch = Batch()
        self._prefill_whole(state, batch, 0, whole_request=False)
        if batch:
            return batch
        return Batch(decodes=self._grow_decodes(state, list(state.running)))
