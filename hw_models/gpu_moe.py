"""Fitted time of a fused MoE layer on a GPU (vLLM fused_experts and the grouped-GEMM MoE kernels it dispatches to).

The layer (kernels/moe.py) runs two grouped GEMMs in sequence, the experts' fused gate-up projection
(N = 2f, K = h) and their down projection (N = h, K = f), plus the routing-alignment, activation and top-k sum
kernels between them. Its time is a fixed latency, plus the activation traffic at a fraction of DRAM bandwidth
(the intermediate caches and the layer's input and output, kernels/moe.fused_moe_act_bytes), plus for each
GEMM a smooth maximum of

- math: the GEMM's FLOPs at a fraction of the dtype's peak, with a fitted share of its tile padding paid: each
  touched expert's rows fill whole MOE_TILE_M-row tiles, and N and K are cut into MOE_TILE_N and MOE_TILE_K
  tiles (few rows per expert at small batch pad to a whole tile: what makes MoE math slow at small batch);
- weights: the touched experts' matrices streamed at the smaller of a fraction of DRAM bandwidth and what the
  GEMM's thread blocks (CTAs: expert row tiles x N tiles) draw at a fitted rate each, so that a GEMM of few
  tiles (one or two experts, a thin intermediate shard under tensor parallelism) cannot fill the memory system.

A benchmark that replays one layer on the same weights (aiconfigurator's collector: one copy of the experts,
its calls replayed from a CUDA graph) finds weights and activations that fit in the L2 cache still there at the
next call (`cached_bytes`, the replayed model's L2 size); they stream `cache_speedup` times faster. A model pass
reads each layer's experts once per step, so the simulator passes no cached bytes (as for attention).

A layer whose experts are spread whole over devices (expert parallelism, Kernel.expert_parallel > 1) takes a fixed
time of its own beyond the latency, `ep_latency_s`, fitted on aiconfigurator's expert-parallel layouts (bounded at
zero; a fit without them leaves it out). Those layouts take longer at a token or a few than tensor-parallel ones of the
same weights per device: H200's Marlin MXFP4 layers (hidden 3584, top-16 of 896) take 80-88 us at one token on EP 8 to
128 whatever experts each device holds, the TP ones 163, 111, 89, 72 and 60 us on TP 1 to 16, falling with their
weights per device; bf16 Triton layers (hidden 2048, top-8 of 128) about 33 us on EP against 24-25 on TP 8 and 16.
The difference is no constant: EP 2 and 4 come within 2-4 us of the TP layout of the same weights, EP 16 and up 26 us
over it (Marlin), so one fitted constant is a compromise between them, held down by the power-law layers with fewer
routed rows than experts, which the routing replay prices 2-3x too slow (README, weight-only MoE layers).

Where the intermediate size is not a multiple of ALIGNMENT elements the whole layer takes a fitted slowdown:
Triton specializes integer arguments divisible by 16 (sizes and strides: `tt.divisibility = 16`), and only
then vectorizes the loads along K (triton/runtime/jit.py, the `specialization` of kernel arguments); thin
tensor-parallel shards (704 / 32 = 22 columns) take the scalar path.

Every parameter is fitted per dtype by `explore calibrate` on aiconfigurator's measured layers; fractions are
capped at 1, so in a model pass no layer is faster than the larger of its math at peak and its bytes (the
touched experts' weights and the activations) at bandwidth.

Weight-only layers (4-bit weights, 16-bit activations: Marlin's int4 MoE, MXFP4 experts with bf16 math) run at the
16-bit rate on their stored weight bytes, scales included, with the CUDA cores' dequantization in series with the
math (`vector_s`, hw_models/gpu_quant.py); they have fits of their own, keyed by quantized_weight_key ('bf16/w4int',
'bf16/w4fp4': Marlin's MoE, POINT_MOE_KERNEL), which a point with that weight format prices its MoE layers on
(gpu_quant.quant_plan's variant), as does a point of fp4 weights and activations on a GPU without fp4 tensor cores,
which runs them weight-only. MXFP4 experts (gpt-oss's checkpoint) run the kernel vLLM picks for them on the device
(engine_moe_kernel), or the one a point names (NumericFormat.moe_kernel), whose fits are keyed apart
('bf16/w4fp4/oaitriton', 'bf16/w4fp4/trtllm'); a kernel with no fit for the device is refused.
Their kernels issue other instructions than the 16-bit ones the bf16 fit saw (Marlin: Ampere's mma.sync on every
GPU), so the 16-bit fit does not carry over: their achieved fraction of the 16-bit peak is what the fit measures.

MXFP4 weights meeting MXFP8 activations (W4A8, 'fp8/w4fp4') run fp8 math on 4.25-bit weight traffic. On Blackwell
the tensor cores take the e2m1 weights as they are: the block-scaled MMA of kind mxf8f6f4 multiplies an e2m1 operand
by an e4m3 one, each with an e8m0 scale per 32 (PTX ISA, tcgen05.mma block_scale; LLVM's NVVM MMA tables list
e2m1, e2m3, e3m2, e4m3 and e5m2 for either operand), so no CUDA core dequantizes them, and the kinds that run at the
fp4 rate (mxf4, mxf4nvf4) take e2m1 on both sides: the layer's math is measured against the fp8 peak. Its fit is
FlashInfer's TensorRT-LLM MXFP4 x MXFP8 MoE's (aiconfigurator's B200 layers). A GPU without fp4 tensor cores
converts the weights to fp8 on its CUDA cores and prices the layer on its fp8 MoE fit (gpu_quant.quant_plan).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw_models.gpu_attention import smooth_max
from kernels.formats import MOE_KERNELS
from kernels.moe import MATRICES

# Row tile of a grouped MoE GEMM: the power of two at or above an expert's rows, from 16 to 64. FlashInfer's
# TensorRT-LLM MoE picks `tile_tokens_dim` as the next power of two of the average rows per expert, clamped to
# [8, 64] (aiconfigurator collector/vllm/collect_moe.py, the call of trtllm_fp4_block_scale_routed_moe); vLLM's
# Triton kernel uses BLOCK_SIZE_M 16 when there are no more tokens than experts and 64 otherwise
# (fused_moe.get_default_config). 16 is the smallest row tile of the Triton kernel, so the floor here.
MOE_TILE_M = (16.0, 64.0)
# Column and reduction tiles: vLLM's Triton default configs (BLOCK_SIZE_N 64; BLOCK_SIZE_K 64 for small batches).
MOE_TILE_N = 64.0
MOE_TILE_K = 64.0
# Triton's divisibility specialization (see the module docstring), in elements.
ALIGNMENT = 16
# The fused-MoE kernels that measured layers of quantized weights name in their backend (aiconfigurator's
# kernel_source: vLLM's quantization method and experts class, lowercased), the names a format's moe_kernel takes
# (kernels/formats.py MOE_KERNELS).
# The kernel a design point's quantized-weight MoE layers run, by their math dtype, where the engine picks no other
# (engine_moe_kernel); its fit is keyed without a kernel (quantized_weight_key). The general case is compressed-
# tensors' and ModelOpt's fp4 and int4 checkpoints: weight-only layers (bf16 math) run Marlin's MoE. vLLM picks a
# fused-MoE backend in priority order
# (vllm/model_executor/layers/fused_moe/oracle/nvfp4.py select_nvfp4_moe_backend); the FlashInfer and CUTLASS fp4
# backends ahead of Marlin support only compute capability 10.x to 12.x (CutlassExpertsFp4._supports_current_device),
# so an H100, H200, L40S or A100 runs Marlin (utils/marlin_utils_fp4.py prepare_nvfp4_moe_layer_for_marlin), and
# aiconfigurator's compressed-tensors MXFP4 layers (vLLM 0.24.0) ran MarlinExperts on H200 and B200 alike. gpt-oss's
# own MXFP4 checkpoint runs other kernels (engine_moe_kernel). MXFP4 x MXFP8 layers (fp8 math) run FlashInfer's
# TensorRT-LLM MoE, the one kernel measured for the format (hw_models/gpu_quant.py).
POINT_MOE_KERNEL = {"bf16": "marlin", "fp8": "trtllm"}
# vLLM's MXFP4 MoE backend for MXFP4 experts meeting bf16 activations (gpt-oss's checkpoint, Mxfp4Config), by compute
# capability (vllm-project/vllm 007d50058a06dec0f82472d63c819244d460c40d, vllm/model_executor/layers/quantization/
# mxfp4.py get_mxfp4_backend, without LoRA): the 10.x family with FlashInfer installed runs SM100_FI_MXFP4_BF16,
# FlashInfer's TensorRT-LLM MXFP4 x bf16 MoE; otherwise 9.0 <= capability < 11.0 with the triton_kernels package runs
# TRITON, OpenAI's Triton MoE; anything else MARLIN ("universal fallback"). The env flags move off these defaults:
# VLLM_MXFP4_USE_MARLIN=1 (Marlin), VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1 on 10.x (MXFP8 activations: the W4A8
# format's 'fp8/w4fp4'), VLLM_USE_FLASHINFER_MOE_MXFP4_BF16=1 on 9.0 (FlashInfer's CUTLASS MoE, measured nowhere
# here). The later oracle (vllm/model_executor/layers/fused_moe/oracle/mxfp4.py select_mxfp4_moe_backend, commit
# 001eda31e3d032e9dc864e97f3630358b2ff8b5a) keeps the order: FLASHINFER_TRTLLM_MXFP4_BF16 first, TRITON while
# 9.0 <= capability < 11.0, MARLIN last. aiconfigurator's gpt-oss layers ran these kernels on B200, H200 and L40S.
# (lowest capability, kernel) tiers, the highest tier at or below a capability winning.
ENGINE_MXFP4_MOE_KERNELS = ((9.0, "oaitriton"), (10.0, "trtllm"), (11.0, "marlin"))


def engine_moe_kernel(dtype: str, *, mxfp4: bool, chosen: str, compute_capability: float | None) -> str:
    """The MOE_KERNELS name a point's quantized-weight MoE layers computing in `dtype` run: `chosen` where it names
    one, else the engine's choice (ENGINE_MXFP4_MOE_KERNELS for MXFP4 weights under bf16 math on a GPU of known
    capability, POINT_MOE_KERNEL otherwise)."""
    if chosen in MOE_KERNELS:
        return chosen
    kernel = POINT_MOE_KERNEL.get(dtype, "")
    if dtype == "bf16" and mxfp4 and compute_capability is not None:
        for lowest, tier in ENGINE_MXFP4_MOE_KERNELS:
            if compute_capability >= lowest:
                kernel = tier
    return kernel


@dataclass(frozen=True, kw_only=True)
class MoeFit:
    compute_fraction: float  # achieved fraction of the dtype's dense peak
    bandwidth_fraction: float  # achieved fraction of DRAM bandwidth streaming expert weights
    act_bandwidth_fraction: float  # achieved fraction of DRAM bandwidth on activations (caches, input, output)
    latency_s: float  # fixed time of a layer (its kernels' launch-to-finish with no work)
    blend: float  # p of (math^p + weights^p)^(1/p) per GEMM: large p is a sharp roofline corner
    padding_share: float  # share of the row, column and reduction tile padding's math that is paid
    cta_bandwidth_Bps: float  # weight bytes per second one thread block streams
    unaligned_slowdown: float = 0.0  # extra time, as a share, of a layer whose intermediate size is unaligned
    cache_speedup: float = 1.0  # L2 over DRAM streaming rate, for a replayed layer whose bytes stay in the L2
    ep_latency_s: float = 0.0  # fixed time a layer whose experts are spread over devices takes beyond latency_s


def quantized_weight_key(weight_bits: int, weight_type: str, dtype: str, kernel: str = "") -> str:
    """The MoE fit key of layers whose quantized weights meet activations of another type, computing in `dtype`:
    '<dtype>/w<bits><element>' ('bf16/w4int', 'bf16/w4fp4' for fp4 e2m1 values under bf16 math, 'fp8/w4fp4' under
    fp8 math) for the kernel a point runs (POINT_MOE_KERNEL), and '<dtype>/w<bits><element>/<kernel>' for layers of
    another `kernel` (a MOE_KERNELS name: 'bf16/w4fp4/oaitriton'); variant keys as Calibration.with_variant reads
    them."""
    element = {"int": "int", "fp4_e2m1": "fp4"}.get(weight_type, weight_type)
    own = f"/{kernel}" if kernel and kernel != POINT_MOE_KERNEL.get(dtype) else ""
    return f"{dtype}/w{weight_bits}{element}{own}"


def named_kernel(key: str) -> str:
    """The kernel an MoE fit key names ('oaitriton' of 'bf16/w4fp4/oaitriton'), '' for a key that names none."""
    kernel = key.rsplit("/", 1)[-1]
    return kernel if kernel in MOE_KERNELS else ""


def _row_tile(rows: np.ndarray) -> np.ndarray:
    """MOE_TILE_M's row tile of experts with `rows` rows each."""
    low, high = MOE_TILE_M
    return np.clip(2.0 ** np.ceil(np.log2(np.maximum(rows, 1.0))), low, high)


def moe_times(*, m, n, k, batch, weight_bytes, act_bytes, flops_per_s, bandwidth_Bps, fit: MoeFit,
              cached_bytes: float = 0.0, vector_s=0.0, expert_parallel=1):
    """(compute_s, memory_s, busy_s, latency_s) of fused MoE layers (arrays, one entry per layer; rate arrays may
    add a leading axis of design points): `m` rows per touched expert, `batch` touched experts, `n` = 3 x the
    intermediate size f (MATRICES), `k` the hidden size h (kernels/moe.py). busy_s is the time past the fixed latency; a
    layer whose bytes fit in `cached_bytes` (a replayed benchmark's L2) streams them cache_speedup times faster.
    `vector_s`: the CUDA cores' dequantization of quantized weights (hw_models/gpu_quant.py), in series with the
    math of each of the two grouped GEMMs by its share of the weights (gate and up: 2/3, down: 1/3).
    `expert_parallel`: the devices each layer's experts are spread over; a spread layer's fixed time is latency_s
    plus ep_latency_s (module docstring)."""
    rows, experts = np.maximum(m, 0.0), np.maximum(batch, 1.0)
    inter, hidden = n / MATRICES, k
    tile = _row_tile(rows)
    row_tiles = np.ceil(rows / tile)
    per_weight = weight_bytes / np.maximum(experts * n * k, 1.0)  # bytes per weight value, scales included
    speed = np.where(weight_bytes + act_bytes <= cached_bytes, fit.cache_speedup, 1.0)
    weights_rate = bandwidth_Bps * fit.bandwidth_fraction
    compute_s = memory_s = busy_s = 0.0
    for cols, depth in ((2.0 * inter, hidden), (hidden, inter)):
        exact = 2.0 * experts * rows * cols * depth
        padded = 2.0 * experts * row_tiles * tile * _ceil_to(cols, MOE_TILE_N) * _ceil_to(depth, MOE_TILE_K)
        math_s = (exact + fit.padding_share * np.maximum(padded - exact, 0.0)) / (flops_per_s * fit.compute_fraction)
        math_s = math_s + vector_s * cols * depth / np.maximum(n * k, 1.0)
        ctas = experts * row_tiles * np.ceil(cols / MOE_TILE_N)
        weights_s = experts * cols * depth * per_weight / np.minimum(weights_rate, ctas * fit.cta_bandwidth_Bps) / speed
        compute_s, memory_s = compute_s + math_s, memory_s + weights_s
        busy_s = busy_s + smooth_max([math_s, weights_s], fit.blend)
    act_s = act_bytes / (bandwidth_Bps * fit.act_bandwidth_fraction * speed)
    slowdown = np.where(np.mod(np.round(inter), ALIGNMENT) != 0, 1.0 + fit.unaligned_slowdown, 1.0)
    busy_s = (busy_s + act_s) * slowdown
    latency_s = fit.latency_s + np.where(np.asarray(expert_parallel) > 1, fit.ep_latency_s, 0.0)
    return compute_s, memory_s + act_s, busy_s, latency_s * slowdown


def _ceil_to(x: np.ndarray, tile: float) -> np.ndarray:
    return np.ceil(x / tile) * tile
