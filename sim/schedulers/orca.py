"""Orca-style iteration-level scheduling: new requests join the running batch at every iteration."""

from __future__ import annotations

from sim.schedulers.base import Batch, EngineState, Scheduler, SchedulerLimits, Sequence


class OrcaScheduler(Scheduler):
    """Each iteration decodes every running sequence and, in the same iteration, prefills whole the waiting
    prompts that fit in max_seqs and the token limit (selective batching, Yu et al., OSDI 2022). Admission
    holds the KV of the whole request, as Orca reserves a request's maximum length, so nothing is preempted
    (the simulator knows each output length; Orca reserves the maximum, so this is its best case).

    With limits.max_decode_preemptions set, new prompts preempt running decodes as splitwise-sim's baseline machines
    do (github.com/Mutinifni/splitwise-sim @ 378088013a54df6f2052c27ff5ae6ea7619c3ecc, instance.py
    SplitwiseInstance.select_batch; configs/start_state/baseline.yaml: max_batch_tokens 2048, max_preemptions 4):
    an iteration holds at most a token budget (prompt_batch_tokens, else max_batched_tokens) of prompt tokens and
    decodes, one token each. Decodes that have sat out max_decode_preemptions iterations go first, then waiting
    prompts (FCFS, a longer one alone), then the decodes that sat out the last iteration (in the order they did),
    then the other running ones (in admission order); those past the budget sit out this iteration, their KV kept
    (SplitwiseInstance.preempt_task frees no memory), and each iteration sat out counts as a preemption
    (ORCAInstance.start_iteration counts every iteration a task waits in num_preemptions). Unlike splitwise-sim, whose
    over-preempted tasks go first only while they lead its pending queue (sorted by preemptions when queued, then
    arrival), a decode here is never made to sit out more than max_decode_preemptions iterations; and those decodes
    count against max_batched_tokens but not against the prompts' share of the budget.
    """

    name = "orca"
    reserves_whole_request = True
    prompts_beside_decodes = True

    def __init__(self, limits: SchedulerLimits):
        super().__init__(limits)
        self._sat_out: list[Sequence] = []  # decodes that sat out the last iteration, in the order they did

    def schedule(self, state: EngineState) -> Batch:
        if self.limits.max_decode_preemptions is not None:
            return self._schedule_preempting(state)
        batch = Batch(decodes=list(state.running))
        admitted_from = len(state.running)
        self._prefill_whole(state, batch, len(batch.decodes), whole_request=True)
        # Sequences a prefill pool handed over have their first token: they join this iteration's decodes.
        batch.decodes += [seq for seq in state.running[admitted_from:] if not seq.in_prefill]
        return batch

    def going_first(self, running: list[Sequence]) -> list[Sequence]:
        """With max_decode_preemptions set, the decodes that have sat out that many iterations go first."""
        cap = self.limits.max_decode_preemptions
        return [] if cap is None else [seq for seq in running if seq.preemptions >= cap]

    def prompt_budget(self, decode_tokens: int, overdue: int = 0) -> int:
        """With max_decode_preemptions set, prompts take the budget (prompt_batch_tokens, else max_batched_tokens)
        before the decodes but the `overdue` ones, within max_batched_tokens with those; unset, what the decodes leave
        of max_batched_tokens, at most prompt_batch_tokens (Scheduler.prompt_budget)."""
        if self.limits.max_decode_preemptions is None:
            return super().prompt_budget(decode_tokens)
        return min(self._budget(), self.limits.max_batched_tokens - overdue)

    def prompt_alone(self, decode_tokens: int, overdue: int = 0) -> int:
        """With max_decode_preemptions set, a prompt longer than the budget runs alone beside the `overdue` decodes,
        within max_batched_tokens with those; unset, within what every decode leaves (Scheduler.prompt_alone)."""
        if self.limits.max_decode_preemptions is None:
            return super().prompt_alone(decode_tokens)
        return self.limits.max_batched_tokens - overdue

    def decodes_beside(self, held: int, prompt_tokens: int, overdue: int = 0) -> int:
        """With max_decode_preemptions set, the `overdue` decodes and as many others as the budget has room for past
        them and the prompts, one token each; unset, every one."""
        if self.limits.max_decode_preemptions is None:
            return held
        return overdue + min(held - overdue, max(0, self._budget() - overdue - prompt_tokens))

    def _budget(self) -> int:
        return self.limits.prompt_batch_tokens or self.limits.max_batched_tokens

    def _schedule_preempting(self, state: EngineState) -> Batch:
        overdue = self.going_first(state.running)
        batch = Batch(decodes=overdue)
        self._prefill_whole(state, batch, len(overdue), whole_request=True)
        prompts = {seq.index for seq, _ in batch.prefills}
        skip = prompts | {seq.index for seq in overdue}
        running = {seq.index for seq in state.running}
        waited = [seq for seq in self._sat_out if seq.index in running and seq.index not in skip]
        skip |= {seq.index for seq in waited}
        candidates = waited + [seq for seq in state.running if seq.index not in skip]
        room = self.decodes_beside(len(overdue) + len(candidates), batch.prefill_tokens, len(overdue)) - len(overdue)
        batch.decodes = overdue + candidates[:room]
        self._sat_out = candidates[room:]
        for seq in self._sat_out:
            seq.preemptions += 1
        return batch
