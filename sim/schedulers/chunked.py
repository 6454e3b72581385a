"""Chunked prefill with stall-free batching (Sarathi-Serve): decodes piggyback on prefill chunks."""

from __future__ import annotations

from sim.schedulers.base import Batch, EngineState, Scheduler


class ChunkedPrefillScheduler(Scheduler):
    """Each iteration has a budget of chunk_tokens tokens. Running decodes come first (one token each, so a
    long prompt never stalls them), then the prefills already under way, then waiting prompts (FCFS), each
    taking a chunk of what is left of the budget (Agrawal et al., OSDI 2024). KV blocks are held chunk by
    chunk; when they run out, the newest running sequences are preempted by recompute."""

    name = "chunked"
    chunked = True
    prompts_beside_decodes = True

    def schedule(self, state: EngineState) -> Batch:
        # Sequences a prefill pool handed over at the head of the queue join before the decodes are chosen, so they
        # decode in this iteration (as the other schedulers have them do): admitted after, they would sit out an
        # iteration, and in an iteration with nothing else to run the batch would be empty though work is held.
        self._admit_handed_over(state)
        # Decodes take the budget too, one token each, in admission order (vLLM's scheduler takes its running requests
        # so while the token budget lasts): those past it hold their KV and sit out the iteration. Only sequences that
        # joined without a chunk (handed over by a prefill pool, swapped back in) can outnumber the budget.
        decoding = [seq for seq in state.running if not seq.in_prefill][:self.decode_cap()]
        batch = Batch(decodes=self._grow_decodes(state, decoding))
        budget = self.limits.chunk_tokens - len(batch.decodes)
        for seq in [s for s in state.running if s.in_prefill]:
            if budget <= 0:
                break
            chunk = min(seq.remaining_prefill, budget)
            if not state.kv.can_hold(seq.index, seq.computed + chunk):
                break
            state.kv.hold(seq.index, seq.computed + chunk)
            batch.prefills.append((seq, chunk))
            budget -= chunk
        while state.waiting and not state.swapped and budget > 0 and len(state.running) < self.limits.max_seqs:
            seq = self._head(state)
            if not seq.in_prefill:  # handed over behind a prompt (FCFS): it decodes from the next iteration
                if not self._admit(state, seq, seq.computed + 1):
                    break
                continue
            chunk = min(seq.remaining_prefill, budget)
            if not self._admit(state, seq, seq.computed + chunk):
                break
            batch.prefills.append((seq, chunk))
            budget -= chunk
        return batch

    def decode_cap(self) -> int:
        return self.limits.chunk_tokens
