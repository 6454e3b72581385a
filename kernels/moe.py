"""A fused MoE layer: the work, traffic and shape of one launch that runs every routed token through its experts.

What the kernel computes (vLLM's `fused_experts`, vllm/model_executor/layers/fused_moe/fused_moe.py, and the
FlashInfer CUTLASS / TensorRT-LLM MoE kernels it dispatches to): the token-expert rows are sorted by expert
(`moe_align_block_size`), each expert's rows go through one grouped GEMM of its gate and up projections fused
(w1: [2 x inter, hidden]), the SiLU-and-product, and a grouped GEMM of its down projection (w2: [hidden, inter]);
the top-k outputs of each token are summed (`moe_sum`). So with R routed rows (tokens x top-k, the rows a device
computes) of experts with hidden size h and intermediate size f:

    FLOPs = 2 x R x (h x 2f + f x h) = 2 x R x 3 x h x f

Weights: only the experts that receive a row are read, each whole: weight bytes = touched experts x 3 x h x f x
bytes per weight. Activations: vLLM's Triton path (fused_experts_impl, TritonExperts) keeps three intermediate
caches in memory, sized by every row the device routes, R_all = tokens x top-k: under expert parallelism its
GEMMs write zeros for the rows of other devices' experts (`write_zeros_to_output`); FlashInfer's CUTLASS and
TensorRT-LLM MoE kernels permute only the rows of the device's own experts (their `local_expert_offset` and
`local_num_experts` arguments), so R_all = R (caches_every_row). The gate-up GEMM reads its R input rows
(R x h) and writes R_all x 2f, the activation reads those and writes R_all x f, the down GEMM reads R x f and
writes R_all x h, the top-k sum reads those and writes the layer output (tokens x h):

    activation bytes = width x (R x (h + f) + R_all x (5f + 2h) + tokens x h)     (R_all = R on one device)

As a kernel it is a grouped GEMM: `batch` problems (the touched experts), each of `m` rows (R / touched, the
rows an expert gets on average), `n` = 3f output columns over the expert's three matrices and `k` = h, so that
2 x m x n x k x batch is its FLOPs and n x k x batch its weights, as for any GEMM.

Which experts the rows reach is a routing model (ModelConfig.moe_routing, the sweep knob moe_routing; the traced
layer and the step template both take their loads from workloads/model_config.py expert_load):
- balanced (the default): tokens x top-k rows spread as evenly as they go, so min(E, tokens x top-k) experts are
  touched, the upper bound of weight traffic at a given batch. aiconfigurator's 'balanced' measurements touch as many
  (with other expert ids, which matters only when experts are spread over devices: kernels/aiconfigurator_routing.py).
- uniform: each token picks its k distinct experts uniformly at random, independently of the other tokens, touching
  E x (1 - (1 - k/E)^tokens) in expectation (each expert missed by a token with probability 1 - k/E; e.g. 163.3 of
  DeepSeek-V3's 256 experts at 32 tokens, top-8, against 256 balanced), rounded to whole experts, the rows spread
  evenly over them. One token touches its k under both; skewed (power-law) routing touches fewer still. The count
  needs only each expert's chance k/E of being a token's pick, so DeepSeek's group-limited routing (its k within the
  best groups) touches as many in expectation.
- power_law: aiconfigurator's default skew (workloads/expert_skew.py): each expert's load drawn from a power law of
  exponent 1.01 as its collector draws its measured power-law rows, the busiest expert-parallel device's experts and
  rows taken in expectation over draws (e.g. 129 of DeepSeek-V3's 256 experts at 32 tokens; on 8 devices the busiest
  holds 43 of the 256 rows on 19 experts, against 32 rows on 32 balanced). Below tokens x top-k = E the collector hands
  the rows out one a device, so a decode step of a few tokens reaches about as many experts as balanced routing.
Each fills the experts in an order whose every (E / held)-th expert from the first is the busiest device's share
(expert_parallel_share): balanced and uniform fill the first experts, each device alike; the power law lays out the
busiest device's share for each EP size 1, 2, 4, ... that divides E.

Experts at two widths (NumericFormat.hot_experts): a grouped-GEMM kernel is built for one weight type (vLLM's
fused_experts takes one quantization config per layer), so a layer whose hot experts keep more bits runs as two fused
MoE kernels (as MLX's QuantizedSwitchLinear, one width per tensor, makes per-expert mixed bits group the experts by
width into a kernel each: "Per-Expert Mixed-Bit Quantization via Mask-and-Combine Dispatch", Black Sheep AI Research,
2026), its hot experts (module '<layer>.experts.hot') and the others ('<layer>.experts.cold'), each with its experts'
share of the layer's rows and traffic (hot_expert_parts); the layer's routing, activation and top-k sum run once, so
cost models charge its fixed time to the hot part only (KernelTable.moe_rest_rows). MxMoE (Duanmu et al., ICML 2025,
arXiv:2505.05799) generates one grouped GEMM over blocks of several precisions instead; its single launch is not
modeled. The routing model prefers no expert, so of the experts a layer's rows reach, hot_experts are hot on average
(a fractional number of experts, as `m` is a fractional number of rows); the skew of real routers toward their
frequently routed hot experts is not modeled.

Chunks: vLLM runs a layer of more tokens than VLLM_FUSED_MOE_CHUNK_SIZE as that many tokens at a time. Its modular
kernel (FusedMoEModularKernel._fused_experts, vllm-project/vllm 49a3522164d949f03961689248d747ee25a2dbb3,
vllm/model_executor/layers/fused_moe/modular_kernel.py) cuts the tokens into ceil(tokens / chunk) slices (_chunk_info)
and calls the experts' `apply` on each in turn, with each slice's top-k ids, where the experts class supports_chunking
and VLLM_ENABLE_FUSED_MOE_ACTIVATION_CHUNKING is on (the default); vLLM's Triton path loops over the same slices
(fused_experts_impl, whose last slice takes the config of its own size; TritonExperts supports chunking: fused_moe.py at
13cb3e44373beb1c8b9d2c017f565af6f7a1b601). The Marlin (MarlinExperts, fused_marlin_moe.py at
129ab7c60cbb8eb11e875373e67f7e521b74aa30), OpenAI Triton (OAITritonExperts, gpt_oss_triton_kernels_moe.py at
9b243f939cfa0dcc495794c26795129c13885b1d) and TensorRT-LLM (TrtLlmGenExperts, trtllm_moe.py at
20a96f50c48ad35da34574ab27a7d2e4672c09d0) experts say so (BatchedMarlinExperts, for all-to-all dispatch, does not).
Each slice is a whole call: its own launches, its experts' weights read again, its rows' intermediate caches. A call
reaches the experts the layer's routing model reaches for the call's own tokens (a table's fused MoE rows carry the
model: KernelTable.routed), so a call of few tokens left reads fewer experts' weights under uniform or power-law
routing than one a routed row (e.g. 163 of DeepSeek-V3's 256 under uniform routing for a call of 32 tokens). The
chunk is 16 * 1024 tokens by default in the recent vllm/envs.py the code index holds beside these files
(`str(16 * 1024)`; the index names no commit for that copy), 32768 in older ones (vllm-project/vllm
001f69f8b52e0803c910525974d17010814947ad). aiconfigurator's measured layers (its collector ran vLLM 0.24.0) stop at
16,384 tokens, one chunk, so no call runs more tokens than they do (moe_chunks, chunk_columns; hw_models/gpu.py prices
a layer as its calls); a call's rows per expert can still pass theirs: Mixtral's top-2 of 8 routes 4,096 to each
expert in a call of 16,384 tokens, where H200's Marlin MXFP4 layers (top-16 of 896) reach 293.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from kernels.formats import HOT_EXPERTS_MODULE, NumericFormat
from kernels.kernel import Kernel, KernelKind
from workloads.model_config import BALANCED, EXPERT_LOADS, expert_load

# vLLM's VLLM_FUSED_MOE_CHUNK_SIZE default: the most tokens one call of a fused MoE layer's experts runs (module
# docstring, Chunks).
FUSED_MOE_CHUNK_TOKENS = 16 * 1024
# The routing models by code, as a table's fused MoE rows carry theirs (KernelTable.moe_routing): 0, every other
# row's, is balanced.
ROUTINGS = (BALANCED, *(name for name in EXPERT_LOADS if name != BALANCED))
# Matrices of one expert: gate, up and down (gated experts, SwiGLU: Mixtral, Qwen-MoE, DeepSeek; the fused kernel
# of vLLM's FusedMoE layer is gated, and kernels/fusion.py fuses gated experts only).
MATRICES = 3


def caches_every_row(backend: str) -> bool:
    """Whether an MoE backend (aiconfigurator's kernel_source names) sizes its caches by every routed row: vLLM's
    Triton kernels and its Marlin MoE (fused_marlin_moe: intermediate caches of M x topk rows, the activation and
    the top-k sum over all of them) do, FlashInfer's CUTLASS and TensorRT-LLM kernels keep the device's own rows
    only."""
    return any(name in backend.lower() for name in ("triton", "marlin"))


def fused_moe_flops(routed: float, hidden: float, inter: float) -> float:
    """FLOPs of the experts' GEMMs over `routed` token-expert rows (see the module docstring)."""
    return 2.0 * routed * MATRICES * hidden * inter


def fused_moe_act_bytes(tokens: float, routed: float, hidden: float, inter: float, width: float,
                        routed_all: float | None = None) -> float:
    """Activation bytes of a fused MoE layer (vLLM fused_experts' intermediate caches; module docstring): `routed`
    rows computed here of `routed_all` routed by the device (all of them unless experts are spread)."""
    every = routed if routed_all is None else routed_all
    return width * (routed * (hidden + inter) + every * (5.0 * inter + 2.0 * hidden) + tokens * hidden)


def expert_bytes(hidden: float, inter: float, width: float) -> float:
    """Weight bytes of one expert."""
    return MATRICES * hidden * inter * width


def device_routing(tokens: int, topk: int, experts: int, held: int, routing: str = BALANCED) -> tuple[int, int]:
    """(touched experts, routed rows) of the busiest device holding `held` of `experts` experts (all of them without
    expert parallelism) when tokens x topk rows are spread by the routing model `routing` (expert_load), as a traced
    layer routes them, and evenly over the devices: the device gets every (experts / held)-th expert of the fill order
    (expert_parallel_share)."""
    load = np.array(expert_load(routing, int(tokens), int(topk), int(experts)))[expert_parallel_share(experts, held)]
    return int((load > 0).sum()), int(load.sum())


# device_routing per (tokens, top-k, experts, held, routing): the same few arguments every iteration of a serving run.
cached_routing = lru_cache(maxsize=4096)(device_routing)


def expert_parallel_share(experts: int, held: int) -> slice:
    """The experts of expert_load's fill order that the busiest of experts / held devices routes to: every
    (experts / held)-th from the first. Balanced routing spreads a token's experts over the devices as well as over
    the experts: aiconfigurator's collector (balanced_logits, kernels/aiconfigurator_routing.py) sends token t to
    experts t + i ceil(E / k), one on each device where E / k is a multiple of the devices, so a device's experts are
    not the first `held` the fill reaches (which would put a decode step's every expert on one device). Uniform routing
    reaches each device's experts alike, touched x held / E of them in expectation; the share gets that rounded up,
    the busiest device's. The power law's fill order puts its busiest device's expected share there
    (workloads/expert_skew.py power_law_expert_load)."""
    return slice(0, None, max(int(experts) // max(int(held), 1), 1))


def fused_moe_kernel(*, tokens: float, routed: float, touched: float, hidden: int, inter: int, weight_width: float,
                     act_width: float, dtype: str, routed_all: float | None = None, flops: float | None = None,
                     layer: int | None = None, module: str = "", expert_parallel: int = 1) -> Kernel:
    """The fused MoE kernel of `routed` rows over `touched` experts, of `routed_all` the device routes (FLOPs as
    counted unless given: a fusion keeps the FLOPs of the eager kernels it replaces), its layer's experts spread over
    `expert_parallel` devices."""
    return Kernel(
        kind=KernelKind.MOE, op="fused_moe", dtype=dtype, tensor_core=True, layer=layer, module=module,
        flops=fused_moe_flops(routed, hidden, inter) if flops is None else flops,
        weight_bytes=touched * expert_bytes(hidden, inter, weight_width),
        act_bytes=fused_moe_act_bytes(tokens, routed, hidden, inter, act_width, routed_all), kv_bytes=0.0,
        m=routed / touched if touched else 0.0, n=MATRICES * inter, k=hidden, batch=touched,
        expert_parallel=expert_parallel, tokens=tokens)


# The module suffix of a fused MoE layer's experts at the MLP's bits when its hot experts run apart.
COLD_EXPERTS_MODULE = ".experts.cold"


def is_split(module: str) -> bool:
    """Whether a fused MoE kernel runs a part of its layer's experts (hot_expert_parts)."""
    return module.endswith((HOT_EXPERTS_MODULE, COLD_EXPERTS_MODULE))


def part_experts(module: str, experts: float, fmt: NumericFormat) -> float:
    """Experts a fused MoE kernel runs of `experts` its layer reaches: the hot ones, the others, or all (hot:
    the hot_experts share of them, on average under routing that prefers no expert)."""
    if module.endswith(HOT_EXPERTS_MODULE):
        return experts * fmt.hot_experts
    if module.endswith(COLD_EXPERTS_MODULE):
        return experts - experts * fmt.hot_experts
    return experts


def hot_expert_parts(module: str, experts: float, fmt: NumericFormat) -> tuple[tuple[str, float], ...]:
    """(module, experts) of each kernel a fused MoE kernel of module `module` over `experts` experts runs as under
    `fmt`: its hot experts and the others (module docstring), or itself where all of them are at one width."""
    if not fmt.hot_experts or is_split(module):
        return ((module, experts),)
    layer = module.removesuffix(".experts")
    if fmt.hot_experts >= 1.0:
        return ((layer + HOT_EXPERTS_MODULE, experts),)
    return ((layer + HOT_EXPERTS_MODULE, part_experts(HOT_EXPERTS_MODULE, experts, fmt)),
            (layer + COLD_EXPERTS_MODULE, part_experts(COLD_EXPERTS_MODULE, experts, fmt)))


def moe_chunks(tokens: np.ndarray, chunk_tokens: int = FUSED_MOE_CHUNK_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """(whole chunks, tokens left) of fused MoE layers of `tokens` tokens each, as vLLM calls them (module docstring,
    Chunks): no whole chunk and every token left where a layer fits one call."""
    tokens = np.asarray(tokens, dtype=float)
    whole = np.where(tokens > chunk_tokens, np.floor(tokens / chunk_tokens), 0.0)
    return whole, tokens - whole * chunk_tokens


def chunk_columns(*, tokens: np.ndarray, m: np.ndarray, batch: np.ndarray, flops: np.ndarray,
                  weight_bytes: np.ndarray, act_bytes: np.ndarray, call_tokens: np.ndarray,
                  routing: np.ndarray | None = None, experts: np.ndarray | None = None,
                  topk: np.ndarray | None = None, expert_parallel: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The columns of fused MoE layers of `tokens` tokens cut to one call of `call_tokens` of them (a slice of each
    layer's tokens): FLOPs, routed rows and activation traffic (linear in the tokens: fused_moe_act_bytes) by the
    slice's share of the tokens; the experts reached, each read whole, by the layer's routing model for the call's
    tokens (`routing`: ROUTINGS codes, with each layer's `experts`, `topk` and `expert_parallel`; all balanced where
    not given): balanced, at most one a routed row (a slice of 16,384 tokens reaches every expert a layer's rows
    reach for any top-k x 16,384 >= experts); uniform and power_law, the layer's experts in the share
    device_routing's count at the call's tokens is of its count at the layer's (a part of the layer's experts,
    hot_expert_parts, runs its share of either), at most one a routed row."""
    share = np.divide(call_tokens, tokens, out=np.zeros(np.shape(tokens)), where=np.asarray(tokens) > 0)
    rows = m * batch * share
    touched = np.minimum(batch, rows)
    if routing is not None and routing.any():
        call_tokens = np.broadcast_to(call_tokens, np.shape(tokens))
        for i in np.flatnonzero(routing):
            name, k, total = ROUTINGS[int(routing[i])], int(topk[i]), int(experts[i])
            held = max(total // max(int(expert_parallel[i]), 1), 1)
            reached = cached_routing(int(call_tokens[i]), k, total, held, name)[0]
            layer = cached_routing(int(tokens[i]), k, total, held, name)[0]
            touched[i] = min(rows[i], batch[i] * reached / layer) if layer else 0.0
    return {"flops": flops * share, "act_bytes": act_bytes * share, "m": rows / np.maximum(touched, 1.0),
            "batch": touched, "weight_bytes": weight_bytes * np.divide(touched, batch, out=np.zeros(np.shape(batch)),
                                                                       where=batch > 0),
            "tokens": np.asarray(call_tokens, dtype=float) * np.ones(np.shape(tokens))}
