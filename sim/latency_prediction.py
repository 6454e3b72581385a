"""Latency predictions: the TTFT and TPOT a request would see on a replica if it joined it now, from the replica's
queues and its own iteration costs (what a latency-predicting router compares: sim/routers.py PredictedLatency).

llm-d's latency predictor learns each pod's TTFT and TPOT online from its traffic (an XGBoost model over the pod's
KV-cache use, waiting and running counts, the prompt's length and its cached share), and so assumes every pod alike.
This one prices the work ahead with the replica's own cost model, so it knows each replica's speed whatever its
device; it errs in how the queue will drain:
- the prompt tokens ahead (every held request's still to prefill, past a waiting one's prefix cached now, whatever the
  queue policy) and the request's own uncached tokens run in iterations of the scheduler's token budget, less a
  token for each decode that rides along (Scheduler.prompts_beside_decodes: chunked prefill's, Orca's; continuous
  batching runs prompts apart from decodes), or where prompts take the budget first (Orca's with
  max_decode_preemptions: Scheduler.prompt_budget), beside the decodes that go first and those the budget leaves room
  for (Scheduler.decodes_beside); a scheduler prefilling whole prompts batches them up to prompt_batch_tokens and runs
  a longer one alone (Scheduler.prompt_budget and prompt_alone, the rule its _prefill_whole reads);
- where the replica holds max_seqs requests or more, the request waits for a seat too, the requests ahead of it
  leaving at the rate its latest RECENT_LEAVES left (KV blocks running out is not counted);
- the queue's chunks attend to where each starts (its computed chunks, or its cached prefix), the request's own to
  its cached prefix and its earlier chunks (their mean);
- its TPOT is an iteration decoding every request the replica holds and this one (up to max_seqs), at their present
  contexts, or, where its scheduler decodes fewer an iteration (Scheduler.decode_tokens: a chunked scheduler's token
  budget), held / decoded iterations of the earliest admitted it decodes (each gives that many of the held a token);
  and prompts as often as the replica's last RECENT_ITERATIONS iterations prefilled, as if the prompts arriving
  lately keep arriving (those ahead are prefilled before its decode starts): riding along, a chunk of what the budget
  leaves (a chunked scheduler; where the iteration's chunks were of a token each, as a prompt found cached but its last
  token computes that one, those) or a prompt of the recent prefills' mean tokens beside the decodes its scheduler runs
  beside such prompts (Orca), or else in iterations of their own in between;
- the iteration under way, preemptions, the iterations its own decode sits out for prompts under Orca's
  max_decode_preemptions (at most that many over its life), a speculative decode's drafts and pipeline stages' overlap
  are not counted.
Each predicted iteration is priced coarsely (its chunks to TOKEN_STEP tokens, its decodes at their mean context in
groups of DECODE_STEP) and kept in the caller's memo, so that routing prices few shapes no real iteration has. A
router scales a replica's predictions by what it learned of it (LearnedBias).
"""

from __future__ import annotations

import math
from collections.abc import Sequence as Sequence_
from dataclasses import dataclass

from kernels.shapes import step_shape
from sim.replica import Replica
from sim.schedulers import Scheduler, Sequence

# How many of a replica's latest iterations tell how often its decodes share an iteration with a prefill chunk: a
# choice, not a measurement (long enough to smooth one burst of prompts, short enough to follow the load as it moves).
RECENT_ITERATIONS = 64


# A predicted chunk's new tokens are rounded up to a multiple of this, its earlier context down: a choice, so that
# predictions price a shape once for a span of lengths (an iteration's exact token count is a cost bucket of its own:
# sim/costs.py), not a measurement; a few percent of a chunk's time at most.
TOKEN_STEP = 16
# And a predicted iteration's decodes, past this many, are padded to a multiple of it at their mean context (rounded to
# TOKEN_STEP), for the same reason: a choice, at most DECODE_STEP - 1 more sequences' KV reads in an iteration.
DECODE_STEP = 8

# How far each request's observed latency moves a replica's learned bias (LearnedBias): a choice, not a measurement
# (the bias follows about the last ten requests, slow enough to smooth one, quick enough to follow a load as it moves).
LEARNING_RATE = 0.1


@dataclass(frozen=True)
class LatencyPrediction:
    """A request's predicted time to its first token and between its later tokens on one replica."""

    ttft_s: float
    tpot_s: float


@dataclass
class LearnedBias:
    """How far a replica's requests' latencies have lately run from their predictions: each one's observed over
    predicted TTFT and TPOT, a moving mean, by which the replica's later predictions are scaled. So a router learns
    what the prediction leaves out (the requests that join after one it routed, the KV blocks running out), as llm-d's
    predictor learns from live traffic and Dynamo's planner corrects its profiled estimates by observed ratios."""

    ttft: float = 1.0
    tpot: float = 1.0

    def corrected(self, predicted: LatencyPrediction) -> LatencyPrediction:
        return LatencyPrediction(ttft_s=predicted.ttft_s * self.ttft, tpot_s=predicted.tpot_s * self.tpot)

    def learn(self, predicted: LatencyPrediction, seq: Sequence) -> None:
        """Move the bias towards a request's observed latencies over their `predicted` (uncorrected) ones: its TTFT
        once it has a first token, its TPOT once it has finished with more than one."""
        if predicted.ttft_s > 0 and not math.isnan(seq.first_token_s):
            self.ttft += LEARNING_RATE * ((seq.first_token_s - seq.arrival_s) / predicted.ttft_s - self.ttft)
        if predicted.tpot_s > 0 and seq.generated > 1 and not math.isnan(seq.finish_s):
            tpot_s = (seq.finish_s - seq.first_token_s) / (seq.generated - 1)
            self.tpot += LEARNING_RATE * (tpot_s / predicted.tpot_s - self.tpot)


def iteration_s(replica: Replica, chunks: Sequence_[tuple[int, int]], decode_kv: Sequence_[int],
                 finishing: int = 0, memo: dict | None = None) -> float:
    """The time of one iteration of prefill `chunks` (new tokens, earlier context), the last `finishing` of which end
    their prompts (there, each prompt's length its chunk's tokens and context: what D2O's merge of the prompt tokens
    it evicts is priced at), beside decodes of `decode_kv`: each chunk's new tokens rounded up to TOKEN_STEP and its
    context down, the decodes at their mean context, rounded to TOKEN_STEP, and (past DECODE_STEP) padded to a
    multiple of it. `memo` keeps each such iteration's time (the caller's, for one replica's costs)."""
    chunks = tuple((-(-new // TOKEN_STEP) * TOKEN_STEP, context // TOKEN_STEP * TOKEN_STEP) for new, context in chunks)
    count = len(decode_kv) if len(decode_kv) <= DECODE_STEP else -(-len(decode_kv) // DECODE_STEP) * DECODE_STEP
    mean = round(sum(decode_kv) / len(decode_kv) / TOKEN_STEP) * TOKEN_STEP if decode_kv else 0
    key = (chunks, count, mean, finishing)
    if memo is not None and key in memo:
        return memo[key]
    decode_kv = [max(mean, 1)] * count
    shape = step_shape(chunks, decode_kv, sampled=count + finishing, window=replica.window,
                       prefill_window=replica.costs.template.sliding_window,
                       layer_window=replica.costs.template.layer_window,
                       finished=[new + context for new, context in chunks[len(chunks) - finishing:]])
    time_s = replica.costs.price(shape).time_s
    if memo is not None:
        memo[key] = time_s
    return time_s


def prompts_s(replica: Replica, tokens: int, seqs: int, context: int, per_iteration: int,
               riding: list[int], memo: dict | None = None, alone: int | None = None) -> float:
    """The time `seqs` prompts of `tokens` tokens in all take, in iterations of `per_iteration` tokens beside decodes
    of `riding`: each prompt's tokens the mean, whole prompts sharing an iteration where several fit in one, a longer
    one whole in an iteration of its own where it is shorter than `alone` (Scheduler.prompt_alone: a scheduler
    prefilling whole prompts runs one longer than prompt_batch_tokens alone; None: `per_iteration`), longer ones in
    chunks of `alone`, every chunk after `context` earlier tokens."""
    each = max(tokens // seqs, 1)
    alone = per_iteration if alone is None else alone
    whole = each < max(per_iteration, alone)
    chunks = [(each, context)] * max(per_iteration // each, 1) if whole else [(alone, context)]
    full, rest = divmod(tokens, sum(new for new, _ in chunks))
    time_s = full * iteration_s(replica, chunks, riding, len(chunks) if whole else 0, memo) if full else 0.0
    if rest:
        left = [(each, context)] * (rest // each) + [(rest % each, context)] * bool(rest % each) if whole \
            else [(rest, context)]
        time_s += iteration_s(replica, left, riding, len(left) if whole else 1, memo)
    return time_s


def prompt_alone_s(replica: Replica, tokens: float, memo: dict | None = None,
                   riding: Sequence_[int] = (), overdue: int = 0) -> float:
    """A prompt of `tokens` with no queue ahead on the replica, nothing cached: in chunks of what its scheduler's
    budget leaves beside the `riding` decodes (`overdue` of them going first: Scheduler.going_first), each after the
    chunks' mean earlier context."""
    tokens = max(round(tokens), 1)
    riding = decoded_batch(replica, riding)[0]
    decoded = decode_budget(replica, riding)
    per_iteration = max(replica.scheduler.prompt_budget(decoded, overdue), 1)
    alone = max(replica.scheduler.prompt_alone(decoded, overdue), 1)
    riding = riding[:replica.scheduler.decodes_beside(len(riding), min(tokens, per_iteration), overdue)]
    return prompts_s(replica, tokens, 1, _chunked_context(tokens, alone), per_iteration, list(riding), memo, alone)


def predict_latency(replica: Replica, prompt_tokens: int, cached_tokens: int = 0,
                    prefilled: bool = False, memo: dict | None = None) -> LatencyPrediction:
    """The TTFT and TPOT of a request of `prompt_tokens` (of which `cached_tokens` are cached there) joining `replica`
    now; `prefilled`: one a prefill pool hands over with `prompt_tokens` of context, its first token already sampled
    (a TTFT of 0 here: it joins the decodes). `memo`: the iteration times priced so far for this replica's costs
    (iteration_s), which the caller keeps across predictions."""
    state, scheduler = replica.state, replica.scheduler
    max_seqs = scheduler.limits.max_seqs
    decoding = [seq.computed + 1 for seq in state.running if not seq.in_prefill][:max_seqs]
    riding = decoded_batch(replica, decoding)[0] if scheduler.prompts_beside_decodes else []
    overdue = _overdue(replica)
    decoded = decode_budget(replica, riding)
    per_iteration = max(scheduler.prompt_budget(decoded, overdue), 1)
    alone = max(scheduler.prompt_alone(decoded, overdue), 1)  # a longer prompt alone (prompt_batch_tokens)
    # Each prompt ahead from where it starts (Scheduler.prefill_start): past a running one's computed chunks, past the
    # prefix a waiting one finds cached (swapped sequences decode: none is still to prefill).
    starts = [(seq.target, Scheduler.prefill_start(state, seq, waiting=queue is state.waiting))
              for queue in (state.running, state.waiting) for seq in queue if seq.in_prefill]
    ahead = [target - start for target, start in starts]
    own = max(prompt_tokens - cached_tokens, 1)
    own_context = cached_tokens + _chunked_context(own, alone)  # its chunks' mean earlier context
    tokens = sum(ahead) + own
    # The decodes an iteration of the prompts runs beside them (Scheduler.decodes_beside: Orca's prompts preempting
    # decodes leave them the budget's room).
    riding = riding[:scheduler.decodes_beside(len(riding), min(tokens, per_iteration), overdue)]
    # The prompts ahead and its own, in the iterations they share, their chunks after the tokens' mean context.
    context = (sum(new * start for new, (_, start) in zip(ahead, starts, strict=True)) + own * own_context) // tokens
    prefill_s = prompts_s(replica, tokens, len(ahead) + 1, context, per_iteration, riding, memo, alone)
    held = len(state.running) + len(state.pulling) + len(state.waiting) + len(state.swapped)
    # Short of a seat, it waits for requests to leave before its own prefill starts.
    seat_s = _seat_s(replica, held + 1 - max_seqs)
    waited_s = max(seat_s + prompts_s(replica, own, 1, own_context, per_iteration, riding, memo, alone) - prefill_s,
                   0.0) \
        if seat_s else 0.0
    # The others held, in the order they join the decodes: those prefilling at their prompts' end, then the swapped
    # ones (back before any admission), the handed-over ones whose KV is crossing (ahead of the waiting ones once it
    # lands) and the waiting ones at their contexts.
    prefilling = [seq.target for seq in state.running if seq.in_prefill]
    queued = [seq.target if seq.in_prefill else seq.computed + 1 for queue in (state.swapped, state.pulling,
                                                                                state.waiting) for seq in queue]
    decode_kv = (decoding + prefilling + queued + [prompt_tokens])[:max_seqs]
    return LatencyPrediction(ttft_s=0.0 if prefilled else prefill_s + waited_s,
                             tpot_s=_tpot_s(replica, decode_kv, memo))


def _chunked_context(tokens: int, alone: int) -> int:
    """The mean earlier context of a prompt's chunks where it is longer than the longest prompt an iteration prefills
    (Scheduler.prompt_alone): half of what its later chunks follow; 0 where it runs whole."""
    return max(tokens - alone, 0) // 2


def drafted_share(replica: Replica) -> float:
    """The share of a replica's speculating decodes that verify drafts in an iteration, in expectation: an n-gram
    lookup's matches (Speculation.match; the others verify none: sim/speculative.py), every one for a draft or heads,
    which always propose. No sequence's own lookup is read: the prediction reaches past the next iteration."""
    return 1.0 if replica.speculation is None else replica.speculation.speculation.match


def decoded_batch(replica: Replica, decode_kv: Sequence_[int]) -> tuple[list[int], float]:
    """Of `replica`'s held decodes of `decode_kv` (in admission order), those an iteration decodes, and the iterations
    between a held sequence's tokens: every one, one; or where its scheduler decodes fewer than it holds
    (Scheduler.decode_tokens: a chunked scheduler's token budget, each decode counting the tokens it verifies, the
    replica's drafted_share of them their drafts), the earliest admitted up to that many, and held / decoded
    iterations (each gives that many of the held a token: Little's law, exact for the last of a group that waits for
    whole groups ahead to finish)."""
    cap = len(replica.scheduler.decode_tokens(len(decode_kv), drafted_share(replica)))
    if len(decode_kv) <= cap:
        return list(decode_kv), 1.0
    return list(decode_kv[:cap]), len(decode_kv) / cap


def decode_budget(replica: Replica, decoded: Sequence_[int]) -> int:
    """The tokens of its budget the decodes of `decoded` (as decoded_batch gives them) take from `replica`'s
    scheduler's iteration: one each, or the tokens each verifies (Scheduler.decode_tokens at its drafted_share)."""
    return sum(replica.scheduler.decode_tokens(len(decoded), drafted_share(replica)))


def _overdue(replica: Replica) -> int:
    """How many of its running sequences go before an iteration's prompts whatever its budget (Scheduler.going_first:
    decodes, under Orca, which prefills whole prompts)."""
    return len(replica.scheduler.going_first(replica.state.running))


def _seat_s(replica: Replica, short: int) -> float:
    """The time until `short` more of the replica's requests have left, at the rate its latest ones left (0 where it
    lacks no seat, or has seen too few leave to tell)."""
    left = replica.left_s
    if short <= 0 or len(left) < 2 or left[-1] <= left[0]:
        return 0.0
    return short * (left[-1] - left[0]) / (len(left) - 1)


def _tpot_s(replica: Replica, decode_kv: list[int], memo: dict | None = None) -> float:
    """The time between a request's tokens where the replica holds decodes of `decode_kv`: the iterations between a
    held sequence's tokens, each decoding those its scheduler decodes at once (decoded_batch), interleaved with prompts
    as often as the replica's recent iterations prefilled: beside a chunk of what is left of the budget (a chunked
    scheduler) or a whole prompt (Orca), or as iterations of their own in between, each of the recent prefills' mean
    tokens."""
    decode_kv, rounds = decoded_batch(replica, decode_kv)
    return rounds * _decoded_tpot_s(replica, decode_kv, memo)


def _decoded_tpot_s(replica: Replica, decode_kv: list[int], memo: dict | None = None) -> float:
    """_tpot_s where every one of `decode_kv` decodes each iteration."""
    decode_s = iteration_s(replica, [], decode_kv, 0, memo)
    recent = replica.log[-RECENT_ITERATIONS:]
    # The iterations that prefilled (IterationRow.prefill_tokens: whatever a speculating decode verified), their
    # prompts and prompt tokens, those whose chunks were of one token each among them (a prompt found cached but its
    # last token, which it computes to sample from), as the scheduler forms them: beside the decodes or apart.
    prefills = [(row.prefills, row.prefill_tokens) for row in recent if row.prefill_tokens]
    if not prefills:
        return decode_s
    share = len(prefills) / len(recent)
    scheduler = replica.scheduler
    if scheduler.chunked:
        # A chunk of what the budget leaves where the prompts had more than a token each; else their one-token chunks.
        chunk = max(scheduler.token_budget() - decode_budget(replica, decode_kv), 1)
        full = sum(tokens > prompts for prompts, tokens in prefills)
        time_s = decode_s + full / len(recent) * (iteration_s(replica, [(chunk, 0)], decode_kv, 0, memo) - decode_s)
        for prompts, tokens in prefills:
            if tokens == prompts:
                time_s += (iteration_s(replica, [(1, 0)] * prompts, decode_kv, prompts, memo) - decode_s) / len(recent)
        return time_s
    if scheduler.prompts_beside_decodes:
        # A prompt beside the decodes: an iteration's prompt tokens past one a prompt, and the prompt's own (one).
        prompt = round(sum(tokens - prompts + 1 for prompts, tokens in prefills) / len(prefills))
        # Beside it, the decodes its scheduler runs beside the recent prefills' mean prompt tokens (decodes_beside).
        beside = scheduler.decodes_beside(len(decode_kv), round(sum(tokens for _, tokens in prefills) / len(prefills)),
                                          _overdue(replica))
        return decode_s + share * (iteration_s(replica, [(prompt, 0)], decode_kv[:beside], 1, memo) - decode_s)
    # Prefill iterations between two decode steps: share / (1 - share), at least one decode step in the window.
    between = share / max(1.0 - share, 1.0 / RECENT_ITERATIONS)
    prompt = round(sum(tokens for _, tokens in prefills) / len(prefills))  # its prompt tokens (it decodes none)
    return decode_s + between * iteration_s(replica, [(prompt, 0)], [], 1, memo)
