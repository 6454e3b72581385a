"""Which of a table's GEMMs vLLM runs on DeepGEMM's kernels: the ones whose SMs it can limit (DeepGEMM's
set_num_sms), as its dual-batch overlap does while communication kernels hold some (sim/data_parallel.py).

vLLM runs a weight GEMM of block-scaled fp8 (DeepSeek-V3's e4m3 weights with a scale per 128 x 128 block, the
'fp8/block128' variant) on DeepGEMM's fp8_gemm_nt where is_deep_gemm_supported (a GPU of compute capability 9.0 or
10.0, DeepGEMM installed, VLLM_USE_DEEP_GEMM) and its weight's n and k are multiples of 128 (vllm-project/vllm
vllm/utils/deep_gemm.py at 00620f9: is_deep_gemm_supported, should_use_deepgemm_for_fp8_linear); its fused MoE
layers of that format run DeepGEMM's grouped GEMM beside DeepEP's high-throughput kernels
(vllm/model_executor/layers/quantization/fp8.py at 1436674: Fp8MoEMethod.select_gemm_impl returns
TritonOrDeepGemmExperts). Other GEMMs (16-bit, per-tensor fp8, fp4) run on cuBLAS, CUTLASS or Triton, whose SMs vLLM
does not limit.
"""

from __future__ import annotations

import numpy as np

from kernels.formats import BLOCK
from kernels.table import KernelTable

# The weight GEMM variant DeepGEMM runs (kernels/formats.py NumericFormat.block_scaled_variant).
DEEP_GEMM_VARIANT = "fp8/block128"
# Compute capabilities is_deep_gemm_supported accepts (is_device_capability(90) or (100)).
DEEP_GEMM_CAPABILITIES = (9.0, 10.0)
# The multiple a weight's n and k must be for should_use_deepgemm_for_fp8_linear.
DEEP_GEMM_ALIGNMENT = 128


def runs_deep_gemm(compute_capability: float | None) -> bool:
    """Whether vLLM runs DeepGEMM on a GPU of this compute capability (None: unknown, taken as not)."""
    return compute_capability is not None and float(compute_capability) in DEEP_GEMM_CAPABILITIES


def deep_gemm_rows(table: KernelTable, plans: list) -> np.ndarray | None:
    """The rows of `table` that run on DeepGEMM's kernels (None: none): the weight GEMMs and fused MoE layers of a
    plan (GPUModel.row_plans: (QuantPlan, rows)) that runs fp8 scaled per 128 x 128 block (scale_granularity block)
    on the fp8 tensor cores, their n and k multiples of DEEP_GEMM_ALIGNMENT. The caller checks the GPU
    (runs_deep_gemm)."""
    fmt = table.numeric_format
    if fmt is None or fmt.scale_granularity != BLOCK:
        return None
    own = [rows for plan, rows in plans
           if plan.variant == DEEP_GEMM_VARIANT and plan.math_dtype == "fp8" and not plan.mixed_input]
    if not own:
        return None
    aligned = (np.mod(table.n, DEEP_GEMM_ALIGNMENT) == 0) & (np.mod(table.k, DEEP_GEMM_ALIGNMENT) == 0)
    rows = np.logical_or.reduce(own) & aligned
    return rows if rows.any() else None
