"""How a GPU runs the GEMMs of a numeric format: the tensor-core dtype, whether the chip has it, and the work its
CUDA cores add to turn stored weights into what the tensor cores take.

The model, per GEMM with quantized weights (kernels/formats.py):

- Native low-precision math. fp8 weights and activations run at the preset's fp8 rate, fp4 (NVFP4, MXFP4) at its
  fp4 rate, int8/int4 at the integer rates; block scales are applied by the tensor cores (Blackwell's block-scaled
  MMA) or in the epilogue, so the CUDA cores add nothing. A calibrated preset prices them on its fit of that
  dtype, and a block-scaled float format on the fit of the block-scaled implementation where one was measured
  ('fp8/block128', 'fp4/nvfp4': aiconfigurator's tables, hw_models/calibration.py). 'fp8/block128' is vLLM's fp8 GEMM
  on 128 x 128 weight blocks with fp32 scales, DeepSeek-V3's format (scale_type fp32, scale_granularity block); fp8
  formats with other group scales run on its fit too.
- A float dtype the preset has no rate for (fp8 on an A100, fp4 on an A100, H100, H200 or L40S) runs as engines run
  it there: weight-only, the activations kept 16-bit and the weights dequantized as the weight-only format's are, at
  the 16-bit rate (_weight_only_fallback, vLLM's Marlin kernels; the plan's math_dtype, which GPUModel prices its
  rows at). An integer dtype it has no rate for (int4 on an H100) is emulated: it runs at the next wider dtype it has
  (hw_models/spec_common.DTYPE_FALLBACK), and the CUDA cores convert both operands to it, each weight element once
  per M-tile pass and each activation element once per N-tile pass (no engine was found that runs int4 W4A4
  otherwise there). quant_plan says which in its notice (`explore run` prints it).
- Weight-only formats (W8A16, W4A16, W3A16, fp8 or fp4 weights with 16-bit activations): the math runs at the
  16-bit rate, the weights move at their stored bits (scales included, KernelTable.with_format) and the CUDA cores
  dequantize every weight element once per M-tile pass.
- W4A8 runs int8 math on 4-bit weights; with two-level scales (QServe) the int4 -> int8 step is QServe's cheaper
  one.
- Weights narrower than fp8 activations (int4 or fp4 e2m1) are converted to fp8 on the CUDA cores (the plan's notice
  says so), except MXFP4 weights (e2m1, an e8m0 scale per 32) on a GPU with fp4 tensor cores: Blackwell's
  block-scaled MMA of kind mxf8f6f4 takes them beside MXFP8 activations as they are (hw_models/gpu_moe.py), at the
  fp8 rate, and its fused MoE layers take the fit of the measured MXFP4 x MXFP8 MoE kernel ('fp8/w4fp4'); its other
  GEMMs, measured nowhere as W4A8, take the fit of the block-scaled fp8 GEMMs MXFP8 runs on ('fp8/block128', the
  plan's gemm_variant): the same block-scaled MMA with 8-bit weights.

Dequantization work, in 32-bit lane instructions per weight element (counted from the kernels' code):
- int8 -> fp16: 1.0 (two prmt.b32 and two sub.f16x2 per four values: FasterTransformer's / TensorRT-LLM's
  FastInterleavedAndBiasedNumericArrayConverter<half_t, uint8_t, 4>, as vendored in PyTorch
  aten/src/ATen/native/cuda/cutlass_extensions/interleaved_numeric_conversion.h);
- int4 (and 2-bit, which tiles a 32-bit register the same way) -> fp16: 1.125 (one shift, four lop3.b32, two
  sub.f16x2 and two fma.f16x2 per eight values: the <half_t, uint4b_t, 8> converter of the same file);
- 3, 5 and 6 bits, stored as a 2- or 4-bit plane plus a plane of the high bits (llama.cpp's K-quants): 1.625 (the
  low plane as above, and one lop3 per pair to merge the high bits);
- float elements take vLLM's Marlin sequences instead (csrc/quantization/marlin/dequant.h, dequant<half2, kFE4M3fn>
  and dequant<half2, kFE2M1f>, called per 32-bit word by csrc/moe/marlin_moe_wna16/marlin_template.h's matmul): each
  half2 of fp8 or fp4 values is the sign masked in beside the exponent and mantissa masked and shifted down (an and, a
  shift and a lop3), and a shift brings the next values up: fp8 (four values a word) 2 x 3 + 1 = 7 per four, 1.75;
  fp4 (eight a word) two such calls of 7 and one shift between them, 15 per eight, 1.875 (the int4 sequence's 9 plus
  6); the exponent is then rebiased by one f16x2 multiply per pair, 0.5, which Marlin skips (dequant_skip_flop: the
  constant folded into the scales) for fp8 e4m3 weights and for fp4 weights with e4m3 scales (NVFP4) but keeps for
  fp4 with e8m0 scales (MXFP4): with a scale, fp8 2.25, NVFP4 2.375, MXFP4 2.875. vLLM has no e5m2 Marlin path:
  fp8_e5m2 is counted as e4m3. fp4 weights converted to fp8 for fp8 math (below) take Marlin's own fp4 -> e4m3
  sequence (dequant<__nv_fp8x4_e4m3, kFE2M1f, true>: per word of eight values the sign masked in beside the exponent
  and mantissa masked and shifted down, twice, with a shift between: 7 per eight, 0.875) and never the rebias (its
  8-bit-activation path folds it into the scales: dequant_skip_flop = is_a_8bit || ...), with a scale 1.375 for
  MXFP4; other weights converted to fp8 (int4) take the 16-bit counts;
- codebook elements (nf4, and lut with quantized activations) add 1.0 to the index extraction: one shared-memory
  lookup per weight ("a lookup per weight": SqueezeLLM, Kim et al., ICML 2024, Section 5; LUT-GEMM, Park et al.,
  ICLR 2024); weight-only lut runs SqueezeLLM's own GEMV, counted below;
- scales add 0.5 (one mul/fma.f16x2 per pair: TensorRT-LLM's fpA_intB dequantizer scales every element; per-tensor
  scales are folded into the epilogue, and SqueezeLLM's per-channel codebooks hold the 16-bit values: 0);
- SpQR's bilevel statistics (scale_type spqr3): the weight-only path above (its integer width's unpack and a scale)
  plus, per group of group_size weights, SPQR_GROUP_OPS = 28 to turn the group's 3-bit scale and zero into fp16
  ones, counted from SpQR's kernel (Vahe1994/SpQR inference_lib/src/spqr_quant/inference_kernels/
  spqr_cuda_kernel.cu, spqr_quantized_matvec_fused: one thread per 64-bit word holding a group's 3-bit scale and
  zero, its 16 weights and an 8-bit slice of the tile's second-level statistics): the slice shifted out and into
  place (1 + 5: a 64-bit shift by a lane-dependent amount), the tile's statistics gathered by three 64-bit
  shuffle-ors over the warp (recover_second_order_sync: 12), the scale and zero extracted (1) and converted to
  half2 (INT2_TO_HALF2: two masks, two int-to-half conversions, a pack, 5), dequantized with the second-level
  statistics (dequantize2: a subtract and a multiply, 2) and broadcast to both halves (2). That kernel is a
  matvec whose per-weight work (3-bit fields taken with shifts and int-to-half conversions, fp32 FMAs on the CUDA
  cores) is repeated for every token of a batch (QuantizedLinear.forward: "The kernel currently only supports
  matvec"); the format is priced here as a Marlin-style mixed-input kernel runs it, dequantized once per M-tile
  pass, which SpQR's own kernel does not do.
- QServe's W4A8 kernels (mit-han-lab/qserve kernels/csrc/qgemm/w4a8_per_chn and w4a8_per_group, gemm_cuda.cu,
  share_to_reg_one_stage_B), counted per 32-bit word of eight 4-bit weights. With per-channel (or per-tensor)
  scales a mask and a masked shift place them in two registers of four int8 lanes: 3/8 a weight
  (W4A8_CHANNEL_OPS); the scale and the zero point wait for the epilogue (the int32 sums times the weight and
  activation scales, minus the zero times the activation row's sum), since the int8 tensor cores take no scale.
  With two-level group scales (QServe's progressive quantization) each register is also multiplied by the group's
  8-bit scale and gets its zero point added with one __vadd4 ("subtraction after multiplication", 4 more a word),
  and each thread's 32 weights cost 7 instructions to extract four scales and 4 byte permutes to broadcast four
  zeros: (12 + 8 + 8 + 11) / 32 a weight (W4A8_TWO_LEVEL_OPS; the paper's own count, Lin et al., "QServe", MLSys
  2025, Section 5.2, leaves out the scale extraction: 7/8). __vadd4 is counted as one instruction, as the paper
  counts it; where a GPU has no per-byte add and the compiler builds it from logic ops and an add, the count is a
  lower bound. Each warp unpacks the weight fragment it multiplies,
  so a weight is unpacked once per warp row of the grid, ceil(m / block rows) x block rows / warp rows, on the
  kernels' tiles by m (gemm_w4a8_per_chn: above 256 rows blocks of 128 rows with warps of 64, from 128 to 256
  blocks of 64 with warps of 32, below 128 both 32; gemm_w4a8_per_group: above 128 rows 128 and 64, else 32-row
  warps). Other W4A8 pays the int4 unpack and a scale, 1.625, on Marlin's tiles.

An M-tile pass is 64 output rows: Marlin's thread blocks hold at most 4 x 16 rows of the output per pass over their
weight tile and split larger batches into 64-row problems (Frantar et al., "MARLIN", PPoPP 2025, Section 4), so
a weight is dequantized ceil(m / 64) times; activations are converted once per 128 output columns (CUTLASS's
128-wide tiles, gpu_efficiency.TILE_SHAPES). The instructions issue at half the fp32 vector peak (a datasheet FP32
TFLOP/s counts an FMA as two FLOPs; the CUDA C++ Programming Guide's throughput table gives 64 results per clock
per SM for 32-bit FMA and for 32-bit logic operations on compute capability 8.0; on 9.0 fp32 issues at 128 and
logic at 64, so the rate is optimistic there by up to 2x for integer-heavy sequences). The dequantization time
adds to the tensor-core time before it is blended with memory time: QServe measures this main-loop overhead
at 20-90% of the GEMM for kernels that do not hide it (Section 3.2, Figure 5).

A mixed format (kernels/formats.py: attention, MLP or edge layers at more bits) is planned per weight width: each
width's GEMMs run as the uniform format of that width (GPUModel.row_plans), a width at 16 bits unquantized.
Outliers kept apart in a sparse matrix and DFloat11's decompression are kernels of their own
(kernels/format_kernels.py): the outliers' product priced as a streaming kernel, the decompression at the larger of
its bytes and its Huffman decoding on the CUDA cores (vector FLOPs at the FP32 rate).

SqueezeLLM's per-channel codebook weights (weight_type lut) run its own kernel, a GEMV on the CUDA cores
(squeezellm/quant_cuda_kernel.cu, VecQuant3MatMulKernelNUQPerChannel and its 4-bit twin: one thread per output
column walks 128 rows of k, the column's 2^bits fp32 codebook entries and the block's activations in shared
memory). Per weight and token it issues LUT_GEMV_OPS lane instructions: a shift and a mask extract the index, an
address into the codebook, two shared-memory loads (the entry and the activation) and an FMA, 6 (the 3-bit index
straddling two words every 11 values adds ~0.1, not counted). Its batched form (VecQuant3MatMulKernelNUQPerChannel-
Batched) loops over the tokens and redoes all of it for each, so the work is paid once per token (TOKEN_PASSES),
not once per M-tile: memory-bound at batch 1 (on an RTX A6000 Llama-2-7B's 6.6e9 GEMM weights take 2.0 ms of
instructions against 3.2 ms of 3-bit traffic), CUDA-core-bound from a few tokens on. Its FMAs are still counted as
tensor-core math too, 2 FLOPs a weight and token at the 16-bit tensor rate, a twentieth of their CUDA-core time or less.
A GEMM of many tokens is not run that way by an engine: SqueezeLLM's own QuantLinearLUT.forward does call the
batched GEMV for any number of tokens (squeezellm/quant.py), but engines that serve codebook weights dequantize them
past a few tokens and run the 16-bit GEMM, vLLM's AQLM layer from 7 tokens on ("thresholds determined by timings on
an A6000": vllm/model_executor/layers/quantization/aqlm.py, use_gemv, else optimized_dequantize_gemm: aqlm_dequant
then F.linear) and bitsandbytes' NF4 for more than one (bitsandbytes/autograd/_functions.py, MatMul4Bit.forward:
dequantize_4bit then linear). The plan carries that path (QuantPlan.apart_ops: the index extraction and lookup of
unpack_ops, once per weight, in a kernel that reads the stored weights and writes them at 16 bits) and the GPU
model runs each GEMM the faster way (GPUModel._cost_table): the GEMV at one token, the dequantized GEMM from a few on.

Fused MoE layers of a weight-only format pay the same dequantization, each touched expert's weights once per
M-tile pass of its rows, in series with the grouped GEMMs' math (hw_models/gpu_moe.py moe_times). Their MoE fit is
the one of the measured weight-only MoE layers of that element type and width on the kernel vLLM runs a point's
experts on (the plan's variant, gpu_moe.quantized_weight_key and engine_moe_kernel, by the GPU's compute capability
or the format's moe_kernel): Marlin's MoE for int4 and for fp4 run weight-only (aiconfigurator's Marlin int4 and
MXFP4 MoE layers on H200, L40S and B200), OpenAI's Triton or TensorRT-LLM's MoE for MXFP4 experts on Hopper or
Blackwell; else the 16-bit one. Marlin issues the sm_80 mma.sync on
every GPU, and Hopper and Blackwell reach the tensor-core peak the 16-bit fit was measured at only through wgmma /
tcgen05: no published rate of mma.sync on those GPUs was found, and the weight-only fit's achieved fraction of the
16-bit peak is the measured rate (tests/hw_models/test_moe_weight_only.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from hw_models.gpu_moe import engine_moe_kernel, quantized_weight_key
from hw_models.spec_common import fallback_dtype
from kernels.formats import CODEBOOK_TYPES, ENGINE_MOE_KERNEL, FLOAT_TYPES, INT, SPQR, NumericFormat

# Lane instructions per element to turn stored values into 16-bit (or 8-bit) math operands; see the docstring.
UNPACK_OPS = {8: 1.0, 4: 9 / 8, 2: 9 / 8}
# 3, 5 and 6 bits are stored as a 2- or 4-bit plane and a plane of the high bits (llama.cpp's Q3_K, Q5_K, Q6_K
# blocks: ggml-common.h block_q3_K hmask, block_q5_K qh, block_q6_K qh): the low plane converts as above and one
# lop3 per pair merges the high bits into the 16-bit pattern before the magic-number subtraction.
UNALIGNED_UNPACK_OPS = 9 / 8 + 0.5
# Float elements placed in 16-bit registers by Marlin's sequences, per value (see the docstring): fp8 7 per four, fp4
# 15 per eight; the exponent rebias, one multiply per pair, where Marlin does not fold it into the scales.
FLOAT_UNPACK_OPS = {"fp8_e4m3": 7 / 4, "fp8_e5m2": 7 / 4, "fp4_e2m1": 15 / 8}
# Float elements Marlin places in fp8 registers for fp8 math, per value, with no rebias (see the docstring).
FP8_UNPACK_OPS = {"fp4_e2m1": 7 / 8}
FLOAT_REBIAS_OPS = 0.5
# vLLM marlin_template.h: dequant_skip_flop = w_type == kFE4M3fn || w_type == kFE2M1f && s_type == kFE4M3fn.
REBIAS_FOLDED = {"fp8_e4m3": None, "fp8_e5m2": None, "fp4_e2m1": ("e4m3",)}  # None: folded under any scale type
LOOKUP_OPS = 1.0
SCALE_OPS = 0.5
# SpQR's second-level statistics: lane instructions per group of group_size weights (see the docstring).
SPQR_GROUP_OPS = 1 + 5 + 12 + 1 + 5 + 2 + 2
# QServe's W4A8 main loops: lane instructions per weight per warp pass (see the docstring).
W4A8_CHANNEL_OPS = 3 / 8
W4A8_TWO_LEVEL_OPS = (12 + 8 + 8 + 7 + 4) / 32
# SqueezeLLM's CUDA-core LUT GEMV: lane instructions per weight and token (see the docstring).
LUT_GEMV_OPS = 6.0
# Output rows per pass over a weight tile (Marlin) and output columns per pass over an activation tile (CUTLASS).
M_TILE_ROWS = 64
N_TILE_COLUMNS = 128
# Thread-block tiles (rows x columns of C) of mixed-input (16-bit x quantized) kernels: Marlin's 1-4 blocks of 16
# rows by 128 or 256 columns (thread_m_blocks, thread_n; Frantar et al., Section 4), so a decode GEMM pads its rows
# to 16, not to the 64 of cuBLAS's smallest tensor-core tile.
MIXED_INPUT_TILES = np.array([(rows, cols) for rows in (16, 32, 48, 64) for cols in (128, 256)], dtype=float)


@dataclass(frozen=True)
class PassTile:
    """A kernel's tile for GEMMs of up to max_m rows: the output rows one thread block holds and the rows one
    pass of unpacked weights serves (a warp's rows, where each warp unpacks the fragment it multiplies)."""

    max_m: float
    block_rows: int
    pass_rows: int

    def passes(self, m):
        """Times each weight is unpacked for m rows: once per pass_rows of the blocks' padded rows."""
        return np.ceil(m / self.block_rows) * (self.block_rows / self.pass_rows)


MARLIN_PASSES = (PassTile(math.inf, M_TILE_ROWS, M_TILE_ROWS),)
TOKEN_PASSES = (PassTile(math.inf, 1, 1),)  # SqueezeLLM's GEMV redoes its work for every token
# QServe's launch tiles by m (gemm_w4a8_per_chn and gemm_w4a8_per_group in gemm_cuda.cu; see the docstring).
QSERVE_CHANNEL_PASSES = (PassTile(127, 32, 32), PassTile(256, 64, 32), PassTile(math.inf, 128, 64))
QSERVE_GROUP_PASSES = (PassTile(127, 32, 32), PassTile(128, 64, 32), PassTile(math.inf, 128, 64))


def weight_passes(tiles: tuple[PassTile, ...], m) -> np.ndarray:
    """Times each weight is unpacked by a GEMM of m rows: once per pass_rows of its blocks' padded rows."""
    m = np.maximum(np.asarray(m, dtype=float), 1.0)
    if len(tiles) == 1:  # one tile for every m (Marlin's, a GEMV's: max_m infinite): no tiers to select
        return tiles[0].passes(m)
    passes, below = np.zeros(m.shape), -math.inf
    for tile in tiles:
        passes = np.where((m > below) & (m <= tile.max_m), tile.passes(m), passes)
        below = tile.max_m
    return passes


@dataclass(frozen=True)
class QuantPlan:
    """How one GPU runs a format's weight GEMMs."""

    dtype: str  # the format's GEMM dtype (kernels/formats.NumericFormat.gemm_dtype)
    math_dtype: str  # the tensor-core dtype it runs in on this GPU, whose peak rate prices its rows (GPUModel)
    weight_ops: float  # lane instructions per weight element per pass (0: the tensor cores take the weights)
    act_ops: float  # lane instructions per activation element per N-tile pass (emulated math only)
    variant: str  # calibration variant that prices it ('fp8/block128', 'fp4/nvfp4', 'bf16/w4int', 'fp8/w4fp4') or ''
    notice: str  # what a user should know ('' when the GPU runs the format as it is)
    mixed_input: bool = False  # 16-bit activations, read at 16 bits, times quantized weights: MIXED_INPUT_TILES
    passes: tuple[PassTile, ...] = MARLIN_PASSES  # how many times a GEMM of m rows unpacks each weight
    gemm_variant: str = ""  # variant of its GEMMs where no GEMM fit has `variant` ('': as variant)
    # The engine's other path, taken per GEMM where it is faster (GPUModel): a kernel of its own that writes the
    # weights at 16 bits, apart_ops lane instructions a weight, then the 16-bit GEMM on them (0: no other path);
    # its fused MoE layers take it too unless moe_apart is False (they run their MoE kernel at every size).
    apart_ops: float = 0.0
    moe_apart: bool = True

    @property
    def emulated(self) -> bool:
        return self.math_dtype != self.dtype

    @property
    def adds_work(self) -> bool:
        return self.weight_ops > 0 or self.act_ops > 0


def unpack_ops(bits: int, element_type: str, scale_type: str = "fp16", into: str = "") -> float:
    """Lane instructions per element to place a stored value in a 16-bit register, or in an fp8 one where `into` is
    'fp8' and Marlin has a sequence for it (FP8_UNPACK_OPS; index extraction for codebooks); a float element's exponent
    rebias counts unless its scales (`scale_type`) take it (REBIAS_FOLDED)."""
    if into == "fp8" and element_type in FP8_UNPACK_OPS:
        return FP8_UNPACK_OPS[element_type]
    if element_type in FLOAT_TYPES:
        folded = REBIAS_FOLDED[element_type]
        rebias = 0.0 if folded is None or scale_type in folded else FLOAT_REBIAS_OPS
        return FLOAT_UNPACK_OPS[element_type] + rebias
    ops = UNPACK_OPS.get(bits, UNALIGNED_UNPACK_OPS)
    if element_type in CODEBOOK_TYPES:
        ops += LOOKUP_OPS
    return ops


def _scale_ops(fmt: NumericFormat) -> float:
    """Scale work per element: none for per-tensor scales (the epilogue applies them) and for SqueezeLLM's codebooks,
    whose entries are the 16-bit values themselves."""
    if fmt.scale_granularity == "tensor" or fmt.weight_type == "lut":
        return 0.0
    # SpQR dequantizes each group's 3-bit scale and zero with its second-level statistics first.
    return SCALE_OPS + (SPQR_GROUP_OPS / fmt.group_size if fmt.scale_type == SPQR else 0.0)


def quant_plan(fmt: NumericFormat | None, peak_TFLOPS, gpu: str, traced_dtype: str = "bf16",
               compute_capability: float | None = None) -> QuantPlan | None:
    """The plan for a format's weight GEMMs on a GPU with these peak rates and this compute capability (which picks
    the engine's MoE kernel, gpu_moe.engine_moe_kernel); None when the weights are 16-bit."""
    if fmt is None or fmt.weight_bits >= 16:
        return None
    dtype = fmt.gemm_dtype(traced_dtype)
    if fmt.weight_only and fmt.weight_type == "lut":  # SqueezeLLM's GEMV (its work once per token), or dequantized
        return QuantPlan(dtype=dtype, math_dtype=dtype, weight_ops=LUT_GEMV_OPS, act_ops=0.0, variant="", notice="",
                         mixed_input=True, passes=TOKEN_PASSES,
                         apart_ops=unpack_ops(fmt.weight_bits, fmt.weight_type, fmt.scale_type) + _scale_ops(fmt))
    if fmt.weight_only:
        ops = unpack_ops(fmt.weight_bits, fmt.weight_type, fmt.scale_type) + _scale_ops(fmt)
        # Its fused MoE layers take the fit of the measured weight-only MoE kernel they run where one exists
        # (gpu_moe.py). An engine may also dequantize the weights apart and run the 16-bit GEMM (vLLM's AWQ layer
        # from 256 tokens, vllm/model_executor/layers/quantization/awq.py FP16_MATMUL_HEURISTIC_CONDITION), but its
        # experts run their MoE kernel at every size: vLLM's MoE methods for int, fp8 and fp4 weights have no
        # token-count branch to 16 bits (Mxfp4MoEMethod in mxfp4.py at 007d50058a06; AWQMoEMethod, awq_marlin.py at
        # 0322f292b76d; GPTQMarlinMoEMethod, gptq_marlin.py at 00161ce01fe6; CompressedTensorsWNA16MoEMethod at
        # 0072125a5057; ModelOptNvFp4FusedMoE, modelopt.py at 00155cdecca7; Fp8MoEMethod, Marlin's fp8 MoE below
        # compute capability 8.9, fp8.py at 0071b24bf8fe). nf4 experts keep the faster of the two: vLLM's
        # BitsAndBytesMoEMethod dequantizes them, then runs the 16-bit MoE.
        kernel = engine_moe_kernel(dtype, mxfp4=fmt.mxfp4_weights, chosen=fmt.moe_kernel,
                                   compute_capability=compute_capability)
        return QuantPlan(dtype=dtype, math_dtype=dtype, weight_ops=ops, act_ops=0.0,
                         variant=quantized_weight_key(fmt.weight_bits, fmt.weight_type, dtype, kernel), notice="",
                         mixed_input=True, apart_ops=ops, moe_apart=fmt.weight_type in CODEBOOK_TYPES)
    math = fallback_dtype(peak_TFLOPS, dtype, default=())
    if math == dtype:
        notice = ""
        mx_fp4 = _mx_fp4_weights_on_fp8(fmt, dtype)
        if dtype == "int8" and fmt.weight_bits < 8:  # W4A8: the int4 weights are widened to int8 lanes
            qserve = _qserve_kernel(fmt)
            if qserve is not None:
                ops, passes = qserve
                return QuantPlan(dtype=dtype, math_dtype=dtype, weight_ops=ops, act_ops=0.0, variant="", notice="",
                                 passes=passes)
            ops = unpack_ops(fmt.weight_bits, fmt.weight_type, fmt.scale_type) + _scale_ops(fmt)
        elif mx_fp4 and "fp4" in peak_TFLOPS:  # Blackwell's mxf8f6f4 MMA takes them
            kernel = engine_moe_kernel(dtype, mxfp4=True, chosen=fmt.moe_kernel, compute_capability=compute_capability)
            return QuantPlan(dtype=dtype, math_dtype=dtype, weight_ops=0.0, act_ops=0.0, notice="",
                             variant=quantized_weight_key(fmt.weight_bits, fmt.weight_type, dtype, kernel),
                             gemm_variant=fmt.block_scaled_variant)
        elif dtype in FLOAT_TYPES.values() and FLOAT_TYPES.get(fmt.weight_type) != dtype:
            # e.g. int4 weights, fp8 math; fp8 weights of either element type meet fp8 activations as they are (the
            # fp8 MMAs take e4m3 and e5m2 operands in every pairing: CUTLASS cute/arch/mma_sm89.hpp, SM89_16x8x32_*)
            ops = unpack_ops(fmt.weight_bits, fmt.weight_type, fmt.scale_type, into=dtype) + _scale_ops(fmt)
            notice = (f"{fmt.weight_type} weights converted to {dtype} on {gpu}'s CUDA cores ({ops:g} instructions "
                      f"per weight and pass) for {dtype} math" + (
                          ": no fp4 tensor cores to take them beside fp8 activations (Blackwell's block-scaled MMA "
                          "does)" if mx_fp4 else ""))
        else:
            ops = 0.0
        return QuantPlan(dtype=dtype, math_dtype=dtype, weight_ops=ops, act_ops=0.0,
                         variant=fmt.block_scaled_variant if ops == 0.0 else "", notice=notice)
    if dtype in FLOAT_TYPES.values():
        return _weight_only_fallback(fmt, dtype, peak_TFLOPS, gpu, traced_dtype)
    weight_ops = unpack_ops(fmt.weight_bits, fmt.weight_type, fmt.scale_type) + _scale_ops(fmt)
    act_ops = unpack_ops(fmt.act_bits, fmt.act_type if fmt.act_type != INT else INT)
    notice = (f"{dtype} GEMMs emulated on {gpu}: no {dtype} tensor cores, so weights and activations are converted "
              f"to {math} on the CUDA cores ({weight_ops:g} and {act_ops:g} instructions per element and pass) and "
              f"the math runs at the {math} rate")
    return QuantPlan(dtype=dtype, math_dtype=math, weight_ops=weight_ops, act_ops=act_ops, variant="", notice=notice)


def _weight_only_fallback(fmt: NumericFormat, dtype: str, peak_TFLOPS, gpu: str, traced_dtype: str) -> QuantPlan:
    """A float format (fp8, fp4) on a GPU without that dtype's tensor cores, as engines run it: the activations stay
    16-bit and the weights go through the weight-only format's kernel (the W8A16 or W4A16 plan, its 16-bit math and
    rate), where emulating the format would also convert every activation. vLLM runs fp8 checkpoints on Turing and
    Ampere "as weight-only W8A16, utilizing FP8 Marlin" (docs/features/quantization/fp8.md) and fp4 ones on GPUs
    without fp4 tensor cores, Hopper and Ada included, as "Weight-only FP4 compression ... leveraging the Marlin
    kernel" (model_executor/layers/quantization/utils/marlin_utils_fp4.py). Its GEMMs read their input at 16 bits,
    not at the format's act_bits (a mixed_input plan: GPUModel prices its rows' tables with_16bit_inputs), as
    apply_fp4_marlin_linear and apply_fp8_marlin_linear pass the 16-bit input to the Marlin GEMM."""
    # Such a checkpoint is no gpt-oss one: its experts run Marlin's MoE unless a point names another kernel.
    kernel = "marlin" if fmt.moe_kernel == ENGINE_MOE_KERNEL else fmt.moe_kernel
    weight_only = quant_plan(replace(fmt, act_bits=16, act_type=INT, moe_kernel=kernel), peak_TFLOPS, gpu,
                             traced_dtype)
    # A GPU without bf16 tensor cores (Turing, Volta) runs the 16-bit math in fp16, as engines load models there.
    math = fallback_dtype(peak_TFLOPS, weight_only.math_dtype)
    notice = (f"{dtype} GEMMs run weight-only on {gpu}: no {dtype} tensor cores, so the activations stay 16-bit and "
              f"the {fmt.weight_type} weights are dequantized on the CUDA cores ({weight_only.weight_ops:g} "
              f"instructions per weight and pass) for {math} math, as vLLM's Marlin kernels run such checkpoints")
    return replace(weight_only, dtype=dtype, math_dtype=math, notice=notice)


def _qserve_kernel(fmt: NumericFormat) -> tuple[float, tuple[PassTile, ...]] | None:
    """(instructions per weight and pass, tiles) of the QServe kernel that runs a W4A8 integer format, or None."""
    if fmt.weight_bits != 4 or fmt.weight_type != INT:
        return None
    if fmt.scale_type == "two_level":
        return W4A8_TWO_LEVEL_OPS, QSERVE_GROUP_PASSES
    if fmt.scale_granularity in ("channel", "tensor"):
        return W4A8_CHANNEL_OPS, QSERVE_CHANNEL_PASSES
    return None


def _mx_fp4_weights_on_fp8(fmt: NumericFormat, dtype: str) -> bool:
    """MXFP4 weights (e2m1 with an e8m0 scale per 32, OCP MX v1.0 Table 1) under fp8 math: the operand pair the
    block-scaled MMA of kind mxf8f6f4 multiplies (hw_models/gpu_moe.py)."""
    return dtype == "fp8" and fmt.mxfp4_weights


def dequant_ops(plan: QuantPlan, *, m, n, k, batch, quantized) -> np.ndarray:
    """Lane instructions of each GEMM row (zero where `quantized` is false): weight elements per pass of the
    plan's tiles (weight_passes) plus, for emulated math, activation elements per N-tile pass."""
    m, n, k = (np.maximum(np.asarray(x, dtype=float), 0.0) for x in (m, n, k))
    batch = np.maximum(np.asarray(batch, dtype=float), 1.0)
    weights = plan.weight_ops * k * n * batch * weight_passes(plan.passes, m)
    acts = plan.act_ops * m * k * batch * np.ceil(np.maximum(n, 1.0) / N_TILE_COLUMNS)
    return np.where(quantized, weights + acts, 0.0)


def lane_ops_per_s(vector_flops_per_s):
    """Lane instructions per second of the CUDA cores: half the fp32 vector peak (an FMA counts two FLOPs)."""
    return vector_flops_per_s / 2.0
