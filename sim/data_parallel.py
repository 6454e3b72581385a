"""The experts of a replica whose attention runs data-parallel (kernels/data_parallel.py): `ranks` devices, each
running its own sequences' attention and dense layers, together holding the experts, in lockstep.

The experts are spread whole over the devices (ep = tp), each token sent to its experts' devices and back by two
all-to-alls a layer, or split over them (ep 1, every device a share of every expert, as tensor parallelism splits
them), every rank's tokens gathered onto every device (an all-gather) and the partial outputs summed back to their
ranks (a reduce-scatter), as SGLang's DP attention runs a tensor-parallel MoE; each rank's tokens padded to the
busiest rank's, as SGLang pads them.

The ranks run their iterations in step (sim/replica.py run_lockstep), since every MoE layer exchanges tokens among all
of them; a rank with nothing to run while another works runs a dummy batch (DUMMY_BATCH): one decode token without KV
through every layer, its MoE layers' exchanges included, as vLLM's data-parallel engines do. In an iteration of L MoE
layers, rank r runs its sequences' dense part D_r (an idle rank the dummy's); every device runs its experts on the
tokens routed to them from every rank, X (the tokens of all ranks, the dummies' included, balanced over the experts as
ep = tp prices them); and each layer's two exchanges wait for the rank with the most tokens, c in all. The ranks meet
at every exchange, so the iteration takes

    max_r (D_r + w_r) + X + L c

with w_r the rank's wait on its host where dispatching its kernels takes longer than they run. Its energy is every
rank's dense part (the dummies' included) and every device's experts; its time by class the slowest rank's.

Where every rank's pass, the dummies' included, runs from CUDA graphs (sim/step_costs.py pass_launch: every pass
under `graphs`; under `engine` a uniform decode from a full graph and any other pass within the largest captured size
from piecewise graphs, each at a captured size: sim/cuda_graphs.py), every rank runs as many tokens as the busiest's
captured size (rank_shapes): vLLM's ranks agree on one graph mode, the least of theirs, and under a graph mode pad their
token counts, each rank's already padded to a size it captured, to the largest (vllm-project/vllm
vllm/v1/worker/dp_utils.py at 0074614, coordinate_batch_across_dp: _post_process_cudagraph_mode,
_post_process_dp_padding); each rank's model runner feeds the padded count to every layer and computes logits for its
real tokens alone (vllm/v1/worker/gpu_model_runner.py at 000fc94, execute_model: num_tokens_padded, logits_indices).
A padding token (StepShape.padding) thus runs the kernels outside attention, the experts' included (which take every
rank's padded tokens); attention runs the real sequences alone, as a full graph's padded requests attend to no keys
(pad_attn). Where any rank's pass is launched from the host (past the largest captured size), no rank pads and every
rank launches from its host (the least mode is none); a decoding rank beside a rank's prefill runs piecewise.

With `overlap` dual_batch (IterationCostModel._micro_batch_chain) the ranks split an iteration in two micro-batches as
vLLM's dual-batch overlap does (`--enable-dbo`, spread experts' all-to-alls only), one micro-batch's dispatch and
combine on the link while the other computes, where the ranks agree to (ExpertRanks.dual_batch): every rank, an idle
rank's one-token dummy batch included, has at least DBO_DECODE_TOKENS tokens of a decode-only batch or
DBO_PREFILL_TOKENS of one with a prefill, and the rank with the fewest tokens still fills the second micro-batch once
every rank is padded to the busiest. Each micro-batch reads the weights again, so vLLM's thresholds keep small batches
whole; above them it splits whether or not that is faster.

While it splits, vLLM gives the all-to-all kernels VLLM_DBO_COMM_SMS SMs (vllm/envs.py: 20 unless set), capped by
what its all-to-all backend uses, and tells DeepGEMM's GEMMs to run on the rest; no other kernel is limited
(vllm-project/vllm vllm/v1/worker/gpu_ubatch_wrapper.py at 01e3c43 UBatchWrapper._create_sm_control_context: only
DeepGEMM's set_num_sms, and only where comm_sms > 0). DeepEP's high-throughput kernels take 20
(DeepEPAll2AllManagerBase.num_sms, DeepEP's default Buffer.num_sms), its low-latency kernels none
(DeepEPLLAll2AllManager.max_sms_used: 0; vllm/distributed/device_communicators/all2all.py at 0014300), and vLLM's DBO
guide names the low-latency backend for decode work and the high-throughput one for prefill work (docs/design/dbo.md
at 0621454). So a split iteration with a prefill runs its DeepGEMM kernels (hw_models/gpu_deep_gemm.py: block-scaled
fp8 GEMMs and fused MoE layers on Hopper and Blackwell) on the SMs DBO_COMM_SMS leaves, a decode-only one on every SM
(dbo_comm_sms). The exchanges' own time is priced on the link's NCCL all-to-all, not on DeepEP's kernels.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from hw_models.device import PIECEWISE
from kernels.shapes import StepShape, StepTemplate
from sim.cuda_graphs import PassLaunch

# How a layer's tokens reach the experts: spread experts' all-to-alls, or split experts' all-gather and
# reduce-scatter.
EXCHANGES = ("all_to_all", "gather")
# What a rank with nothing to run computes while any other rank works. vLLM's DPEngineCoreProc.run_busy_loop runs
# execute_dummy_batch in every pass of its loop that ran no step of its own while engines_running (any rank has
# requests), and the worker's execute_dummy_batch is model_runner._dummy_run(1, uniform_decode=True): a forward of one
# decode token through the whole decoder, its MoE layers' dispatch and combine among the ranks included, with no
# attention metadata (no KV read) and no logits or sampling (vllm-project/vllm vllm/v1/engine/core.py at 00080ee,
# vllm/v1/worker/gpu_worker.py at 35d5cda, vllm/v1/worker/gpu_model_runner.py at 4e17906).
DUMMY_BATCH = StepShape(decode_seqs=1)
# Launch modes from the least to the most graphed: the ranks run the least of theirs (a rank launched from its host
# makes every rank launch from its host, a piecewise one every graphed rank piecewise), and pad where it replays graphs.
LEAST_MODE_FIRST = ("eager", "device", "engine", PIECEWISE, "graphs")
GRAPH_MODES = (PIECEWISE, "graphs")
# The fewest tokens a rank's batch needs for vLLM's dual-batch overlap to split it, decode-only or with a prefill: its
# defaults dbo_decode_token_threshold and dbo_prefill_token_threshold (vllm-project/vllm vllm/config/parallel.py at
# 00193b8), which check_ubatch_thresholds compares a rank's unpadded tokens with (vllm/v1/worker/ubatch_utils.py at
# 015d6f9).
DBO_DECODE_TOKENS = 32
DBO_PREFILL_TOKENS = 512
# The SMs vLLM's dual-batch overlap gives DeepEP's high-throughput all-to-all kernels while it splits:
# VLLM_DBO_COMM_SMS's default (vllm-project/vllm vllm/envs.py), under DeepEP's 20 (module docstring).
DBO_COMM_SMS = 20


def padded(shape: StepShape, tokens: int) -> StepShape:
    """`shape` run as `tokens` tokens, the rest its padding."""
    return replace(shape, padding=shape.padding + tokens - shape.tokens)


def is_dummy(shape: StepShape) -> bool:
    """Whether `shape` is a dummy batch, padded or not: decode tokens that read no KV and sample nothing (a real
    decode reads its sequence's KV and samples)."""
    return shape.decode_seqs > 0 and not (shape.prefill_seqs or shape.decode_kv or shape.sampled)


@dataclass(frozen=True)
class ExpertRanks:
    """The experts' side of a data-parallel replica: `system` (hw_models/system.py SystemModel of the ranks' devices
    and their link) runs `template` (the expert rows of every MoE layer on one device: spread or split over the
    devices) on each device, and in every one of `moe_layers` layers exchanges `B_per_token` bytes per token of a rank
    each way by `exchange` (EXCHANGES): all-to-alls of a token's copies to its experts' devices, or an all-gather and
    a reduce-scatter of its hidden state."""

    system: object
    template: StepTemplate
    B_per_token: float
    moe_layers: int
    exchange: str = "all_to_all"

    def __post_init__(self) -> None:
        if self.exchange not in EXCHANGES:
            raise ValueError(f"exchange: found {self.exchange!r}, allowed: {', '.join(EXCHANGES)}")

    @property
    def ranks(self) -> int:
        return self.system.tp

    def rank_shapes(self, shapes: tuple[StepShape, ...], launch: Callable[[StepShape], PassLaunch],
                    ) -> tuple[tuple[StepShape, ...], str]:
        """Every rank's batch in an iteration whose working ranks run `shapes`, each other rank a DUMMY_BATCH, and the
        launch mode they all run in: the least of the ranks' own (`launch` of each: sim/step_costs.py pass_launch), each
        rank padded to the most tokens any rank's own launch runs where that mode replays graphs (full or piecewise)."""
        if not 0 < len(shapes) <= self.ranks:
            raise ValueError(f"shapes: found {len(shapes)} working ranks, allowed: 1 to the {self.ranks} ranks")
        ranks = (*shapes, *(DUMMY_BATCH,) * (self.ranks - len(shapes)))
        launches = [launch(shape) for shape in ranks]
        mode = min((each.mode for each in launches), key=LEAST_MODE_FIRST.index)
        if mode not in GRAPH_MODES:
            return ranks, mode
        tokens = max(each.tokens for each in launches)
        return tuple(padded(shape, tokens) for shape in ranks), mode

    def dual_batch(self, ranks: tuple[StepShape, ...]) -> bool:
        """Whether vLLM's dual-batch overlap splits the iteration whose ranks run `ranks` (every rank's batch as
        rank_shapes runs it, its padding included): each rank asks to split where its own tokens reach its threshold
        (check_ubatch_thresholds: DBO_DECODE_TOKENS without a prefill, else DBO_PREFILL_TOKENS), no rank splits unless
        every rank asks, and none where the fewest tokens of a rank would leave its second micro-batch empty once each
        is padded to the most any rank runs (vllm-project/vllm vllm/v1/worker/dp_utils.py at 0074614
        _post_process_ubatch, ubatch_utils.py is_last_ubatch_empty: most // 2 >= fewest). Only spread experts'
        all-to-alls split (vLLM runs it with expert parallelism's all-to-all backends)."""
        if self.exchange != "all_to_all":
            return False
        own = [shape.tokens - shape.padding for shape in ranks]
        asks = all(tokens >= (DBO_PREFILL_TOKENS if shape.prefill_seqs else DBO_DECODE_TOKENS)
                   for shape, tokens in zip(ranks, own, strict=True))
        return asks and max(shape.tokens for shape in ranks) // 2 < min(own)

    def micro_batches(self, ranks: tuple[StepShape, ...]) -> tuple[tuple[StepShape, ...], tuple[StepShape, ...]]:
        """Every rank's batch of `ranks` (as rank_shapes runs them) in dual-batch overlap's two micro-batches: each rank
        padded to the most tokens any rank runs, as vLLM pads every rank alike where they split (dp_utils.py
        _synchronize_dp_ranks), the first micro-batch taking half of them, rounded down, and the second the rest
        (ubatch_utils.py maybe_create_ubatch_slices cuts at num_tokens_padded // 2). A rank's own tokens are halved by
        StepShape.token_halves (its prefill chunks at their middle, its decodes dealt whole; vLLM cuts at the token
        count, its padding last: the same micro-batch sizes, the real tokens dealt a little differently), a rank that
        cascades shared prefixes split as its paged iteration."""
        tokens = max(shape.tokens for shape in ranks)
        first, second = [], []
        for shape in ranks:
            own = replace(shape.paged() if shape.decode_shared_seqs else shape, padding=0)
            lead, rest = own.token_halves()
            padding = tokens - own.tokens
            lead_padding = min(padding, max(0, tokens // 2 - lead.tokens))
            first.append(replace(lead, padding=lead_padding))
            second.append(replace(rest, padding=padding - lead_padding))
        return tuple(first), tuple(second)

    def sharing_sms(self, comm_sms: int) -> ExpertRanks:
        """These ranks while their all-to-all kernels hold `comm_sms` SMs of each device (DeviceModel.sharing_sms: the
        kernels the engine limits run on the rest)."""
        device = self.system.device.sharing_sms(comm_sms)
        if device is self.system.device:
            return self
        system = copy.copy(self.system)  # the same devices and link, each device's kernels on its shared SMs
        system.device = device
        return replace(self, system=system)

    def exchange_s(self, tokens: int) -> float:
        """One layer's two exchanges when the busiest rank has `tokens` tokens: its dispatch and combine all-to-alls
        (each rank's send buffer its tokens' copies), or the all-gather of every rank's tokens (each padded to the
        busiest rank's) and the reduce-scatter of their outputs (either's buffer the gathered tensor: hw_models/link.py
        convention)."""
        if not tokens:
            return 0.0
        system = self.system  # its link within a node, its node link between nodes (hw_models/nodes.py)
        if self.exchange == "all_to_all":
            return 2 * float(system.collective_time_s("all_to_all", tokens * self.B_per_token, self.ranks))
        gathered_B = tokens * self.ranks * self.B_per_token
        return float(system.collective_time_s("all_gather", gathered_B, self.ranks)
                     + system.collective_time_s("reduce_scatter", gathered_B, self.ranks))


def dbo_comm_sms(ranks: tuple[StepShape, ...]) -> int:
    """The SMs the all-to-all kernels hold while an iteration whose ranks run `ranks` splits: DBO_COMM_SMS where any
    rank has a prefill (DeepEP's high-throughput kernels, which vLLM's DBO guide names for prefill work), none for a
    decode-only one (its low-latency kernels)."""
    return DBO_COMM_SMS if any(shape.prefill_seqs for shape in ranks) else 0


def dual_batch_chain(head_s: float, dense_s: float, moe_s: float, tail_s: float, experts_s: float, exchange_s: float,
                     moe_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """One micro-batch's chain of segments for sim/interleave.py (durations, and units: 0 the devices' compute, 1 the
    link) from its ranks' parts, in the order of the model's layers: its head (`head_s`, the embedding) and its decoder
    layers without experts (`dense_s`: an MoE model's dense first layers, nothing of theirs exchanged), then in each of
    `moe_layers` MoE layers its share of `moe_s` (their rows but the experts', attention included), its dispatch (half
    of `exchange_s`, one layer's two all-to-alls), its share of `experts_s` and its combine, then its tail (the final
    norm, LM head and sampling)."""
    layer = [(moe_s / moe_layers, 0), (exchange_s / 2, 1), (experts_s / moe_layers, 0), (exchange_s / 2, 1)]
    segments = [(head_s + dense_s, 0), *layer * moe_layers, (tail_s, 0)]
    return np.array([s for s, _ in segments]), np.array([u for _, u in segments])
