"""Kernel: one unit of device work lowered from a trace op, with the shape facts its cost depends on."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from workloads.op_costs import ATTENTION_OPS


class KernelKind(StrEnum):
    GEMM = "gemm"
    BATCHED_GEMM = "batched_gemm"
    ATTENTION_PREFILL = "attention_prefill"
    ATTENTION_DECODE = "attention_decode"
    ELEMENTWISE = "elementwise"  # residual adds and other pointwise ops
    ACTIVATION = "activation"  # activation functions (SiLU, GELU, ReLU, ...)
    ROPE = "rope"  # a rotary embedding of q and k computed by one kernel (an engine's fused rotary kernel)
    ROPE_PART = "rope_part"  # one of the separate pointwise ops an eager rotary embedding runs (products, halves, ...)
    NORM = "norm"  # a norm computed by one kernel (a fused aten op, an engine's fused norm)
    NORM_PART = "norm_part"  # one of the separate pointwise ops an eager norm module runs (square, mean, rsqrt, ...)
    SOFTMAX = "softmax"
    EMBEDDING = "embedding"
    ALL_REDUCE = "all_reduce"  # a collective over a link (tensor parallelism): act_bytes is the message per device
    SEND_RECV = "send_recv"  # a point-to-point send between pipeline stages: act_bytes is the message
    MOE = "moe"  # a fused MoE layer: every routed token through its experts in one launch (kernels/moe.py)
    # A residual add and the RMSNorm after it in one kernel of 16-byte vector loads (vLLM's fused_add_rms_norm): a
    # kernel of its own, not the one-element-a-load rms_norm a NORM's fit was measured on (kernels/fusion.py).
    ADD_NORM = "add_norm"
    # Decode context parallelism's exchanges within a group of the tp devices (kernels/parallel.py): act_bytes is the
    # message per device in hw_models/link.py's convention (the gathered tensor, the tensor scattered).
    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"


# Kernels that move data between devices over a link rather than compute on one.
COLLECTIVE_KINDS = (KernelKind.ALL_REDUCE, KernelKind.SEND_RECV, KernelKind.ALL_GATHER, KernelKind.REDUCE_SCATTER)

# The op of a kernel of torch's scaled_dot_product_attention where no trace named it (a measured row of that
# backend: kernels/measured.py); traced kernels keep the aten op torch dispatched to (ATTENTION_OPS).
TORCH_SDPA_OP = "scaled_dot_product_attention"


def is_torch_sdpa(op: str) -> bool:
    """Whether a kernel's op is torch's scaled_dot_product_attention (over a contiguous KV cache), which cost models
    may price apart from an engine's paged flash attention (hw_models/gpu_attention.py)."""
    return op == TORCH_SDPA_OP or op in ATTENTION_OPS


# The coarse classes reports break latency down by.
KIND_CLASS = {
    KernelKind.GEMM: "gemm", KernelKind.BATCHED_GEMM: "gemm",
    KernelKind.ATTENTION_PREFILL: "attention", KernelKind.ATTENTION_DECODE: "attention",
    KernelKind.ELEMENTWISE: "elementwise", KernelKind.ACTIVATION: "elementwise", KernelKind.ROPE: "elementwise",
    KernelKind.ROPE_PART: "elementwise",
    KernelKind.NORM: "norm", KernelKind.NORM_PART: "norm", KernelKind.SOFTMAX: "softmax",
    KernelKind.EMBEDDING: "embedding",
    KernelKind.ALL_REDUCE: "communication", KernelKind.SEND_RECV: "communication",
    KernelKind.MOE: "gemm",  # experts' GEMMs: reports count them as GEMM time
    KernelKind.ADD_NORM: "norm",
    KernelKind.ALL_GATHER: "communication", KernelKind.REDUCE_SCATTER: "communication",
}


@dataclass(frozen=True, kw_only=True)
class Kernel:
    """Work and traffic of one kernel at the traced precision (before a numeric format is applied).

    `weight_bytes`, `act_bytes` and `kv_bytes` are bytes moved to or from device memory (read + written),
    split by what the tensors are, so that formats can scale each. `tensor_core` says the arithmetic is
    matrix math (GEMM, attention) rather than vector math.
    """

    kind: KernelKind
    op: str
    flops: float
    weight_bytes: float
    act_bytes: float
    kv_bytes: float
    dtype: str  # traced compute dtype, e.g. "bf16"
    tensor_core: bool
    layer: int | None = None
    module: str = ""
    # GEMM shape (C[m, n] = A[m, k] B[k, n], `batch` of them); zero where not a GEMM. A fused MoE layer is a
    # grouped GEMM: `batch` experts of `m` rows each on average (fractional), n their matrices' output columns
    # (3 x intermediate for gated experts) and k the hidden size (kernels/moe.py).
    m: float = 0
    n: int = 0
    k: int = 0
    batch: float = 0
    # Attention shape; zero where not attention.
    heads: int = 0
    kv_heads: int = 0
    q_len: int = 0
    kv_len: int = 0
    head_dim: int = 0
    # The value's width where it is not head_dim (MLA: 128 in a prefill, 512 in a decode step); 0: head_dim.
    v_head_dim: int = 0
    # Elements a key holds in the KV cache per KV head where not its key and value apart (head_dim + v_head_dim):
    # MLA's latent and RoPE key (576), whose leading part is the value; 0: apart.
    kv_width: int = 0
    causal: bool = False
    # The keys before each query the attention attends to at most: its layer's sliding window (0: every key). A
    # decode step re-sized to another context reads at most this many (KernelTable.at_kv_lengths).
    window: int = 0
    # The devices a sequence's keys are split over by token (decode context parallelism, kernels/parallel.py): a decode
    # step re-sized to another context attends to 1/context_split of its keys on each (KernelTable.at_kv_lengths).
    context_split: int = 1
    # A pointwise kernel off the framework's contiguous vectorized path: an operand broadcast to the output, of
    # another dtype (a cast), or not dense (a slice, a transposed view), which streams slower (kernels/lowering.py).
    general_layout: bool = False
    # A reduction over its input's last dim (mean, sum, amax, ...: workloads/op_costs.REDUCTION_OPS): the rows it
    # reduces, one output each, and the values of a row; zero elsewhere. A GPU runs few rows with few threads each,
    # each thread's loop over its values a chain of loads (hw_models/gpu_reduction.py).
    reduce_rows: float = 0
    reduce_length: int = 0
    # The devices a fused MoE layer's experts are spread over whole (expert parallelism; 1: every expert on this
    # device, whole or split by tensor parallelism): such a layer takes a fixed time of its own (hw_models/gpu_moe.py).
    expert_parallel: int = 1
    # The tokens a fused MoE layer routes (its input's rows, before top-k): an engine runs a layer of more tokens
    # than its chunk in several calls (kernels/moe.py, Chunks); zero for other kernels.
    tokens: float = 0
    # A GEMM whose k loop is split over this many thread blocks per output tile, their partial sums added into the
    # output (split-K: vLLM's punica shrink, kernels/lora.py); its bytes include those partial sums' traffic. 1: none.
    split_k: int = 1

    @property
    def total_bytes(self) -> float:
        return self.weight_bytes + self.act_bytes + self.kv_bytes

    @property
    def kernel_class(self) -> str:
        return KIND_CLASS[self.kind]
