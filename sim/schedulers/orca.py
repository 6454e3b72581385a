"""Orca-style iteration-level scheduling: new requests join the running batch at every iteration."""

from __future__ import annotations

from sim.schedulers.base import Batch, EngineState, Scheduler


class OrcaScheduler(Scheduler):
    """Each iteration decodes every running sequence and, in the same iteration, prefills whole the waiting
    prompts that fit in max_seqs and the token limit (selective batching, Yu et al., OSDI 2022). Admission
    holds the KV of the whole request, as Orca reserves a request's maximum length, so nothing is preempted
    (the simulator knows each output length; Orca reserves the maximum, so this is its best case)."""

    name = "orca"
    reserves_whole_request = True

    def schedule(self, state: EngineState) -> Batch:
        batch = Batch(decodes=list(state.running))
        tokens = len(batch.decodes)
        while state.waiting and len(state.running) < self.limits.max_seqs:
            seq = state.waiting[0]
            if tokens + seq.remaining_prefill > self.limits.max_batched_tokens:
                break
            if not self._admit(state, seq, seq.final_tokens):
                break
            batch.prefills.append((seq, seq.remaining_prefill))
            tokens += seq.remaining_prefill
        return batch
