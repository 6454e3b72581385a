"""IterationCostModel: the time and energy of any serving iteration on one device, memoized by shape bucket.

An iteration's kernels come from the model's step template (kernels/shapes.py) and are priced by the device
model in one call; kernels run back to back, so the iteration takes the sum of their times, or its host
dispatch time where that is longer (sim/step_costs.py: host and device overlap). Shapes that
differ only by a few keys of attention are priced once: with `kv_bucket_tokens` > 0, the mean keys a decode
token attends to, a prefill query attends to, and a chunk reads from its cached prefix are rounded to that
many tokens (a long run then prices each distinct bucket once). With 0 every shape is priced as it is.

On a device of several units that splits batches into sub-batches (DeviceModel.sub_batches: NeuPIMs' NPU and PIM),
an iteration may run as sub-batches that take turns on the units (sim/interleave.py), where that finishes sooner.

On tensor-parallel devices an iteration may run as two token halves, one half's all-reduces on the link while the other
half computes (`overlap` token_split: TokenWeave), where that finishes sooner.

With data-parallel attention (`experts`: sim/data_parallel.py) an iteration is the ranks' shapes run in lockstep
(price_ranks): each rank's dense part on its device, the experts on every device, the tokens exchanged by all-to-alls;
a single shape is one rank's iteration beside idle ranks, each running a dummy batch. With `overlap` dual_batch the
ranks run it as two micro-batches, one's all-to-alls on the link while the other computes, where vLLM's dual-batch
overlap splits it (sim/data_parallel.py ExpertRanks.dual_batch).

On `stages` pipeline stages an iteration passes each stage in turn: a stage runs its share of the decoder layers
(kernels/shapes.py StepTemplate.stage_table) on its own devices and host, then sends the hidden state of every
token to the next stage (kernels/parallel.py stage_send_bytes_per_token, as pipeline_sends prices a static
batch's sends).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hw_models.device import dispatch_s
from kernels.kernel import KIND_CLASS, Kernel, KernelKind
from kernels.parallel import collective_kernel
from kernels.shapes import LAYERS_DENSE, LAYERS_MOE, PLACE_HEAD, PLACE_LAYERS, PLACE_TAIL, StepShape, StepTemplate
from kernels.table import KIND_CODE, KernelTable, class_masks
from sim.attention_pool import AttentionPool, disaggregated_time_s, hybrid_time_s
from sim.cuda_graphs import DEFAULT_LIMITS, CaptureLimits, PassLaunch
from sim.data_parallel import ExpertRanks, dbo_comm_sms, dual_batch_chain, is_dummy, padded
from sim.interleave import interleaved_schedule
from sim.step_costs import HOST_WAIT, host_stall_s, pass_launch

KERNEL_CLASS_NAMES = tuple(dict.fromkeys(KIND_CLASS.values()))
# An iteration's time by class: its kernel classes' busy time, then its wait on the host.
TIME_CLASS_NAMES = (*KERNEL_CLASS_NAMES, HOST_WAIT)
# Mean KV lengths under this many buckets are priced exactly (a bucket would be over 1/8 of them).
EXACT_BUCKETS = 8
# How an iteration overlaps its communication with compute: not at all, TokenWeave's token splitting of tensor-parallel
# all-reduces (IterationCostModel._price_token_split), or vLLM's dual-batch overlap of data-parallel ranks' all-to-alls
# (IterationCostModel._micro_batch_chain).
OVERLAPS = ("none", "token_split", "dual_batch")


@dataclass(frozen=True, kw_only=True)
class IterationCost:
    """Time and dynamic energy of one iteration; its time by class (TIME_CLASS_NAMES order)."""

    time_s: float
    compute_J: float
    memory_J: float
    class_time_s: np.ndarray
    # Each pipeline stage's time, its send to the next stage included (one stage: (time_s,)); time_s is their sum.
    stage_time_s: tuple[float, ...] = ()


class IterationCostModel:
    """Prices iterations of one model (its step template) on one device in one execution mode."""

    def __init__(self, device, template: StepTemplate, *, execution: str = "eager", kv_bucket_tokens: int = 0,
                 stages: int = 1, send_B_per_token: float = 0.0, attention: AttentionPool | None = None,
                 overlap: str = "none", experts: ExpertRanks | None = None,
                 capture: CaptureLimits = DEFAULT_LIMITS):
        """`stages`: pipeline stages, each sending `send_B_per_token` bytes per token to the next
        (kernels/parallel.py stage_send_bytes_per_token); `attention`: the devices that run the attention apart
        from the model's (sim/attention_pool.py; None: the model's devices run it); `overlap` (OVERLAPS): token_split
        runs an iteration as two token halves whose all-reduces overlap the other half's compute, where that finishes
        sooner (one stage, attention on the model's devices), dual_batch a data-parallel replica's iteration as two
        micro-batches whose all-to-alls overlap the other's compute, where vLLM splits it; `experts`: the experts of a
        data-parallel replica, whose experts' rows `template` lacks (sim/data_parallel.py; one stage, no attention pool,
        no token_split; `device` is then the system of the ranks' devices); `capture`: the scheduler limits that set the
        largest pass an engine runs from CUDA graphs (sim/cuda_graphs.py)."""
        if kv_bucket_tokens < 0:
            raise ValueError(f"kv_bucket_tokens: found {kv_bucket_tokens}, allowed: an integer >= 0")
        if stages != 1 and not (1 < stages <= template.attention_layers and send_B_per_token > 0):
            raise ValueError(f"stages: found {stages} (send_B_per_token {send_B_per_token}), allowed: 1 to the "
                             f"model's {template.attention_layers} layers, with bytes to send beyond one stage")
        self.device = device
        self.template = template
        self.execution = execution
        self.kv_bucket_tokens = kv_bucket_tokens
        self.stages = stages
        self.send_B_per_token = send_B_per_token
        if attention is not None and stages > 1:
            raise ValueError(f"attention: found an attention pool with {stages} stages, allowed: one stage")
        self.attention = attention
        if overlap not in OVERLAPS or (overlap != "none" and (stages > 1 or attention is not None)):
            raise ValueError(f"overlap: found {overlap!r} ({stages} stages, attention pool: {attention is not None}), "
                             f"allowed: one of {', '.join(OVERLAPS)}; token_split or dual_batch on one stage without "
                             f"an attention pool")
        self.overlap = overlap
        if experts is not None and (stages > 1 or attention is not None or overlap == "token_split"):
            raise ValueError(f"experts: found data-parallel ranks with {stages} stages, attention pool "
                             f"{attention is not None}, overlap {overlap!r}, allowed: one stage, no attention pool, "
                             f"overlap none or dual_batch")
        if overlap == "dual_batch" and (experts is None or experts.exchange != "all_to_all"):
            beside = "no data-parallel ranks" if experts is None else "experts split over the ranks"
            raise ValueError(f"overlap: found 'dual_batch' with {beside}, "
                             f"allowed: dual_batch on data-parallel ranks beside spread experts (their all-to-alls)")
        self.experts = experts
        self.capture = capture
        self._memo: dict[tuple, IterationCost] = {}
        self._rank_memo: dict[tuple, _RankPart] = {}
        self._expert_memo: dict[tuple[int, str], tuple[_Priced, float]] = {}
        self._linear_memo: dict[tuple, tuple[np.ndarray, np.ndarray, dict]] = {}

    @property
    def shapes_priced(self) -> int:
        """How many distinct shape buckets have been priced."""
        return len(self._memo)

    def price(self, shape: StepShape) -> IterationCost:
        """The cost of an iteration of this shape (the cost of its bucket's representative shape). One that may cascade
        shared prefixes (StepShape.decode_shared_groups) costs the cheaper of that and its paged iteration, as an engine
        decides per step (vLLM's use_cascade_attention weighs the two), the paged one priced as a paged run prices it
        (by its own bucket), so cascading is never the slower. A pass an engine replays from CUDA graphs is priced at
        its captured size (launched)."""
        key = self._bucket(self.launched(shape))
        cost = self._memo.get(key)
        if cost is None:
            cost = self._memo[key] = self._price(self._representative(key))
        if shape.decode_shared_seqs:
            paged = self.price(shape.paged())
            if paged.time_s < cost.time_s:
                return paged
        return cost

    def launched(self, shape: StepShape) -> StepShape:
        """`shape` as its pass runs: padded to the captured size an engine runs it at (sim/step_costs.py pass_launch),
        where it runs from CUDA graphs."""
        tokens = self._launch(shape).tokens
        return padded(shape, tokens) if tokens != shape.tokens else shape

    def _launch(self, shape: StepShape) -> PassLaunch:
        """How `shape`'s pass launches (pass_launch): a decode-only pass that reads no shared prefix apart is a uniform
        decode (a cascaded one runs piecewise, as vLLM's dispatcher skips the full graphs for it)."""
        uniform = shape.prefill_seqs == 0 and not shape.decode_shared_seqs
        return pass_launch(self.device, self.execution, decode_only=uniform, tokens=shape.tokens,
                           query=shape.decode_query, limits=self.capture)

    def _mode(self, shape: StepShape) -> str:
        """The launch mode `shape`'s pass is priced in."""
        return self._launch(shape).mode

    def _round(self, total: float, per: int) -> float:
        """`total` over `per` items, rounded to the bucket; exact (as a negative key) below EXACT_BUCKETS buckets,
        where one bucket would be a large share of the value."""
        step = self.kv_bucket_tokens
        if total < EXACT_BUCKETS * step * per:
            return -total
        return round(total / per / step)

    def _bucket(self, s: StepShape) -> tuple:
        """A shape's memo key: what its sequences compute, bucketed (_sequences_bucket), its padding and its LoRA
        adapters."""
        return self._sequences_bucket(s), s.padding, s.lora_adapters

    def _sequences_bucket(self, s: StepShape) -> tuple:
        scored = (s.prefill_scored_share, s.prefill_score_B)  # a KV policy's, the same for every iteration of a run
        if not self.kv_bucket_tokens:
            return (s.prefill_seqs, s.prefill_tokens, s.prefill_pairs, s.prefill_cached, s.decode_seqs, s.decode_kv,
                    s.sampled, s.positions, s.decode_query, s.decode_work, s.decode_shared_kv,
                    s.decode_shared_seqs, s.decode_shared_groups, s.estimate_pairs, scored,
                    (s.apart_seqs, s.apart_kv, s.apart_work),
                    (s.prefill_merges, s.prefill_evicted, s.prefill_budget, s.prefill_key_B),
                    (s.window_kv, s.window_pairs, s.window_cached))
        # The sequences apart and those the model's devices attend to, each rounded to the bucket.
        own = max(s.decode_seqs - s.apart_seqs, 1)
        return (s.prefill_seqs, s.prefill_tokens, self._round(s.prefill_pairs, max(s.prefill_tokens, 1)),
                self._round(s.prefill_cached, max(s.prefill_seqs, 1)), s.decode_seqs,
                self._round(s.decode_kv - s.apart_kv, own), s.sampled, s.positions, s.decode_query,
                None if s.decode_work is None else self._round(s.own_work, own), s.decode_shared_kv,
                s.decode_shared_seqs, s.decode_shared_groups, self._round(s.estimate_pairs, max(s.prefill_tokens, 1)),
                scored,
                (s.apart_seqs, self._round(s.apart_kv, max(s.apart_seqs, 1)),
                 None if s.apart_work is None else self._round(s.apart_work, max(s.apart_seqs, 1))),
                (s.prefill_merges, self._round(s.prefill_evicted, max(s.prefill_merges, 1)), s.prefill_budget,
                 s.prefill_key_B),
                (self._round(s.window_kv, max(s.decode_seqs, 1)), self._round(s.window_pairs, max(s.prefill_tokens, 1)),
                 self._round(s.window_cached, max(s.prefill_seqs, 1))))

    def _representative(self, key: tuple) -> StepShape:
        sequences, padding, adapters = key
        return replace(self._sequences_representative(sequences), padding=padding, lora_adapters=adapters)

    def _sequences_representative(self, key: tuple) -> StepShape:
        (seqs, tokens, pairs, cached, decodes, kv, sampled, positions, query, work, shared, sharing, prefixes,
         estimate, (scored_share, score_B), (apart, apart_kv, apart_work), (merges, evicted, budget, key_B),
         (window_kv, window_pairs, window_cached)) = key
        if self.kv_bucket_tokens:
            step = self.kv_bucket_tokens

            def value(key: float, per: int) -> float:
                return -key if key <= 0 else key * step * per

            pairs, cached = value(pairs, tokens), value(cached, seqs)
            apart_kv = value(apart_kv, apart)
            apart_work = None if apart_work is None else value(apart_work, apart)
            evicted = value(evicted, merges)
            # The model's devices' own part and the part apart (none but in a hybrid pool), each its bucket.
            kv = value(kv, decodes - apart) + apart_kv
            work = None if work is None else value(work, decodes - apart) + (apart_work or 0.0)
            estimate = value(estimate, tokens)
            window_kv, window_pairs = value(window_kv, decodes), value(window_pairs, tokens)
            window_cached = value(window_cached, seqs)
        return StepShape(prefill_seqs=seqs, prefill_tokens=tokens, prefill_pairs=pairs, prefill_cached=cached,
                         apart_seqs=apart, apart_kv=round(apart_kv), apart_work=apart_work, estimate_pairs=estimate,
                         decode_seqs=decodes, decode_kv=kv, sampled=sampled,
                         positions=positions, decode_query=query, decode_work=work,
                         decode_shared_kv=shared, decode_shared_seqs=sharing, decode_shared_groups=prefixes,
                         prefill_scored_share=scored_share,
                         prefill_score_B=score_B, prefill_merges=merges, prefill_evicted=round(evicted),
                         prefill_budget=budget, prefill_key_B=key_B, window_kv=round(window_kv),
                         window_pairs=round(window_pairs), window_cached=round(window_cached))

    def price_ranks(self, shapes: tuple[StepShape, ...]) -> IterationCost:
        """The cost of one lockstep iteration of a data-parallel replica whose working ranks run `shapes` (the others
        a dummy batch each, every rank padded where vLLM pads: ExpertRanks.rank_shapes): sim/data_parallel.py's
        bound. Each rank's part and the experts' are memoized by shape bucket."""
        experts = self.experts
        shapes, mode = experts.rank_shapes(shapes, self._launch)
        if self.overlap == "dual_batch" and experts.dual_batch(shapes):
            comm_sms = dbo_comm_sms(shapes)
            return self._price_chains(mode, experts.micro_batches(shapes),
                                      lambda ranks, mode: self._micro_batch_chain(ranks, mode, comm_sms), 2)
        parts = [self._rank_part(shape, mode) for shape in shapes]
        routed, routed_kernels = self._experts_part(sum(shape.tokens for shape in shapes), mode)
        exchange_s = experts.moe_layers * experts.exchange_s(max(shape.tokens for shape in shapes))
        shared_s = float(routed.stage_s[0]) + exchange_s
        shared_kernels = routed_kernels + 2 * experts.moe_layers
        slowest, slowest_s, slowest_wait = None, -1.0, 0.0
        for part in parts:
            device_s = float(part.priced.stage_s[0]) + shared_s
            wait_s = float(host_stall_s(dispatch_s(self.device, mode) * (part.kernels + shared_kernels), device_s))
            if device_s + wait_s > slowest_s:
                slowest, slowest_s, slowest_wait = part.priced, device_s + wait_s, wait_s
        class_time = slowest.class_time_s + routed.class_time_s
        class_time[KERNEL_CLASS_NAMES.index("communication")] += exchange_s
        class_time[-1] += slowest_wait
        return IterationCost(time_s=slowest_s, compute_J=routed.compute_J + sum(p.priced.compute_J for p in parts),
                             memory_J=routed.memory_J + sum(p.priced.memory_J for p in parts), class_time_s=class_time,
                             stage_time_s=(slowest_s,))

    def _rank_part(self, shape: StepShape, mode: str, comm_sms: int = 0) -> _RankPart:
        """One rank's dense part in launch mode `mode` (every row but the experts', on its device, its host's wait left
        out) while the all-to-all kernels hold `comm_sms` SMs (ExpertRanks.sharing_sms); its groups' shared prefixes
        cascaded where that is the faster, its paged part priced by its own bucket (as price weighs the two). A dummy
        batch runs no rows after the decoder's layers (its final norm, LM head and sampling), as an engine's dummy
        forward returns hidden states. Memoized by shape bucket."""
        dummy = is_dummy(shape)
        key = (("dummy", shape.padding) if dummy else self._bucket(shape), mode, comm_sms)
        if key not in self._rank_memo:
            representative = shape if dummy else self._representative(key[0])
            table, counts = self.template.stage_table(representative, 1)
            places = self.template.row_places(representative, len(table))
            kinds = self.template.row_layer_kinds(representative, len(table))
            if dummy:
                kept = np.flatnonzero(places != PLACE_TAIL)
                table, counts, places, kinds = table.select(kept), counts[:, kept], places[kept], kinds[kept]
            costs = self.experts.sharing_sms(comm_sms).system.device.cost_table(table, mode)
            self._rank_memo[key] = _RankPart(place_s=self._place_seconds(costs.time_s * counts[0], places, kinds),
                                             priced=_priced(costs.matrix, table.class_masks, counts, 0.0),
                                             kernels=float(counts.sum()))
        part = self._rank_memo[key]
        if shape.decode_shared_seqs:
            paged = self._rank_part(shape.paged(), mode, comm_sms)
            if float(paged.priced.stage_s[0]) < float(part.priced.stage_s[0]):
                return paged
        return part

    def _place_seconds(self, time_s: np.ndarray, places: np.ndarray, kinds: np.ndarray,
                       ) -> tuple[float, float, float, float]:
        """The seconds of a rank's rows (`time_s`, each row's over its every run) in its head, its decoder layers
        without experts (an MoE model's dense first layers), its MoE layers (their rows but the experts') and its tail
        (StepTemplate.row_places and row_layer_kinds: a row every layer runs shared by the layers)."""
        head_s, layers_s, tail_s = (float(time_s[places == place].sum())
                                    for place in (PLACE_HEAD, PLACE_LAYERS, PLACE_TAIL))
        dense_share = 1.0 - self.experts.moe_layers / self.template.attention_layers
        dense_s, moe_s = (float(time_s[(places == PLACE_LAYERS) & (kinds == kind)].sum())
                          for kind in (LAYERS_DENSE, LAYERS_MOE))
        every_s = layers_s - dense_s - moe_s
        return head_s, dense_s + dense_share * every_s, moe_s + (1.0 - dense_share) * every_s, tail_s

    def _experts_part(self, tokens: int, mode: str, comm_sms: int = 0) -> tuple[_Priced, float]:
        """Every device's experts on the tokens of all ranks in launch mode `mode` (its energy every device's), while
        the all-to-all kernels hold `comm_sms` SMs (ExpertRanks.sharing_sms), and one device's kernel count."""
        key = (tokens, mode, comm_sms)
        if key not in self._expert_memo:
            experts = self.experts.sharing_sms(comm_sms)
            table, counts = experts.template.stage_table(StepShape(prefill_tokens=tokens, positions=1), 1)
            self._expert_memo[key] = (_price_rows_waitless(experts.system, table, counts, mode), float(counts.sum()))
        return self._expert_memo[key]

    def _price(self, shape: StepShape) -> IterationCost:
        """An iteration's cost as its shape runs (its shared prefixes cascaded where it has any: price weighs its paged
        iteration). A data-parallel replica's single shape is one rank's, the others idle (each a dummy batch)."""
        if self.experts is not None:
            return self.price_ranks((shape,))
        return self._price_kernels(shape)

    def _price_kernels(self, shape: StepShape) -> IterationCost:
        if self.attention is not None and self.attention.hybrid:
            if shape.apart_seqs:
                return self._price_hybrid(shape)
            # No sequence on the attention devices: the model's devices run the iteration alone, as without them.
        elif self.attention is not None:
            return self._price_disaggregated(shape)
        cost = self._price_whole(shape)
        if shape.decode_shared_seqs:
            # Cascaded shared prefixes run whole: their one prefix kernel serves every group's sequences
            # (StepShape.shares); the paged alternative _price weighs it against may split.
            return cost
        if self.stages == 1 and len(self.device.units) > 1 and self.device.sub_batches > 1:
            # Sub-batches interleaved on the device's units where that finishes sooner, as the static path decodes
            # (sim/step_costs.py price_passes): each reads the weights again, so a small batch runs whole.
            most = min(self.device.sub_batches, max(shape.prefill_seqs, shape.decode_seqs, 1))
            for n in range(2, most + 1):
                interleaved = self._price_interleaved(shape, n)
                if interleaved.time_s < cost.time_s:
                    cost = interleaved
        if self.overlap == "token_split":
            # As an engine that splits where it pays: two halves each read the weights again, so a small batch runs
            # whole (TokenWeave turns splitting on from about a thousand tokens).
            split = self._price_token_split(shape)
            if split is not None and split.time_s < cost.time_s:
                cost = split
        return cost

    def _price_interleaved(self, shape: StepShape, n: int) -> IterationCost:
        """An iteration in `n` sub-batches (NeuPIMs' sub-batch interleaving) sharing the device's units, each unit
        serving one at a time (sim/interleave.py): each sub-batch's pass is a chain of its head (the embedding), then
        in every layer its work on each unit in turn, then its tail; a layer's kernels run on the unit of its first
        row, then on the next unit (an NPU+PIM layer: its GEMMs and vector kernels, then its attention in the banks),
        and the chains take turns on the units."""
        return self._price_chains(self._mode(shape), shape.shares(n), self._chain, len(self.device.units))

    def _price_token_split(self, shape: StepShape) -> IterationCost | None:
        """TokenWeave's token splitting (Gond et al., arXiv:2505.11329): the iteration's tokens in two halves
        (StepShape.token_halves), each a chain of its layers' compute runs on the devices and their all-reduces on
        the link (_comm_chain), so that one half's all-reduce runs while the other half computes. What the all-reduce
        kernel's SMs take from the compute beside it, and TokenWeave's fused AllReduce-RMSNorm, are not priced.
        None where the iteration does not split."""
        halves = _padding_dealt(shape, shape.token_halves())
        if len(halves) < 2:
            return None
        return self._price_chains(self._mode(shape), halves, self._comm_chain, 2)

    def _price_chains(self, mode: str, shares: tuple, chain, unit_count: int) -> IterationCost:
        """An iteration run in launch mode `mode` as `shares`, each a chain of segments (chain(share, mode): durations,
        units, priced rows, kernel count) taking turns on `unit_count` units (sim/interleave.py): its time is the last
        segment's end, plus the host's wait where dispatching every share's kernels takes longer. Energy and time by
        class are the shares' sums."""
        chains = {share: chain(share, mode) for share in set(shares)}  # equal shares priced once
        durations = [chains[share][0] for share in shares]
        units = [chains[share][1] for share in shares]
        class_time = sum((chains[share][2].class_time_s for share in shares), np.zeros(len(TIME_CLASS_NAMES)))
        compute_J = sum(chains[share][2].compute_J for share in shares)
        memory_J = sum(chains[share][2].memory_J for share in shares)
        kernels = sum(chains[share][3] for share in shares)
        starts = interleaved_schedule(durations, units, unit_count)
        device_s = max(float(start[-1] + duration[-1]) for start, duration in zip(starts, durations, strict=True))
        wait_s = float(host_stall_s(dispatch_s(self.device, mode) * kernels, device_s))
        class_time[-1] += wait_s
        return IterationCost(time_s=device_s + wait_s, compute_J=compute_J, memory_J=memory_J,
                             class_time_s=class_time, stage_time_s=(device_s + wait_s,))

    def _chain(self, share: StepShape, mode) -> tuple[np.ndarray, np.ndarray, _Priced, float]:
        """One sub-batch's chain for _price_interleaved (_layer_chain): its head on its first row's unit, then in every
        layer its work on each unit in the order its rows first reach them, then its tail."""
        def segments(table, costs, per_layer_s, in_layers) -> list[tuple[float, int]]:
            unit = costs.unit_index[in_layers]
            busy = np.bincount(unit, weights=per_layer_s[in_layers], minlength=len(self.device.units))
            return [(float(busy[u]), u) for u in dict.fromkeys(unit.tolist())] or [(0.0, 0)]

        return self._layer_chain(share, mode, segments, unit_of=lambda costs, rows: costs.unit_index[rows])

    def _micro_batch_chain(self, ranks: tuple[StepShape, ...], mode, comm_sms: int = 0,
                           ) -> tuple[np.ndarray, np.ndarray, _Priced, float]:
        """One dual-batch micro-batch of data-parallel ranks (every rank's share: ExpertRanks.micro_batches) as a chain
        on the devices' compute and the link (sim/data_parallel.py dual_batch_chain), as vLLM's two micro-batch threads
        take turns on the compute stream, each yielding it at its dispatch and combine (vllm-project/vllm
        docs/design/dbo.md at 0621454): each of its own parts' segments the slowest rank's (the exchanges wait for it),
        then the experts on every rank's tokens and the exchanges of the busiest rank's, every part's kernels while the
        all-to-all kernels hold `comm_sms` SMs (sim/data_parallel.py dbo_comm_sms). Its energy is every rank's part
        and every device's experts, its time by class the slowest rank's part's, the experts' and the exchanges'."""
        experts = self.experts
        parts = [self._rank_part(shape, mode, comm_sms) for shape in ranks]
        routed, routed_kernels = self._experts_part(sum(shape.tokens for shape in ranks), mode, comm_sms)
        exchange_s = experts.exchange_s(max(shape.tokens for shape in ranks))
        head_s, dense_s, moe_s, tail_s = (max(part.place_s[i] for part in parts) for i in range(4))
        durations, units = dual_batch_chain(head_s, dense_s, moe_s, tail_s, float(routed.stage_s[0]), exchange_s,
                                            experts.moe_layers)
        slowest = max(parts, key=lambda part: sum(part.place_s)).priced
        class_time = slowest.class_time_s + routed.class_time_s
        class_time[KERNEL_CLASS_NAMES.index("communication")] += experts.moe_layers * exchange_s
        priced = _Priced(stage_s=np.array([float(durations.sum())]), class_time_s=class_time,
                         compute_J=routed.compute_J + sum(part.priced.compute_J for part in parts),
                         memory_J=routed.memory_J + sum(part.priced.memory_J for part in parts))
        return durations, units, priced, max(part.kernels for part in parts) + routed_kernels + 2 * experts.moe_layers

    def _comm_chain(self, share: StepShape, mode) -> tuple[np.ndarray, np.ndarray, _Priced, float]:
        """One token half's chain for _price_token_split (_layer_chain): its head, then in every layer its runs of
        compute kernels (unit 0; the layer's attention in its first run, where the attention block computes it) and
        the all-reduces between them (unit 1, the link), then its tail."""
        def segments(table, costs, per_layer_s, in_layers) -> list[tuple[float, int]]:
            reduces = table.kind == KIND_CODE[KernelKind.ALL_REDUCE]
            out, run = [], 0.0
            for row in np.flatnonzero(in_layers & ~table.attention_mask):
                if reduces[row]:
                    out += [(run, 0), (float(per_layer_s[row]), 1)]
                    run = 0.0
                else:
                    run += float(per_layer_s[row])
            out.append((run, 0))
            out[0] = (out[0][0] + float(per_layer_s[in_layers & table.attention_mask].sum()), 0)
            return out

        return self._layer_chain(share, mode, segments, unit_of=lambda costs, rows: np.zeros(int(rows.sum()), int))

    def _layer_chain(self, share: StepShape, mode, segments, unit_of) -> tuple[np.ndarray, np.ndarray, _Priced, float]:
        """A share's chain of segments (durations, units), its priced rows and its kernel count: its head (the rows
        before the layers, on the unit unit_of gives its first row; the first layer segment's where it has none), then
        every layer's `segments(table, costs, per-layer seconds of each row, layer rows)` ((seconds, unit) in order; a
        layer row stands for its every layer, its time over them), then its tail as its head."""
        layers = self.template.attention_layers
        table, counts = self.template.stage_table(share, 1)
        costs = self.device.cost_table(table, mode)
        time_s, places = costs.time_s * counts[0], self.template.row_places(share, len(table))
        layer = segments(table, costs, time_s / layers, places == PLACE_LAYERS)
        ends = []
        for place in (PLACE_HEAD, PLACE_TAIL):
            rows = places == place
            ends.append((float(time_s[rows].sum()), int(unit_of(costs, rows)[0]) if rows.any() else layer[0][1]))
        (head, head_unit), (tail, tail_unit) = ends
        durations = np.array([head, *(d for _ in range(layers) for d, _ in layer), tail])
        units = np.array([head_unit, *(u for _ in range(layers) for _, u in layer), tail_unit])
        return durations, units, _priced(costs.matrix, table.class_masks, counts, 0.0), float(counts.sum())

    def _price_whole(self, shape: StepShape) -> IterationCost:
        """An iteration run whole: its kernels back to back on each stage in turn."""
        mode = self._mode(shape)
        first, sums, masks, counts = self._whole_rows(shape, mode)
        priced = _priced(sums, masks, counts, dispatch_s(self.device, mode))
        class_time, compute_J, memory_J = priced.class_time_s, priced.compute_J, priced.memory_J
        stage_s = priced.stage_s
        if self.stages > 1:
            send = self._send(shape.tokens, first, mode)
            stage_s = stage_s + np.append(send.time_s, 0.0)
            class_time[KERNEL_CLASS_NAMES.index(KIND_CLASS[KernelKind.SEND_RECV])] += float(send.time_s.sum())
            compute_J += float(send.compute_J.sum())
            memory_J += float(send.memory_J.sum())
        return IterationCost(time_s=float(stage_s.sum()), compute_J=compute_J, memory_J=memory_J,
                             class_time_s=class_time, stage_time_s=tuple(stage_s.tolist()))

    def _whole_rows(self, shape: StepShape, mode) -> tuple[Kernel, np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """An iteration's first kernel, its rows' summed costs in execution `mode` (KernelCosts.matrix), its kernel
        classes' row masks and its rows' counts on each stage (StepTemplate.stage_table's rows). On a device that prices
        each row alone (DeviceModel.prices_rows_alone) the rows outside attention cost what they cost in any iteration
        of the same StepTemplate.linear_key (tokens, sampled sequences, longest query; an MLA model's prefill tokens):
        priced once for those, and kept; the attention rows are priced per iteration."""
        if not getattr(self.device, "prices_rows_alone", False):
            table, counts = self.template.stage_table(shape, self.stages)
            return table.kernels[0], self.device.cost_table(table, mode).matrix, table.class_masks, counts
        key = (*self.template.linear_key(shape), mode)
        linear = self._linear_memo.get(key)
        if linear is None:
            table, rows = self.template.linear_table(shape)
            linear = self._linear_memo[key] = (rows, self.device.cost_table(table, mode).matrix, {})
        rows, sums, layouts = linear
        first = self.template.linear.kernels[rows[0]]
        attention = self.template.attention_table(shape)
        # The class masks and stage counts of these rows followed by attention rows of these kinds: kept per kinds.
        kinds = attention.kind.tobytes() if attention is not None else b""
        layout = layouts.get(kinds)
        if layout is None:
            kind = self.template.linear.kind[rows]
            layout = layouts[kinds] = (
                class_masks(kind if attention is None else np.concatenate([kind, attention.kind])),
                self.template.stage_counts(rows, 0 if attention is None else len(attention), self.stages))
        masks, counts = layout
        if attention is None:
            return first, sums, masks, counts
        return first, np.concatenate([sums, self.device.cost_table(attention, mode).matrix], axis=1), masks, counts

    def _price_disaggregated(self, shape: StepShape) -> IterationCost:
        """An iteration whose attention runs on the attention devices (sim/attention_pool.py), split in as many
        micro-batches, up to the pool's, as make it fastest: each reads the model's weights again, so a small batch
        runs whole. No more micro-batches than sequences of a kind to deal to them."""
        most = min(self.attention.micro_batches, max(shape.prefill_seqs, shape.decode_seqs, 1))
        return min((self._price_micro_batches(shape, n) for n in range(1, most + 1)), key=lambda cost: cost.time_s)

    def _price_micro_batches(self, shape: StepShape, n: int) -> IterationCost:
        """An iteration in `n` micro-batches taking turns: each one's kernels but its attention on the model's devices,
        its attention on every attention device (each its heads), the sends between them in every layer: the schedule
        bound of its shares (sim/attention_pool.py), their energy and their time by class."""
        pool = self.attention
        mode = self._mode(shape)
        layers = self.template.attention_layers
        shares = _padding_dealt(shape, shape.shares(n))
        priced = {share: self._price_share(share, mode) for share in set(shares)}
        parts = [priced[share] for share in shares]
        time_s = disaggregated_time_s([float(model.stage_s.sum()) for model, *_ in parts],
                                      [float(attention.stage_s.sum()) for _, attention, *_ in parts],
                                      [out for *_, out, _ in parts], [back for *_, back in parts], layers)
        class_time = np.zeros(len(TIME_CLASS_NAMES))
        compute_J = memory_J = 0.0
        for model, attention, out_s, back_s in parts:
            class_time += model.class_time_s + attention.class_time_s
            class_time[KERNEL_CLASS_NAMES.index(KIND_CLASS[KernelKind.SEND_RECV])] += layers * (out_s + back_s)
            compute_J += model.compute_J + pool.devices * attention.compute_J
            memory_J += model.memory_J + pool.devices * attention.memory_J
        return IterationCost(time_s=time_s, compute_J=compute_J, memory_J=memory_J, class_time_s=class_time,
                             stage_time_s=(time_s,))

    def _price_hybrid(self, shape: StepShape) -> IterationCost:
        """An iteration of a hybrid pool (sim/attention_pool.py): the model's devices run every row but the attention
        of the sequences apart (shape.apart_seqs), the attention devices (each its heads) those sequences' attention,
        their tokens' sends in every layer each way; its time is hybrid_time_s of these, its energy and its time by
        class their sums."""
        pool = self.attention
        mode = self._mode(shape)
        layers = self.template.attention_layers
        # Each side attends to its own sequences: their keys and their work (a KV policy's work per key differs by
        # sequence: an eviction's below and past its budget).
        own = replace(shape, decode_seqs=shape.decode_seqs - shape.apart_seqs,
                      decode_kv=shape.decode_kv - shape.apart_kv, decode_work=shape.own_work, apart_seqs=0, apart_kv=0,
                      apart_work=None)
        apart = StepShape(decode_seqs=shape.apart_seqs, decode_kv=shape.apart_kv, decode_query=shape.decode_query,
                          decode_work=shape.apart_work, sampled=shape.apart_seqs, positions=shape.decode_query)
        table, counts = self.template.stage_table(shape, 1)
        own_table, own_counts = self.template.stage_table(own, 1)
        model = _price_parts(self.device, [(table, counts * ~table.attention_mask),
                                           (own_table, own_counts * own_table.attention_mask)], mode)
        own_attention_s = model.part_s[1]
        heads, head_counts = pool.template.stage_table(apart, 1)
        attention = _price_rows(pool.device, heads, head_counts * heads.attention_mask, mode)
        out_s, back_s = pool.send_s(apart.tokens)
        time_s = hybrid_time_s(float(model.stage_s.sum()), own_attention_s, float(attention.stage_s.sum()), out_s,
                               back_s, layers)
        class_time = model.class_time_s + attention.class_time_s
        class_time[KERNEL_CLASS_NAMES.index(KIND_CLASS[KernelKind.SEND_RECV])] += layers * (out_s + back_s)
        return IterationCost(time_s=time_s, compute_J=model.compute_J + pool.devices * attention.compute_J,
                             memory_J=model.memory_J + pool.devices * attention.memory_J, class_time_s=class_time,
                             stage_time_s=(time_s,))

    def _price_share(self, share: StepShape, mode) -> tuple[_Priced, _Priced, float, float]:
        """One micro-batch: its rows but attention on the model's devices, its attention rows on one attention device
        (its heads), and its sends of one layer each way."""
        table, counts = self.template.stage_table(share, 1)
        model = _price_rows(self.device, table, counts * ~table.attention_mask, mode)
        heads, head_counts = self.attention.template.stage_table(share, 1)
        attention = _price_rows(self.attention.device, heads, head_counts * heads.attention_mask, mode)
        return (model, attention, *self.attention.send_s(share.tokens))

    def _send(self, tokens: int, first: Kernel, mode):
        """The costs of each stage's send of the iteration's hidden state to the next, in stage order (a send to a
        stage on another node crosses the node link: hw_models/nodes.py); `first`: the iteration's first kernel."""
        send = collective_kernel(KernelKind.SEND_RECV, first, float(tokens * self.send_B_per_token), 2)
        return self.device.cost_table(KernelTable.from_kernels([send] * (self.stages - 1)), mode)


def _padding_dealt(shape: StepShape, shares: tuple[StepShape, ...]) -> tuple[StepShape, ...]:
    """`shape`'s shares (StepShape.shares, token_halves: each keeps the whole shape's padding) with its padding dealt
    over them evenly instead."""
    parts = len(shares)
    if not shape.padding or parts == 1:
        return shares
    return tuple(replace(share, padding=shape.padding // parts + (i < shape.padding % parts))
                 for i, share in enumerate(shares))


@dataclass(frozen=True)
class _Priced:
    """Rows of an iteration priced on one device (or system): each stage's time (its host's wait included), the time
    by class (TIME_CLASS_NAMES order) and the dynamic energy."""

    stage_s: np.ndarray
    class_time_s: np.ndarray
    compute_J: float
    memory_J: float


@dataclass(frozen=True)
class _RankPart:
    """One rank's dense part (IterationCostModel._rank_part): the seconds of its head, dense layers, MoE layers and
    tail, its priced rows and its kernel count."""

    place_s: tuple[float, float, float, float]
    priced: _Priced
    kernels: float


def _price_rows(device, table: KernelTable, counts: np.ndarray, mode) -> _Priced:
    """`table`'s rows run `counts` times (stages x rows) on `device` in execution `mode`: kernels back to back, each
    stage waiting on its host where the host's dispatch of its kernels takes longer than they run."""
    return _priced(device.cost_table(table, mode).matrix, table.class_masks, counts, dispatch_s(device, mode))


def _price_rows_waitless(device, table: KernelTable, counts: np.ndarray, mode) -> _Priced:
    """_price_rows without the host's wait: a part of an iteration whose host waits on the whole (price_ranks)."""
    return _priced(device.cost_table(table, mode).matrix, table.class_masks, counts, 0.0)


@dataclass(frozen=True)
class _PricedParts(_Priced):
    """_Priced of several parts' rows run back to back on one stage, with each part's kernels' time (its host's wait
    left out)."""

    part_s: tuple[float, ...] = ()


def _price_parts(device, parts: list[tuple[KernelTable, np.ndarray]], mode) -> _PricedParts:
    """Parts' rows (each a table and its counts, one stage x rows) run back to back on `device` in execution `mode`,
    as one stage: the host waits where dispatching all their kernels takes longer than they run."""
    priced = [_priced(device.cost_table(table, mode).matrix, table.class_masks, counts, 0.0)
              for table, counts in parts]
    part_s = tuple(float(p.stage_s.sum()) for p in priced)
    kernels = sum(float(counts.sum()) for _, counts in parts)
    wait_s = float(host_stall_s(dispatch_s(device, mode) * kernels, sum(part_s)))
    class_time = sum((p.class_time_s for p in priced), np.zeros(len(TIME_CLASS_NAMES)))
    class_time[-1] += wait_s
    return _PricedParts(stage_s=np.array([sum(part_s) + wait_s]), class_time_s=class_time,
                        compute_J=sum(p.compute_J for p in priced), memory_J=sum(p.memory_J for p in priced),
                        part_s=part_s)


def _priced(sums: np.ndarray, masks: dict[str, np.ndarray], counts: np.ndarray, dispatch: float) -> _Priced:
    """_price_rows of the rows' summed costs (KernelCosts.matrix: time, compute and memory energy) and their kernel
    classes' row masks (KernelTable.class_masks), with a host dispatching `dispatch` seconds a kernel."""
    time_s, compute_J, memory_J = sums
    time_s = time_s * counts  # (stages, rows)
    stage_device_s = time_s.sum(axis=1)
    waits = host_stall_s(dispatch * counts.sum(axis=1), stage_device_s)
    class_time = np.zeros(len(TIME_CLASS_NAMES))
    for i, name in enumerate(KERNEL_CLASS_NAMES):
        mask = masks.get(name)
        if mask is not None:
            class_time[i] = time_s[:, mask].sum()
    class_time[-1] = waits.sum()
    count = counts.sum(axis=0)
    return _Priced(stage_s=stage_device_s + waits, class_time_s=class_time,
                   compute_J=float(compute_J @ count), memory_J=float(memory_J @ count))
