"""Replica: one engine instance as a SimPy process, running iterations its scheduler forms.

While requests are waiting or running, a replica asks its scheduler for the next batch, prices it
(IterationCostModel, memoized by shape), holds for its time and applies it: chunks advance prefills, a
finished prefill samples the first token, decodes add one token each, finished requests free their KV
blocks. An idle replica sleeps until work arrives. A replica of a prefill pool hands each request over once
its first token is sampled (its KV leaves with it, its blocks freed then, or where its scheduler holds them until
they are sent, Scheduler.holds_until_sent, once it notices that the decode side has read them: sim/kv_sends.py); a
replica of a decode pool admits such requests straight into decoding.

A replica on pipeline stages is several such engines (vLLM's virtual engines: one per stage, each with its own
scheduler, requests and share of the KV blocks) sharing the stages: an iteration holds each stage in turn, so
while one engine's batch runs on a later stage another's runs on the first, and each engine forms its next batch
when its last one has left the last stage (its tokens are sampled there). The engines share their devices' links too:
their KV copies (swaps, host-cache loads, KV-store fetches) run one after another (CopyQueue).

A replica whose attention runs data-parallel (sim/data_parallel.py) is several such engines too, one per rank, each with
its own scheduler, requests and share of the KV blocks, run in lockstep by one process (run_lockstep): every iteration
each forms its batch, the batches run together and apply at the same end.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from collections.abc import Sequence as Sequence_
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import simpy

from kernels.kv_policy import Window
from kernels.shapes import step_shape
from sim.costs import IterationCostModel
from sim.kv_sends import KVSends
from sim.schedulers import EngineState, Scheduler, Sequence
from sim.speculative import ServingSpeculation

ROLES = ("serve", "prefill", "decode")
RECENT_LEAVES = 64  # how many of its latest departures a replica keeps (a latency predictor's finish rate)


class IterationRow(NamedTuple):
    """One iteration a replica ran, as its log keeps it."""

    start_s: float
    duration_s: float
    seqs: int  # sequences it ran: those it prefilled a chunk of and those it decoded
    # Query tokens it computed: its chunks' and each decode's, one, or speculating the tokens it verified (its next and
    # its drafts, k + 1, fewer where the budget cut them: Batch.computed_tokens).
    tokens: int
    kv_blocks: int  # the engine's KV blocks in use
    dynamic_J: float
    prefill_tokens: int  # of its tokens, its prefill chunks' (0: it prefilled nothing)
    prefills: int  # sequences it prefilled a chunk of


class CopyQueue:
    """The links a replica's devices copy KV over (their host links, the KV store's network), shared by the replica's
    engines on pipeline stages: each stage's worker runs its engines' cache operations one after another, so a copy
    starts when the one before it is done."""

    def __init__(self) -> None:
        self.free_s = 0.0

    def reserve(self, now_s: float, duration_s: float) -> float:
        """When a copy of `duration_s` asked for at `now_s` is done."""
        self.free_s = max(now_s, self.free_s) + duration_s
        return self.free_s


class Replica:
    """The process of one replica and what it records."""

    def __init__(self, env: simpy.Environment, costs: IterationCostModel, scheduler: Scheduler, state: EngineState,
                 *, window: Window, swap_s_per_token: float, on_finish: Callable[[Sequence], None],
                 fetch_s_per_token: float = 0.0,
                 on_prefilled: Callable[[Sequence], None] | None = None,
                 speculation: ServingSpeculation | None = None, seed: Sequence_[int] = (0,),
                 stages: Sequence_[simpy.Resource] = (), shared_prefix: int = 0, copies: CopyQueue | None = None,
                 pool: int = 0, adapter_load_s: float = 0.0):
        """`swap_s_per_token`, `fetch_s_per_token`: the time a token's KV takes over the host link and from the pool's
        KV store; `adapter_load_s`: the time a LoRA adapter takes from host memory into a GPU slot; `speculation`:
        decode speculatively (sim/speculative.py), drawing accepted tokens from `seed`;
        `stages`: the pipeline stages it shares with its replica's other engines (none: it runs on its devices alone),
        and `copies` the links they copy KV over (default: its own);
        `shared_prefix`: the length of the cached prefix its decodes' attention reads once for each group's sequences
        sharing it (cascade attention; 0: each sequence reads its own copy, as paged attention does);
        `pool`: the index of its pool among the run's (sim/serving.py serve_pools)."""
        self.env, self.costs, self.scheduler, self.state = env, costs, scheduler, state
        self.pool = pool
        self.stages = stages
        self.copies = copies if copies is not None else CopyQueue()
        self.shared_prefix = shared_prefix
        self.speculation = speculation
        if speculation is not None:
            # Its scheduler counts each decode's verified tokens against its budget, as the iteration priced computes
            # them (_price), so that a chunked iteration stays within the budget its activations are sized for.
            scheduler.limits = replace(scheduler.limits, verify_tokens=speculation.speculation.verified)
        # The sequences whose next verification carries k zero drafts: the draft did not run after their last
        # iteration (ServingSpeculation.drafts_after).
        self._undrafted: set[int] = set()
        self.rng = np.random.default_rng(list(seed))
        self.window, self.swap_s_per_token, self.fetch_s_per_token = window, swap_s_per_token, fetch_s_per_token
        self.adapter_load_s = adapter_load_s
        self.on_finish, self.on_prefilled = on_finish, on_prefilled
        self.swap_s = 0.0
        self.wake: simpy.Event = env.event()
        self.log: list[IterationRow] = []  # one row per iteration
        self.cost_counts: dict[int, list] = {}
        self.token_gaps: list[float] = []  # time between consecutive output tokens of a request
        self.left_s: deque[float] = deque(maxlen=RECENT_LEAVES)  # when its latest requests left (finished, handed over)
        # Called with it and each request that leaves it, finished or handed over (what a router may learn from).
        self.watchers: list[Callable[[Replica, Sequence], None]] = []
        # Called after each of its iterations (what a gateway holding requests for a free replica waits on).
        self.after_iteration: Callable[[], None] | None = None
        self.peak_blocks = state.kv.in_use_blocks  # its replica's KV blocks in use at the most (every engine's)
        self.peak_own_blocks = state.kv.in_use_blocks  # its own share's blocks in use at the most
        self.peers: list[Replica] = [self]  # the engines of its replica (its stages'), itself included
        self.sends = KVSends()  # the requests it handed over whose KV the decode side reads from its blocks
        self.stepping = False  # whether an iteration of its is running

    @property
    def outstanding(self) -> int:
        """Requests it holds, waiting, pulling their KV or running (what a least-loaded router compares)."""
        state = self.state
        return len(state.waiting) + len(state.pulling) + len(state.running) + len(state.swapped)

    @property
    def pending_tokens(self) -> int:
        """Tokens its requests still wait for, as a token-counting router compares them: each request's prompt
        tokens still to prefill (or recompute) and one for its next output token (sim/routers.py LeastTokens)."""
        state = self.state
        return sum(seq.remaining_prefill + 1 for queue in (state.waiting, state.pulling, state.running, state.swapped)
                   for seq in queue)

    def accept(self, seq: Sequence) -> None:
        """Queue a request (a new one, or one handed over after its prefill) and wake the replica."""
        self.state.waiting.append(seq)
        self._wake()

    def expect(self, seq: Sequence) -> None:
        """A handed-over request routed here before its KV crosses, into no blocks allocated for it (its scheduler
        allocates none before: Scheduler.allocates_before_pull): one of its requests, as its router counts them, until
        it arrives (arrive)."""
        seq.kv_pull = "expected"
        self.state.pulling.append(seq)

    def arrive(self, seq: Sequence) -> None:
        """An expected request's KV has crossed: it is queued as a new one is (accept)."""
        self.state.pulling.remove(seq)
        seq.kv_pull = ""
        self.accept(seq)

    def land(self, seq: Sequence) -> None:
        """A pulled sequence's KV has landed in its blocks (Scheduler._pull): it waits to decode ahead of the waiting
        requests, behind those landed before it (vLLM v1 keeps a request in WAITING_FOR_REMOTE_KVS at the head of its
        waiting queue), and the engine wakes."""
        state = self.state
        state.pulling.remove(seq)
        seq.kv_pull = "landed"
        ahead = 0
        while ahead < len(state.waiting) and state.waiting[ahead].kv_pull == "landed":
            ahead += 1
        state.waiting.insert(ahead, seq)
        self._wake()

    def sent(self, seq: Sequence) -> None:
        """The decode side has read a handed-over sequence's KV: the engine frees the blocks it held for it at its next
        poll (KVSends): at once where it holds requests it cannot batch (it steps without a forward pass, and its
        waiting requests may fit now), else at the end of its iteration running now or of its next one."""
        self.sends.read(seq, self.env.now)
        if not self.stepping and self.holds_requests and self.poll_sends():
            self._wake()

    def poll_sends(self) -> bool:
        """Free the blocks of the sends its connector reports done (read, or expired unread), as a finished request's
        (a conversation's next turn keeps its context cached: PagedKVCache.release); whether any were."""
        freed = self.sends.poll(self.env.now)
        for seq in freed:
            self.state.kv.release(seq.index, computed=seq.computed)
        return bool(freed)

    @property
    def holds_requests(self) -> bool:
        """Whether its scheduler has requests (waiting, pulling their KV, running or swapped), so that its engine steps
        (vLLM's scheduler.has_requests(); a request whose blocks are held for a send is not one)."""
        state = self.state
        return bool(state.waiting or state.pulling or state.running or state.swapped)

    def _wake(self) -> None:
        if not self.wake.triggered:
            self.wake.succeed()

    def waits(self) -> bool:
        """Whether an engine whose scheduler formed no batch waits for more (it holds nothing, or a pull is yet to
        land, or a send to free its blocks), rather than holding requests it can never batch."""
        state = self.state
        return bool(state.pulling) or self.sends.holding or not (state.waiting or state.running or state.swapped)

    def next_batch(self):
        """Its scheduler's next batch now; where it forms none, its engine's step without a forward pass polls the
        connector first, and its scheduler tries again where that freed a send's blocks."""
        self.state.now_s = self.env.now
        batch = self.scheduler.next_batch(self.state)
        if not batch and self.poll_sends():
            batch = self.scheduler.next_batch(self.state)
        return batch

    def sleep(self) -> simpy.Event:
        """What an engine that formed no batch waits on: its next wake (work arrives, a pull lands, a read frees a
        send's blocks), or, while it holds requests it cannot batch (stepping without a forward pass), the expiry of
        the first send whose blocks it holds unread."""
        self.wake = self.env.event()
        expiry_s = self.sends.next_expiry_s() if self.holds_requests else math.inf
        if math.isinf(expiry_s):
            return self.wake
        return self.wake | self.env.timeout(max(expiry_s - self.env.now, 0.0))

    def run(self):
        while True:
            batch = self.next_batch()
            if not batch:
                if self.waits():
                    yield self.sleep()
                    continue
                raise self.unschedulable()
            # The replica's KV blocks in use: every engine's on its stages.
            self.peak_blocks = max(self.peak_blocks, sum(peer.state.kv.in_use_blocks for peer in self.peers))
            self.peak_own_blocks = max(self.peak_own_blocks, self.state.kv.in_use_blocks)
            cost = self._price(batch)
            entry = self.cost_counts.setdefault(id(cost), [cost, 0])
            entry[1] += 1
            start = self.env.now
            self.stepping = True
            # Swapped KV crosses the host link before the iteration computes (vLLM blocks on its cache ops).
            swap_s = self.copy_in_s(batch)
            self.swap_s += swap_s
            if self.stages:
                # Every stage swaps its layers' share of the blocks from the iteration's start (or once the replica's
                # other engines' copies are done), over its own links, as each vLLM worker runs its cache ops before it
                # waits for the previous stage; it computes once its swap is done and its turn has come.
                swapped_s = self.copies.reserve(start, swap_s) if swap_s else start
                for stage, stage_s in zip(self.stages, cost.stage_time_s, strict=True):
                    with stage.request() as turn:
                        yield turn
                        yield self.env.timeout(max(swapped_s - self.env.now, 0.0) + stage_s)
                time_s = self.env.now - start  # its stages' times and its waits for them
            else:
                time_s = cost.time_s + swap_s
                yield self.env.timeout(time_s)
            self.stepping = False
            # A speculative iteration verifies each decode's k + 1 tokens (_price).
            query = self.speculation.speculation.verified if self.speculation is not None and batch.decodes else 1
            self.log.append(self.row(start, time_s, batch, query, cost.compute_J + cost.memory_J))
            self._apply(batch, self.env.now)
            self.poll_sends()
            if self.after_iteration is not None:
                self.after_iteration()

    def row(self, start_s: float, duration_s: float, batch, decode_query: int, dynamic_J: float) -> IterationRow:
        """The log's row of an iteration of `batch` that computed `decode_query` tokens a decode."""
        return IterationRow(start_s, duration_s, batch.size, batch.computed_tokens(decode_query),
                            self.state.kv.in_use_blocks, dynamic_J, batch.prefill_tokens, len(batch.prefills))

    def unschedulable(self) -> RuntimeError:
        """The error of an engine holding requests its scheduler can never batch."""
        state = self.state
        seq = (state.waiting or state.swapped or state.running)[0]
        return RuntimeError(f"request {seq.index} ({seq.prompt} prompt + {seq.output} output tokens) can never be "
                            f"scheduled: {state.kv.capacity_blocks} KV blocks of {state.kv.block_tokens} tokens, "
                            f"limits {self.scheduler.limits}")

    def shape(self, batch):
        """The shape of a plain iteration of `batch` (kernels/shapes.py)."""
        own = self.costs.template.sliding_window  # the model's window: what its prefill chunks attend to
        return self._placed(batch.shape(self.window, prefill_window=own, shared_prefix=self.shared_prefix,
                                        prefix_groups=self._sharers(batch),
                                        layer_window=self.costs.template.layer_window), batch)

    def _sharers(self, batch) -> list[int] | None:
        """The group whose cached prefix each decode of `batch` shares whole, where its attention cascades (None: it
        does not)."""
        if not self.shared_prefix:
            return None
        return self.state.kv.prefix_sharers([seq.index for seq in batch.decodes])

    def _price(self, batch):
        """The iteration's cost: plain, or a speculative verification of every decode's k + 1 tokens and, where the
        draft runs after it (ServingSpeculation.drafts_after), the draft's steps over the iteration's sequences (a
        draft model's over its prefill chunks too: it computes its own KV of the prompt)."""
        spec = self.speculation
        if spec is None:
            return self.costs.price(self.shape(batch))
        drafting = spec.drafts_after(batch)
        if not (batch.decodes or (drafting and spec.draft is not None)):
            return self.costs.price(self.shape(batch))
        own, sharers = self.costs.template.sliding_window, self._sharers(batch)
        shape = batch.shape(self.window, spec.speculation.verified if batch.decodes else 1, prefill_window=own,
                            shared_prefix=self.shared_prefix, prefix_groups=sharers,
                            layer_window=self.costs.template.layer_window)
        if not drafting:
            return self.costs.price(shape)
        draft_shapes = ()
        if spec.draft is not None:
            draft_shapes = batch.draft_shapes(self.window, spec.draft.template.sliding_window, self.shared_prefix,
                                              sharers, spec.draft_query, spec.chunk_slots,
                                              layer_window=spec.draft.template.layer_window,
                                              later_steps=spec.speculation.drafted - 1)
        return spec.price(self.costs.price(shape), shape, draft_shapes, sum(batch.short))

    def _placed(self, shape, batch):
        """`shape` with its decodes whose KV lies on a hybrid pool's attention devices (PagedKVCache.apart) counted
        apart; itself where none does."""
        kv = self.state.kv
        if kv.device_blocks is None or not batch.decodes:
            return shape
        apart = kv.apart([seq.index for seq in self.state.running])
        decodes = [seq for seq in batch.decodes if seq.index in apart]
        if not decodes:
            return shape
        placed = step_shape([], [seq.computed + 1 for seq in decodes], sampled=len(decodes), window=self.window)
        return replace(shape, apart_seqs=placed.decode_seqs, apart_kv=placed.decode_kv, apart_work=placed.decode_work)

    def _apply(self, batch, now_s: float) -> None:
        # Whether the draft runs after this iteration, decided on the lengths it ran at.
        ran = self.speculation is not None and self.speculation.drafts_after(batch)
        for seq, chunk in batch.prefills:
            seq.computed += chunk
            self.state.kv.publish(seq.index, seq.computed)
            if seq.computed >= seq.target:
                self._sample([seq], now_s)
                if self.on_prefilled is not None and seq.generated < seq.output:
                    self._leave(seq, sending=self.scheduler.holds_until_sent)
                    self.on_prefilled(seq)
        if self.speculation is None:  # one token each
            sampled = [seq for seq in batch.decodes if seq.generated < seq.output]
            for seq in sampled:
                seq.computed += 1
                seq.target += 1
            self._sample(sampled, now_s)
            return
        drafts = [seq.index not in self._undrafted for seq in batch.decodes]
        accepted = iter(self.speculation.accepted_tokens(self.rng, sum(drafts)).tolist() if any(drafts) else [])
        # A sequence verifying zero drafts (the draft did not run after its last iteration) advances by one token.
        advance = [next(accepted) if drafted else 1 for drafted in drafts]
        indices = [seq.index for seq, _ in batch.prefills] + [seq.index for seq in batch.decodes]
        if ran:
            self._undrafted.difference_update(indices)
        else:
            self._undrafted.update(indices)
        # Those whose n-gram lookup after it finds no match verify one token next (EngineState.no_drafts).
        self.state.no_drafts.difference_update(indices)
        self.state.no_drafts.update(self.speculation.unmatched(self.rng, indices))
        for place, verified in enumerate(batch.short, len(advance) - len(batch.short)):
            # Verifying fewer tokens than the others (Batch.short: its drafts cut by the budget, or none yet), a decode
            # accepts at most those.
            advance[place] = min(advance[place], verified)
        for seq, tokens in zip(batch.decodes, advance, strict=True):
            tokens = max(0, min(tokens, seq.output - seq.generated))  # tokens past the request's last are dropped
            seq.computed += tokens
            seq.target += tokens
            # Its next hold counts a sliding group's skipped blocks from the tokens it accepted, not the slots it held.
            self.state.kv.computed_before(seq.index, seq.computed)
            self._sample([seq] * tokens, now_s)

    def _sample(self, seqs: list[Sequence], now_s: float) -> None:
        """Each of `seqs` samples a token at `now_s` (one listed n times, n tokens); a request sampling its last
        leaves."""
        gaps = self.token_gaps
        for seq in seqs:
            seq.generated += 1
            if math.isnan(seq.first_token_s):
                seq.first_token_s = now_s
            else:
                gaps.append(now_s - seq.last_token_s)
            seq.last_token_s = now_s
            if seq.generated >= seq.output:
                seq.finish_s, seq.pool = now_s, self.pool
                self._leave(seq)
                self.on_finish(seq)

    def copy_in_s(self, batch) -> float:
        """The time the KV a batch brings onto the device takes before it computes: over the host link (swaps, host
        cache loads), then from the pool's KV store; and the LoRA adapters it loads into GPU slots over the host
        link."""
        return (batch.swapped_tokens * self.swap_s_per_token + batch.fetched_tokens * self.fetch_s_per_token
                + batch.loaded_adapters * self.adapter_load_s)

    def _leave(self, seq: Sequence, sending: bool = False) -> None:
        """Free its KV blocks (a conversation's turn leaves its context cached for the next: PagedKVCache.release), or
        while `sending` (handed over, Scheduler.holds_until_sent) hold them until the decode side has read its KV
        (sent)."""
        if sending:
            self.sends.hand_over(seq, self.env.now)
        else:
            self.state.kv.release(seq.index, computed=seq.computed)
        self.state.running.remove(seq)
        self.left_s.append(self.env.now)
        for watch in self.watchers:
            watch(self, seq)


def run_lockstep(ranks: list[Replica]):
    """The process of a data-parallel replica's rank engines (sim/data_parallel.py): every iteration each rank's
    scheduler forms its batch, the ranks with one run them together in IterationCostModel.price_ranks' time (plus the
    longest swap-in among them), and every batch applies at its end. The iteration's energy is recorded once, its log
    rows one per working rank, each with an even share of the energy."""
    env, costs, lead = ranks[0].env, ranks[0].costs, ranks[0]
    while True:
        working = []
        for rank in ranks:
            batch = rank.next_batch()
            if batch:
                working.append((rank, batch))
            elif not rank.waits():  # the ranks share nothing but the iteration: no other rank's batch frees its blocks
                raise rank.unschedulable()
        if not working:
            yield env.any_of([rank.sleep() for rank in ranks])
            continue
        in_use = sum(rank.state.kv.in_use_blocks for rank in ranks)
        for rank in ranks:
            rank.peak_blocks = max(rank.peak_blocks, in_use)
            rank.peak_own_blocks = max(rank.peak_own_blocks, rank.state.kv.in_use_blocks)
        cost = costs.price_ranks(tuple(rank.shape(batch) for rank, batch in working))
        entry = lead.cost_counts.setdefault(id(cost), [cost, 0])
        entry[1] += 1
        start = env.now
        swaps_s = [rank.copy_in_s(batch) for rank, batch in working]
        for (rank, _), swap_s in zip(working, swaps_s, strict=True):
            rank.swap_s += swap_s
        time_s = cost.time_s + max(swaps_s)
        for rank, _ in working:
            rank.stepping = True
        yield env.timeout(time_s)
        energy_J = (cost.compute_J + cost.memory_J) / len(working)
        for rank, batch in working:
            rank.stepping = False
            rank.log.append(rank.row(start, time_s, batch, 1, energy_J))  # priced plain (Replica.shape)
            rank._apply(batch, env.now)
            rank.poll_sends()
        for rank, _ in working:
            if rank.after_iteration is not None:
                rank.after_iteration()
