"""Kernel fusion of a serving engine: the kernels an engine launches for a pass, from the pass's eager kernels.

PyTorch eager launches a kernel per aten op (kernels/lowering.py). Serving engines run the same decoder as a
few fused kernels per layer. Each rule below names the engine code that does it (vLLM's Llama model,
vllm/model_executor/models/llama.py, and the layers it calls; LMDeploy's TurboMind and TensorRT-LLM do the
same fusions in C++):

- qkv: the q, k and v projections are one GEMM of N = (H + 2 KV) x head_dim (vLLM QKVParallelLinear
  `qkv_proj`; TensorRT-LLM's attention QKV GEMM; gpt-fast's `wqkv`);
- gate_up: the gate and up projections are one GEMM of N = 2F (vLLM MergedColumnParallelLinear
  `gate_up_proj`; TensorRT-LLM `--use_fused_mlp`, docs/source/performance/perf-overview.md "Fused Matmul +
  Gated-SiLU");
- act_and_mul: the activation and the product with the up projection are one kernel (vLLM SiluAndMul,
  csrc/activation_kernels.cu `silu_and_mul`);
- add_norm: a residual add and the RMSNorm after it are one kernel (vLLM RMSNorm.forward_cuda with a residual,
  csrc/layernorm_kernels.cu `fused_add_rms_norm`; TurboMind `invokeFusedAddBiasResidualRMSNorm`), of kind add_norm:
  vLLM's reads 8 values a load (16-byte vectors) where its `rms_norm` reads one, so the two are priced apart; an
  RMSNorm with no add before it (the first layer's) is one kernel (`rms_norm`, kind norm). LayerNorm models keep
  their separate add and norm (vLLM's OPT runs torch's LayerNorm after a plain add);
- rope: the rotary embedding of q and k is one in-place kernel reading a cos/sin cache (vLLM RotaryEmbedding,
  csrc/pos_encoding_kernels.cu `rotary_embedding`); the cos/sin table itself is computed once when the model
  loads (RotaryEmbedding._compute_cos_sin_cache), so the per-pass table kernels are dropped;
- kv_write: the key and value writes into the KV cache are one kernel (vLLM's FlashAttention backend,
  csrc/cache_kernels.cu `reshape_and_cache_flash`);
- mla: DeepSeek's latent attention (vLLM's DeepseekV2MLAAttention) runs q_a_proj and kv_a_proj_with_mqa, which
  read the same input, as one GEMM (`fused_qkv_a_proj`, with query compression), the rotary embedding of the
  query's and key's RoPE parts as one kernel, and the latent's and RoPE key's cache writes as one
  (csrc/cache_kernels.cu `concat_and_cache_mla`);
- attention: one flash-attention kernel over the paged KV cache, prefill and decode (vLLM's FlashAttention and
  FlashInfer backends); its work and traffic are the eager flash-attention kernel's.

- fused_moe: an MoE layer's experts, each a gather of its tokens, gate, up and down GEMMs, activation, product,
  routing weight and scatter-add, and the zeroed output they add into, are one fused MoE kernel (vLLM's FusedMoE
  layer, vllm/model_executor/layers/fused_moe/layer.py, runs `fused_experts`: Triton grouped GEMMs in
  fused_moe.py, or FlashInfer's CUTLASS / TensorRT-LLM MoE kernels; the tokens are permuted by expert inside it,
  and `moe_sum` writes the output). Its work and traffic are kernels/moe.py's: the experts that got tokens
  (each read whole), their rows, and vLLM's intermediate caches. Gated experts only (vLLM's MoE is gated; an
  ungated MoE keeps its eager kernels). The router's softmax, top-k and renormalization are one kernel
  (vLLM `fused_topk` -> csrc/moe/topk_softmax_kernels.cu `topk_softmax`, renormalizing in place), moving what
  the eager softmax moved: the router logits read and E probabilities per token written, at least what
  top-k weights and ids take. DeepSeek-V3's sigmoid scores, their bias, group choice, top-k, gather and
  renormalization are one kernel likewise (vLLM `grouped_topk`, csrc/moe/grouped_topk_kernels.cu), moving what the
  eager sigmoid moved. The router's GEMM stays.

A fused kernel keeps the FLOPs of the eager kernels it replaces (the sum) and moves what the fused kernel
moves: its inputs read once and its outputs written once, never the intermediates of the eager chain.

Projections and blocks are recognised by the module names of our decoder (workloads/decoder.py), as
kernels/parallel.py does; a table is fused at its traced precision, after tensor-parallel sharding.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from kernels.kernel import COLLECTIVE_KINDS, KernelKind
from kernels.moe import MATRICES, fused_moe_act_bytes
from kernels.table import KIND_CODE, KernelTable

# Tensors an eager elementwise add moves, each of its output's size: two read, one written.
ADD_TENSORS = 3

ENGINE = "engine"
_GEMM, _ROPE_PART = KIND_CODE[KernelKind.GEMM], KIND_CODE[KernelKind.ROPE_PART]
_NORM_PART = KIND_CODE[KernelKind.NORM_PART]
_ACTIVATION, _ELEMENTWISE = KIND_CODE[KernelKind.ACTIVATION], KIND_CODE[KernelKind.ELEMENTWISE]
_ATTENTION = (KIND_CODE[KernelKind.ATTENTION_PREFILL], KIND_CODE[KernelKind.ATTENTION_DECODE])
_DECODER_LAYER = re.compile(r"(^|\.)layers\.\d+$")  # a residual add runs in the decoder layer module itself
_EXPERT = re.compile(r"^(.*)\.experts\.(\d+)(\.|$)")  # an MoE expert's module: (layer, expert index)
_COLLECTIVES = tuple(KIND_CODE[kind] for kind in COLLECTIVE_KINDS)
_SOFTMAX = KIND_CODE[KernelKind.SOFTMAX]
# Columns a fused kernel sets; every other column is its anchor row's (its kind too, unless `kind` is given). Work
# and traffic add up over the eager rows a kernel replaces; its shape is set where it has one.
_WORK_COLUMNS = ("flops", "weight_bytes", "act_bytes", "kv_bytes")
_COLUMNS = (*_WORK_COLUMNS, "n", "m", "batch", "tokens")
_REDUCTION_COLUMNS = ("reduce_rows", "reduce_length")


@dataclass
class _Kernel:
    """One engine kernel: it runs where eager row `position` ran, takes row `anchor`'s columns but `columns`, and
    replaces the eager rows `rows`."""

    position: int
    anchor: int
    rows: list[int]
    op: str = ""
    module: str = ""
    columns: dict[str, float] = field(default_factory=dict)
    kind: KernelKind | None = None


def fuse_engine(table: KernelTable) -> KernelTable:
    """The kernels a serving engine launches for the pass whose eager kernels are `table`, in order."""
    return _engine_rows(table)[0]


def _engine_rows(table: KernelTable) -> tuple[KernelTable, np.ndarray]:
    """fuse_engine's table, and for each of its rows the eager row it runs at."""
    fusion = _Fusion(table)
    fused = fusion.kernels()
    covered = set(fusion.dropped()).union(*(kernel.rows for kernel in fused))
    keep = [_Kernel(position=i, anchor=i, rows=[i]) for i in range(len(table)) if i not in covered]
    out = sorted(fused + keep, key=lambda kernel: kernel.position)
    result = table.select(np.array([k.anchor for k in out], dtype=int))
    columns = {name: getattr(result, name).astype(float) for name in _COLUMNS}
    kinds = result.kind.copy()
    kernels = list(result.kernels)
    # A fused kernel is no eager reduction, even where its anchor row was one (a fused norm anchored on its mean),
    # nor one of PyTorch's pointwise loops off the contiguous vectorized path (the eager norm's fp32 cast, RoPE's
    # strided halves): an engine's kernel reads its rows contiguously, whatever layout its anchor row had.
    reductions = {name: getattr(result, name).copy() for name in _REDUCTION_COLUMNS}
    general_layout = result.general_layout.copy()
    for i, kernel in enumerate(out):
        for name, value in kernel.columns.items():
            columns[name][i] = value
        if kernel.kind is not None:
            kinds[i] = KIND_CODE[kernel.kind]
        if kernel.columns or kernel.op or kernel.module or kernel.kind:
            for name in _REDUCTION_COLUMNS:
                reductions[name][i] = 0.0
            general_layout[i] = False
            kernels[i] = replace(kernels[i], op=kernel.op or kernels[i].op, module=kernel.module or kernels[i].module,
                                 kind=kernel.kind or kernels[i].kind, n=int(columns["n"][i]), m=columns["m"][i],
                                 batch=columns["batch"][i], tokens=columns["tokens"][i], reduce_rows=0,
                                 reduce_length=0, general_layout=False,
                                 **{name: columns[name][i] for name in _WORK_COLUMNS})
    return (replace(result, kernels=tuple(kernels), kind=kinds, general_layout=general_layout, **columns,
                    **reductions), np.array([k.position for k in out], dtype=int))


# Each fusion's kernels, with the eager row each runs at.
FUSIONS: dict[str, Callable[[KernelTable], tuple[KernelTable, np.ndarray]]] = {
    "": lambda table: (table, np.arange(len(table))), ENGINE: _engine_rows}


def fuse(table: KernelTable, fusion: str) -> KernelTable:
    """`table` under a fusion ('' keeps the eager kernels, 'engine' fuses them as a serving engine does)."""
    return fused_rows(table, fusion)[0]


def fused_rows(table: KernelTable, fusion: str) -> tuple[KernelTable, np.ndarray]:
    """fuse's table, and for each of its rows the eager row it runs at."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion: found {fusion!r}, allowed: {', '.join(repr(name) for name in FUSIONS)}")
    return FUSIONS[fusion](table)


class _Fusion:
    """The fused kernels of one table (the rows they replace and the columns they set)."""

    def __init__(self, table: KernelTable):
        self.t = table
        self.modules = [k.module for k in table.kernels]
        self.ops = [k.op for k in table.kernels]
        self.rows: dict[str, list[int]] = {}
        for i, module in enumerate(self.modules):
            self.rows.setdefault(module, []).append(i)
        self.gemm = {m: i for i, m in enumerate(self.modules) if table.kind[i] == _GEMM}
        # Each MoE layer's expert rows (collectives apart) by expert index, in order: one pass over the table.
        self.experts: dict[str, dict[str, list[int]]] = {}
        for i, module in enumerate(self.modules):
            if (match := _EXPERT.match(module)) and table.kind[i] not in _COLLECTIVES:
                self.experts.setdefault(match[1], {}).setdefault(match[2], []).append(i)

    def kernels(self) -> list[_Kernel]:
        out: list[_Kernel] = []
        for parent in dict.fromkeys(m.rsplit(".", 1)[0] for m in self.gemm if m.endswith(".q_proj")):
            out += self._attention_block(parent)
        for parent in dict.fromkeys(m.rsplit(".", 1)[0] for m in self.gemm if m.endswith(".kv_a_proj_with_mqa")):
            out += self._latent_block(parent)
        moe = {}
        for parent in self.experts:
            moe[parent] = self._moe_layer(parent)
            out += moe[parent]
        for parent in dict.fromkeys(m.rsplit(".", 1)[0] for m in self.gemm if m.endswith(".gate_proj")):
            if not ((match := _EXPERT.match(parent)) and moe.get(match[1])):  # an expert of a fused MoE layer
                out += self._gated_mlp(parent)
        out += self._norms()
        out += [_Kernel(position=i, anchor=i, rows=[i], op="paged_flash_attention")
                for i in np.flatnonzero(np.isin(self.t.kind, _ATTENTION)).tolist()]
        return out

    def dropped(self) -> list[int]:
        """Rows the engine does not run per pass: the rotary table of positions, computed once at load."""
        return [i for i in range(len(self.t)) if self.t.kind[i] == _ROPE_PART and self.t.kernels[i].layer is None]

    def _output_bytes(self, i: int) -> float:
        """Bytes a GEMM writes: the output's share n / (k + n) of its activation traffic (input read, output
        written)."""
        t = self.t
        return float(t.act_bytes[i] * t.n[i] / (t.k[i] + t.n[i]))

    def _merged_gemm(self, rows: list[int], module: str) -> _Kernel:
        """One GEMM for projections of the same input: N summed, the input read once, every output written."""
        t = self.t
        inputs = [float(t.act_bytes[i]) - self._output_bytes(i) for i in rows]
        return _Kernel(position=rows[0], anchor=rows[0], rows=rows, module=module, columns=dict(
            flops=float(t.flops[rows].sum()), weight_bytes=float(t.weight_bytes[rows].sum()),
            act_bytes=float(t.act_bytes[rows].sum()) - sum(inputs[1:]), kv_bytes=float(t.kv_bytes[rows].sum()),
            n=float(t.n[rows].sum())))

    def _attention_block(self, parent: str) -> list[_Kernel]:
        """QKV GEMM, one rotary kernel and one KV-cache write for the attention block `parent`."""
        t = self.t
        rows = [self.gemm.get(f"{parent}.{name}") for name in ("q_proj", "k_proj", "v_proj")]
        if None in rows:
            return []
        q, k, _ = rows
        out = [self._merged_gemm(rows, f"{parent}.qkv_proj")]
        here = self.rows.get(parent, [])
        rope = [i for i in here if t.kind[i] == _ROPE_PART]
        if rope:
            # In place on q and k, reading each token's cos/sin row (head_dim values) of the cached table.
            element = float(t.act_bytes[q] / (t.m[q] * (t.k[q] + t.n[q])))
            attention = [i for i in here if t.kind[i] in _ATTENTION]
            head_dim = float(t.head_dim[attention[0]]) if attention else 0.0
            act = 2 * (self._output_bytes(q) + self._output_bytes(k)) + t.m[q] * head_dim * element
            out.append(_Kernel(position=rope[0], anchor=rope[0], rows=rope, op="rotary_embedding", columns=dict(
                flops=float(t.flops[rope].sum()), act_bytes=float(act)), kind=KernelKind.ROPE))
        return out + self._cache_write(here, "reshape_and_cache")

    def _latent_block(self, parent: str) -> list[_Kernel]:
        """The fused q_a / kv_a GEMM (with query compression), one rotary kernel and one cache write for the MLA block
        `parent` (workloads/decoder.py LatentAttention)."""
        t = self.t
        kv_a, q_a = self.gemm[f"{parent}.kv_a_proj_with_mqa"], self.gemm.get(f"{parent}.q_a_proj")
        out = [] if q_a is None else [self._merged_gemm([kv_a, q_a], f"{parent}.fused_qkv_a_proj")]
        here = self.rows.get(parent, [])
        rope = [i for i in here if t.kind[i] == _ROPE_PART]
        ends = [i for i in rope if self.ops[i] == "add"]  # each part's eager chain ends adding two of its size
        if ends:
            # In place on the query's and key's RoPE parts, reading each token's cos/sin row, as many values as the
            # key's RoPE part (one head of them).
            parts = [float(t.act_bytes[i]) / ADD_TENSORS for i in ends]
            out.append(_Kernel(position=rope[0], anchor=rope[0], rows=rope, op="rotary_embedding", columns=dict(
                flops=float(t.flops[rope].sum()), act_bytes=2 * sum(parts) + min(parts)), kind=KernelKind.ROPE))
        return out + self._cache_write(here, "concat_and_cache_mla")

    def _cache_write(self, here: list[int], op: str) -> list[_Kernel]:
        """One kernel for the KV-cache writes among rows `here`: the eager copies' traffic, in one launch."""
        t = self.t
        writes = [i for i in here if t.kind[i] == _ELEMENTWISE and t.kv_bytes[i] > 0 and not t.tensor_core[i]]
        if not writes:
            return []
        return [_Kernel(position=writes[0], anchor=writes[0], rows=writes, op=op, columns={
            name: float(getattr(t, name)[writes].sum()) for name in (*_WORK_COLUMNS, "n", "m")})]

    def _gated_mlp(self, parent: str) -> list[_Kernel]:
        """Gate-up GEMM and one activation-and-product kernel for the gated MLP `parent`."""
        t = self.t
        gate, up = self.gemm[f"{parent}.gate_proj"], self.gemm.get(f"{parent}.up_proj")
        if up is None:
            return []
        out = [self._merged_gemm([gate, up], f"{parent}.gate_up_proj")]
        down = self.gemm.get(f"{parent}.down_proj", len(t))
        here = self.rows.get(parent, [])
        act = next((i for i in here if gate < i < down and t.kind[i] == _ACTIVATION), None)
        mul = next((i for i in here if up < i < down and t.kind[i] == _ELEMENTWISE and self.ops[i] == "mul"), None)
        if act is not None and mul is not None:
            # Reads the gate and up outputs, writes their product: what the eager product alone moved.
            out.append(_Kernel(position=mul, anchor=act, rows=[act, mul], op=f"{self.ops[act].rstrip('_')}_and_mul",
                               columns=dict(flops=float(t.flops[[act, mul]].sum()), act_bytes=float(t.act_bytes[mul]))))
        return out

    def _moe_layer(self, parent: str) -> list[_Kernel]:
        """One fused MoE kernel for the experts of MoE layer `parent` (with the zeroed output they add into), and
        one topk_softmax kernel for its router's softmax, top-k and renormalization."""
        t = self.t
        experts = self.experts[parent]
        gates = [self.gemm.get(f"{parent}.experts.{e}.gate_proj") for e in experts]
        if None in gates or any(f"{parent}.experts.{e}.up_proj" not in self.gemm for e in experts):
            return []  # ungated experts: vLLM's fused MoE is gated; they keep their eager kernels
        first = min(min(rows) for rows in experts.values())
        here = [i for i in self.rows.get(parent, []) if i < first]
        zeros = [i for i in here if self.ops[i] in ("zeros_like", "zeros", "zero_")]
        rows = sorted(zeros + [i for group in experts.values() for i in group])
        gate = gates[0]
        hidden, inter, routed = float(t.k[gate]), float(t.n[gate]), float(t.m[gates].sum())
        width = float(t.act_bytes[gate] / (t.m[gate] * (t.k[gate] + t.n[gate])))
        router = self.gemm.get(f"{parent}.gate")
        tokens = float(t.m[router]) if router is not None else routed
        out = [_Kernel(position=first, anchor=gate, rows=rows, op="fused_moe", module=f"{parent}.experts",
                       kind=KernelKind.MOE, columns=dict(
                           flops=float(t.flops[rows].sum()), weight_bytes=float(t.weight_bytes[rows].sum()),
                           act_bytes=fused_moe_act_bytes(tokens, routed, hidden, inter, width),
                           kv_bytes=float(t.kv_bytes[rows].sum()), n=MATRICES * inter, m=routed / len(gates),
                           batch=float(len(gates)), tokens=tokens))]
        routing = [i for i in here if i not in zeros and (router is None or i > router)
                   and self.modules[i] == parent and not t.tensor_core[i]]
        scores = [i for i in routing if t.kind[i] == _SOFTMAX or self.ops[i] == "sigmoid"]
        if scores:
            op = "grouped_topk" if self.ops[scores[0]] == "sigmoid" else "topk_softmax"
            out.append(_Kernel(position=routing[0], anchor=scores[0], rows=routing, op=op, columns=dict(
                flops=float(t.flops[routing].sum()), act_bytes=float(t.act_bytes[scores[0]]))))
        return out

    def _norms(self) -> list[_Kernel]:
        """One kernel per RMSNorm chain (consecutive norm parts of one module, an rsqrt among them), with the
        residual add before it when there is one."""
        t, out, i = self.t, [], 0
        while i < len(t):
            end = i
            while t.kind[i] == _NORM_PART and end + 1 < len(t) and t.kind[end + 1] == _NORM_PART and \
                    self.modules[end + 1] == self.modules[i]:
                end += 1
            chain = list(range(i, end + 1))
            if t.kind[i] == _NORM_PART and "rsqrt" in (self.ops[j] for j in chain):
                out.append(self._norm(chain))
            i = end + 1
        return out

    def _norm(self, chain: list[int]) -> _Kernel:
        t, add = self.t, chain[0] - 1
        weights = float(t.weight_bytes[chain].sum())
        if add >= 0 and t.kind[add] == _ELEMENTWISE and self.ops[add] == "add" and \
                _DECODER_LAYER.search(self.modules[add]):
            # Reads the input and the residual, writes the new residual and the normalized output: 4/3 of the add's
            # traffic (two reads and a write), over every token of the add.
            return _Kernel(position=add, anchor=chain[0], rows=[add, *chain], op="fused_add_rms_norm",
                           kind=KernelKind.ADD_NORM, columns=dict(flops=float(t.flops[[add, *chain]].sum()),
                                                              weight_bytes=weights,
                                                              act_bytes=float(t.act_bytes[add]) * 4 / 3))
        # Reads the input, writes the output: the chain's last kernel (the weight product) moves one tensor of each.
        return _Kernel(position=chain[0], anchor=chain[0], rows=chain, op="rms_norm", kind=KernelKind.NORM,
                       columns=dict(flops=float(t.flops[chain].sum()), weight_bytes=weights,
                                    act_bytes=float(t.act_bytes[chain[-1]])))
