"""Static batching: a batch is formed when the replica is idle and runs until its last request finishes."""

from __future__ import annotations

from sim.schedulers.base import Batch, EngineState, Scheduler


class StaticScheduler(Scheduler):
    """Up to max_seqs waiting requests start together: one prefill of all their prompts, then decode steps
    until the last finishes. Finished requests leave the decode batch, but no request joins until the
    batch is done (as with a generate() call per batch). Admission holds each request's whole KV."""

    name = "static"
    reserves_whole_request = True

    def schedule(self, state: EngineState) -> Batch:
        if state.running:
            return Batch(decodes=list(state.running))
        batch = Batch()
        self._prefill_whole(state, batch, 0, whole_request=True)
        if not batch.prefills:  # only sequences a prefill pool handed over: they start decoding as a batch
            batch.decodes = list(state.running)
        return batch
