"""Step templates: a model's kernels re-shaped to any serving iteration without tracing it again.

A serving engine runs iterations that mix prefill chunks and decode tokens of many sequences, each with its
own KV length. Tracing every such shape would take seconds each; instead a model is traced four times at
small shapes and every kernel is described by how its work grows:

- every column of work and traffic of a kernel outside attention is affine in three *drivers* of an
  iteration: its tokens (GEMMs over the flattened batch, norms, residual adds, KV-cache writes), the
  sequences that sample a token (the final norm and LM head run on last positions only) and its longest
  query (the rotary table is computed per position, and broadcast into q and k). Four traces with independent
  drivers give the four coefficients of each column exactly; nothing is read from kernel names.
- an MoE expert's kernels (its gathers, GEMMs and scatter) are affine in the tokens routed to that expert; an
  expert with no tokens launches nothing. The template's traces route by balanced routing (template_layers), so
  every expert gets tokens in each of them; an iteration's tokens are routed by the model's routing model
  (ModelConfig.moe_routing: balanced, uniform or power_law, workloads/model_config.py expert_load), as a trace of
  that iteration would route them. A fused MoE layer (kernels/moe.py) follows the same routing: its FLOPs grow with the
  rows routed to the device's experts, its weights with the experts those rows reach and its activation traffic as
  kernels/moe.fused_moe_act_bytes of its tokens and rows, each scaled from the decode trace.
- attention is re-shaped from its traced rows by the work it does: prefill chunks compute causal
  (query, key) pairs and read their cached prefix from the KV cache; decode tokens read their KV lengths.
  Prefill chunks of an iteration share one kernel per layer, decode tokens another (varlen kernels as
  serving engines launch them).

Identical rows (the same kernel in every layer) are merged with a count, so pricing an iteration prices a
layer's worth of rows. A fused engine pass (kernels/fusion.py) is not quite uniform: the first layer's input norm
has no residual add to fuse, and every later layer's norm fuses the add of the layer before it; rows seen in the
first traced layer only, or in every traced layer but the first, are counted once or num_layers - 1 times.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from kernels.block_estimate import estimate_kernels
from kernels.cascade_merge import merge_kernel
from kernels.formats import HOT_EXPERTS_MODULE, NumericFormat
from kernels.fusion import fuse
from kernels.kernel import COLLECTIVE_KINDS, KernelKind
from kernels.kv_eviction import D2O, merge_table, scored_prefill
from kernels.kv_policy import (
    KVPolicy,
    Window,
    decode_reads,
    estimate_pairs,
    flops_per_read,
    kept_tokens,
    prefill_pairs,
)
from kernels.lora import LoraKernels
from kernels.lowering import lower_trace
from kernels.moe import COLD_EXPERTS_MODULE, MATRICES, cached_routing, fused_moe_act_bytes, part_experts
from kernels.parallel import context_gather_kernel, context_parallel_rows, split_cache_writes, stage_of_layer
from kernels.table import KIND_CODE, KernelTable
from workloads.model_config import (
    BALANCED,
    MLA_ABSORBED,
    MLA_DECOMPRESSED,
    ModelConfig,
    balanced_expert_load,
    expert_load,
)
from workloads.op_costs import causal_pairs
from workloads.trace import Trace

# Prompt length of the template's prefill traces: short (cheap to trace), long enough to tell tokens apart
# from sequences and positions.
TEMPLATE_PROMPT = 16
# Decoder layers a template needs traced: they all launch the same kernels (two, so that a kernel repeated in
# every layer is seen repeating).
TEMPLATE_LAYERS = 2

# Columns of a non-attention kernel that grow with the iteration; every other column is fixed by the kernel.
SCALED_COLUMNS = ("flops", "weight_bytes", "act_bytes", "kv_bytes", "m", "reduce_rows")
_EXPERT = re.compile(r"\.experts\.(\d+)(\.|$)")
_LAYER_INDEX = re.compile(r"(?<![^.])layers\.\d+")
_FORM = re.compile(rf"(?<![^.])({MLA_DECOMPRESSED}|{MLA_ABSORBED})(\.|$)")
# MLA's up-projection of latents to every head's key and value (workloads/decoder.py LatentDecompressed.kv_b_proj).
_UP_PROJECTION = re.compile(r"(?<![^.])kv_b_proj$")
# Cached-prefix tokens vLLM's MLA backend up-projects in one pass: its chunked-prefill workspace, min(max(8 x
# max_model_len, 4 x max_num_seqs x block_size), 64 x 1024) tokens (vllm/v1/attention/backends/mla/common.py
# determine_chunked_prefill_workspace_size), 64 x 1024 for every DeepSeek preset (a context of 163,840 tokens).
MLA_CONTEXT_WORKSPACE = 64 * 1024
# Which layers a template row runs in: outside the layer stack (once), every layer, the first layer only, or
# every layer but the first.
SPAN_MODEL, SPAN_EVERY, SPAN_FIRST, SPAN_REST = range(4)
# Where a row runs in a pass (StepTemplate.row_places): before the decoder layers, in them, after them.
PLACE_HEAD, PLACE_LAYERS, PLACE_TAIL = range(3)
# Which kind of decoder layer a template row runs in (StepTemplate.layer_kind), where an MoE model's dense first layers
# run other rows than its MoE layers: both kinds (a row outside the layer stack too), the MoE layers alone (their
# router and shared experts), the dense layers alone (their MLP).
LAYERS_ALL, LAYERS_MOE, LAYERS_DENSE = range(3)
_ATTENTION = (KIND_CODE[KernelKind.ATTENTION_PREFILL], KIND_CODE[KernelKind.ATTENTION_DECODE])
_MOE = KIND_CODE[KernelKind.MOE]
_COLLECTIVES = tuple(KIND_CODE[kind] for kind in COLLECTIVE_KINDS)


@dataclass(frozen=True, kw_only=True)
class StepShape:
    """What one iteration computes, summed over the sequences in it."""

    prefill_seqs: int = 0
    prefill_tokens: int = 0
    prefill_pairs: int = 0  # causal (query, key) pairs over all chunks
    prefill_cached: int = 0  # keys the chunks read back from the KV cache (their already-computed prefix)
    # Pairs per query head a block-sparse prefill's 4-bit estimate scores over all chunks (kernels/block_sparse.py;
    # 0: the prefill does not select, and runs no estimate).
    estimate_pairs: int = 0
    # An eviction's prefill (kernels/kv_eviction.py scored_prefill): the share of the heads whose attention runs
    # unfused to keep its probabilities, and the bytes it moves per (query head, query, key) pair (0: fused).
    prefill_scored_share: float = 0.0
    prefill_score_B: float = 0.0
    # D2O's merge of the prompt tokens a prefill evicts (kernels/kv_eviction.py merge_table): the chunks that end a
    # prompt past the budget, their tokens past it summed, and the budget (0: none merges).
    prefill_merges: int = 0
    prefill_evicted: int = 0
    prefill_budget: int = 0
    prefill_key_B: float = 0.0  # bytes of a cached key element, which the merge reads (Eviction.key_B)
    decode_seqs: int = 0
    decode_kv: int = 0  # keys the decoding sequences attend to, summed (each its own, with a shared prefix apart)
    # Cascade attention: decode_shared_groups prefixes of decode_shared_kv keys each (one a prefix group's, the same
    # at the head of each of its sequences' caches), each read once for its sequences, decode_shared_seqs of the
    # decoding sequences in all (0: none read apart).
    decode_shared_kv: int = 0
    decode_shared_seqs: int = 0
    decode_shared_groups: int = 0
    decode_query: int = 1  # query tokens per decoding sequence (a speculative verification's drafted tokens + 1)
    # Decode attention's work in keys' worth of attending to a key, summed over the decoding sequences (decode_reads'
    # FLOPs: a token selection's or an eviction's scoring differs from the keys read, kernels/kv_policy.py); None: the
    # keys read, decode_kv.
    decode_work: float | None = None
    sampled: int = 0  # sequences that sample a token: decodes, and prefills that finish their prompt
    positions: int = 1  # the longest query of the iteration (rows of the rotary table)
    # Of the decoding sequences (counted in decode_seqs and decode_kv too), those whose KV and attention lie on a hybrid
    # attention pool's devices apart from the model's (sim/attention_pool.py), the keys they attend to, summed, and
    # their decode attention's work (as decode_work, summed over them alone; None where decode_work is).
    apart_seqs: int = 0
    apart_kv: int = 0
    apart_work: float | None = None
    # What the layers of a model's layer window (StepTemplate.layer_window: gpt-oss's sliding layers beside its full
    # ones) attend to, each sequence's capped at that window (a verification's decode at its queries' windows): the
    # decodes' keys, the chunks' causal pairs and the keys they read back from the cache, summed (0 in a model without
    # such layers).
    window_kv: int = 0
    window_pairs: int = 0
    window_cached: int = 0
    # Tokens run beyond the sequences' own, which attend to nothing and sample nothing (a data-parallel rank padded to
    # the busiest rank's tokens, as vLLM pads them under CUDA graphs): they run the kernels outside attention alone.
    padding: int = 0
    # Distinct LoRA adapters the iteration's sequences run (kernels/lora.py; 0: none), each token through its own.
    lora_adapters: int = 0

    def __post_init__(self) -> None:
        if self.decode_shared_seqs < 2 * self.decode_shared_groups or (self.decode_shared_seqs
                                                                        and not self.decode_shared_groups):
            raise ValueError(f"decode_shared_seqs: found {self.decode_shared_seqs} over {self.decode_shared_groups} "
                             f"shared prefixes, allowed: two or more sequences a prefix, none without one")
        if self.apart_seqs and (self.apart_work is None) != (self.decode_work is None):
            raise ValueError(f"apart_work: found {self.apart_work} with decode_work {self.decode_work}, allowed: "
                             f"both given or neither")

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decode_queries + self.padding

    @property
    def decode_queries(self) -> int:
        """Query tokens of the decoding sequences."""
        return self.decode_seqs * self.decode_query

    @property
    def decode_work_kv(self) -> float:
        """Decode attention's work in keys' worth (decode_work, or the keys read)."""
        return self.decode_kv if self.decode_work is None else self.decode_work

    @property
    def decode_flops_per_kv(self) -> float:
        """Decode attention FLOPs per FLOP of attending to the keys it reads (1 but under a KV policy that selects or
        scores tokens)."""
        return self.decode_work_kv / self.decode_kv if self.decode_kv else 1.0

    @property
    def own_work(self) -> float | None:
        """Decode attention's work of the sequences not apart (decode_work less apart_work; None where decode_work
        is)."""
        if self.decode_work is None:
            return None
        # Both are sums over sequences, in their own order: a difference of rounding never goes below none.
        return max(self.decode_work - (self.apart_work or 0.0), 0.0)

    @property
    def decode_query_kv(self) -> int:
        """(query, key) pairs of the decoding sequences' own keys: each query token against every key it reads."""
        return self.decode_kv * self.decode_query

    @property
    def shared_queries(self) -> int:
        """Query tokens of the sequences reading a shared prefix apart (cascade attention)."""
        return self.decode_shared_seqs * self.decode_query

    def windowed(self) -> StepShape:
        """The iteration as the layers of the model's layer window see it: their keys, pairs and cached keys."""
        return replace(self, decode_kv=self.window_kv, prefill_pairs=self.window_pairs,
                       prefill_cached=self.window_cached)

    def paged(self) -> StepShape:
        """The same iteration with every sequence reading its own copy of a shared prefix (no cascade attention)."""
        prefixes = self.decode_shared_kv * self.decode_shared_seqs
        # A prefix is shared only where the window reads it whole, one key's work a key (no policy choosing tokens).
        work = None if self.decode_work is None else self.decode_work + prefixes
        return replace(self, decode_kv=self.decode_kv + prefixes, decode_work=work, decode_shared_kv=0,
                       decode_shared_seqs=0, decode_shared_groups=0)

    def shares(self, parts: int) -> tuple[StepShape, ...]:
        """The iteration dealt in `parts` shares, largest first, its prefill chunks, its decoding sequences and its
        sampled sequences each dealt whole and evenly (the first n % parts shares take one more), each share's chunks
        of the mean size (a share without one has the decodes' query length as its longest); shares dealt nothing are
        left out. A shape in one part is itself alone."""
        if parts < 1:
            raise ValueError(f"parts: found {parts}, allowed: an integer >= 1")
        if parts == 1 or self.decode_shared_seqs:
            if self.decode_shared_seqs and parts > 1:
                raise ValueError("a shape that cascades shared prefixes is not split (its prefix kernel serves all)")
            return (self,)

        def dealt(n: int, i: int) -> int:
            return n // parts + (i < n % parts)

        made = []
        for i in range(parts):
            prefills, decodes = dealt(self.prefill_seqs, i), dealt(self.decode_seqs, i)
            if not prefills and not decodes:
                continue
            prefill = prefills / self.prefill_seqs if self.prefill_seqs else 0.0
            decode = decodes / self.decode_seqs if self.decode_seqs else 0.0
            made.append(replace(self, prefill_seqs=prefills, prefill_tokens=round(self.prefill_tokens * prefill),
                                prefill_pairs=round(self.prefill_pairs * prefill),
                                estimate_pairs=round(self.estimate_pairs * prefill),
                                prefill_cached=round(self.prefill_cached * prefill), decode_seqs=decodes,
                                decode_kv=round(self.decode_kv * decode), sampled=dealt(self.sampled, i),
                                window_kv=round(self.window_kv * decode),
                                window_pairs=round(self.window_pairs * prefill),
                                window_cached=round(self.window_cached * prefill),
                                decode_work=self._work_share(decode),
                                positions=self.positions if prefills else self.decode_query))
        return tuple(made) or (self,)

    def _work_share(self, share: float) -> float | None:
        """The decodes' work of a part holding `share` of the decoding sequences, dealt in proportion."""
        return None if self.decode_work is None else self.decode_work * share

    def token_halves(self) -> tuple[StepShape, ...]:
        """The iteration's tokens in two halves of about equal count, as TokenWeave splits them: each prefill chunk at
        its middle (the second half attends to the first as a cached prefix, so it takes the later queries' larger
        share of the causal pairs, and it samples where the chunk finishes its prompt), the decoding sequences dealt
        whole and evenly. A shape without a prefill is dealt by sequences (shares(2)); one that cannot be split (a
        single token, or a cascaded shared prefix) is itself alone."""
        if self.decode_shared_seqs:
            return (self,)
        if not self.prefill_seqs:
            return self.shares(2)
        seqs, tokens = self.prefill_seqs, self.prefill_tokens / self.prefill_seqs  # the mean chunk
        cached = self.prefill_cached / seqs
        first = tokens // 2
        if first < 1:
            return self.shares(2)
        # The first half's share of the chunk's causal pairs (whatever window scaled them, it scales both halves).
        share = causal_pairs(first, cached + first) / causal_pairs(tokens, cached + tokens)
        first_pairs, first_estimate = round(self.prefill_pairs * share), round(self.estimate_pairs * share)
        decodes = self.decode_seqs // 2
        prefill_sampled = self.sampled - self.decode_seqs
        halves = []
        for half, (chunk, prefix, pairs, estimate, dealt) in enumerate(
                ((first, cached, first_pairs, first_estimate, decodes),
                 (tokens - first, cached + first, self.prefill_pairs - first_pairs,
                  self.estimate_pairs - first_estimate, self.decode_seqs - decodes))):
            kv = round(self.decode_kv * dealt / self.decode_seqs) if self.decode_seqs else 0
            halves.append(replace(self, prefill_tokens=round(chunk * seqs), prefill_pairs=pairs,
                                  estimate_pairs=estimate,
                                  decode_work=self._work_share(dealt / self.decode_seqs if self.decode_seqs else 0.0),
                                  prefill_cached=round(prefix * seqs), decode_seqs=dealt,
                                  decode_kv=kv if half == 0 else self.decode_kv - halves[0].decode_kv,
                                  sampled=dealt + (prefill_sampled if half else 0),
                                  positions=max(round(chunk), self.decode_query if dealt else 1)))
        return tuple(halves)


def step_shape(chunks: Sequence[tuple[int, int]] = (), decode_kv: Sequence[int] = (), *, sampled: int,
               window: Window = None, decode_query: int = 1, prefill_window: int | None = None,
               shared_prefix: int = 0, prefix_groups: Sequence[int] | None = None,
               finished: Sequence[int] = (), layer_window: int | None = None, lora_adapters: int = 0) -> StepShape:
    """The shape of an iteration: prefill `chunks` as (new tokens, cached prefix tokens) and the KV lengths of
    the decoding sequences (a sliding window, or a KV policy, caps what a decode token attends to), each with
    `decode_query` query tokens (a speculative verification: the last token and the drafted ones). A chunk's queries
    attend to at most `prefill_window` keys each: the model's own sliding window (StepTemplate.sliding_window), and
    DuoAttention's streaming heads to theirs (kernels/kv_policy.py prefill_pairs; other budgets leave it whole); a KV
    policy's prefill selection (SALE) computes its share of those pairs after its estimate scores them all.
    `shared_prefix`: the length of a prefix at the head of decoding sequences' caches, the same for all the sequences
    of a group, which cascade attention reads once for each group's sequences that still attend to it whole (two or
    more; one alone reads its copy, as paged attention does; none under a KV policy that keeps or reads tokens of its
    own choosing: KVPolicy.chooses_tokens). `prefix_groups`: of each decoding sequence, the group whose prefix it
    shares (a negative one: none, it holds its own copy); None: every sequence shares one prefix.
    `finished`: the context lengths of the chunks that end their prefill, past a D2O budget merging what it evicts.
    `layer_window`: the window of the model's windowed layers beside its full ones (StepTemplate.layer_window), whose
    keys, pairs and cached keys the shape counts apart (StepShape.window_kv). `lora_adapters`: the distinct LoRA
    adapters its sequences run (StepShape.lora_adapters)."""
    shared, sharing, groups, work = 0, 0, 0, None
    if window is None and not shared_prefix:  # every sequence reads each of its keys: their sum (numpy's, exactly)
        read_kv = sum(decode_kv)
    else:
        kv = np.asarray(decode_kv)
        if shared_prefix and not (isinstance(window, KVPolicy) and window.chooses_tokens):
            # Caches holding a shared prefix that the window still reads whole.
            whole = (kv >= shared_prefix) & (kept_tokens(kv, window) >= kv)
            if prefix_groups is not None:
                label = np.asarray(prefix_groups)
                whole &= label >= 0
            if whole.sum() > 1:
                groups = 1
                named = label[whole] if prefix_groups is not None else None
                if named is not None and named.min() != named.max():
                    # Of those, the sequences whose group has two or more of them read its prefix once together.
                    _, group, members = np.unique(named, return_inverse=True, return_counts=True)
                    whole[whole] = members[group] > 1
                    groups = int((members > 1).sum())
                if groups:
                    kv = np.where(whole, kv - shared_prefix, kv)
                    shared, sharing = shared_prefix, int(whole.sum())
        moved, done = decode_reads(kv, window)
        read_kv = round(float(np.sum(moved)))
        if flops_per_read(window) != 1.0:  # a policy whose work per key read is not one: summed, exact per sequence
            work = float(np.sum(done))
    evicts = isinstance(window, KVPolicy) and window.eviction is not None
    merges = evicts and window.eviction.method == D2O
    past = [n - window.window for n in finished if n > window.window] if merges else []
    return StepShape(
        prefill_merges=len(past), prefill_evicted=sum(past), prefill_budget=window.window if past else 0,
        prefill_key_B=window.eviction.key_B if past else 0.0,
        prefill_seqs=len(chunks), prefill_tokens=sum(q for q, _ in chunks),
        prefill_pairs=round(sum(prefill_pairs(q, q + cached, window, prefill_window) for q, cached in chunks)),
        estimate_pairs=round(sum(estimate_pairs(q, q + cached, window, prefill_window) for q, cached in chunks)),
        prefill_scored_share=1.0 - window.full_heads if evicts else 0.0,
        prefill_score_B=window.eviction.prefill_score_B if evicts else 0.0,
        prefill_cached=sum(cached for _, cached in chunks), decode_seqs=len(decode_kv),
        decode_kv=read_kv, decode_shared_kv=shared, decode_shared_seqs=sharing,
        decode_shared_groups=groups, decode_work=work, sampled=sampled,
        decode_query=decode_query,
        positions=max([q for q, _ in chunks] + [decode_query if len(decode_kv) else 1]), lora_adapters=lora_adapters,
        **({} if layer_window is None else _windowed_work(chunks, decode_kv, layer_window, decode_query)),
    )


def _windowed_work(chunks: Sequence[tuple[int, int]], decode_kv: Sequence[int], window: int,
                   decode_query: int = 1) -> dict[str, int]:
    """StepShape's window_kv, window_pairs and window_cached: each decode reads the keys of its `decode_query` queries'
    windows, its last window + decode_query - 1 keys (a speculative verification's queries each attend to the
    `window` keys ending at their own, the first query's window reaching decode_query - 1 keys behind the last's;
    each query is priced against every key read, as in a full layer), each chunk's query attends to its last `window`
    keys and the chunk reads back the cached ones of them (those of its first query's window)."""
    reach = window + decode_query - 1
    return dict(window_kv=int(np.minimum(np.asarray(decode_kv, dtype=np.int64), reach).sum()),
                window_pairs=round(sum(causal_pairs(q, q + cached, window) for q, cached in chunks)),
                window_cached=sum(min(cached, window - 1) for _, cached in chunks))


def template_batch(config: ModelConfig) -> int:
    """Sequences of a template's narrower decode and prefill traces (its wider ones have twice as many)."""
    # Enough sequences that every expert of an MoE layer gets a token in every trace, and two or more under MLA: its
    # absorbed output is copied into the o_proj's layout for more than one token (a view of one token's).
    batch = -(-config.num_experts // config.experts_per_token) if config.num_experts else 1
    return max(batch, 2) if config.is_mla else batch


def template_passes(config: ModelConfig) -> list[tuple[str, int, int]]:
    """The (phase, sequences, prompt tokens) of the four passes StepTemplate.from_model traces of a config: decodes
    after TEMPLATE_PROMPT tokens and prefills of TEMPLATE_PROMPT tokens, of template_batch and twice as many
    sequences."""
    batch = template_batch(config)
    return [(phase, size, TEMPLATE_PROMPT) for phase in ("decode", "prefill") for size in (batch, 2 * batch)]


def template_layers(config: ModelConfig) -> ModelConfig:
    """The config a template traces: the model's first TEMPLATE_LAYERS layers (each launches the same kernels), routed
    balanced, so that every expert gets tokens in each trace (the template routes each iteration by the model's own
    routing: StepTemplate.moe_routing)."""
    return replace(config, num_layers=min(config.num_layers, TEMPLATE_LAYERS), moe_routing=BALANCED)


@dataclass(frozen=True, kw_only=True)
class TemplateTraces:
    """The four traced passes a template is read from (already under the numeric format).

    Decode steps of `batch` and 2 x `batch` sequences, and prefills of `batch` and 2 x `batch` sequences of
    `prompt` tokens: their (tokens, sampled, longest query) are independent, so each kernel's affine
    coefficients are determined. For MoE models `batch` is large enough that every expert gets tokens.
    """

    decode: KernelTable
    decode_wide: KernelTable
    prefill: KernelTable
    prefill_wide: KernelTable
    batch: int
    prompt: int
    num_experts: int = 0
    experts_per_token: int = 0
    decode_activation_B: float = 0.0  # peak live activations of the decode and prefill traces
    prefill_activation_B: float = 0.0
    param_bytes: float = 0.0  # the model's weights at the traced precision
    sliding_window: int | None = None  # the model's own attention window (ModelConfig.sliding_window)

    def drivers(self) -> np.ndarray:
        """(tokens, sampled, longest query) of each trace, with a leading 1: shape (4, 4)."""
        b, p = self.batch, self.prompt
        return np.array([[1, b, b, 1], [1, 2 * b, 2 * b, 1], [1, b * p, b, p], [1, 2 * b * p, 2 * b, p]], dtype=float)

    def tables(self) -> tuple[KernelTable, ...]:
        return self.decode, self.decode_wide, self.prefill, self.prefill_wide


@dataclass(frozen=True)
class StepTemplate:
    """Non-attention kernels as affine functions of the iteration, and one attention row per phase."""

    linear: KernelTable  # unique rows (columns are set per iteration)
    coef: dict[str, np.ndarray]  # per SCALED_COLUMN: (rows, 5) coefficients of 1, tokens, sampled, query, expert load
    expert: np.ndarray  # per row: its MoE expert, or -1
    # (4 traces, rows): each row's KernelTable.general_layout in the decode, wide decode, prefill and wide prefill
    # traces: whether a pointwise kernel takes the contiguous loop can depend on the shape (lowering.general_layout)
    general_layout: np.ndarray
    count: np.ndarray  # per row: how many traced kernels it stands for
    span: np.ndarray  # per row: which layers it runs in (SPAN_MODEL, SPAN_EVERY, SPAN_FIRST or SPAN_REST)
    prefill_attention: KernelTable  # one row: the traced prefill attention of one layer
    decode_attention: KernelTable  # one row: the traced decode attention of one layer
    attention_layers: int
    traced_prefill_pairs: float  # causal pairs of the traced prefill row
    traced_prefill_tokens: float
    traced_decode_kv: float  # keys of the traced decode row, summed over its sequences
    traced_decode_seqs: float
    num_experts: int
    experts_per_token: int
    traced_tokens: float  # tokens of the decode trace, whose fused MoE rows the template re-scales
    activation_per_token_B: float  # peak live activations per token of an iteration, and at zero tokens
    activation_base_B: float
    param_bytes: float  # the model's weights at the traced precision
    sliding_window: int | None = None  # the model's own attention window: what a prefill chunk's query attends to
    moe_routing: str = BALANCED  # how an iteration's tokens reach the experts (the traces' are balanced)
    # Each decoder layer's attention window where they differ (ModelConfig.layer_windows; empty: every layer's is
    # sliding_window): the layers of the one window (layer_window) attend to a shape's windowed() part.
    layer_windows: tuple[int | None, ...] = ()
    # The rank of the LoRA adapters an iteration runs (kernels/lora.py; vLLM pads every adapter in its GPU slots to
    # max_lora_rank): each decoder layer adds their shrink and expand rows where StepShape.lora_adapters is set.
    lora_rank: int = 0
    # Per row: the kind of decoder layer it runs in (LAYERS_ALL, LAYERS_MOE or LAYERS_DENSE): kernels/mixed_layers.py
    # model_template sets the kinds of an MoE model with dense first layers, from_traces LAYERS_ALL for every row.
    layer_kind: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    # The devices each sequence's keys are split over by token (decode context parallelism, kernels/parallel.py
    # context_parallel; 1: none): a decode attends over its share with its exchanges, a prefill chunk past a cached
    # context gathers the context's KV first.
    context_split: int = 1

    def __post_init__(self) -> None:
        windows = set(self.layer_windows) - {None}
        if len(windows) > 1 or (self.layer_windows and len(self.layer_windows) != self.attention_layers):
            raise ValueError(f"layer_windows: found {len(self.layer_windows)} layers' windows {sorted(windows)} for "
                             f"{self.attention_layers} layers, allowed: one window beside full layers, one a layer")

    @property
    def layer_window(self) -> int | None:
        """The window of the layers that have one where windows differ by layer (None: layers do not differ)."""
        return next((window for window in self.layer_windows if window is not None), None)

    @classmethod
    def from_traces(cls, traces: TemplateTraces) -> StepTemplate:
        tables = [t.select(~np.isin(t.kind, _ATTENTION)) for t in traces.tables()]
        for name, table in zip(("decode_wide", "prefill", "prefill_wide"), tables[1:], strict=True):
            _check_aligned(tables[0], table, name)
        x = traces.drivers()
        expert = np.array([int(m.group(1)) if (m := _EXPERT.search(k.module)) else -1 for k in tables[0].kernels])
        # A collective after an MoE block (a tensor- or expert-parallel layer's all-reduce) takes the module of the
        # block's last expert but sums every token's output, whichever experts got tokens: not an expert's row.
        expert[np.isin(tables[0].kind, _COLLECTIVES)] = -1
        is_expert = expert >= 0
        is_moe = tables[0].kind == _MOE
        coef = {}
        for name in SCALED_COLUMNS:
            values = np.stack([getattr(t, name) for t in tables])  # (4 traces, kernels)
            c = np.zeros((len(expert), 5))
            c[:, :4] = np.linalg.solve(x, values).T
            if is_expert.any():
                # An expert's kernels follow its routed tokens: fitted between the decode and prefill traces.
                load = np.array([balanced_expert_load(int(tokens), traces.experts_per_token, traces.num_experts)
                                 for tokens in x[[0, 2], 1]])[:, expert[is_expert]]
                slope = (values[2, is_expert] - values[0, is_expert]) / (load[1] - load[0])
                c[is_expert] = 0.0
                c[is_expert, 4] = slope
                c[is_expert, 0] = values[0, is_expert] - slope * load[0]
            if is_moe.any():
                # A fused MoE layer: its decode trace's columns, re-scaled per iteration by _linear_table.
                c[is_moe] = 0.0
                c[is_moe, 0] = values[0, is_moe]
            coef[name] = c
        unique, count, span = _unique_rows(tables[0], expert, coef)
        prefill_rows = traces.prefill.select(traces.prefill.kind == _ATTENTION[0])
        decode_rows = traces.decode.select(traces.decode.kind == _ATTENTION[1])
        b, p = traces.batch, traces.prompt
        per_token = (traces.prefill_activation_B - traces.decode_activation_B) / (b * p - b)
        return cls(
            linear=tables[0].select(unique), coef={name: c[unique] for name, c in coef.items()},
            expert=expert[unique], general_layout=np.stack([t.general_layout[unique] for t in tables]),
            count=count, span=span, prefill_attention=prefill_rows.select([0]),
            decode_attention=decode_rows.select([0]), attention_layers=len(decode_rows),
            traced_prefill_pairs=float(b * causal_pairs(p, p, traces.sliding_window)),
            traced_prefill_tokens=float(b * p),
            traced_decode_kv=float(decode_rows.kv_len[0] * decode_rows.batch[0]),
            traced_decode_seqs=float(decode_rows.batch[0]),
            num_experts=traces.num_experts, experts_per_token=traces.experts_per_token,
            traced_tokens=float(x[0, 1]), activation_per_token_B=max(per_token, 0.0),
            activation_base_B=traces.decode_activation_B - max(per_token, 0.0) * b,
            param_bytes=traces.param_bytes, sliding_window=traces.sliding_window,
            layer_kind=np.full(len(count), LAYERS_ALL, dtype=np.int8),
        )

    @classmethod
    def from_model(cls, config: ModelConfig, fmt: NumericFormat, trace: Callable[[str, int, int], Trace],
                   shard: Callable[[KernelTable], KernelTable] | None = None,
                   fusion: str = "") -> StepTemplate:
        """The template of a model under a numeric format; trace(phase, batch, prompt) captures a prefill of
        `batch` prompts, or a decode step after them, of the model or of its first layers (TEMPLATE_LAYERS:
        every decoder layer launches the same kernels, so the template counts each layer's rows num_layers
        times); `shard` gives the kernels one device of a parallel layout runs and `fusion` the kernels an
        execution launches (kernels/fusion.py), both applied at the traced precision, before the format."""
        batch = template_batch(config)
        traces = {(phase, size): trace(phase, size, prompt) for phase, size, prompt in template_passes(config)}
        shard = shard or (lambda table: table)
        tables = {key: fuse(shard(KernelTable.from_kernels(lower_trace(t))), fusion).with_format(fmt)
                  for key, t in traces.items()}
        traced = traces["prefill", batch]
        traced_layers = len({op.layer for op in traced.ops if op.layer is not None})
        bytes_per_param = traced.param_bytes / replace(config, num_layers=traced_layers).param_count()
        template = cls.from_traces(TemplateTraces(
            decode=tables["decode", batch], decode_wide=tables["decode", 2 * batch],
            prefill=tables["prefill", batch], prefill_wide=tables["prefill", 2 * batch], batch=batch,
            prompt=TEMPLATE_PROMPT, num_experts=config.num_experts, experts_per_token=config.experts_per_token,
            decode_activation_B=traces["decode", batch].peak_activation_bytes,
            prefill_activation_B=traced.peak_activation_bytes,
            param_bytes=config.param_count() * bytes_per_param, sliding_window=config.sliding_window))
        return replace(template.with_layers(config.num_layers), moe_routing=config.moe_routing,
                       layer_windows=config.layer_windows)

    def with_layers(self, layers: int) -> StepTemplate:
        """The template of the same model with `layers` decoder layers (the traced layers' rows repeated)."""
        if layers == self.attention_layers:
            return self
        rest = self.count * (layers - 1) / max(self.attention_layers - 1, 1)
        count = np.select([self.span == SPAN_EVERY, self.span == SPAN_REST],
                          [self.count * layers / self.attention_layers, rest], self.count)
        return replace(self, count=count, attention_layers=layers)

    @property
    def expert_mask(self) -> np.ndarray:
        """Per unique row: whether it is a routed expert's kernel (or a fused MoE layer's, all its experts in one); a
        collective after an expert's last kernel (an expert-parallel layer's all-reduce) is not (from_traces)."""
        return (self.expert >= 0) | (self.linear.kind == _MOE)

    def select_rows(self, keep: np.ndarray) -> StepTemplate:
        """The template of only the unique rows where `keep` is true (its attention rows unchanged): the part of an
        iteration one kind of device runs, as data-parallel attention runs the experts apart from the rest
        (sim/costs.py)."""
        return replace(self, linear=self.linear.select(keep), coef={name: c[keep] for name, c in self.coef.items()},
                       expert=self.expert[keep], general_layout=self.general_layout[:, keep], count=self.count[keep],
                       span=self.span[keep], layer_kind=self.layer_kind[keep])

    def activation_bytes(self, tokens: int) -> float:
        """Peak live activations of an iteration of `tokens` tokens (affine in tokens between the traces)."""
        return self.activation_base_B + self.activation_per_token_B * tokens

    def table(self, shape: StepShape) -> tuple[KernelTable, np.ndarray]:
        """The kernels of an iteration as unique rows and the count of each (attention rows: one per layer)."""
        table, counts = self.stage_table(shape, 1)
        return table, counts[0]

    def stage_table(self, shape: StepShape, stages: int) -> tuple[KernelTable, np.ndarray]:
        """The kernels of an iteration as unique rows, and each row's count on each of `stages` pipeline stages
        (stages x rows): its linear_table's rows, then its attention_table's."""
        linear, rows = self.linear_table(shape)
        attention = self.attention_table(shape)
        table = linear if attention is None else KernelTable.concat([linear, attention])
        table.__dict__["distinct_rows"] = None  # unique rows (linear_table, attention_table)
        return table, self.stage_counts(rows, 0 if attention is None else len(attention), stages)

    def linear_key(self, shape: StepShape) -> tuple[int, ...]:
        """What an iteration's kernels outside attention (linear_table) depend on: its tokens, sampled sequences and
        longest query, of an MLA model its prefill tokens (each form's rows run on their own tokens), and its padding
        (which writes no KV)."""
        return (shape.tokens, shape.sampled, shape.positions, shape.prefill_tokens if self._form_masks else 0,
                shape.padding)

    def linear_table(self, shape: StepShape) -> tuple[KernelTable, np.ndarray]:
        """The kernels of an iteration outside attention as unique rows, and the template rows they are: they depend
        on linear_key alone, not on what its sequences attend to."""
        table, rows = self._linear_table(shape.tokens, shape.sampled, shape.positions, shape.prefill_tokens,
                                         shape.padding)
        # The rows are unique already, counted apart: a cost model need not look for equal rows (a sort per
        # iteration of a serving run).
        table.__dict__["distinct_rows"] = None
        return table, rows

    def attention_table(self, shape: StepShape) -> KernelTable | None:
        """One decoder layer's kernels of an iteration that are priced per iteration (a row each, run in every layer):
        its attention kernels (a block-sparse prefill's estimate, the prefill chunks', the decodes', the decodes' shared
        prefixes' and the merge of the two where it has them) and its LoRA adapters' shrink and expand GEMMs, which grow
        with the adapters it runs (kernels/lora.py); None where it has none. Where windows differ by layer
        (layer_window), the full layers' rows and then the windowed layers' (the same kernels at the shape's windowed()
        sizes)."""
        builders = ((shape.prefill_seqs and shape.estimate_pairs, self._prefill_estimate),
                    (shape.prefill_seqs, self._prefill_attention), (shape.prefill_merges, self._prefill_merge),
                    (shape.prefill_cached and len(self._context_rows), self._context_up_projection),
                    (shape.prefill_cached and len(self._context_rows), self._context_merge),
                    (shape.prefill_cached and self.context_split > 1, self._context_gather),
                    (shape.decode_seqs, self._decode_attention),
                    (shape.decode_shared_seqs, self._shared_prefix_attention),
                    (shape.decode_shared_seqs, self._prefix_merge),
                    (shape.lora_adapters and self._lora is not None, self._lora_rows))
        parts = [attention(shape) for present, attention in builders if present]
        if parts and self.layer_window is not None:
            windowed = shape.windowed()
            parts += [attention(windowed) for present, attention in builders if present]
        if not parts:
            return None
        if len(parts) == 1:
            table = parts[0]
        else:
            # The same kernels in every iteration that runs the same parts, at other sizes: the first iteration's
            # rows are kept as the frame of the others (KernelTable.with_sizes_of).
            frames = self.__dict__.setdefault("_attention_frames", {})
            # Keyed by the parts present and their rows, so a frame is only ever the same kernels.
            layout = (tuple(bool(present) for present, _ in builders), tuple(len(part) for part in parts))
            frame = frames.get(layout)
            table = frame.with_sizes_of(parts) if frame is not None else frames.setdefault(
                layout, KernelTable.concat(parts))
        table.__dict__["distinct_rows"] = None  # each row counted apart (each layer's)
        return table

    def stage_counts(self, rows: np.ndarray, attention_rows: int, stages: int) -> np.ndarray:
        """Each row's count on each of `stages` pipeline stages (stages x rows) of an iteration's linear_table `rows`
        (template rows) followed by `attention_rows` attention rows: the decoder layers split as kernels/parallel.py
        stage_of_layer splits them, a row outside the layer stack on the first stage where the trace runs it before
        the layers (the embedding), else on the last (the final norm, LM head and sampling)."""
        layers = self._stage_layers(stages)
        if stages == 1:
            linear = self.count[rows][None, :]
        else:
            span = self.span[rows]
            first_layer_row = np.argmax(self.span != SPAN_MODEL)
            linear = np.select(
                [span == SPAN_EVERY, span == SPAN_REST, span == SPAN_FIRST],
                [(layers / self.attention_layers)[:, None],
                 ((layers - np.eye(stages)[0]) / max(self.attention_layers - 1, 1))[:, None],
                 np.eye(stages)[0][:, None]],
                np.where(rows < first_layer_row, np.eye(stages)[0][:, None], np.eye(stages)[-1][:, None]))
            linear = linear * self.count[rows]
        if not attention_rows:
            return linear
        if self.layer_window is None:
            return np.concatenate([linear, np.repeat(layers[:, None], attention_rows, axis=1)], axis=1)
        # attention_table's full layers' rows, then as many of the windowed layers'.
        windowed = self._stage_layers(stages, windowed=True)
        half = attention_rows // 2
        return np.concatenate([linear, np.repeat((layers - windowed)[:, None], half, axis=1),
                               np.repeat(windowed[:, None], half, axis=1)], axis=1)

    def _stage_layers(self, stages: int, windowed: bool = False) -> np.ndarray:
        """The decoder layers (`windowed`: those of layer_window alone) on each of `stages` pipeline stages
        (kernels/parallel.py stage_of_layer), kept per stage count: every iteration reads them."""
        kept = self.__dict__.setdefault("_layers_by_stages", {})
        if (stages, windowed) not in kept:
            layers = [layer for layer in range(self.attention_layers)
                      if not windowed or self.layer_windows[layer] is not None]
            kept[stages, windowed] = np.bincount([stage_of_layer(layer, self.attention_layers, stages)
                                                  for layer in layers], minlength=stages).astype(float)
        return kept[stages, windowed]

    def row_places(self, shape: StepShape, table_rows: int) -> np.ndarray:
        """Where each of the `table_rows` rows of stage_table(shape, 1) runs in the pass: PLACE_HEAD before the decoder
        layers (the embedding), PLACE_LAYERS in them (the attention rows, which stage_table appends after the rows
        outside attention, too), PLACE_TAIL after them (the final norm, LM head and sampling), as stage_table places a
        row outside the layer stack."""
        _, rows = self._linear_table(shape.tokens, shape.sampled, shape.positions, shape.prefill_tokens)
        first_layer_row = np.argmax(self.span != SPAN_MODEL)
        linear = np.where(self.span[rows] != SPAN_MODEL, PLACE_LAYERS,
                          np.where(rows < first_layer_row, PLACE_HEAD, PLACE_TAIL))
        return np.concatenate([linear, np.full(table_rows - len(rows), PLACE_LAYERS)])

    def row_layer_kinds(self, shape: StepShape, table_rows: int) -> np.ndarray:
        """The kind of decoder layer (layer_kind) each of the `table_rows` rows of stage_table(shape, 1) runs in: its
        template row's, LAYERS_ALL for the attention rows (every layer attends)."""
        _, rows = self._linear_table(shape.tokens, shape.sampled, shape.positions, shape.prefill_tokens)
        return np.concatenate([self.layer_kind[rows], np.full(table_rows - len(rows), LAYERS_ALL)])

    def _linear_table(self, tokens: int, sampled: int, positions: int, prefill_tokens: int = 0,
                      padding: int = 0) -> tuple[KernelTable, np.ndarray]:
        """The non-attention kernels of an iteration of `tokens` tokens (`prefill_tokens` of them prefill chunks',
        `padding` of them padding, whose KV the cache writes skip: KernelTable.cache_write_mask), and the template rows
        they are (an expert without tokens launches nothing, nor an MLA form without its tokens: form_rows)."""
        load = np.zeros(len(self.expert))
        if self.num_experts:
            per_expert = np.array(expert_load(self.moe_routing, tokens, self.experts_per_token, self.num_experts))
            load = np.where(self.expert >= 0, per_expert[self.expert], 0.0)
        drivers = np.array([1.0, tokens, sampled, positions])
        columns = {name: c[:, :4] @ drivers + c[:, 4] * load for name, c in self.coef.items()}
        form_runs = np.ones(len(self.expert), dtype=bool)
        for form, own in self._form_masks.items():
            # An MLA form's rows run on its own tokens: the decompressed form's on the prefill chunks', the absorbed
            # form's on the decoding sequences'; every other row on all of them.
            form_tokens = prefill_tokens if form == MLA_DECOMPRESSED else tokens - prefill_tokens
            for name, c in self.coef.items():
                columns[name][own] += c[own, 1] * (form_tokens - tokens)
            form_runs &= ~own | (form_tokens > 0)
        if padding:  # the cache writes store the real tokens alone, launched all the same
            writes = self._cache_writes
            for name, c in self.coef.items():
                columns[name][writes] -= c[writes, 1] * padding
        moe = self.linear.kind == _MOE
        touched = np.ones(len(self.expert))
        if moe.any():
            touched = self._fused_moe(columns, tokens, moe)
        # The layout flags of the traced pass most like this iteration: decode steps (one position) or prompts, and
        # as few sequences as the narrow traces or more.
        trace = 2 * (positions > 1) + (sampled > self.traced_tokens)
        table = self.linear.with_columns(**columns, **self._routing_columns, general_layout=self.general_layout[trace])
        if self.context_split > 1:
            # An iteration's new tokens sit at their sequences' own positions, spread over the group's devices.
            table = split_cache_writes(table, self.context_split)
        launched = ((self.expert < 0) | (load > 0)) & (touched > 0) & form_runs  # nothing without tokens
        if launched.all():
            return table, np.arange(len(launched))
        rows = np.flatnonzero(launched)
        return table.select(rows), rows

    def _fused_moe(self, columns: dict[str, np.ndarray], tokens: int, moe: np.ndarray) -> np.ndarray:
        """Set the fused MoE rows' columns for an iteration of `tokens` tokens (the rows hold their decode trace's
        values): FLOPs by the rows routed to the device's experts, weights by the experts reached, activation
        traffic by kernels/moe.fused_moe_act_bytes, tokens the iteration's. Returns the experts each row reaches (1 for
        other rows)."""
        touched = np.ones(len(moe))
        columns["batch"] = self.linear.batch.astype(float).copy()
        columns["tokens"] = np.where(moe, float(tokens), 0.0)
        k, per_expert = self.experts_per_token, self.linear.n / MATRICES
        layer_held = self._split_experts
        for i in np.flatnonzero(moe):
            if i in layer_held:  # a part of a layer's experts (hot or not: kernels/moe.py hot_expert_parts)
                touched[i] = self._moe_part(columns, tokens, i, layer_held[i])
                continue
            held = int(self.linear.batch[i])  # every expert of the device got tokens in the trace
            reached, routed = cached_routing(tokens, k, self.num_experts, held, self.moe_routing)
            _, traced = cached_routing(int(self.traced_tokens), k, self.num_experts, held, BALANCED)
            hidden = self.linear.k[i]
            act = (fused_moe_act_bytes(tokens, routed, hidden, per_expert[i], 1.0) /
                   fused_moe_act_bytes(self.traced_tokens, traced, hidden, per_expert[i], 1.0))
            columns["flops"][i] *= routed / traced
            columns["act_bytes"][i] *= act
            columns["weight_bytes"][i] *= reached / held
            columns["m"][i] = routed / max(reached, 1)
            columns["batch"][i] = touched[i] = reached
        return touched

    @cached_property
    def _routing_columns(self) -> dict[str, np.ndarray]:
        """The routing columns of the fused MoE rows (KernelTable.routed: the template's routing, which the calls of
        a layer past vLLM's chunk follow), found once; none under balanced routing, every row's already."""
        if self.moe_routing == BALANCED or not self.num_experts:
            return {}
        routed = self.linear.routed(self.moe_routing, self.num_experts, self.experts_per_token)
        return {name: getattr(routed, name) for name in ("moe_routing", "moe_experts", "moe_topk")}

    @cached_property
    def _cache_writes(self) -> np.ndarray:
        """The template's KV-cache write rows (KernelTable.cache_write_mask), found once."""
        return self.linear.cache_write_mask

    @cached_property
    def _form_masks(self) -> dict[str, np.ndarray]:
        """The rows of each MLA form the template has (form_rows), found once: the rows are fixed, and a template
        without them (every model without MLA) has none, at no cost per iteration."""
        forms = form_rows(self.linear)
        return {form: forms == form for form in (MLA_DECOMPRESSED, MLA_ABSORBED) if (forms == form).any()}

    @cached_property
    def _split_experts(self) -> dict[int, int]:
        """_layer_experts of the template's rows, found once: the rows are fixed, so no iteration repeats it (a
        template without hot experts has none, at no cost per iteration)."""
        return _layer_experts(self.linear, self.linear.kind == _MOE)

    def _moe_part(self, columns: dict[str, np.ndarray], tokens: int, i: int, held: int) -> float:
        """_fused_moe of row `i`, the kernel of a part of a layer of `held` experts on the device: the layer's
        routing, of which the part runs the experts hot_expert_parts gives it and their share of the rows."""
        k, module, fmt = self.experts_per_token, self.linear.kernels[i].module, self.linear.numeric_format
        reached_all, routed_all = cached_routing(tokens, k, self.num_experts, held, self.moe_routing)
        _, traced_all = cached_routing(int(self.traced_tokens), k, self.num_experts, held, BALANCED)
        reached = part_experts(module, float(reached_all), fmt)
        share = reached / reached_all if reached_all else 0.0
        traced_share = self.linear.batch[i] / held  # every expert of the device got tokens in the trace
        hidden, inter = self.linear.k[i], self.linear.n[i] / MATRICES
        act = (fused_moe_act_bytes(tokens, routed_all, hidden, inter, 1.0) /
               fused_moe_act_bytes(self.traced_tokens, traced_all, hidden, inter, 1.0))
        columns["flops"][i] *= routed_all * share / (traced_all * traced_share)
        columns["act_bytes"][i] *= act * share / traced_share
        columns["weight_bytes"][i] *= reached / self.linear.batch[i]
        columns["m"][i] = routed_all / max(reached_all, 1)  # every part's experts get the layer's rows per expert
        columns["batch"][i] = reached
        return reached

    @cached_property
    def _lora(self) -> LoraKernels | None:
        """One layer's LoRA rows at lora_rank (None without LoRA, or where the template has no wrapped layer), found
        once."""
        return LoraKernels.of(self.linear, self.lora_rank) if self.lora_rank else None

    def _lora_rows(self, shape: StepShape) -> KernelTable:
        """One layer's LoRA shrink and expand rows: every token of the sequences through its adapter (padding tokens
        run none: their adapter index is -1, which vLLM's kernels skip), the shrink split by the padded input's rows."""
        return self._lora.at(shape.tokens - shape.padding, shape.lora_adapters, input_rows=shape.tokens)

    def _decode_attention(self, shape: StepShape) -> KernelTable:
        """One layer's decode attention: each decoding sequence reads its keys once, for each of its query tokens
        (one, or a speculative verification's) computing against every key."""
        row = self.decode_attention
        work = shape.decode_kv / self.traced_decode_kv
        pairs = shape.decode_query_kv / self.traced_decode_kv
        table = row.with_columns(flops=row.flops * pairs * shape.decode_flops_per_kv, kv_bytes=row.kv_bytes * work,
                                 act_bytes=row.act_bytes * shape.decode_queries / self.traced_decode_seqs,
                                 batch=np.array([float(shape.decode_seqs)]),
                                 q_len=np.array([shape.decode_queries / shape.decode_seqs]),
                                 kv_len=np.array([shape.decode_kv / shape.decode_seqs]))
        # Under decode context parallelism, over the device's share of each sequence's keys (of the mean sequence's),
        # between the query all-gather and the LSE all-gather and output reduce-scatter.
        return table if self.context_split == 1 else context_parallel_rows(table, self.context_split)

    def _context_gather(self, shape: StepShape) -> KernelTable:
        """One layer's all-gather of the prefill chunks' cached contexts' KV under decode context parallelism
        (kernels/parallel.py context_gather_kernel): each key at the bytes a decode reads it on a device."""
        kv_bytes_per_key = self.decode_attention.kv_bytes[0] / self.traced_decode_kv
        return KernelTable.from_kernels([context_gather_kernel(self.prefill_attention.kernels[0],
                                                               shape.prefill_cached * kv_bytes_per_key,
                                                               self.context_split)])

    def _shared_prefix_attention(self, shape: StepShape) -> KernelTable:
        """One layer's attention of the decoding sequences' queries to their groups' shared prefixes, cascade
        attention's first kernel (FlashInfer's cascade inference, Hydragen): each group's prefix a sequence of the
        batch, its rows the queries of the group's sequences stacked, against the prefix's keys, which it reads once.
        One kernel serves every group, as FlashInfer's MultiLevelCascadeAttentionWrapper runs a level (flashinfer/
        cascade.py: one BatchPrefillWithPagedKVCacheWrapper per level, its qo_indptr giving each prefix its queries):
        the groups' prefixes' keys read, each group's queries against its own prefix computed; each group's share of
        the queries is the mean (its output merged into the per-sequence kernel's by _prefix_merge). Its fit is the
        one any attention row's shape picks (hw_models/gpu_attention.py decode_like): a group's queries that fill one
        query tile with the query heads packed (32 for Llama-3-8B) take the decode fit, more the prefill fit; the
        engine runs one kernel (FlashInfer's batch prefill at every level, its plan choosing the query tile and the
        KV split by the packed queries), so the time's step between the two fits is theirs, not a kernel switch."""
        row = self.prefill_attention
        kv_bytes_per_key = self.decode_attention.kv_bytes[0] / self.traced_decode_kv
        queries = shape.shared_queries
        groups = shape.decode_shared_groups
        return replace(row, flops=row.flops * queries * shape.decode_shared_kv / self.traced_prefill_pairs,
                       act_bytes=row.act_bytes * queries / self.traced_prefill_tokens,
                       kv_bytes=np.array([groups * shape.decode_shared_kv * kv_bytes_per_key]),
                       batch=np.array([float(groups)]), q_len=np.array([queries / groups]),
                       kv_len=np.array([float(shape.decode_shared_kv)]))

    def _prefix_merge(self, shape: StepShape) -> KernelTable:
        """One layer's merge of the cascaded iteration's two partial outputs (kernels/cascade_merge.py): one call over
        every decoding query, as FlashInfer's MultiLevelCascadeAttentionWrapper.run merges each level's output for
        the whole query tensor it is given (flashinfer/cascade.py), a sequence reading its prefix paged (no prefix
        in the shared level: an empty state) merged too."""
        return merge_kernel(self.decode_attention, shape.decode_queries)

    def _prefill_estimate(self, shape: StepShape) -> KernelTable:
        """One layer's estimate of a block-sparse prefill (kernels/block_estimate.py): its quantization of the chunks'
        queries and of every key they attend to, and its 4-bit Q.K of the pairs it scores."""
        keys = shape.prefill_tokens + shape.prefill_cached
        return estimate_kernels(self._prefill_attention(shape), [shape.estimate_pairs], [shape.prefill_tokens], [keys])

    def _prefill_merge(self, shape: StepShape) -> KernelTable:
        """One layer's merge of the prompt tokens D2O's prefill evicts (kernels/kv_eviction.py merge_table), its keys
        at the cache's bytes (StepShape.prefill_key_B)."""
        return merge_table(self.prefill_attention, shape.prefill_merges, shape.prefill_evicted / shape.prefill_merges,
                           shape.prefill_budget, shape.prefill_scored_share, shape.prefill_key_B)

    @cached_property
    def _context_rows(self) -> np.ndarray:
        """The rows of MLA's up-projection in its decompressed form (none in a template without MLA), found once."""
        decompressed = self._form_masks.get(MLA_DECOMPRESSED)
        if decompressed is None:
            return np.zeros(0, dtype=int)
        return np.flatnonzero(decompressed & np.array([bool(_UP_PROJECTION.search(k.module))
                                                       for k in self.linear.kernels]))

    def _context_up_projection(self, shape: StepShape) -> KernelTable:
        """One layer's up-projection of the prefill chunks' cached prefix under MLA: vLLM's MLA backend gathers the
        cached latents and runs kv_b_proj on them, to every head's key and value, before the chunks attend to them
        (vllm/v1/attention/backends/mla/common.py _compute_prefill_context, 'cache_k_nope_chunk = (cache_kv_c_chunk @
        W_UK)'): the decompressed form's kv_b_proj rows at the cached tokens, its weights read again."""
        rows = self._context_rows
        drivers = np.array([1.0, shape.prefill_cached, 0.0, 0.0])
        return replace(self.linear.select(rows), **{name: c[rows, :4] @ drivers for name, c in self.coef.items()})

    def _context_merge(self, shape: StepShape) -> KernelTable:
        """One layer's merges under MLA of the prefill chunks' attention to their cached prefix with that to their new
        tokens: vLLM attends to the up-projected prefix in passes of MLA_CONTEXT_WORKSPACE tokens, merging each pass's
        output after the first, and that with the new tokens' output (merge_attn_states over every prefill query:
        _compute_prefill_context and _forward_prefill); the passes as the prefix tokens over the workspace (vLLM deals
        the workspace evenly to the chunks with a prefix, so equal prefixes take about as many)."""
        passes = -(-shape.prefill_cached // MLA_CONTEXT_WORKSPACE)
        return merge_kernel(self.prefill_attention, shape.prefill_tokens * passes)

    def _prefill_attention(self, shape: StepShape) -> KernelTable:
        """One layer's prefill attention: chunks compute their causal pairs (inside the model's sliding window) and
        read their cached prefix; an eviction's scored heads run unfused (StepShape.prefill_scored_share)."""
        row = self.prefill_attention
        kv_bytes_per_key = self.decode_attention.kv_bytes[0] / self.traced_decode_kv
        seqs, tokens = shape.prefill_seqs, shape.prefill_tokens
        table = row.with_columns(flops=row.flops * shape.prefill_pairs / self.traced_prefill_pairs,
                                 act_bytes=row.act_bytes * tokens / self.traced_prefill_tokens,
                                 kv_bytes=np.array([shape.prefill_cached * kv_bytes_per_key]),
                                 batch=np.array([float(seqs)]), q_len=np.array([tokens / seqs]),
                                 kv_len=np.array([(tokens + shape.prefill_cached) / seqs]))
        if shape.prefill_scored_share:  # an eviction's heads keep their probabilities, as the static pass prices them
            table = scored_prefill(table, shape.prefill_scored_share, shape.prefill_score_B, self.sliding_window)
        return table


def form_rows(table: KernelTable) -> np.ndarray:
    """Per row, the MLA form whose module runs it (workloads/decoder.py LatentAttention's `decompressed` and
    `absorbed` modules: MLA_DECOMPRESSED, MLA_ABSORBED), or "" for a row of both or of none."""
    return np.array([m.group(1) if (m := _FORM.search(k.module)) else "" for k in table.kernels], dtype=object)


def _layer_experts(linear: KernelTable, moe: np.ndarray) -> dict[int, int]:
    """Of the fused MoE rows that run a part of their layer's experts (kernels/moe.py is_split), the experts of the
    whole layer on the device: a hot part's own, or with the other experts' part that follows it (the split puts
    it right after; an edge-layer template appends its rows in pairs too, kernels/mixed_layers.py)."""
    held: dict[int, int] = {}
    for i in np.flatnonzero(moe).tolist():
        module = linear.kernels[i].module
        if not module.endswith(HOT_EXPERTS_MODULE):
            continue
        layer, after = module.removesuffix(HOT_EXPERTS_MODULE), i + 1
        if after < len(linear) and moe[after] and linear.kernels[after].module == layer + COLD_EXPERTS_MODULE:
            held[i] = held[after] = round(float(linear.batch[i] + linear.batch[after]))
        else:
            held[i] = round(float(linear.batch[i]))
    return held


def _check_aligned(ref: KernelTable, other: KernelTable, name: str) -> None:
    same = len(ref) == len(other) and all(
        (a.op, a.module) == (b.op, b.module) for a, b in zip(ref.kernels, other.kernels, strict=True))
    if not same:
        raise ValueError(f"step template: the {name} trace launches other kernels than the decode trace "
                         f"({len(other)} vs {len(ref)}); every expert must get tokens in every trace")


def _unique_rows(table: KernelTable, expert: np.ndarray, coef: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index of the first of each group of identical rows (the same kernel at the same place in its layer, whatever
    the layer), group sizes, and the layers each group runs in (SPAN_*: the group's traced layers against all
    traced layers)."""
    fixed = ("kind", "dtype", "tensor_core", "n", "k", "batch", "weight_density", "sparse_weight_scale", "weight_bits",
             "reduce_length")
    first: dict[tuple, int] = {}
    count: dict[int, int] = {}
    layers: dict[int, set] = {}
    for i in range(len(table)):
        kernel = table.kernels[i]
        # The place in its layer too: a fused engine layer is not uniform (the first input norm fuses no add).
        key = (kernel.op, kernel.layer is None, _LAYER_INDEX.sub("", kernel.module), int(expert[i]),
               *(getattr(table, c)[i] for c in fixed), *(tuple(coef[c][i]) for c in SCALED_COLUMNS))
        j = first.setdefault(key, i)
        count[j] = count.get(j, 0) + 1
        layers.setdefault(j, set()).add(kernel.layer)
    index = np.array(sorted(count))
    traced = {layer for group in layers.values() for layer in group} - {None}
    span = [SPAN_MODEL if None in layers[i] else SPAN_EVERY if len(traced) < 2 or layers[i] == traced
            else SPAN_FIRST if layers[i] == {min(traced)} else SPAN_REST if layers[i] == traced - {min(traced)}
            else SPAN_EVERY for i in index]
    return index, np.array([count[i] for i in index], dtype=float), np.array(span)
