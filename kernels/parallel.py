"""Tensor parallelism as Megatron-LM shards a decoder: the kernels one of `tp` devices runs, plus all-reduces.

Per layer, the attention block's q/k/v projections and the MLP's gate/up projections are column-parallel
(each device computes n / tp of the output features from the whole input), the output and down projections
row-parallel (each device reduces k / tp of the inputs and the partial outputs are summed by an all-reduce
across the devices). Every kernel between a column-parallel projection and its row-parallel one works on
split heads or MLP features and is split too: rotary embedding of q and k, KV-cache writes, attention, the
MLP activation. Everything else runs on every device whole: norms, residual adds, the embedding lookup, an
MoE layer's router and its gathers and scatters of tokens. The LM head is vocabulary-parallel (its logits
gather is not priced). In an MoE layer every expert is sharded the same way and one all-reduce sums the
layer's output.

Which projection is which is read from the module names our decoder (workloads/decoder.py) gives them, as
Megatron's layer classes name them. Sharding is applied to traced tables at their traced precision, before a
numeric format: an all-reduce moves the 16-bit output of the projection it follows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from kernels.kernel import Kernel, KernelKind
from kernels.table import KIND_CODE, KernelTable
from workloads.model_config import ModelConfig

# MLA (DeepSeek, vLLM's DeepseekV2MLAAttention): q_b_proj and kv_b_proj are column-parallel (heads split), q_a_proj
# and kv_a_proj_with_mqa replicated: every device computes, and caches, the whole latent.
COLUMN_PARALLEL = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "lm_head", "q_b_proj", "kv_b_proj")
ROW_PARALLEL = ("o_proj", "down_proj")
_EXPERT = re.compile(r"\.experts\.\d+(\.|$)")
# DeepSeek's shared experts: their output is added to the routed experts' before the MoE layer's one all-reduce
# (vLLM's DeepseekV2MoE builds them with reduce_results=False).
_SHARED_EXPERTS = re.compile(r"\.shared_experts(\.|$)")
_GEMM = KIND_CODE[KernelKind.GEMM]
_BATCHED_GEMM = KIND_CODE[KernelKind.BATCHED_GEMM]
_ATTENTION_DECODE = KIND_CODE[KernelKind.ATTENTION_DECODE]
# How the all-reduces run: "nccl", NCCL's collective; "custom", an engine's own kernels that read the peers' buffers
# directly over the link (PyTorch's IntraNodeComm, which gpt-fast enables with ENABLE_INTRA_NODE_COMM=1; vLLM's and
# TensorRT-LLM's custom all-reduce); "nvls", multimem loads and stores that an NVSwitch reduces and multicasts (NVLink
# SHARP: NCCL's NVLS algorithm, PyTorch symmetric memory's multimem all-reduce); "star", a master gathering every
# device's buffer and sending back the sum (TPI-LLM's all-reduce over sockets between edge devices). hw_models/link.py
# prices the first two, hw_models/nvls.py the third, hw_models/star.py the fourth.
ALLREDUCE_IMPLEMENTATIONS = ("nccl", "custom", "nvls", "star")


def check_tensor_parallel(config: ModelConfig, tp: int) -> None:
    """ValueError ('found X, allowed: Y') when `tp` cannot shard the model's heads."""
    if tp < 1 or config.num_heads % tp:
        divisors = [d for d in range(1, config.num_heads + 1) if config.num_heads % d == 0]
        raise ValueError(f"found {tp}, allowed: a divisor of {config.name}'s {config.num_heads} attention heads "
                         f"({', '.join(map(str, divisors))})")
    if config.num_kv_heads % tp and tp % config.num_kv_heads:
        raise ValueError(f"found {tp}, allowed: a divisor or multiple of {config.name}'s {config.num_kv_heads} KV "
                         f"heads (each device holds whole KV heads)")


def kv_replication(config: ModelConfig, tp: int, dcp: int = 1) -> int:
    """How many devices hold a copy of each KV head's tokens (more devices than KV heads replicate them; decode context
    parallelism splits each head's copies' tokens over `dcp` of them)."""
    return max(1, tp // config.num_kv_heads) // dcp


def check_decode_context_parallel(config: ModelConfig, tp: int, dcp: int) -> None:
    """ValueError ('found X, allowed: Y') unless `dcp` splits the tokens of each KV head's copies over groups of the tp
    devices, as vLLM's decode context parallelism runs (vllm/config/model.py verify_with_parallel_config, commit
    18ec6629: tp > KV heads, dcp <= tp / KV heads and query heads per KV head divisible by dcp, where not MLA;
    tp % dcp == 0). A group holds one KV head's copies here: dcp divides them (and so the query heads of a KV head,
    which tp divides)."""
    copies = max(1, tp // config.num_kv_heads)
    if dcp < 1 or copies % dcp:
        raise ValueError(f"found {dcp}, allowed: a divisor of the {copies} tp devices holding a copy of each of "
                         f"{config.name}'s KV heads at tp {tp} "
                         f"({', '.join(str(d) for d in range(1, copies + 1) if copies % d == 0)})")


def spread_refusal(config: ModelConfig, tp: int) -> str:
    """Why an MoE model's experts cannot be spread whole over `tp` devices ('' where they can)."""
    if not config.num_experts:
        return f"{config.name} has no experts"
    if config.num_experts % tp:
        return f"{tp} devices do not divide {config.name}'s {config.num_experts} experts whole"
    return ""


def check_expert_parallel(config: ModelConfig, ep: int, tp: int) -> None:
    """ValueError ('found X, allowed: Y') unless `ep` spreads an MoE model's experts over its tp group."""
    if ep == 1:
        return
    if why := spread_refusal(config, tp):
        raise ValueError(f"found {ep}, allowed: 1 ({why})")
    if ep != tp:
        raise ValueError(f"found {ep}, allowed: 1 or the tensor-parallel degree ({tp})")


def shard_tensor_parallel(table: KernelTable, tp: int, config: ModelConfig, ep: int = 1) -> KernelTable:
    """The kernels one device of `tp` runs (sharded_rows)."""
    return sharded_rows(table, tp, config, ep)[0]


def sharded_rows(table: KernelTable, tp: int, config: ModelConfig, ep: int = 1,
                 dcp: int = 1) -> tuple[KernelTable, np.ndarray]:
    """The kernels one device of `tp` runs, in order, with an all-reduce after each row-parallel projection
    (after each MoE layer). With ep = tp, an MoE layer's experts are spread whole over the devices instead of
    each being split (expert parallelism inside the tensor-parallel group, as vLLM runs it without data-parallel
    attention): every device routes all tokens, runs its own experts' share of them, and the layer's all-reduce
    sums the experts' outputs; the busiest device under the trace's routing, whose experts are every ep-th the
    trace fills (kernels/moe.py expert_parallel_share), is the one priced. With dcp > 1, decode context parallelism
    (context_parallel) splits each sequence's keys over groups of dcp devices. tp = 1 returns the table unchanged.
    With each row returned, the row of `table` it runs at (a collective at the row it follows)."""
    kept = np.arange(len(table))
    if tp == 1:
        return table, kept
    if ep > 1:
        # The busiest device's experts of the trace's fill order: 0, ep, 2 ep, ... (kernels/moe.py
        # expert_parallel_share).
        kept = np.flatnonzero([not ((m := _EXPERT.search(k.module)) and int(k.module[m.start():].split(".")[2]) % ep)
                               for k in table.kernels])
        table = table.select(kept)
    kv_share = kv_replication(config, tp) / tp  # a device's share of the KV heads (whole heads)
    scale = {name: getattr(table, name).astype(float).copy()
             for name in ("flops", "weight_bytes", "act_bytes", "kv_bytes", "n", "k", "heads")}
    ones = np.ones(len(table))
    work, weights, act, kv = ones.copy(), ones.copy(), ones.copy(), ones.copy()
    n_div, k_div, batch_div = ones.copy(), ones.copy(), ones.copy()
    spread = table.expert_parallel.copy()  # the devices each row's experts lie on (ep for a spread expert's rows)
    output_share = np.divide(table.n, table.k + table.n, out=np.zeros(len(table)), where=(table.k + table.n) > 0)
    reduce_after: list[tuple[int, float]] = []  # (row index, message bytes): an all-reduce follows the row
    moe_layers: dict[str, None] = {}  # MoE layers (module prefix) whose output one all-reduce sums
    between = False  # after a column-parallel projection, before its row-parallel one: features are split
    for i, kernel in enumerate(table.kernels):
        module, gemm = kernel.module, table.kind[i] == _GEMM
        last = module.rsplit(".", 1)[-1]
        if ep > 1 and (expert := _EXPERT.search(module)):  # a whole expert on this device: nothing split
            spread[i] = ep
            if gemm and last in ROW_PARALLEL:
                moe_layers[module[:expert.start()]] = None
            continue
        if gemm and last in COLUMN_PARALLEL:
            work[i] = weights[i] = n_div[i] = 1 / tp
            act[i] = (1 - output_share[i]) + output_share[i] / tp  # whole input, a share of the output
            between = last != "lm_head"
        elif gemm and last in ROW_PARALLEL:
            work[i] = weights[i] = k_div[i] = 1 / tp
            act[i] = (1 - output_share[i]) / tp + output_share[i]  # a share of the input, the whole output
            between = False
            if expert := _EXPERT.search(module) or _SHARED_EXPERTS.search(module):
                moe_layers[module[:expert.start()]] = None
            else:
                reduce_after.append((i, float(table.act_bytes[i] * output_share[i])))
        elif between and table.kind[i] == _BATCHED_GEMM:  # a GEMM per head (MLA's absorbed W_UK, W_UV): heads split
            work[i] = weights[i] = act[i] = batch_div[i] = 1 / tp
        elif between and not gemm:
            # Split by query heads or MLP features; KV traffic by the device's KV heads (copies when tp exceeds
            # them), and a KV-cache write moves its KV heads' activations too.
            cache_write = table.kv_bytes[i] > 0 and not table.tensor_core[i]
            work[i] = 1 / tp
            act[i] = kv_share if cache_write else 1 / tp
            kv[i] = kv_share
    first_row = _first_rows(table)
    last_row = _last_rows_of(table, moe_layers)
    for layer in moe_layers:
        # The layer's output (tokens x hidden, 16-bit) is summed once: the router GEMM's m x k.
        router = first_row[f"{layer}.gate"]
        reduce_after.append((last_row[layer], float(table.m[router] * table.k[router] * 2)))
    sharded = replace(table, flops=scale["flops"] * work, weight_bytes=scale["weight_bytes"] * weights,
                      act_bytes=scale["act_bytes"] * act, kv_bytes=scale["kv_bytes"] * kv,
                      n=scale["n"] * n_div, k=scale["k"] * k_div, batch=table.batch * batch_div,
                      heads=np.where(table.heads > 0, np.maximum(scale["heads"] / tp, 1), 0),
                      kv_heads=np.where(table.kv_heads > 0, np.maximum(table.kv_heads * kv_share, 1), 0),
                      expert_parallel=spread)
    exchanges = [(row, message, KernelKind.ALL_REDUCE, tp) for row, message in reduce_after]
    if dcp > 1:
        sharded, split_exchanges = context_parallel(sharded, dcp)
        exchanges += split_exchanges
    sharded, positions = _with_exchanges(sharded, sorted(exchanges, key=lambda exchange: exchange[0]))
    return sharded, kept[positions]


def context_parallel(sharded: KernelTable, dcp: int) -> tuple[KernelTable, list[tuple[int, float, KernelKind, int]]]:
    """A tensor-parallel device's rows under decode context parallelism over groups of `dcp` of the devices, as vLLM
    runs it (--decode-context-parallel-size; docs/serving/context_parallel_deployment.md): each device holds every
    dcp-th token of each sequence's KV cache (a cache write stores the tokens of its own: vllm/v1/worker/block_table.py
    compute_slot_mapping, commit a4cd9d0d, slot -1 for the others), so a prefill of new prompts runs as it did but
    writes 1/dcp of the cache. A decode step's attention gathers the group's query heads (an all-gather over the
    heads), attends with all of them over the device's 1/dcp of the keys, and merges the partial outputs by their
    log-sum-exps: an all-gather of the fp32 LSEs, then a reduce-scatter of the 16-bit outputs back to each device's
    own heads (vllm/v1/attention/backends/mla/common.py forward, commit 37fa5c09; vllm/attention/ops/common.py
    cp_lse_ag_out_rs, commit 303def0c). Returns the rows and the exchanges to insert: (the row each follows, its
    message per device in hw_models/link.py's convention, its kind, the devices)."""
    decode = np.flatnonzero(sharded.kind == _ATTENTION_DECODE)
    if not len(decode):
        # A prefill writes every dcp-th prompt token's KV on each device. A decode step's new tokens all sit at one
        # position in a static batch, so one device of the group writes every sequence's: the writes stay whole.
        sharded = split_cache_writes(sharded, dcp)
    flops, kv, act, heads, kv_len = (getattr(sharded, name).astype(float).copy()
                                     for name in ("flops", "kv_bytes", "act_bytes", "heads", "kv_len"))
    # Every dcp-th key on each device: the busiest holds ceil(n / dcp) of n, attended by dcp times its query heads.
    held = np.ceil(kv_len[decode] / dcp)
    key_share = held / np.maximum(kv_len[decode], 1)
    kv[decode] *= key_share
    flops[decode] *= dcp * key_share
    act[decode] *= dcp  # queries read and outputs written for the group's heads
    heads[decode] *= dcp
    kv_len[decode] = held
    kernels = list(sharded.kernels)
    exchanges = []
    for i in decode:
        kernels[i] = replace(kernels[i], context_split=dcp)
        tokens_heads = sharded.batch[i] * max(sharded.q_len[i], 1) * heads[i]  # (token, head) rows of the group
        value_dim = sharded.v_head_dim[i] or sharded.head_dim[i]
        exchanges += [(int(i) - 1, float(tokens_heads * sharded.head_dim[i] * 2), KernelKind.ALL_GATHER, dcp),
                      (int(i), float(dcp * tokens_heads * 4), KernelKind.ALL_GATHER, dcp),
                      (int(i), float(tokens_heads * value_dim * 2), KernelKind.REDUCE_SCATTER, dcp)]
    return replace(sharded, kernels=tuple(kernels), flops=flops, kv_bytes=kv, act_bytes=act, heads=heads,
                   kv_len=kv_len), exchanges


def split_cache_writes(table: KernelTable, dcp: int) -> KernelTable:
    """`table` with its KV-cache writes (the rows outside tensor cores that move KV bytes) spread over `dcp` devices:
    under decode context parallelism each device stores only the tokens at its own positions, every dcp-th
    (vllm/v1/worker/block_table.py compute_slot_mapping, commit a4cd9d0d), so it writes 1/dcp of tokens spread over
    positions."""
    write = table.cache_write_mask
    return table.with_columns(kv_bytes=np.where(write, table.kv_bytes / dcp, table.kv_bytes),
                              act_bytes=np.where(write, table.act_bytes / dcp, table.act_bytes))


def context_parallel_rows(attention: KernelTable, dcp: int) -> KernelTable:
    """A tensor-parallel device's decode-attention rows under decode context parallelism over `dcp` devices
    (context_parallel), each with its exchanges in the order they run: the query all-gather before it, the LSE
    all-gather and the output reduce-scatter after it."""
    split, exchanges = context_parallel(attention, dcp)
    return _with_exchanges(split, sorted(exchanges, key=lambda exchange: exchange[0]))[0]


def context_gather_kernel(after: Kernel, context_B: float, dcp: int) -> Kernel:
    """The all-gather over `dcp` devices of a prefill chunk's cached context's KV, `context_B` bytes of it in one layer
    once gathered (each device holds 1/dcp of it): under decode context parallelism a chunk past a cached context
    attends to every key of it on each device, so vLLM's MLA backend gathers the context's shards first
    (vllm/v1/attention/backends/mla/common.py _context_parallel_compute_prefill_context, commit 37fa5c09: each
    device's cached tokens gathered into a workspace, then get_dcp_group().all_gather of it, before the chunk's
    attention to the context)."""
    return collective_kernel(KernelKind.ALL_GATHER, after, context_B, dcp)


def _first_rows(table: KernelTable) -> dict[str, int]:
    """Each module's first row."""
    first: dict[str, int] = {}
    for i, kernel in enumerate(table.kernels):
        first.setdefault(kernel.module, i)
    return first


def _last_rows_of(table: KernelTable, module_prefixes: Iterable[str]) -> dict[str, int]:
    """The last row whose module starts with each prefix, in one pass over the table (a pass per prefix would grow
    with the number of MoE layers times the rows)."""
    prefixes = set(module_prefixes)
    lengths = sorted({len(prefix) for prefix in prefixes})
    last: dict[str, int] = {}
    for i, kernel in enumerate(table.kernels):
        for length in lengths:
            if (head := kernel.module[:length]) in prefixes:
                last[head] = i
    return last


def check_pipeline_parallel(config: ModelConfig, pp: int) -> None:
    """ValueError ('found X, allowed: Y') when `pp` stages cannot each hold a decoder layer."""
    if not 1 <= pp <= config.num_layers:
        raise ValueError(f"found {pp}, allowed: 1 to {config.name}'s {config.num_layers} decoder layers "
                         f"(each pipeline stage holds whole layers)")


def stage_of_layer(layer: int, layers: int, pp: int) -> int:
    """The pipeline stage holding a decoder layer: layers split as evenly as they go, earlier stages first."""
    return layer * pp // layers


def stage_send_bytes_per_token(config: ModelConfig, residual_apart: bool = False) -> float:
    """Bytes a pipeline stage sends the next per token: its 16-bit hidden state, and the residual stream too where
    the engine keeps it apart (vLLM's fused add + RMSNorm: its Llama sends both, as IntermediateTensors)."""
    return config.hidden_size * 2.0 * (2 if residual_apart else 1)


def pipeline_sends(table: KernelTable, pp: int, config: ModelConfig, residual_apart: bool = False) -> KernelTable:
    """`table` with a send of the hidden state (stage_send_bytes_per_token per token) after the last kernel of each
    of the first pp - 1 stages. The embedding runs on the first stage, the final norm and LM head on the last; a
    stage runs its layers on its own devices while the others wait (one batch in flight: no micro-batches)."""
    if pp == 1:
        return table
    gemm_rows = np.flatnonzero(table.kind == _GEMM)
    layers = np.array([-1 if k.layer is None else k.layer for k in table.kernels])
    after = []
    for stage in range(1, pp):
        first_layer = next(layer for layer in range(config.num_layers)
                           if stage_of_layer(layer, config.num_layers, pp) == stage)
        first_row = int(np.flatnonzero(layers == first_layer)[0])
        tokens = table.m[gemm_rows[gemm_rows > first_row][0]]  # the stage's first projection takes every token
        after.append((first_row - 1, float(tokens * stage_send_bytes_per_token(config, residual_apart))))
    return _with_collectives(table, after, KernelKind.SEND_RECV, 2)[0]


def collective_kernel(kind: KernelKind, after: Kernel, message_B: float, devices: int) -> Kernel:
    """A collective of `message_B` bytes per device over `devices` devices, placed after a kernel."""
    return Kernel(kind=kind, op=kind.value, flops=0.0, weight_bytes=0.0, act_bytes=message_B, kv_bytes=0.0,
                  dtype=after.dtype, tensor_core=False, layer=after.layer, module=after.module, batch=devices)


def _with_collectives(table: KernelTable, after: list[tuple[int, float]], kind: KernelKind,
                      devices: int) -> tuple[KernelTable, np.ndarray]:
    """`table` with a collective row inserted after each given row (message bytes in act_bytes, the device
    count in batch), `after` in row order; and for each row, the row of `table` it is or follows."""
    return _with_exchanges(table, [(i, message, kind, devices) for i, message in after])


def _with_exchanges(table: KernelTable, after: list[tuple[int, float, KernelKind, int]]) -> tuple[KernelTable,
                                                                                                    np.ndarray]:
    """_with_collectives of collectives of their own kinds and device counts: (row, message bytes, kind, devices)."""
    collectives = KernelTable.from_kernels([collective_kernel(kind, table.kernels[i], message, devices)
                                            for i, message, kind, devices in after])
    rows = np.array([i for i, *_ in after], dtype=int)
    index = np.insert(np.arange(len(table)), rows + 1, len(table) + np.arange(len(after)))
    return KernelTable.concat([table, collectives]).select(index), np.insert(np.arange(len(table)), rows + 1, rows)
