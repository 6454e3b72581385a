"""Numeric formats: each tensor's element type and bit width, how its scales are stored, and what that does to a
kernel's traffic and the dtype its matrix math runs in.

A format is one set of choices for the whole model (weights of every GEMM, activations entering them, the KV
cache). Parts and the formats they spell:

- weight_bits / act_bits / kv_bits: bits per value (16: the traced 16-bit float, unquantized).
- weight_type / act_type: the element type of a quantized tensor. "int" (uniform integers, GPTQ/AWQ/SmoothQuant),
  "fp8_e4m3" / "fp8_e5m2" (8-bit floats, OCP FP8), "fp4_e2m1" (4-bit float, OCP MX / NVFP4 elements), weights
  also "nf4" (4-bit NormalFloat codebook, QLoRA), "lut" (a non-uniform codebook of 2^bits entries per channel,
  SqueezeLLM) and "ternary" ({-1, 0, 1}, BitNet b1.58, stored in 2 bits as bitnet.cpp's I2_S packing does).
- scale_type: how each group's scale is stored: "fp16" (GPTQ, AWQ), "fp32" (DeepSeek-V3's block fp8: its checkpoint's
  weight_scale_inv tensors are float32, and vLLM's and SGLang's per_token_group_quant_fp8 write the activations'
  scales in float32), "e8m0" (a power of two in 8 bits, the OCP MX formats), "e4m3" (an fp8 scale, NVFP4),
  "two_level" (QServe's progressive scheme: an fp16 scale per output channel and, per group, an 8-bit integer scale
  and a 4-bit zero point) or "spqr3" (SpQR's bilevel statistics, below).
- SpQR (Dettmers et al., "SpQR: A Sparse-Quantized Representation for Near-Lossless LLM Weight Compression", ICLR
  2024, arXiv:2306.03078): integer weights in very small groups (group_size, the paper's beta1: "typically of
  beta1 = 8 - 32 weights", Section 4.1; 8 is allowed with this scale type alone) whose scale and zero point are
  themselves quantized to 3 bits (b_s = b_z = 3); each run of scale_group_size groups (beta2, along the output
  channels) quantizes those scales with one fp16 scale and zero, and the zeros with another pair. Outliers are
  outlier_fraction (below). Average bits per weight, the paper's Eq. 4 (Appendix D):
  b_w + (b_s + b_z) / beta1 + 64 / (beta1 beta2) + 32 r_o; e.g. 3-bit weights with beta1 = beta2 = 16 are 3.625
  (Table 3, "3-bit statistics": 3.63; Appendix H: 3.625). Table 1's ~3.9-bit rows are 3-bit weights, beta1 = 8,
  beta2 = 64 (3.875) plus outliers; its near-lossless ~4.6-bit rows 4-bit weights, beta1 = beta2 = 16 (4.625, the
  LLaMA-30B configuration of Appendix B) plus outliers. SpQR is weight-only: its kernel dequantizes to 16-bit
  activations. SpQR's GPU library packs each row of a 16 x 16 tile (3-bit scale, zero and 16 weights, and an
  8-bit slice of the tile's second-level statistics) into one 64-bit word, 4 bits a weight at 3 bits
  (inference_lib/src/spqr_quant/inference.py, QuantizedLinear): the stored bits here are the paper's, the layout's
  padding is not counted.
- scale_granularity: "group" (one scale per group_size consecutive values along the GEMM's k dimension), "block"
  (the weights' scales 2-D: one per group_size x group_size tile of k and n, while the activations keep a scale per
  token and group_size values along k; 8-bit float weights only), "channel" (one per output channel) or "tensor"
  (one per tensor). Per-channel and per-tensor scales are counted as no bytes: one 16-bit scale per row of
  k >= 1,024 weights is under 0.4% of 4-bit weights. A block at a matrix's edge that group_size does not fill is
  zero-padded and keeps a whole scale (DeepSeek-V3's README_WEIGHTS.md); the bits a weight stores count the full
  blocks' share, so a matrix whose n is no multiple of group_size (DeepSeek-V3's kv_a_proj_with_mqa, n 576) stores
  a few scales more than counted, under 0.0004 bits a weight.
- MXFP4 = fp4_e2m1 weights and activations, e8m0 scales per 32; MXFP8 = fp8_e4m3, e8m0 per 32 (OCP Microscaling
  Formats (MX) v1.0 spec, 2023, Table 1); NVFP4 = fp4_e2m1, e4m3 scales per 16 (NVIDIA Blackwell architecture
  technical brief, 2024); DeepSeek-V3's block fp8 = fp8_e4m3 weights and activations, scale_type fp32,
  scale_granularity block, group_size 128: its config.json's quantization_config {"fmt": "e4m3", "quant_method":
  "fp8", "weight_block_size": [128, 128], "activation_scheme": "dynamic"}, a float32 scale per 128 x 128 weight block
  (8 + 32 / 16384 = 8.002 bits a weight) and, as its README_WEIGHTS.md says, activations quantized online "at a
  granularity of per-token-per-128-channel" (8 + 32 / 128 = 8.25 bits a value); its embeddings and LM head are bf16
  (inference/model.py builds them in the default dtype, the other linear layers in fp8): head_bits 16. The same
  elements with the default fp16 scales per 128 along k, group granularity, count 8.125 bits a weight and a value.

The KV cache keeps one 16-bit scale per group_size values of a token's head whatever the weights' scales (groups of 8
under SpQR's scales too); a group never spans two heads, so a group_size above head_dim is one scale a head.
kv_sparsity prunes a share of each token's Key and Value elements and stores the rest in Mustafar's bitmap layout
(kernels/kv_sparsity.py); kv_scale, the cache's bytes against 16-bit ones, counts it.

Beyond one set of bits for every weight (kernels/table.py KernelTable.with_format applies them per kernel):

- Mixed precision by module and layer: attn_weight_bits and mlp_weight_bits keep a decoder layer's attention
  projections or its MLP (its experts in MoE models) at more bits than weight_bits, and edge_layer_bits keeps every
  weight of the first and last edge_layers decoder layers at more bits (0: as weight_bits). llama.cpp's K-quant
  mixes are the recipe: Q4_K_M stores attn_v and ffn_down at Q6_K in the first and last eighth of the layers
  (llama.cpp src/llama-quant.cpp llama_tensor_get_type, use_more_bits), and first/last-layer precision is the
  common guard of low-bit methods (e.g. BitNet and PB-LLM keep the embedding and head in 16 bits). weight_bits
  is the fewest bits of the model: an override names more, and the modules it raises keep the element and scale
  types of weight_bits (a width those types do not take is an error). A module raised to 16 bits runs unquantized,
  activations included. Weights outside the decoder layers (the LM head, the token embeddings and any head a
  technique adds) keep head_bits, 0 meaning weight_bits: most weight-only methods leave them at 16 bits (GPTQ's and
  AWQ's reference code quantize the decoder layers' linear layers only; BitNet b1.58 and PB-LLM keep them in 16
  bits), while llama.cpp's K-quants store the output matrix at Q6_K.
- Mixed precision by expert (hot_experts, hot_expert_bits): in each MoE layer a share of the routed experts keeps
  hot_expert_bits and the rest the experts' bits (mlp_weight_bits or weight_bits), as the expert-level methods
  allocate: MC-MoE (Huang et al., ICLR 2025, arXiv:2410.06270: Pre-Loading Mixed-Precision Quantization, 1-3 bits
  per expert by a linear program over each expert's importance and routing frequency, 2.54 average bits on
  Mixtral 8x7B), "Examining Post-Training Quantization for Mixture-of-Experts" (Li et al., 2024, arXiv:2406.08155:
  the most frequently routed experts at more bits) and MxMoE (Duanmu et al., ICML 2025, arXiv:2505.05799: bits per
  linear block, by sensitivity and activation frequency). Stored: hot_experts of the experts' parameters at
  hot_expert_bits (a share of E experts that is no whole number, E x 0.3, is the average over the layers of whole
  numbers of hot experts). Read: routing is modeled balanced, preferring no expert, so of the n experts a step's
  tokens reach, n x hot_experts are hot on average; a fused MoE layer prices exactly that share (kernels/moe.py).
  An eager layer launches whole experts: its hot ones are spread evenly over the expert ids (is_hot_expert), so
  that the first n experts, the ones balanced routing fills first (workloads/model_config.py balanced_expert_load),
  hold hot_expert_count(n) of them, n x hot_experts rounded half up (within half an expert of the average). The skew
  of real routers, whose frequently routed hot experts take more than their share of the tokens, is not modeled.
- Layers no format quantizes: an MoE layer's router (its gate, hidden x experts weights and their biases) keeps 16
  bits whatever weight_bits and the overrides say, stored and run as a 16-bit GEMM on 16-bit activations, as vLLM
  builds it under every quantization method: Mixtral's and Qwen2/Qwen3-MoE's gate is ReplicatedLinear(...,
  quant_config=None) ("Gate always runs at half / full precision for now", vllm-project/vllm
  vllm/model_executor/models/mixtral.py at f0e26957; qwen2_moe.py at 002fb907; qwen3_moe.py at 002456df),
  DeepSeek-V2/V3's a GateLinear given no quant_config (deepseek_v2.py at 002d6073), gpt-oss's router a plain
  bfloat16 torch.nn.Linear (gpt_oss.py at 0025d69b, beside MXFP4 experts).
- Outliers kept apart (dense-and-sparse): outlier_fraction of each quantized matrix's weights are stored once more
  in 16 bits in a sparse matrix (SpQR, Dettmers et al., ICLR 2024, keeps about 1%; SqueezeLLM, Kim et al., ICML
  2024, 0.05% and 0.45%), in CSR with an fp16 value and a 16-bit column index per outlier, 32 bits (SpQR's
  inference library merges the two into one 32-bit word: inference_lib/src/spqr_quant/sparse_util.py
  merge_col_val); the row offsets (32 bits per row of k >= 1,024 weights, under 0.03 bits a weight) are not counted.
  The dense matrix keeps its quantized value at every position. A separate sparse kernel multiplies them.
- Entropy-coded 16-bit weights (weight_coding dfloat11: DFloat11, Zhang et al., 2025): bf16 weights Huffman-coded
  to DFLOAT11_BITS a weight in memory, lossless, decompressed on the GPU once per transformer block and pass into
  16-bit weights that the GEMMs read.

A format a device family does not run natively is its cost model's to price (hw_models/gpu_quant.py for GPUs);
every family reads the traffic and the GEMM dtype from here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from functools import cached_property

# The sparsity grammar lives in kernels/sparsity.py; its names are re-exported here, where callers import formats.
from kernels.kv_sparsity import kv_element_bits
from kernels.sparsity import ALLOWED_SPARSITY as ALLOWED_SPARSITY
from kernels.sparsity import DENSE as DENSE
from kernels.sparsity import check_activation_sparsity
from kernels.sparsity import parse_sparsity as parse_sparsity

# Weights go down to 2 bits (LUT and bit-serial GEMV engines use 2-4 bit weights; 3, 5 and 6 bits are GPTQ's and
# llama.cpp's K-quant widths); activations and KV to 4.
ALLOWED_BITS = {"weight_bits": (16, 8, 6, 5, 4, 3, 2), "act_bits": (16, 8, 4), "kv_bits": (16, 8, 4)}
# Weight sparsity patterns (N:M, unstructured, block) and activation sparsity: kernels/sparsity.py.

INT = "int"
FP4 = "fp4_e2m1"
# Element types and the bit widths each takes (None: any quantized width of the tensor).
WEIGHT_TYPES: dict[str, tuple[int, ...] | None] = {
    INT: None, "fp8_e4m3": (8,), "fp8_e5m2": (8,), "fp4_e2m1": (4,), "nf4": (4,), "lut": (2, 3, 4, 5, 6, 8),
    "ternary": (2,)}
ACT_TYPES: dict[str, tuple[int, ...] | None] = {INT: None, "fp8_e4m3": (8,), "fp8_e5m2": (8,), "fp4_e2m1": (4,)}
# Floating-point element types (the GEMM dtype of matching weights and activations is fp8 or fp4).
FLOAT_TYPES = {"fp8_e4m3": "fp8", "fp8_e5m2": "fp8", "fp4_e2m1": "fp4"}
# Weight types read through a table (a lookup per weight on devices without codebook units).
CODEBOOK_TYPES = ("nf4", "lut")
# Bits each group of weights stores for its scale (and zero point), by scale type.
SPQR = "spqr3"
# SpQR's first-level statistics: a 3-bit scale and a 3-bit zero point per group (b_s = b_z = 3, Section 4.2).
SPQR_STAT_BITS = 3.0
SCALE_BITS = {"fp16": 16.0, "fp32": 32.0, "e8m0": 8.0, "e4m3": 8.0, "two_level": 8.0 + 4.0,
              SPQR: 2 * SPQR_STAT_BITS}
# Scale types that carry zero points, integer shifts only integer weights take, and why.
INTEGER_SCALES = {"two_level": "QServe's 4-bit zero points shift integers", SPQR: "SpQR quantizes integers, min-max "
                  "per group"}
# SpQR's second level: per scale_group_size groups an fp16 scale and zero for their scales and another pair for
# their zeros, 2 x (16 + 16) bits (the 64 of Eq. 4; "four 16-bit scalars" per 16 x 16 group, Section 4.2).
SPQR_SECOND_LEVEL_BITS = 2 * (16.0 + 16.0)
GRANULARITIES = ("group", "block", "channel", "tensor")
# Granularities that store a scale per group_size values (group: 1-D along k; block: 2-D weight tiles, the
# activations' scales still 1 x group_size along k), and the weight types 2-D blocks take: DeepSeek-V3's block fp8,
# the one checkpoint format with 2-D weight blocks the project prices (integer and codebook weights are scaled per
# group or channel by every kernel it models).
BLOCK = "block"
GROUPED = ("group", BLOCK)
BLOCK_WEIGHT_TYPES = ("fp8_e4m3", "fp8_e5m2")
# Group sizes a format may take: 16 (NVFP4) to 256 (llama.cpp's K-quant super-blocks); 1,024 and more would be a
# scale per row of most models' GEMMs, which scale_granularity "channel" says.
GROUP_SIZES = (16, 32, 64, 128, 256)
# Group sizes below those that only SpQR's quantized statistics take: Table 1's ~3.9-bit rows use groups of 8.
SPQR_GROUP_SIZES = (8,)
# SpQR's second-level group sizes (beta2: first-level groups sharing one fp16 second-level statistic): the grid of
# the paper's Table 5; 16 is its near-lossless configuration (Appendix B) and the default.
SCALE_GROUP_SIZES = (4, 8, 16, 32, 64, 128)
DEFAULT_SCALE_GROUP_SIZE = 16

# Mixed precision: the format fields that keep a part of the model at more bits than weight_bits (0: as weight_bits).
BIT_OVERRIDES = ("attn_weight_bits", "mlp_weight_bits", "edge_layer_bits", "head_bits")
OVERRIDE_BITS = (0, *sorted(b for b in ALLOWED_BITS["weight_bits"] if b > 2))
# The module path of a fused MoE layer's hot experts when they run as a kernel apart (kernels/moe.py).
HOT_EXPERTS_MODULE = ".experts.hot"
_EXPERT_INDEX = re.compile(r"\.experts\.(\d+)(\.|$)")
# Outliers: bits each one stores (fp16 value + 16-bit column index, SpQR's CSR layout; see the module docstring).
OUTLIER_BITS = 16.0 + 16.0
# Above 5% of the weights (five times SpQR's ~1%) the sparse part alone costs 1.6 bits a weight, more than the
# dense-and-sparse methods spend on it.
MAX_OUTLIER_FRACTION = 0.05
# Entropy coding of 16-bit weights. DFloat11's compressed size: Llama 3.1 8B 16.1 -> 10.9 GB (67.7%), Llama 3.3 70B
# 141 -> 95.4 GB (67.7%), Llama 3.1 405B 812 -> 551 GB (67.9%) (Zhang et al., "70% Size, 100% Accuracy", arXiv
# 2504.11651 v3, Table 2): 67.7% of 16 bits.
WEIGHT_CODINGS = ("none", "dfloat11")
DFLOAT11_BITS = 16.0 * 10.9 / 16.1
# The fused-MoE kernel a format's quantized experts run on (hw_models/gpu_moe.py): the serving engine's own choice for
# the format on the device (ENGINE_MOE_KERNEL), or one named: Marlin's MoE (MarlinExperts), OpenAI's Triton MoE
# (OAITritonMxfp4Experts, the triton_kernels package) or FlashInfer's TensorRT-LLM MoE (TrtLlm*Experts). The last two
# take MXFP4 weights only (vLLM's Mxfp4MoEMethod: e2m1 values, an e8m0 scale per 32).
ENGINE_MOE_KERNEL = "engine"
MOE_KERNELS = ("marlin", "oaitriton", "trtllm")
MXFP4_ONLY_MOE_KERNELS = ("oaitriton", "trtllm")


def named_moe_kernel(backend: str) -> str:
    """The MOE_KERNELS name an implementation's name holds (a measured MoE layer's backend: aiconfigurator's
    kernel_source, vLLM's quantization method and experts class lowercased), '' where it holds none."""
    return next((kernel for kernel in MOE_KERNELS if kernel in backend.lower()), "")
# Decoder-layer modules by role (HF module paths): attention projections; everything else in a layer is the MLP
# (its experts and router in MoE models).
_ATTENTION_MODULE = re.compile(r"(^|\.)(self_attn|attn|attention|self_attention)(\.|$)")
# An MoE layer's router (its gate; gpt-oss names it router), which no format quantizes (module docstring); the module
# path of the routers' share where weights are counted by share (NumericFormat.stored_weight_scale).
_ROUTER_MODULE = re.compile(r"(^|\.)(gate|router)$")
ROUTER_MODULE = "mlp.gate"
UNQUANTIZED_BITS = 16


def unquantized_module(module: str) -> bool:
    """Whether a decoder-layer module (an HF module path) keeps UNQUANTIZED_BITS under every format: an MoE router."""
    return _ROUTER_MODULE.search(module) is not None


# Bits per value of each short dtype name.
DTYPE_BITS = {"fp64": 64, "fp32": 32, "tf32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int8": 8, "int4": 4, "fp4": 4}

# Short dtype names, as device presets key their peak rates.
DTYPE_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float8_e4m3fn": "fp8"}


def element_B(dtype: str) -> float:
    """Bytes of an element of a short dtype name (DTYPE_BITS; 16 bits where it names none)."""
    return DTYPE_BITS.get(dtype, 16) / 8.0


def _check_type(role: str, types: dict[str, tuple[int, ...] | None], name: str, bits: int) -> None:
    """ValueError unless `name` is an element type of the role that takes `bits` bits."""
    if name not in types:
        raise ValueError(f"{role}_type: found {name!r}, allowed: {', '.join(types)}")
    widths = types[name]
    if name != INT and bits >= 16:
        raise ValueError(f"{role}_type: found {name!r} with {role}_bits {bits}, allowed: {role}_bits "
                         f"{', '.join(map(str, widths))} (16 bits keep the traced 16-bit float; its type is {INT})")
    if widths is not None and bits not in widths:
        raise ValueError(f"{role}_type: found {name!r} with {role}_bits {bits}, allowed: {role}_bits "
                         f"{', '.join(map(str, widths))}")


@dataclass(frozen=True, kw_only=True)
class NumericFormat:
    """Bit widths and element types of weights, activations and KV cache, and how quantized weights store scales.

    `group_size` is the number of values sharing one scale (128 is the common choice of GPTQ and AWQ); with the
    default 16-bit scales it adds 16 / group_size bits per value to quantized tensors. A group larger than a GEMM's
    k dimension is one scale per row of that GEMM.

    `sparsity` is the pattern of the GEMM weights ("dense", "2:4", "unstructured:0.7", "block64:0.5"), and
    `act_kept` the share of the MLP's activations each decode token keeps (kernels/sparsity.py). A device that
    exploits a pattern stores its compressed layout and does the work the pattern leaves; any other device runs
    the weights dense (see KernelTable.run_on).
    """

    # The derived values below are cached_property: pure functions of these frozen fields, kept in the instance's
    # __dict__ (eq and hash read the fields only), since a sweep's few formats are read several times a point.
    weight_bits: int = 16
    act_bits: int = 16
    kv_bits: int = 16
    group_size: int = 128
    sparsity: str = DENSE
    weight_type: str = INT
    act_type: str = INT
    scale_type: str = "fp16"
    scale_granularity: str = "group"
    # SpQR's beta2 (scale_type spqr3): first-level groups whose 3-bit scales and zeros share one fp16 second-level
    # statistic; normalized to its default under other scale types, which do not quantize their scales in groups.
    scale_group_size: int = DEFAULT_SCALE_GROUP_SIZE
    attn_weight_bits: int = 0
    mlp_weight_bits: int = 0
    edge_layer_bits: int = 0
    edge_layers: int = 1
    head_bits: int = 0  # the LM head and embeddings (weights outside the decoder layers); 0: weight_bits
    outlier_fraction: float = 0.0
    weight_coding: str = "none"
    # Activation sparsity (kernels/sparsity.py): the share of the MLP's activations each decode token keeps, and the
    # predictor that chooses them ("none": magnitude thresholding, TEAL / R-Sparse / WINA; "deja_vu": a low-rank
    # predictor per layer).
    act_kept: float = 1.0
    act_predictor: str = "none"
    # Mixed precision by expert (module docstring): the share of each MoE layer's routed experts kept at
    # hot_expert_bits, the rest at the experts' bits (0: off).
    hot_experts: float = 0.0
    hot_expert_bits: int = 0
    # Unstructured KV-cache sparsity (kernels/kv_sparsity.py, Mustafar): the share of each token's Key and Value
    # elements pruned, the rest stored in a bitmap-compressed layout that decode attention reads directly (0: dense).
    kv_sparsity: float = 0.0
    # The fused-MoE kernel of quantized experts (MOE_KERNELS, or ENGINE_MOE_KERNEL: the engine's choice per device).
    moe_kernel: str = ENGINE_MOE_KERNEL

    def __post_init__(self) -> None:
        for name, allowed in ALLOWED_BITS.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name}: found {value!r}, allowed: {', '.join(map(str, allowed))}")
        if self.group_size < 1:
            raise ValueError(f"group_size: found {self.group_size!r}, allowed: an integer >= 1")
        # One spelling per pattern ('unstructured:0.50' is 'unstructured:0.5'), so equal formats compare equal.
        object.__setattr__(self, "sparsity", parse_sparsity(self.sparsity).pattern)
        check_activation_sparsity(self.act_kept, self.act_predictor)
        share = self.kv_sparsity
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share < 1.0:
            raise ValueError(f"kv_sparsity: found {share!r}, allowed: a fraction from 0 to below 1 (the share of KV "
                             f"elements pruned; 0: dense)")
        _check_type("weight", WEIGHT_TYPES, self.weight_type, self.weight_bits)
        _check_type("act", ACT_TYPES, self.act_type, self.act_bits)
        if self.scale_type not in SCALE_BITS:
            raise ValueError(f"scale_type: found {self.scale_type!r}, allowed: {', '.join(SCALE_BITS)}")
        if self.scale_granularity not in GRANULARITIES:
            raise ValueError(f"scale_granularity: found {self.scale_granularity!r}, allowed: "
                             f"{', '.join(GRANULARITIES)}")
        if self.scale_type != "fp16" and self.scale_granularity not in GROUPED:
            raise ValueError(f"scale_type: found {self.scale_type!r} with scale_granularity "
                             f"{self.scale_granularity!r}, allowed: fp16 (block scales are per group or block)")
        if self.scale_granularity == BLOCK and self.weight_bits < 16 and self.weight_type not in BLOCK_WEIGHT_TYPES:
            raise ValueError(f"scale_granularity: found {BLOCK!r} with weight_type {self.weight_type!r}, allowed: "
                             f"group, channel or tensor (2-D weight blocks are DeepSeek-V3's block fp8: weight_type "
                             f"{' or '.join(BLOCK_WEIGHT_TYPES)})")
        self._check_spqr()
        self._check_moe_kernel()
        if self.act_bits < 16:
            self._check_math_pair()
        self._check_mixed()

    def _check_moe_kernel(self) -> None:
        """A named MoE kernel is one of MOE_KERNELS, and OpenAI's Triton and TensorRT-LLM's take MXFP4 weights only."""
        kernel = self.moe_kernel
        if kernel != ENGINE_MOE_KERNEL and kernel not in MOE_KERNELS:
            raise ValueError(f"moe_kernel: found {kernel!r}, allowed: {ENGINE_MOE_KERNEL}, {', '.join(MOE_KERNELS)}")
        if kernel in MXFP4_ONLY_MOE_KERNELS and self.weight_bits < 16 and not self.mxfp4_weights:
            raise ValueError(f"moe_kernel: found {kernel!r} with {self.weight_bits}-bit {self.weight_type} weights "
                             f"(scale_type {self.scale_type}, group_size {self.group_size}), allowed: "
                             f"{ENGINE_MOE_KERNEL} or marlin ({kernel} takes MXFP4 weights: weight_type fp4_e2m1, "
                             f"scale_type e8m0, group_size 32)")

    @property
    def mxfp4_weights(self) -> bool:
        """Whether the weights are MXFP4's: fp4 e2m1 values with an e8m0 scale per group of 32 (OCP MX v1.0
        Table 1)."""
        return (self.weight_type == "fp4_e2m1" and self.scale_type == "e8m0" and self.scale_granularity == "group"
                and self.group_size == 32)

    def _check_spqr(self) -> None:
        """Scales with zero points (two_level, spqr3) take integer weights; SpQR's bilevel statistics (spqr3) take
        them meeting 16-bit activations, the group sizes below 16 that only they allow, and a second-level group size
        of the paper's grid; scale_group_size is normalized to its default under other scale types, so equal formats
        compare equal."""
        spqr = self.scale_type == SPQR
        if self.group_size < min(GROUP_SIZES) and not (spqr and self.group_size in SPQR_GROUP_SIZES):
            raise ValueError(f"group_size: found {self.group_size} with scale_type {self.scale_type}, allowed: "
                             f"{', '.join(map(str, GROUP_SIZES))}; {', '.join(map(str, SPQR_GROUP_SIZES))} only with "
                             f"scale_type {SPQR} (SpQR's 3-bit bilevel statistics)")
        sgs = self.scale_group_size
        if isinstance(sgs, bool) or sgs not in SCALE_GROUP_SIZES:
            raise ValueError(f"scale_group_size: found {sgs!r}, allowed: {', '.join(map(str, SCALE_GROUP_SIZES))} "
                             f"(groups sharing SpQR's fp16 second-level statistics)")
        if self.scale_type in INTEGER_SCALES and self.weight_type != INT:
            raise ValueError(f"scale_type: found {self.scale_type!r} with weight_type {self.weight_type!r}, allowed: "
                             f"weight_type {INT} ({INTEGER_SCALES[self.scale_type]})")
        if not spqr:
            object.__setattr__(self, "scale_group_size", DEFAULT_SCALE_GROUP_SIZE)
            return
        if self.act_bits < 16:
            raise ValueError(f"scale_type: found {SPQR!r} with act_bits {self.act_bits}, allowed: act_bits 16 (SpQR "
                             f"is weight-only: its kernel dequantizes the weights for 16-bit activations)")

    def _check_mixed(self) -> None:
        """Overrides name more bits than weight_bits in widths its element and scale types take (one equal to
        weight_bits is normalized to 0, so equal formats compare equal); outliers need quantized weights, entropy
        coding 16-bit ones."""
        if not (isinstance(self.edge_layers, int) and self.edge_layers >= 1):
            raise ValueError(f"edge_layers: found {self.edge_layers!r}, allowed: an integer >= 1")
        for name in BIT_OVERRIDES:
            bits = getattr(self, name)
            if bits not in OVERRIDE_BITS or (bits and bits < self.weight_bits):
                raise ValueError(f"{name}: found {bits!r} with weight_bits {self.weight_bits}, allowed: 0 (as "
                                 f"weight_bits) or more bits than weight_bits: "
                                 f"{', '.join(str(b) for b in OVERRIDE_BITS if b >= self.weight_bits)}")
            if bits == self.weight_bits:
                object.__setattr__(self, name, 0)
            elif bits:
                try:
                    self.at_bits(bits)
                except ValueError as err:
                    raise ValueError(f"{name}: found {bits}, a width the weights' types do not take ({err}); "
                                     f"allowed: 0, 16 or a width they take") from None
        self._check_hot_experts()
        if not 0.0 <= self.outlier_fraction <= MAX_OUTLIER_FRACTION:
            raise ValueError(f"outlier_fraction: found {self.outlier_fraction!r}, allowed: a fraction from 0 to "
                             f"{MAX_OUTLIER_FRACTION}")
        if self.outlier_fraction and self.weight_bits >= 16:
            raise ValueError(f"outlier_fraction: found {self.outlier_fraction} with weight_bits 16, allowed: 0 "
                             f"(outliers are kept apart from quantized weights: weight_bits below 16)")
        if self.weight_coding not in WEIGHT_CODINGS:
            raise ValueError(f"weight_coding: found {self.weight_coding!r}, allowed: {', '.join(WEIGHT_CODINGS)}")
        if self.weight_coding != "none" and self.weight_bits < 16:
            raise ValueError(f"weight_coding: found {self.weight_coding!r} with weight_bits {self.weight_bits}, "
                             f"allowed: none (DFloat11 codes 16-bit weights: weight_bits 16)")

    def _check_hot_experts(self) -> None:
        """hot_experts is a share of the experts and hot_expert_bits more bits than the experts' in a width the
        weights' types take; both are normalized to 0 where no expert changes (no share, or the experts' own bits),
        so equal formats compare equal."""
        share, bits = self.hot_experts, self.hot_expert_bits
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share <= 1.0:
            raise ValueError(f"hot_experts: found {share!r}, allowed: a fraction from 0 to 1 (0: off)")
        experts = self.mlp_weight_bits or self.weight_bits
        more = ", ".join(str(b) for b in OVERRIDE_BITS if b > experts) or "none (the experts are at 16 bits)"
        if share and bits == 0:  # a share of hot experts asks for their width; 0 would leave them as the rest
            raise ValueError(f"hot_expert_bits: found 0 with hot_experts {share:g} and the experts at "
                             f"{experts} bits, allowed: more bits than the experts' (mlp_weight_bits, else "
                             f"weight_bits): {more}; or hot_experts 0 (off)")
        if bits not in OVERRIDE_BITS or (share and bits < experts):
            raise ValueError(f"hot_expert_bits: found {bits!r} with the experts at {experts} bits, allowed: 0 (off) "
                             f"or more bits than the experts' (mlp_weight_bits, else weight_bits): {more}")
        if not share or bits == experts:
            object.__setattr__(self, "hot_experts", 0.0)
            object.__setattr__(self, "hot_expert_bits", 0)
            return
        try:
            self.at_bits(bits)
        except ValueError as err:
            raise ValueError(f"hot_expert_bits: found {bits}, a width the weights' types do not take ({err}); "
                             f"allowed: 0, 16 or a width they take") from None

    def at_bits(self, bits: int) -> NumericFormat:
        """The uniform format of weights kept at `bits` bits: this format's element and scale types at that width,
        or the traced 16-bit precision (activations included) at 16 bits. ValueError where the types do not take
        the width."""
        plain = dict.fromkeys(BIT_OVERRIDES, 0) | {"edge_layers": 1, "outlier_fraction": 0.0, "weight_coding": "none",
                                                  "hot_experts": 0.0, "hot_expert_bits": 0}
        if bits >= 16:
            # A group size only SpQR's statistics take keeps them (it still sizes the KV cache's groups).
            scale_type = "fp16" if self.group_size >= min(GROUP_SIZES) else self.scale_type
            return replace(self, weight_bits=16, act_bits=16, weight_type=INT, act_type=INT, scale_type=scale_type,
                           scale_granularity="group", **plain)
        return replace(self, weight_bits=bits, **plain)

    @cached_property
    def idle_fields(self) -> tuple[str, ...]:
        """The fields whose value changes nothing at this format (IDLE_WHERE says where each is idle): group_size
        where no tensor is scaled per group, the weights' scale fields at 16-bit weights (scale_type kept where only
        it allows the group size of a quantized KV cache), edge_layers without edge_layer_bits, act_predictor where
        every activation is kept."""
        # Each name here is one of IDLE_FIELDS.
        grouped = (self.weight_bits < 16 and self.scale_granularity in GROUPED) or self.kv_bits < 16
        idle = [] if grouped else ["group_size"]
        if self.weight_bits >= 16:
            idle += ["scale_granularity", "scale_group_size"]
            if not grouped or self.group_size >= min(GROUP_SIZES):
                idle.append("scale_type")
        if not self.edge_layer_bits:
            idle.append("edge_layers")
        if self.act_kept >= 1.0:
            idle.append("act_predictor")
        if self.weight_bits >= 16:
            idle.append("moe_kernel")
        return tuple(idle)

    @cached_property
    def canonical(self) -> NumericFormat:
        """This format with its idle_fields at their defaults: equal for formats that differ only where nothing
        reads them."""
        defaults = {name: _FIELDS[name].default for name in self.idle_fields
                    if getattr(self, name) != _FIELDS[name].default}
        return replace(self, **defaults) if defaults else self

    @cached_property
    def mixed(self) -> bool:
        """Whether some weights are kept at other bits than weight_bits."""
        return any(getattr(self, name) for name in (*BIT_OVERRIDES, "hot_expert_bits"))

    @cached_property
    def weight_widths(self) -> tuple[int, ...]:
        """Every weight width the format uses, weight_bits first."""
        return tuple(dict.fromkeys([self.weight_bits, *(getattr(self, n) for n in (*BIT_OVERRIDES, "hot_expert_bits")
                                                        if getattr(self, n))]))

    def module_bits(self, module: str, edge: bool = False) -> int:
        """Bits of the weights of a decoder-layer module (an HF module path), in an edge layer or not: an expert
        ('.experts.<i>.') or a fused MoE layer's hot experts ('.experts.hot') at hot_expert_bits where it is hot, a
        router at 16 (unquantized_module)."""
        if unquantized_module(module):
            return UNQUANTIZED_BITS
        attention = _ATTENTION_MODULE.search(module) is not None
        bits = (self.attn_weight_bits if attention else self.mlp_weight_bits) or self.weight_bits
        if self.hot_experts and not attention:
            index = _EXPERT_INDEX.search(module)
            if module.endswith(HOT_EXPERTS_MODULE) or (index is not None and self.is_hot_expert(int(index[1]))):
                bits = self.hot_expert_bits
        return max(bits, self.edge_layer_bits) if edge else bits

    def hot_expert_count(self, experts: int | float) -> int:
        """Hot experts among the first `experts` expert ids of a layer: experts x hot_experts rounded half up."""
        return math.floor(experts * self.hot_experts + 0.5) if self.hot_experts else 0

    def is_hot_expert(self, index: int) -> bool:
        """Whether expert `index` of a layer is hot: the hot ones are spread evenly over the ids, so that every run
        of first experts holds its share of them (hot_expert_count)."""
        return self.hot_expert_count(index + 1) > self.hot_expert_count(index)

    def is_edge_layer(self, layer: int, num_layers: int) -> bool:
        """Whether decoder layer `layer` of `num_layers` is one of the first or last edge_layers."""
        return bool(self.edge_layer_bits) and (layer < self.edge_layers or layer >= num_layers - self.edge_layers)

    def edge_share(self, num_layers: int) -> float:
        """Fraction of the decoder layers kept at edge_layer_bits."""
        if not self.edge_layer_bits:
            return 0.0
        return min(2 * self.edge_layers, num_layers) / num_layers

    def interior(self) -> NumericFormat:
        """The format of the layers between the edge layers (every layer when there are none)."""
        return replace(self, edge_layer_bits=0)

    def at_edge(self) -> NumericFormat:
        """The format of the edge layers, as module overrides."""
        edge = self.edge_layer_bits
        if not edge:
            return self
        return replace(self, edge_layer_bits=0, attn_weight_bits=max(self.attn_weight_bits or self.weight_bits, edge),
                       mlp_weight_bits=max(self.mlp_weight_bits or self.weight_bits, edge),
                       hot_expert_bits=max(self.hot_expert_bits, edge) if self.hot_experts else 0)

    def stored_weight_bits(self, bits: int) -> float:
        """Bits a weight kept at `bits` holds in memory: its storage with its share of the scales, its share of
        the outliers' sparse matrix, or DFloat11's coded width for 16-bit weights."""
        if bits >= 16:
            return DFLOAT11_BITS if self.weight_coding == "dfloat11" else 16.0
        own = self if bits == self.weight_bits else self.at_bits(bits)
        return own.weight_storage_bits + self.outlier_fraction * OUTLIER_BITS

    def stored_weight_scale(self, attn_share: float = 0.0, mlp_share: float = 0.0, num_layers: int = 1,
                            expert_share: float = 0.0, router_share: float = 0.0) -> float:
        """Stored weight bytes relative to 16-bit ones, for a model whose attention and MLP weights are these
        shares of its parameters (the rest, embeddings, head and norms, kept at head_bits); `expert_share` of them
        (within the MLP's) are the routed experts, hot_experts of which are hot, and `router_share` (within the
        MLP's too) the MoE routers, at their own bits (module_bits)."""
        def scale(bits: int) -> float:
            return self.stored_weight_bits(bits) / 16.0

        def at(module: str) -> float:  # a module's scale, averaged over edge and inner layers
            return (1.0 - edge) * scale(self.module_bits(module)) + edge * scale(self.module_bits(module, edge=True))

        edge = self.edge_share(num_layers)
        other = 1.0 - attn_share - mlp_share
        hot = self.hot_experts if expert_share else 0.0
        # The hot experts' share of the parameters moves from the MLP's bits to hot_expert_bits.
        layer_scale = sum(share * at(name) for share, name in ((attn_share, "self_attn"),
                                                               (mlp_share - router_share, "mlp"),
                                                               (router_share, ROUTER_MODULE)))
        outside = other * scale(self.head_bits or self.weight_bits)
        if not hot:
            return outside + layer_scale
        return outside + layer_scale + expert_share * hot * (at("mlp" + HOT_EXPERTS_MODULE) - at("mlp"))

    def _check_math_pair(self) -> None:
        """Quantized activations meet the weights in one math dtype: integer activations take integer (or
        codebook, ternary) weights, fp4 activations fp4 weights, fp8 activations weights no wider than themselves."""
        if self.act_type == INT and (self.weight_type in FLOAT_TYPES or self.weight_type == "nf4"):
            matching = self.weight_type if self.weight_type in FLOAT_TYPES else "fp8_e4m3"
            raise ValueError(f"weight_type: found {self.weight_type!r} with integer {self.act_bits}-bit "
                             f"activations, allowed: int, lut or ternary (or act_type {matching})")
        if self.act_type in FLOAT_TYPES and self.weight_bits > self.act_bits:
            raise ValueError(f"weight_bits: found {self.weight_bits} with {self.act_type} activations, allowed: at "
                             f"most {self.act_bits} (the weights are converted to the activations' type)")
        # e2m1 holds 0, 0.5, 1, 1.5, 2, 3, 4 and 6 (and negatives): int4's 5, 7 and -8, or a codebook's entries, are
        # no fp4 values, so fp4 math takes no other weights (e4m3 holds every int4, as TensorRT-LLM's W4A8 AWQ uses).
        if self.act_type == FP4 and self.weight_type != FP4:
            others = "fp8_e4m3" if self.weight_type == "nf4" else "fp8_e4m3 / int"
            raise ValueError(f"weight_type: found {self.weight_type!r} with {FP4} activations, allowed: {FP4} "
                             f"(or act_type {others})")

    def kv_value_bits(self, head_dim: int) -> float:
        """Bits stored per KV-cache value of heads `head_dim` wide, its share of the 16-bit scales included: one scale
        per group_size values of a token's head, the last group of a head cut short where group_size does not divide
        head_dim (a group never spans two heads)."""
        if self.kv_bits >= 16:
            return 16.0
        # KV quantizers group a token's values within one head (KIVI's and KVQuant's per-token Values, QServe's
        # per-head KV4 scales): a group_size above the head's width, which weights may take, is one scale a head.
        return self.kv_bits + 16.0 * math.ceil(head_dim / self.group_size) / head_dim

    def kv_storage_bits(self, head_dim: int) -> float:
        """Bits a KV-cache element of heads `head_dim` wide takes in memory: its value with its share of the scales,
        or, pruned to kv_sparsity, its share of the bitmap layout (kernels/kv_sparsity.py)."""
        return kv_element_bits(self.kv_value_bits(head_dim), self.kv_sparsity, self.kv_bits)

    def _group_scaled_bits(self, bits: int) -> float:
        """Bits a value of `bits` bits takes with its share of one scale_type scale per group_size values."""
        return bits + SCALE_BITS[self.scale_type] / self.group_size

    @cached_property
    def weight_storage_bits(self) -> float:
        """Bits stored per weight, its share of the scales included."""
        if self.weight_bits >= 16:
            return 16.0
        if self.scale_granularity not in GROUPED:
            return float(self.weight_bits)
        if self.scale_granularity == BLOCK:  # one scale per group_size x group_size tile
            return self.weight_bits + SCALE_BITS[self.scale_type] / self.group_size**2
        bits = self._group_scaled_bits(self.weight_bits)
        if self.scale_type == SPQR:  # SpQR's fp16 second-level statistics, per scale_group_size groups (Eq. 4)
            bits += SPQR_SECOND_LEVEL_BITS / (self.group_size * self.scale_group_size)
        return bits

    @cached_property
    def weight_scale(self) -> float:
        """Weight traffic relative to 16-bit weights."""
        return self.weight_storage_bits / 16.0

    def kv_packing(self, head_dim: int) -> float:
        """A KV-cache element's bytes in memory over its value's (with its scales), heads `head_dim` wide: below 1
        where kv_sparsity packs the cache in a bitmap layout, 1 when dense."""
        return self.kv_storage_bits(head_dim) / self.kv_value_bits(head_dim)

    def kv_scale(self, head_dim: int) -> float:
        """KV-cache bytes relative to a dense 16-bit cache of heads `head_dim` wide: what its memory, its capacity,
        decode attention's reads and the cache writes all scale by."""
        return self.kv_storage_bits(head_dim) / 16.0

    @cached_property
    def act_storage_bits(self) -> float:
        """Bits a quantized activation moves, its share of the scales included: block-scaled float formats (float
        weights and activations with scales per group: MXFP4, MXFP8, NVFP4, block fp8) scale the activations in
        groups of group_size along k as they do the weights (the OCP MX v1.0 dot product takes two MX vectors; NVFP4
        scales either operand by an e4m3 per 16 values), so their scales move with them, by the rule of the weights'
        (weight_storage_bits); other quantized activations are scaled per token or per tensor (SmoothQuant, QServe),
        counted as no bytes, as per-channel weight scales are. Under 2-D weight blocks (scale_granularity block) the
        activations keep a scale per token and group_size values along k (DeepSeek-V3's per-token-per-128-channel
        quantization), so they move as under group scales."""
        if self.act_bits >= 16:
            return 16.0
        block_scaled = (self.act_type in FLOAT_TYPES and self.weight_type in FLOAT_TYPES
                        and self.scale_granularity in GROUPED)
        return self._group_scaled_bits(self.act_bits) if block_scaled else float(self.act_bits)

    @cached_property
    def act_scale(self) -> float:
        """Quantized activation traffic relative to 16-bit activations."""
        return self.act_storage_bits / 16.0

    @cached_property
    def weight_only(self) -> bool:
        """Quantized weights meeting 16-bit activations: dequantized to the activation type for 16-bit math."""
        return self.weight_bits < 16 and self.act_bits >= 16

    def gemm_dtype(self, traced_dtype: str) -> str:
        """Dtype the matrix units compute a weight GEMM in.

        Weight-only quantization (w4a16, w8a16) dequantizes to the activation type, so the math runs at
        16-bit rates. Float activations set the math (fp8, fp4; narrower weights are converted to them); with
        integer 8-bit (or narrower) activations and weights the integer path is used.
        """
        if self.act_bits >= 16 or self.weight_bits >= 16:
            return traced_dtype
        if self.act_type in FLOAT_TYPES:
            return FLOAT_TYPES[self.act_type]
        # 2- and 3-bit weights fit 4-bit integer lanes as well as 4-bit ones do.
        return "int4" if self.act_bits <= 4 and self.weight_bits <= 4 else "int8"

    @cached_property
    def block_scaled_variant(self) -> str:
        """The measured GEMM implementation a block-scaled float format runs as ('fp8/block128', 'fp4/nvfp4'), or ''
        (hw_models calibrations fit these apart: kernels/aiconfigurator_import.py)."""
        dtype = self.gemm_dtype("bf16")
        if self.scale_granularity not in GROUPED or dtype not in ("fp8", "fp4"):
            return ""
        return "fp8/block128" if dtype == "fp8" else "fp4/nvfp4"

    @cached_property
    def weight_density(self) -> float:
        """Fraction of weights kept by the sparsity pattern (1 when dense)."""
        return parse_sparsity(self.sparsity).density

    @cached_property
    def sparse_weight_scale(self) -> float:
        """Stored weight bytes of the sparse layout relative to the dense one: kept values plus their positions
        (kernels/sparsity.py)."""
        return parse_sparsity(self.sparsity).stored_scale(self.weight_storage_bits)

    @cached_property
    def label(self) -> str:
        base = f"w{self.weight_bits}a{self.act_bits}kv{self.kv_bits}"
        parts = [f"w:{self.weight_type}" if self.weight_type != INT else "",
                 f"a:{self.act_type}" if self.act_type != INT else "",
                 self.scale_granularity if self.scale_granularity != "group" else "",
                 self._scale_label,
                 self.sparsity if self.sparsity != DENSE else "",
                 f"attn{self.attn_weight_bits}" if self.attn_weight_bits else "",
                 f"mlp{self.mlp_weight_bits}" if self.mlp_weight_bits else "",
                 f"edge{self.edge_layers}x{self.edge_layer_bits}" if self.edge_layer_bits else "",
                 f"head{self.head_bits}" if self.head_bits else "",
                 f"hot{self.hot_experts:g}x{self.hot_expert_bits}" if self.hot_experts else "",
                 f"out{self.outlier_fraction:g}" if self.outlier_fraction else "",
                 self.weight_coding if self.weight_coding != "none" else "",
                 f"act{self.act_kept:g}" if self.act_kept < 1.0 else "",
                 f"kvsp{self.kv_sparsity:g}" if self.kv_sparsity else "",
                 self.act_predictor if self.act_predictor != "none" and self.act_kept < 1.0 else "",
                 f"moe:{self.moe_kernel}" if self.moe_kernel != ENGINE_MOE_KERNEL else ""]
        return "-".join([base, *(p for p in parts if p)])

    @property
    def _scale_label(self) -> str:
        """The label's scale part: the scale type and group size where the scale type is not fp16 ('e8m0/32',
        SpQR's 'spqr3/16x16' with its second-level groups); 2-D weight blocks always say it, with the block's sides
        ('fp32/128x128'), beside the granularity part 'block'."""
        if self.scale_granularity == BLOCK:
            return f"{self.scale_type}/{self.group_size}x{self.group_size}"
        if self.scale_type == "fp16":
            return ""
        return f"{self.scale_type}/{self.group_size}" + (f"x{self.scale_group_size}" if self.scale_type == SPQR else "")


_FIELDS = NumericFormat.__dataclass_fields__
# The fields NumericFormat.idle_fields may name.
IDLE_FIELDS = ("group_size", "scale_type", "scale_granularity", "scale_group_size", "edge_layers", "act_predictor",
               "moe_kernel")
# Where each of NumericFormat.idle_fields changes nothing, and where NumericFormat itself normalizes a field (a bit
# override equal to weight_bits, hot_expert_bits without hot experts), as a note says it ('group_size changes nothing
# where ...').
IDLE_WHERE = {
    "group_size": "where no tensor is scaled per group (16-bit weights or scales per channel or tensor, beside a "
                  "16-bit KV cache)",
    "scale_type": "where weights are 16-bit", "scale_granularity": "where weights are 16-bit",
    "scale_group_size": "where weights are 16-bit or scale_type is not spqr3",
    "edge_layers": "where edge_layer_bits is 0", "act_predictor": "where act_kept is 1",
    "moe_kernel": "where weights are 16-bit",
    "hot_expert_bits": "where hot_experts is 0 or the experts' own bits",
    "hot_experts": "where hot_expert_bits is the experts' own bits",
    **{name: "at weight_bits' own width (which 0, the default, gives)" for name in BIT_OVERRIDES}}


def check_group_size(fmt: NumericFormat, k_dims: dict[str, int], model: str) -> None:
    """ValueError ('group_size: found X, allowed: Y') when a group of quantized weights would straddle two rows of a
    GEMM: the group size must divide each k dimension it is smaller than (`k_dims`: GEMM name -> k)."""
    if fmt.weight_bits >= 16 or fmt.scale_granularity not in GROUPED:
        return
    bad = {name: k for name, k in k_dims.items() if fmt.group_size < k and k % fmt.group_size}
    if bad:
        ks = sorted(set(k_dims.values()))
        fits = [g for g in GROUP_SIZES if all(g >= k or k % g == 0 for k in ks)]
        shown = ", ".join(f"{name} k={k}" for name, k in bad.items())
        default = " (also the default)" if fmt.group_size == _FIELDS["group_size"].default else ""
        raise ValueError(f"group_size: found {fmt.group_size}{default}, which does not divide {model}'s {shown}; "
                         f"allowed: a divisor of every GEMM's k ({', '.join(map(str, ks))}): "
                         f"{', '.join(map(str, fits)) or 'none of ' + ', '.join(map(str, GROUP_SIZES))}, or "
                         f"scale_granularity channel")


def check_edge_layers(fmt: NumericFormat, num_layers: int, model: str) -> None:
    """ValueError ('edge_layers: found X, allowed: Y') where the first and last edge_layers decoder layers that
    edge_layer_bits keeps would overlap: a model of num_layers has at most num_layers // 2 at each end."""
    if fmt.edge_layer_bits and 2 * fmt.edge_layers > num_layers:
        raise ValueError(f"edge_layers: found {fmt.edge_layers} on {model}, which has {num_layers} decoder layers, "
                         f"allowed: 1 to {max(num_layers // 2, 1)} (edge_layers at each end keep edge_layer_bits)")


def check_hot_experts(hot_experts: float, num_experts: int, model: str) -> None:
    """ValueError ('hot_experts: found X, allowed: 0') where a format would keep a share `hot_experts` of the experts of
    a model without routed experts: a dense model has none to keep."""
    if hot_experts and not num_experts:
        raise ValueError(f"hot_experts: found {hot_experts:g} on {model}, a dense model (no routed experts), "
                         f"allowed: 0 (hot experts are a share of an MoE layer's experts)")
