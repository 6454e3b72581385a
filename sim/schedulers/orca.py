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
        admitted_from = len(state.running)
        self._prefill_whole(state, batch, len(batch.decodes), whole_request=True)
        # Sequences a prefill pool handed over have their first token: they join this iteration's decodes.
        batch.decodes += [seq for seq in state.running[admitted_from:] if not seq.in_prefill]
        return batch
