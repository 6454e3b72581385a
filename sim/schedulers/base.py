"""What every scheduler shares: sequences, the batch it picks, the engine state it picks from, and the
admission and preemption steps schedulers combine."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import ClassVar

from kernels.kv_policy import Window
from kernels.shapes import StepShape, step_shape
from sim.kv_cache import PagedKVCache
from sim.lora import activate


@dataclass(slots=True, eq=False)
class Sequence:
    """A request as the engine runs it.

    `computed` tokens of its context have their KV cached. Before it can sample, it must compute `target`
    tokens: its prompt, or after a preemption by recompute, its prompt and every token it generated.
    """

    index: int
    arrival_s: float
    prompt: int
    output: int
    priority: int = 0  # lower first, where the queue policy is 'priority' (vLLM's request priority)
    urgent: bool = False  # of the run's lowest priority, where requests differ in it (its SLO class)
    computed: int = 0
    target: int = 0
    generated: int = 0
    cached: int = 0  # prompt tokens found cached when it was admitted (a prefix hit)
    adapter: int = -1  # the LoRA adapter it runs (sim/lora.py); -1: the base model alone
    scheduled_s: float = math.nan
    first_token_s: float = math.nan
    decode_admitted_s: float = math.nan  # when a decode pool admitted it, handed over after its prefill
    last_token_s: float = math.nan
    finish_s: float = math.nan
    preemptions: int = 0
    pool: int = 0  # the pool whose replica sampled its last token (Replica.pool; RequestRecords.pool)
    # A request a prefill pool handed over whose KV a decode engine pulls into blocks it allocates first (vLLM v1's KV
    # connector): "due" (its blocks not yet allocated), "crossing" (allocated, its KV on the way), "landed" (arrived,
    # waiting to decode); "expected": routed to a decode engine of a fleet before its KV crosses, into no blocks
    # allocated first (Replica.expect); "" once it decodes, and for every other request.
    kv_pull: str = ""

    def __post_init__(self) -> None:
        self.target = self.prompt

    @property
    def in_prefill(self) -> bool:
        return self.computed < self.target

    @property
    def remaining_prefill(self) -> int:
        return self.target - self.computed

    @property
    def final_tokens(self) -> int:
        """KV tokens it holds when it finishes: its prompt and every output but the last (never fed back)."""
        return self.prompt + self.output - 1


@dataclass(slots=True)
class Batch:
    """One iteration: prefill chunks (sequence, new tokens) and sequences decoding one token each."""

    prefills: list[tuple[Sequence, int]] = field(default_factory=list)
    decodes: list[Sequence] = field(default_factory=list)
    swapped_tokens: int = 0  # KV tokens copied between device and host memory before the iteration runs
    fetched_tokens: int = 0  # KV tokens copied from the pool's KV store (sim/kv_store.py) before it runs
    loaded_adapters: int = 0  # LoRA adapters copied from host memory into GPU slots before it runs (sim/lora.py)
    # The distinct LoRA adapters its sequences run (Scheduler.next_batch; empty: LoRA off or the base model alone).
    adapters: frozenset[int] = frozenset()
    # Tokens each of its last decodes verifies where fewer than the others' (empty: none), as vLLM v1 schedules them:
    # the one whose drafts the token budget cut, its spec_token_ids trimmed to the budget left
    # (ChunkedPrefillScheduler.decode_tokens); a request a prefill pool handed over, one token, having no drafts yet
    # (ChunkedPrefillScheduler.schedule).
    short: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.prefills or self.decodes)

    @property
    def size(self) -> int:
        return len(self.prefills) + len(self.decodes)

    @property
    def tokens(self) -> int:
        """Tokens as the schedulers but the chunked one count them against a budget: its chunks' and one a decode."""
        return self.prefill_tokens + len(self.decodes)

    @property
    def prefill_tokens(self) -> int:
        """Its prefill chunks' new tokens (0: it prefills nothing)."""
        return sum(q for _, q in self.prefills)

    def computed_tokens(self, decode_query: int = 1) -> int:
        """Query tokens the iteration computes, as `shape` lays them out: its chunks' and `decode_query` a decode (a
        speculative verification's k + 1), those verifying fewer (`short`) their fewer."""
        decodes = decode_query * len(self.decodes)
        if self.short and decode_query > 1:
            decodes += sum(self.short) - decode_query * len(self.short)
        return self.prefill_tokens + decodes

    def without_drafts(self, no_drafts: set[int], verified: int) -> None:
        """Its decodes in `no_drafts` (EngineState.no_drafts) verify one token, among the decodes that verify fewer
        than the others' `verified` (`short`, which lists the last): vLLM v1 schedules a request's one token and its
        spec_token_ids, empty where the n-gram proposer found no match (vllm/v1/spec_decode/ngram_proposer.py at
        016e8ede of vllm-project/vllm)."""
        cut = len(self.short)
        tokens = [verified] * (len(self.decodes) - cut) + list(self.short)
        tokens = [1 if seq.index in no_drafts else q for seq, q in zip(self.decodes, tokens, strict=True)]
        whole = [seq for seq, q in zip(self.decodes, tokens, strict=True) if q == verified]
        fewer = [(seq, q) for seq, q in zip(self.decodes, tokens, strict=True) if q < verified]
        self.decodes, self.short = whole + [seq for seq, _ in fewer], tuple(q for _, q in fewer)

    def shape(self, window: Window, decode_query: int = 1, prefill_window: int | None = None,
              shared_prefix: int = 0, prefix_groups: list[int] | None = None,
              layer_window: int | None = None) -> StepShape:
        """The iteration's shape: sequences whose chunk ends their prefill sample a token, as decodes do (each of its
        `decode_query` positions, in a speculative verification); `prefill_window`: the model's own sliding window;
        `shared_prefix`: the length of the cached prefix the decodes of a group share, read once for them by cascade
        attention, and `prefix_groups` the group whose prefix each decode shares (PagedKVCache.prefix_sharers; None:
        every one shares one prefix); `layer_window`: the window of the model's windowed layers beside its full ones
        (kernels/shapes.py step_shape)."""
        finished = [seq.target for seq, q in self.prefills if seq.computed + q >= seq.target]
        chunks, decodes = [(q, seq.computed) for seq, q in self.prefills], self.decodes
        sampled = len(finished)
        if self.short and decode_query > 1:
            # A decode verifying fewer tokens than the others (`short`): its query tokens attend to its cached keys and
            # to each other, as a chunk's do, and each samples (vLLM v1 runs a verification in the varlen attention its
            # chunks run in).
            cut = len(self.short)
            chunks = chunks + [(q, seq.computed) for seq, q in zip(decodes[-cut:], self.short, strict=True)]
            decodes = decodes[:-cut]
            sampled += sum(self.short)
            prefix_groups = None if prefix_groups is None else prefix_groups[:-cut]
        return step_shape(chunks, [s.computed + decode_query for s in decodes],
                          lora_adapters=len(self.adapters),
                          sampled=sampled + decode_query * len(decodes), window=window,
                          decode_query=decode_query, prefill_window=prefill_window, shared_prefix=shared_prefix,
                          prefix_groups=prefix_groups, finished=finished, layer_window=layer_window)

    def draft_shapes(self, window: Window, prefill_window: int | None = None, shared_prefix: int = 0,
                     prefix_groups: list[int] | None = None, first_query: int = 1,
                     chunk_slots: int = 0, layer_window: int | None = None,
                     later_steps: int = 1) -> tuple[StepShape, ...]:
        """A speculative draft's iterations after the target's pass, over every sequence of the batch as vLLM v1's
        proposers run them (vllm/v1/spec_decode/llm_base_proposer.py propose: the first step over the batch, then
        k - 1 steps of batch_size tokens): its first step over each prefill chunk and `chunk_slots` more and
        `first_query` tokens of each decode (sim/speculative.py first_draft_tokens), its keys up to the last of them,
        sampling one token a sequence; then `later_steps` steps of one token a sequence, step i (from 1) attending to
        i keys more than the first step left: a chunk's past its slots, a decode's past its cached keys and the token
        the target sampled (vllm-project/vllm vllm/v1/spec_decode/eagle.py at 008603a, propose: the first step's
        seq_lens less the rejected tokens, then common_attn_metadata.seq_lens += 1 each step; the accepted tokens are
        not known here and taken as none, as the static path prices draft step i at the generated tokens and i
        drafts). The draft runs in the engine's attention, cascading shared prefixes where it does (a prefilling
        sequence holds its own copy). A decode verifying fewer tokens (`short`) runs its first step on the tokens it
        verified and the slots, as a chunk (vLLM v1's first pass takes each request's scheduled tokens, the trimmed
        ones, and its slots: llm_base_proposer.py set_inputs_first_pass). `layer_window`: the window of the draft's
        windowed layers beside its full ones (shape), each of its layers attending at its own."""
        slotted = Batch(prefills=[(seq, q + chunk_slots) for seq, q in self.prefills], decodes=self.decodes,
                        short=tuple(q + chunk_slots for q in self.short), adapters=self.adapters)
        first = slotted.shape(window, first_query, prefill_window=prefill_window, shared_prefix=shared_prefix,
                              prefix_groups=prefix_groups, layer_window=layer_window)
        groups = prefix_groups
        if shared_prefix and self.prefills:
            groups = [-1] * len(self.prefills) + (prefix_groups or [0] * len(self.decodes))
        later = tuple(step_shape([], [seq.computed + q + chunk_slots + i for seq, q in self.prefills]
                                 + [seq.computed + 1 + i for seq in self.decodes], sampled=self.size, window=window,
                                 shared_prefix=shared_prefix, prefix_groups=groups, layer_window=layer_window)
                      for i in range(1, later_steps + 1))
        return replace(first, sampled=self.size), *later


@dataclass(kw_only=True)
class EngineState:
    """The queues a scheduler picks from: waiting (arrival order; preempted sequences go back to the front)
    and running (admission order), and the replica's KV cache."""

    kv: PagedKVCache
    waiting: deque[Sequence] = field(default_factory=deque)
    running: list[Sequence] = field(default_factory=list)
    swapped: list[Sequence] = field(default_factory=list)  # preempted by swap, their KV in host memory
    now_s: float = 0.0
    swapped_tokens: int = 0  # KV tokens swapped out since the last iteration
    preemptions: int = 0  # running sequences preempted so far (_preempt)
    # Handed-over sequences whose KV crosses, holding their blocks (Sequence.kv_pull "crossing") or none ("expected"),
    # in the order their pulls began, and what begins a pull (the engine's; None where no pool hands requests over).
    pulling: list[Sequence] = field(default_factory=list)
    pull: Callable[[Sequence], None] | None = None
    # Waiting sequences an admission loop passed over this iteration, in queue order (Scheduler._head: their LoRA
    # adapter would exceed max_loras); back at the head of the queue once the iteration is scheduled (next_batch).
    passed_over: list[Sequence] = field(default_factory=list)
    # The LoRA adapters in the engine's GPU slots, least recently used first (sim/lora.py activate).
    lora_slots: list[int] = field(default_factory=list)
    # Under speculative decoding, the sequences whose proposer drafted nothing after their last pass (an n-gram lookup
    # that found no match): their next decode verifies no drafts and computes one token (Batch.without_drafts).
    no_drafts: set[int] = field(default_factory=set)


@dataclass(frozen=True, kw_only=True)
class SchedulerLimits:
    """Limits every scheduler honours (vLLM's names in brackets)."""

    max_seqs: int = 256  # sequences in one iteration [max_num_seqs; vLLM's default 256]
    max_batched_tokens: int = 8192  # tokens in one iteration [max_num_batched_tokens]
    chunk_tokens: int = 512  # token budget of a chunked-prefill iteration (Sarathi-Serve's budget)
    # The chunked scheduler only: the most new tokens one request computes in an iteration, its prompt in chunks of at
    # most this many whatever the budget leaves [long_prefill_token_threshold; vLLM's default 0: no cap].
    long_prefill_tokens: int = 0
    watermark: float = 0.01  # fraction of KV blocks a new admission leaves free [vLLM's watermark, 1%]
    preemption: str = "recompute"  # or "swap": a preempted sequence's KV moves to host memory and back
    # KV slots a decoding sequence holds beyond its next token [num_lookahead_slots]: a speculative step writes the KV
    # of every token it verifies, k drafted ones beyond the next, before knowing how many are accepted.
    lookahead_slots: int = 0
    # Tokens a decoding sequence verifies an iteration: 1, or under speculative decoding its next token and its k drafts
    # (k + 1, or a tree's verified tokens), which the chunked scheduler counts against its budget. The replica sets it
    # from its speculation (sim/replica.py).
    verify_tokens: int = 1
    # Prompt tokens prefilled whole together in one iteration, beyond which further prompts wait for the next (a
    # longer prompt still runs, alone): Splitwise's machine-level scheduler caps a batch of prompts at 2,048 tokens,
    # where its prompt throughput stops growing (Patel et al., ISCA 2024, §4.2 and Fig. 6a). None: max_batched_tokens.
    prompt_batch_tokens: int | None = None
    # Orca only: new prompts take the iteration's token budget (prompt_batch_tokens, else max_batched_tokens) first and
    # running decodes that do not fit sit out the iteration, their KV kept, until one has sat out this many iterations
    # and goes first (splitwise-sim's baseline machines, max_preemptions 4: sim/schedulers/orca.py). None: never.
    max_decode_preemptions: int | None = None
    # The order waiting requests are admitted in (QUEUE_POLICIES): arrival order, those whose prefix is cached first, or
    # the most urgent first.
    queue_policy: str = "fcfs"
    # Distinct LoRA adapters the running sequences may hold at once [max_loras; vLLM's default 1]; 0: requests carry no
    # adapter (sim/lora.py).
    max_loras: int = 0


# fcfs: arrival order (preempted sequences back at the front: vLLM's). lpm: longest prefix match first, SGLang's
# schedule policy (python/sglang/srt/managers/schedule_policy.py, `--schedule-policy lpm`): waiting requests in order
# of the cached prefix each would find, longest first, arrival order among equals. It keeps a group's requests
# together while their prefix is cached, as BatchLLM's prefix-sharing groups do (Zheng et al., arXiv:2412.03594,
# section 3). As SGLang's (SchedulePolicy._determine_active_policy, _compute_prefix_matches): past LPM_MAX_WAITING
# waiting requests the queue keeps its order, to bound the sorting; and of the requests that find at most
# IN_QUEUE_TOKENS cached, one that shares at least as many tokens with an earlier waiting request waits behind every
# other (in-batch prefix caching: the earlier one computes the prefix, and the later finds it cached instead of
# computing it too). SGLang counts the device's cached tokens alone for that check; here a host cache's and a KV
# store's count too (what cached_prefix finds).
# priority: vLLM's `--scheduling-policy priority` (vllm/v1/core/sched/request_queue.py PriorityRequestQueue, and
# scheduler.py's preemption): waiting requests in order of (priority, arrival), lower first, preempted ones among
# them by the same key; and when KV blocks run out, the running request of the largest (priority, arrival) is
# preempted, not the newest. As in vLLM, a waiting request never preempts a running one.
QUEUE_POLICIES = ("fcfs", "lpm", "priority")
LPM_MAX_WAITING = 128
IN_QUEUE_TOKENS = 32  # IN_BATCH_PREFIX_CACHING_CHECK_THRESHOLD and _DEPRIORITIZE_THRESHOLD, both 32 by default


class Scheduler:
    """Picks the next iteration's batch from the engine state, admitting and preempting as it goes.

    Subclasses set `name` and implement `schedule`; they may set `reserves_whole_request` (admission holds
    the KV of the whole request, so nothing is ever preempted: static batching and Orca), `chunked`
    (prefills are split to a token budget, so a prompt need not fit in one iteration) and `prompts_beside_decodes`.
    """

    name: ClassVar[str] = ""
    reserves_whole_request: ClassVar[bool] = False
    chunked: ClassVar[bool] = False
    # Prompts are computed in the iterations that decode the running sequences, in the token budget those leave
    # (chunked prefill; Orca's selective batching); False: an iteration prefills or decodes (continuous batching), or a
    # batch runs to its end (static). The latency predictor reads it (sim/latency_prediction.py).
    prompts_beside_decodes: ClassVar[bool] = False
    # A request preempted by recompute leaves the whole blocks it computed in the prefix cache, where it finds them when
    # admitted again (PagedKVCache.release_preempted), as the engine the scheduler models does by default: vLLM v1
    # (the chunked scheduler), whose prefix caching is on by default; not vLLM v0 (the continuous scheduler), whose
    # enable_prefix_caching is off by default (a run's shared prefixes there are cached as configured; a preempted
    # request's own blocks are freed). Static batching and Orca never preempt by recompute.
    caches_preempted: ClassVar[bool] = False
    # A request a prefill pool hands over has its blocks allocated before its KV is pulled into them (_pull), as vLLM
    # v1's decode instance does with a KV connector (the chunked scheduler). The others admit it once its KV has landed
    # (vLLM v0's connector, which receives the KV inside the step that admits the request, is not modeled).
    allocates_before_pull: ClassVar[bool] = False
    # A prefill replica keeps the blocks of a request it hands over, not evictable, until the decode side has read its
    # KV, then frees them as a finished request's once its engine notices (Replica.sent, sim/kv_sends.py), as vLLM v1
    # does with a KV connector (the chunked scheduler): the prefill request finishes at its first token (max_tokens 1,
    # FINISHED_LENGTH_CAPPED), and _free_request frees its blocks only where the connector's request_finished does not
    # delay it (vllm/v1/core/sched/scheduler.py, commit 00024d31 of vllm-project/vllm); NIXL's delays it while the
    # request has blocks, and its worker's get_finished reports the request done sending once the decode side has read
    # them (or their deadline has passed), when _update_from_kv_xfer_finished frees them (nixl_connector.py, commit
    # 002a1057). The others free them at the first
    # token (vLLM v0's connector copies the KV into its lookup buffer within the prefill's step: vllm/distributed/
    # kv_transfer's workflow).
    holds_until_sent: ClassVar[bool] = False

    def __init__(self, limits: SchedulerLimits):
        self.limits = limits

    def schedule(self, state: EngineState) -> Batch:
        raise NotImplementedError

    def token_budget(self) -> int:
        """Most tokens one iteration computes."""
        return self.limits.chunk_tokens if self.chunked else self.limits.max_batched_tokens

    def decode_tokens(self, held: int, drafted: float = 1.0) -> list[int]:
        """The tokens each running decode one iteration runs counts against its token budget, of `held` (the earliest
        admitted first; those past the list sit out the iteration; `drafted`: the share of them whose proposer drafted
        tokens to verify): here every one, one token each (the schedulers but
        the chunked one count a decode one token, whatever it verifies); the chunked scheduler's differ
        (ChunkedPrefillScheduler.decode_tokens). The latency predictor reads the same rule
        (sim/latency_prediction.py decoded_batch)."""
        # A speculating decode counts one token here too, as vLLM v0's scheduler (the continuous scheduler's source)
        # counts it: vllm/core/scheduler.py (vllm-project/vllm commits 0054e1fa and 0dce2b29) _get_num_new_tokens sums
        # seq.get_num_new_tokens() (1 for a decode) into budget.add_num_batched_tokens, while the lookahead slots of
        # speculative decoding (_get_num_lookahead_slots: scheduler_config.num_lookahead_slots) only size the blocks
        # can_append_slots and append_slots hold, never the token budget (limits.lookahead_slots here). Orca (Yu et al.,
        # OSDI 2022) does not speculate.
        return [1] * held

    def prompt_budget(self, decode_tokens: int, overdue: int = 0) -> int:
        """Tokens an iteration's prompts may take beside running decodes that take `decode_tokens` of its budget: what
        those leave, and where prompts are prefilled whole, at most prompt_batch_tokens (a longer prompt runs alone:
        prompt_alone) (`overdue`: the decodes among them that go first, going_first; Orca's prompts preempting decodes
        take the budget before the others: OrcaScheduler.prompt_budget). _prefill_whole and the latency predictor
        read the same rule."""
        left = self.token_budget() - decode_tokens
        cap = self.limits.prompt_batch_tokens
        return left if cap is None or self.chunked else min(left, cap)

    def prompt_alone(self, decode_tokens: int, overdue: int = 0) -> int:
        """The longest prompt an iteration prefills (whole, alone where it is longer than prompt_budget) beside running
        decodes that take `decode_tokens` of its budget (`overdue`: as prompt_budget's): where prompts are prefilled
        whole, what those decodes leave of the budget, whatever prompt_batch_tokens; a chunked scheduler chunks a
        longer one, to prompt_budget. _prefill_whole and the latency predictor read the same rule."""
        return self.prompt_budget(decode_tokens, overdue) if self.chunked else self.token_budget() - decode_tokens

    def decodes_beside(self, held: int, prompt_tokens: int, overdue: int = 0) -> int:
        """How many of `held` running decodes (`overdue` of them going first) an iteration runs beside prompts of
        `prompt_tokens`: every one; Orca's prompts preempting decodes leave them what the budget has room for
        (OrcaScheduler.decodes_beside). The latency predictor reads the same rule (sim/latency_prediction.py)."""
        return held

    def going_first(self, running: list[Sequence]) -> list[Sequence]:
        """Those of `running` that go before an iteration's prompts whatever its budget: none here; under Orca with
        max_decode_preemptions, those that have sat out that many iterations."""
        return []

    # Steps the schedulers combine.
    def _reserve_blocks(self, state: EngineState) -> int:
        return math.ceil(self.limits.watermark * state.kv.capacity_blocks)

    def _head(self, state: EngineState) -> Sequence | None:
        """The first waiting sequence; one still to prefill finds what the cache holds of it now: its group's cached
        prefix (since it queued, the prefix may have been evicted, or computed by another request of its group), and
        after a preemption what is left of its own blocks (PagedKVCache.release_preempted). Under max_loras, a waiting
        sequence whose adapter is not among the running sequences' while they hold max_loras adapters is passed over
        (EngineState.passed_over), as vLLM v1's loop over waiting requests skips it and puts it back at the head of the
        queue after the step (vllm/v1/core/sched/scheduler.py schedule(), commit 00024d31: "Scheduling would exceed
        max_loras, skip", scheduled_loras the adapters of the requests scheduled so far); None where every waiting
        sequence is passed over."""
        if self.limits.max_loras:
            held = {seq.adapter for seq in state.running} - {-1}
            while (state.waiting and len(held) >= self.limits.max_loras
                   and state.waiting[0].adapter not in held | {-1}):
                state.passed_over.append(state.waiting.popleft())
            if not state.waiting:
                return None
        seq = state.waiting[0]
        if seq.in_prefill:
            seq.computed = Scheduler.prefill_start(state, seq, waiting=True)
        return seq

    @staticmethod
    def prefill_start(state: EngineState, seq: Sequence, *, waiting: bool) -> int:
        """Tokens of a sequence still to prefill that it need not compute: a running one's computed chunks; a waiting
        one's prefix its group's cached chain holds now, which it finds when admitted (_head; the latency predictor
        reads the same)."""
        return state.kv.cached_prefix(seq.index, seq.target) if waiting else seq.computed

    def _admit(self, state: EngineState, seq: Sequence, tokens: int) -> bool:
        """Move the first waiting sequence to running if the KV cache can hold `tokens` of it (a handed-over one whose
        KV landed holds them already: _pull)."""
        if not self._hold(state, seq, tokens):
            return False
        seq.kv_pull = ""
        state.waiting.popleft()
        state.running.append(seq)
        if math.isnan(seq.scheduled_s):
            seq.scheduled_s = state.now_s
        elif not seq.in_prefill and math.isnan(seq.decode_admitted_s):  # handed over: prefilled elsewhere
            seq.decode_admitted_s = state.now_s
        return True

    def _hold(self, state: EngineState, seq: Sequence, tokens: int) -> bool:
        """Hold `tokens` of `seq` if the KV cache can, leaving the watermark free (but where its blocks are held
        already: a pulled sequence's whose KV landed)."""
        kv = state.kv
        kv.computed_before(seq.index, seq.computed)  # a handed-over one's KV computed elsewhere
        if not kv.can_hold(seq.index, tokens, 0 if seq.kv_pull == "landed" else self._reserve_blocks(state)):
            return False
        kv.hold(seq.index, tokens)
        kv.place(seq.index, seq.final_tokens)
        return True

    def _pull(self, state: EngineState, seq: Sequence, tokens: int) -> bool:
        """Allocate the first waiting sequence's blocks before its KV is pulled into them, where the KV cache can hold
        `tokens` of it (those its admission holds), and begin the pull; it waits apart, holding them, until its KV
        lands (Replica.land), then is admitted ahead of the waiting requests. vLLM v1's decode instance allocates a
        handed-over request's blocks in its loop over waiting requests, under that loop's conditions, and only then
        has the KV connector read the KV into them, the request in WAITING_FOR_REMOTE_KVS till it has arrived
        (vllm/v1/core/sched/scheduler.py schedule(): get_num_new_matched_tokens, allocate_slots,
        update_state_after_alloc; commit 00024d31 of vllm-project/vllm). Under KV pressure a pull waits for blocks,
        and holds them while it crosses."""
        if not self._hold(state, seq, tokens):
            return False
        seq.kv_pull = "crossing"
        state.waiting.popleft()
        state.pulling.append(seq)
        state.pull(seq)
        return True

    def _prefill_whole(self, state: EngineState, batch: Batch, tokens: int, *, whole_request: bool) -> None:
        """Admit waiting prompts (FCFS) into `batch` to be prefilled whole, while their tokens stay within the prompt
        budget beside the `tokens` of decodes already in it (prompt_budget; a longer first prompt alone within
        prompt_alone: what those leave of max_batched_tokens), the running sequences within max_seqs, and the
        KV cache holds each one's prompt (or, with `whole_request`, its whole request). A sequence a prefill pool
        handed over joins the running ones without a prefill (the caller decides when it decodes). Swapped
        sequences come back before anything new is admitted."""
        # The decodes already in the batch (`tokens`, one token each) are those that go before its prompts: Orca's
        # (every running one, or under max_decode_preemptions those going first); none for the others.
        budget, alone = self.prompt_budget(tokens, overdue=tokens), self.prompt_alone(tokens, overdue=tokens)
        prompts = 0
        while state.waiting and not state.swapped and len(state.running) < self.limits.max_seqs:
            seq = self._head(state)
            if seq is None:
                break
            if not seq.in_prefill:  # handed over by a prefill pool: admitted straight into decoding
                if not self._admit(state, seq, seq.final_tokens if whole_request else seq.computed + 1):
                    break
                continue
            # Prompts together within the prompt budget; the first may be longer, and runs alone (prompt_batch_tokens).
            if prompts + seq.remaining_prefill > (budget if batch.prefills else alone):
                break
            if not self._admit(state, seq, seq.final_tokens if whole_request else seq.target):
                break
            batch.prefills.append((seq, seq.remaining_prefill))
            prompts += seq.remaining_prefill

    def _preempt(self, state: EngineState, seq: Sequence) -> None:
        """Free its blocks. By recompute, it waits at the front to recompute its context past what the cache still
        holds of it when it is admitted again: where the engine caches a preempted request's blocks
        (caches_preempted), their whole blocks (PagedKVCache.release_preempted), else its path's cached prefix only; by
        swap, its own KV (not the shared prefix, which stays cached) is copied to host memory and it waits to be
        swapped back in (before any new admission)."""
        swap = self.limits.preemption == "swap" and not seq.in_prefill
        if self.caches_preempted and not swap:
            state.kv.release_preempted(seq.index, seq.computed)
        else:
            state.kv.release(seq.index, keep_prefix=swap)
        state.running.remove(seq)
        seq.preemptions += 1
        state.preemptions += 1
        if swap:
            state.swapped_tokens += state.kv.own_tokens(seq.index, seq.computed)
            state.swapped.append(seq)
            state.swapped.sort(key=self._rank)
            return
        seq.target = seq.prompt + seq.generated
        seq.computed = state.kv.cached_prefix(seq.index, seq.target)
        state.waiting.appendleft(seq)

    def _rank(self, seq: Sequence) -> tuple:
        """A sequence's place in line: by priority, then arrival, under the priority policy; by its index (arrival
        order) otherwise."""
        return (seq.priority, seq.arrival_s, seq.index) if self.limits.queue_policy == "priority" else (seq.index,)

    def _swap_in(self, state: EngineState) -> int:
        """Bring swapped sequences back (oldest first) while their KV and the next token fit; tokens moved."""
        moved = 0
        while state.swapped and len(state.running) < self.limits.max_seqs:
            seq = state.swapped[0]
            state.kv.computed_before(seq.index, seq.computed)
            if not state.kv.can_hold(seq.index, seq.computed + 1, self._reserve_blocks(state)):
                break
            state.kv.hold(seq.index, seq.computed)
            state.swapped.pop(0)
            state.running.append(seq)
            moved += state.kv.own_tokens(seq.index, seq.computed)
        return moved

    def next_batch(self, state: EngineState) -> Batch:
        """The next iteration: swapped sequences come back first, then the scheduler's own choice; the KV
        tokens swapped either way ride on the batch.

        A call that preempts and schedules nothing (the chunked scheduler admits no waiting request in an iteration
        that preempted, as vLLM v1) is followed at once by the next, as vLLM's engine, its step empty, schedules again;
        the empty step's time is not counted. The retries are bounded by the sequences held, each such call having
        preempted one of them; a scheduler that preempts nothing and schedules nothing still returns the empty batch."""
        swapped_in = 0
        for _ in range(len(state.running) + len(state.swapped) + 1):
            swapped_in += self._swap_in(state) if state.swapped else 0
            self._order_waiting(state)
            preemptions = state.preemptions
            batch = self.schedule(state)
            state.waiting.extendleft(reversed(state.passed_over))
            state.passed_over.clear()
            if batch or state.preemptions == preemptions:
                break
        # Prefix blocks the admissions found in the host cache load like a swap-in, before the iteration computes.
        batch.swapped_tokens = swapped_in + state.swapped_tokens + state.kv.take_loaded_tokens()
        batch.fetched_tokens = state.kv.take_fetched_tokens()
        state.swapped_tokens = 0
        if self.limits.max_loras and batch:
            running = [seq for seq, _ in batch.prefills] + batch.decodes
            batch.adapters = frozenset(seq.adapter for seq in running) - {-1}
            batch.loaded_adapters = activate(state.lora_slots, batch.adapters, self.limits.max_loras)
        if state.no_drafts and batch.decodes:
            batch.without_drafts(state.no_drafts, self.limits.verify_tokens)
        return batch

    def _order_waiting(self, state: EngineState) -> None:
        """Put the waiting queue in the order its policy admits it (QUEUE_POLICIES)."""
        if self.limits.queue_policy == "priority" and len(state.waiting) > 1:
            state.waiting = deque(sorted(state.waiting, key=self._rank))
        if self.limits.queue_policy == "lpm" and 1 < len(state.waiting) <= LPM_MAX_WAITING:
            found = [state.kv.cached_prefix(seq.index, seq.target) if seq.in_prefill else 0 for seq in state.waiting]
            behind = state.kv.queued_duplicates([(seq.index, tokens) for seq, tokens in zip(state.waiting, found,
                                                                                            strict=True)
                                                 if seq.in_prefill], IN_QUEUE_TOKENS)
            # Longest cached prefix first, those sharing an earlier one's uncached prefix last, arrival order among
            # equals (a stable sort).
            keys = [math.inf if seq.index in behind else -tokens for seq, tokens in zip(state.waiting, found,
                                                                                       strict=True)]
            if min(keys) < max(keys):
                order = sorted(range(len(keys)), key=keys.__getitem__)
                state.waiting = deque(state.waiting[i] for i in order)

    def _grow_decodes(self, state: EngineState, decoding: list[Sequence]) -> list[Sequence]:
        """Give each decoding sequence (oldest first) blocks for its next token and its lookahead slots, preempting
        the newest running sequences when blocks run out (vLLM's policy; under the priority policy the least urgent,
        the latest arrival among equals); returns the sequences that decode. One that is preempted itself leaves
        those after it to grow still (_grow_decodes_until stops there)."""
        return self._grow(state, decoding, stop_at_self=False)[0]

    def _grow_decodes_until(self, state: EngineState,
                            decoding: list[Sequence]) -> tuple[list[Sequence], Sequence | None]:
        """As _grow_decodes, but stopping where a sequence is preempted itself, as vLLM v1's loop over its running
        requests does (vllm/v1/core/sched/scheduler.py schedule(), commit 00024d31: "if preempted_req == request: ...
        break", then "if new_blocks is None: # Cannot schedule this request. break"): the sequences after it are not
        grown and sit out. Returns those that decode and the one that stopped it (None: none did)."""
        return self._grow(state, decoding, stop_at_self=True)

    def _grow(self, state: EngineState, decoding: list[Sequence], *,
              stop_at_self: bool) -> tuple[list[Sequence], Sequence | None]:
        kv = state.kv
        kept: list[Sequence] = []
        pending = decoding
        while pending:
            grown = kv.grow_each([(seq.index, seq.computed + self._decode_slots(state, seq)) for seq in pending])
            kept += pending[:grown]
            if grown == len(pending):
                break
            seq, pending = pending[grown], pending[grown + 1:]
            # Blocks ran out: preempt until it grows, or is preempted itself.
            while True:
                victim = self._victim(state)
                self._preempt(state, victim)
                if victim is seq:
                    if stop_at_self:
                        return kept, seq
                    break
                for waiting_list in (pending, kept):
                    if victim in waiting_list:
                        waiting_list.remove(victim)
                if kv.grow_each([(seq.index, seq.computed + self._decode_slots(state, seq))]):
                    kept.append(seq)
                    break
        return kept, None

    def _decode_slots(self, state: EngineState, seq: Sequence) -> int:
        """KV slots a decoding sequence's next iteration holds past its cached tokens: its next token and its lookahead
        slots, whatever it verifies, as vLLM v0's scheduler (the continuous scheduler's source) holds them for every
        decode (decode_tokens' note: can_append_slots and append_slots); the chunked scheduler's differ."""
        return 1 + self.limits.lookahead_slots

    def _victim(self, state: EngineState) -> Sequence:
        """The running sequence preempted where KV blocks run out: the newest (vLLM's policy), or under the priority
        policy the least urgent, the latest arrival among equals."""
        return max(state.running, key=self._rank) if self.limits.queue_policy == "priority" else state.running[-1]

    def _hold_preempting(self, state: EngineState, seq: Sequence, tokens: int) -> bool:
        """Hold KV for `tokens` of running `seq`, preempting (_victim) while its blocks do not fit, as vLLM v1 allocates
        a running request's chunk (vllm/v1/core/sched/scheduler.py schedule(), commit 00024d31: allocate_slots, and
        where it fails the preemption loop, "if preempted_req == request: ... break"); False where `seq` is preempted
        itself."""
        while not state.kv.can_hold(seq.index, tokens):
            victim = self._victim(state)
            self._preempt(state, victim)
            if victim is seq:
                return False
        state.kv.hold(seq.index, tokens)
        return True
