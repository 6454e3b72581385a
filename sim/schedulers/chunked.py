"""Chunked prefill with stall-free batching (Sarathi-Serve): decodes piggyback on prefill chunks."""

from __future__ import annotations

import math

from sim.schedulers.base import Batch, EngineState, Scheduler, Sequence


class ChunkedPrefillScheduler(Scheduler):
    """Each iteration has a budget of chunk_tokens tokens. Running decodes come first (one token each, so a
    long prompt never stalls them), then the prefills already under way, then waiting prompts (FCFS), each
    taking a chunk of what is left of the budget (Agrawal et al., OSDI 2024), at most limits.long_prefill_tokens
    where that is set (vLLM v1's long_prefill_token_threshold: _chunk). KV blocks are held chunk by chunk; when they
    run out, the newest running sequences are preempted by recompute."""

    name = "chunked"
    chunked = True
    prompts_beside_decodes = True
    caches_preempted = True
    allocates_before_pull = True
    holds_until_sent = True

    def schedule(self, state: EngineState) -> Batch:
        preemptions = state.preemptions
        # Decodes take the budget too, in admission order, each the tokens it verifies (decode_tokens): those past it
        # hold their KV and sit out the iteration. Only sequences that joined without a chunk (swapped back in), or
        # speculating ones, can outnumber the budget.
        decoding = [seq for seq in state.running if not seq.in_prefill]
        order = {seq.index: place for place, seq in enumerate(state.running)}
        candidates = decoding[:len(self._fit(state, decoding))]
        kept, stopped = self._grow_decodes_until(state, candidates)
        batch = Batch(decodes=kept)
        # A decode the growing preempted gives its share of the budget back, and the decodes past the budget take it,
        # in order, as vLLM v1 does (vllm/v1/core/sched/scheduler.py schedule(), commit 00024d31: a preempted request
        # already scheduled returns its tokens, "token_budget += num_scheduled_tokens.pop(preempted_req_id)", and the
        # loop over running requests goes on to those after it). Only the priority policy preempts a decode already
        # grown (under fcfs the newest running go first, those past the budget before any it holds). As vLLM's loop,
        # the running requests stop where one is preempted itself (_grow_decodes_until): no decode after it grows.
        tried = {seq.index for seq in candidates}
        while True:
            running = {seq.index for seq in state.running}
            batch.decodes = [seq for seq in batch.decodes if seq.index in running]
            if stopped is not None:
                break
            rest = [seq for seq in decoding if seq.index in running and seq.index not in tried]
            room = len(self._fit(state, batch.decodes + rest)) - len(batch.decodes)
            if room <= 0 or not rest:
                break
            tried.update(seq.index for seq in rest[:room])
            kept, stopped = self._grow_decodes_until(state, rest[:room])
            batch.decodes += kept
        budget = self._decodes_budget(state, batch)
        # Where a decode was preempted itself, the prefills under way after it among the running requests (admission
        # order) sit out too: vLLM's loop stopped there. Under fcfs a request is preempted itself only once every later
        # one is, so the stop moves only the priority policy's iterations.
        prefilling = [seq for seq in state.running if seq.in_prefill
                      and (stopped is None or order[seq.index] < order[stopped.index])]
        for seq in prefilling:
            if budget <= 0:
                break
            if seq not in state.running:  # preempted for an earlier one's chunk
                continue
            chunk = self._chunk(seq, budget)
            # Its chunk's blocks, preempting where they run out, as vLLM v1 allocates them: the loop over running
            # requests stops where one is preempted itself (under fcfs the newest, a prefill under way, is that one).
            before = state.preemptions
            held = self._hold_preempting(state, seq, seq.computed + chunk + self._lookahead)
            if state.preemptions != before:
                # Those preempted leave the batch, and give their share of the budget back (vLLM v1: "token_budget +=
                # num_scheduled_tokens.pop(preempted_req_id)").
                batch.decodes = [other for other in batch.decodes if other in state.running]
                batch.prefills = [(other, q) for other, q in batch.prefills if other in state.running]
                budget = self._decodes_budget(state, batch) - batch.prefill_tokens
            if not held:
                break
            batch.prefills.append((seq, chunk))
            budget -= chunk
        # vLLM v1 schedules no waiting request in an iteration that preempted (vllm/v1/core/sched/scheduler.py
        # schedule(), commit 00024d31: "if not preempted_reqs", before the loop over waiting requests): a request the
        # decodes' growth preempted is not admitted again in the same iteration, nor any other. (Next_batch schedules
        # again at once where this leaves the iteration empty, as vLLM's engine does after an empty step.)
        # A sequence a prefill pool handed over is a waiting request like the others (FCFS among the prompts): vLLM v1's
        # decode instance allocates its blocks in the same loop over waiting requests, under the same conditions (token
        # budget left, max_num_seqs, nothing preempted, blocks for its next token and its lookahead, or the loop
        # stops), taking no budget, and has its KV pulled into them (_pull); once it has landed (WAITING_FOR_REMOTE_KVS
        # till then), the loop schedules it (vllm/v1/core/sched/scheduler.py schedule(), commit 00024d31:
        # "num_new_tokens = request.num_tokens - num_computed_tokens", its context's last token). It decodes in that
        # iteration, one token: speculating, it has no drafts yet (its spec_token_ids are empty until
        # the draft has run over it after this step), so it verifies none (Batch.short), holds no slots for drafts
        # (only the lookahead, _lookahead: "effective_lookahead_tokens = 0 if request.num_computed_tokens == 0 else
        # self.num_lookahead_tokens", its computed tokens those pulled), and advances one token. A prompt's first
        # chunk (num_computed_tokens 0, a cached prefix found or not) holds no lookahead.
        while state.waiting and not state.swapped and budget > 0 and len(state.running) < self.limits.max_seqs \
                and state.preemptions == preemptions:
            seq = self._head(state)
            if seq is None:
                break
            if not seq.in_prefill:
                tokens = seq.computed + 1 + self._lookahead
                if seq.kv_pull == "due":  # its blocks first, its KV pulled into them: it decodes once landed
                    if not self._pull(state, seq, tokens):
                        break
                    continue
                if not self._admit(state, seq, tokens):
                    break
                batch.decodes.append(seq)
                if self.limits.verify_tokens > 1:
                    batch.short += (1,)
                budget -= 1
                continue
            chunk = self._chunk(seq, budget)
            if not self._admit(state, seq, seq.computed + chunk):
                break
            batch.prefills.append((seq, chunk))
            budget -= chunk
        return batch

    def _chunk(self, seq: Sequence, budget: int) -> int:
        """The prompt tokens `seq` computes this iteration out of `budget`: what it has left, at most
        long_prefill_tokens where set. vLLM v1 caps a request's new tokens so before the budget, for running requests
        and waiting ones alike (vllm/v1/core/sched/scheduler.py schedule(), commit 00024d31: "if 0 <
        self.scheduler_config.long_prefill_token_threshold < num_new_tokens: num_new_tokens = ...threshold", then
        "num_new_tokens = min(num_new_tokens, token_budget)"), so a long prompt takes several iterations however much
        budget is left, and the budget it leaves goes to the next request."""
        cap = self.limits.long_prefill_tokens
        return min(seq.remaining_prefill, budget, cap) if cap > 0 else min(seq.remaining_prefill, budget)

    def prompt_alone(self, decode_tokens: int, overdue: int = 0) -> int:
        """The longest chunk one prompt takes in an iteration beside decodes that take `decode_tokens` of its budget:
        what they leave (prompt_budget), at most long_prefill_tokens where set (_chunk). The latency predictor reads
        it."""
        left = self.prompt_budget(decode_tokens, overdue)
        cap = self.limits.long_prefill_tokens
        return min(left, cap) if cap > 0 else left

    def _decodes_budget(self, state: EngineState, batch: Batch) -> int:
        """The prompt budget the batch's decodes leave (prompt_budget), each counting the tokens it verifies (_fit);
        marks the batch's last decode short where the budget cut its drafts."""
        wanted = [self._verifies(state, seq) for seq in batch.decodes]
        tokens = self._fit_tokens(wanted)
        batch.short = (tokens[-1],) if tokens and tokens[-1] < wanted[len(tokens) - 1] else ()
        return self.prompt_budget(sum(tokens))

    def _verifies(self, state: EngineState, seq: Sequence) -> int:
        """Tokens a decoding sequence's next pass computes: its next token and the drafts it verifies
        (limits.verify_tokens: 1, or k + 1 speculating), one where its proposer drafted nothing (EngineState.no_drafts:
        an n-gram lookup without a match), as vLLM v1 schedules a request's 1 + len(spec_token_ids) (decode_tokens)."""
        return 1 if seq.index in state.no_drafts else self.limits.verify_tokens

    def _decode_slots(self, state: EngineState, seq: Sequence) -> int:
        """KV slots a decoding sequence's next iteration holds past its cached tokens: its next token and its lookahead
        slots (the k drafts it verifies, and a draft's k proposals), those of the drafts it verifies only where it has
        some, as vLLM v1 allocates them (vllm/v1/core/sched/scheduler.py schedule(), commit 00024d31 of
        vllm-project/vllm: allocate_slots(request, num_new_tokens, num_lookahead_tokens=self.num_lookahead_tokens),
        num_new_tokens 1 + len(spec_token_ids), the lookahead num_spec_tokens only where use_eagle() or
        uses_draft_model(), none for the n-gram proposer): a decode whose lookup found no match holds its next token's
        slot and the lookahead (_lookahead)."""
        if seq.index in state.no_drafts:
            return 1 + self._lookahead
        return 1 + self.limits.lookahead_slots

    @property
    def _lookahead(self) -> int:
        """vLLM v1's num_lookahead_tokens: the KV slots a draft (a model or an MTP module) writes its k proposals into
        after a pass, which every running request's allocation holds past its scheduled tokens, a prefill chunk's
        included (vllm/v1/core/sched/scheduler.py schedule(), commit 00024d31: allocate_slots(request,
        num_new_tokens, num_lookahead_tokens=self.num_lookahead_tokens) in the loop over running requests); of
        limits.lookahead_slots, those past the k drafts a decode verifies (verify_tokens - 1); none for the n-gram
        proposer or Medusa heads."""
        return max(self.limits.lookahead_slots - (self.limits.verify_tokens - 1), 0)

    def _fit(self, state: EngineState, decoding: list[Sequence]) -> list[int]:
        """The tokens each of `decoding` (admission order) counts against the budget (_fit_tokens of what each
        verifies, _verifies); those past the list sit out."""
        return self._fit_tokens([self._verifies(state, seq) for seq in decoding])

    def _fit_tokens(self, wanted: list[int]) -> list[int]:
        """Of decodes wanting `wanted` tokens each, in order, the tokens each takes of the budget: all it wants while
        the budget lasts, what is left for the first it runs short on (its drafts cut), none for the rest, which are
        not listed (decode_tokens)."""
        tokens, left = [], self.limits.chunk_tokens
        for want in wanted:
            if left <= 0:
                break
            tokens.append(min(want, left))
            left -= tokens[-1]
        return tokens

    def decode_tokens(self, held: int, drafted: float = 1.0) -> list[int]:
        """Each decode counts the tokens it verifies (limits.verify_tokens: 1, or k + 1 speculating; 1 for those whose
        proposer drafted nothing, of `held` all but a share `drafted`, spread evenly through them: an n-gram lookup's
        expected matches, Speculation.match, for a caller that knows no sequence's) while the budget lasts, and the
        first it runs short on takes what is left, its drafts cut to fit; the rest sit out. So vLLM v1
        schedules its running requests (vllm/v1/core/sched/scheduler.py schedule(), commit 00024d31 of
        vllm-project/vllm): in order while token_budget > 0, each num_new_tokens = num_tokens_with_spec (+
        num_output_placeholders) - num_computed_tokens, i.e. 1 + its draft tokens for a decode, then num_new_tokens =
        min(num_new_tokens, token_budget), token_budget -= num_new_tokens, and spec_token_ids trimmed to the
        num_new_tokens - 1 scheduled ("if len(spec_token_ids) > num_scheduled_spec_tokens: spec_token_ids =
        spec_token_ids[:num_scheduled_spec_tokens]"): the request keeps its place, its speculative tokens are cut."""
        return self._fit_tokens([self.limits.verify_tokens if math.floor(drafted * (i + 1)) > math.floor(drafted * i)
                                 else 1 for i in range(held)])
