"""Flash-LLM against its paper: unstructured sparsity loaded sparse and computed dense on an A100.

Claim: Flash-LLM's SpMM kernel beats the dense cuBLAS GEMM on the skinny (decode) GEMMs of large models at 70-90%
unstructured sparsity, "by up to 2.1X" (Xia et al., "Flash-LLM", VLDB 2024, arXiv 2309.10285, kernel benchmark on an
A100 at N = 8, 16, 32 tokens; the 2.1x is the authors' own summary of that figure, FSA lab post "Flash-LLM: Enabling
Cost-Effective and Highly-Efficient Large Generative Model Inference with Unstructured Sparsity", 2023). The figure's
per-shape values were not readable here, so the check is bounded by the published maximum: at each sparsity every
skinny GEMM of OPT-66B and OPT-175B (the models the paper prunes) must be faster than dense (the paper's conclusion),
and the fastest no more than 2.1x + 35% (the tolerance of the project's other paper checks).

Ours is the calibrated A100 with the weights moved in Tiled-CSL (kernels/sparsity.py: 32 bits per nonzero) and the
math left dense. At 70% and 80% sparsity it lands inside (1.40-1.54x, 1.71-2.07x); at 90% the weight traffic is a
fifth of dense and the largest GEMMs reach 3.0x, beyond the paper's 2.1x: a strict xfail naming the gap.
"""

from __future__ import annotations

import pytest

from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable

# (output features, input features) of the linear layers of OPT-66B (hidden 9,216) and OPT-175B (hidden 12,288): QKV,
# attention output, FFN up and down (HF configs facebook/opt-66b and opt-175b: ffn_dim = 4 x hidden).
SHAPES = [(3 * 9216, 9216), (9216, 9216), (4 * 9216, 9216), (9216, 4 * 9216),
          (3 * 12288, 12288), (12288, 12288), (4 * 12288, 12288), (12288, 4 * 12288)]
TOKENS = (8, 16, 32)  # the paper's skinny N
PAPER_MAX = 2.1
TOLERANCE = 0.35


def _speedups(sparsity: float):
    kernels = [Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * t * n * k, weight_bytes=2.0 * n * k,
                      act_bytes=2.0 * t * (n + k), kv_bytes=0.0, dtype="fp16", tensor_core=True, m=t, n=n, k=k,
                      batch=1) for t in TOKENS for n, k in SHAPES]
    table = KernelTable.from_kernels(kernels)
    gpu = load_device("a100-sxm-80gb")
    dense = gpu.cost_table(table.with_format(NumericFormat()), "device").time_s
    sparse = gpu.cost_table(table.with_format(NumericFormat(sparsity=f"unstructured:{sparsity}")), "device").time_s
    return dense / sparse


@pytest.mark.parametrize("sparsity", [
    0.7, 0.8,
    pytest.param(0.9, marks=pytest.mark.xfail(strict=True, reason=(
        "at 90% sparsity our A100 moves a fifth of the dense bytes and the largest skinny GEMMs speed up 3.0x, "
        "beyond Flash-LLM's published 2.1x (+35%). What the kernel's code shows capping it is shared memory, which "
        "no GPU term prices: each K step zero-fills the whole dense 256 x 64 A tile (csrc/SpMM_Kernel.cuh "
        "SpMM_InitSharedMemory, cp.async zfill), scatters the nonzeros into it with one 16-bit store each "
        "(SpMM_DecompressFromRegisterToShared) and reads it back densely for the tensor cores, about 2 + 2 + 4 x 0.1 "
        "= 4.4 bytes of bank traffic per dense weight whatever the sparsity. At 32 banks x 4 B a clock per SM (CUDA "
        "C++ Programming Guide, shared memory) an A100 moves 108 x 128 B x 1.41 GHz = 19.5 TB/s there, 0.226 ps a "
        "weight, above the 0.4 B / 2,039 GB/s = 0.196 ps of its DRAM traffic (at 70-80% the DRAM time is the "
        "larger); by hand that caps the gain near 2.6x. Beside it, split-K (kernel_benchmark/benchmark.sh: Split_K "
        "2-9 for these shapes) writes Split_K x M x N fp16 partials that a second kernel (SplitK_Reduction) reads "
        "back. Pricing it needs a per-row shared-memory term for unstructured rows in gpu.py's GEMM pricing and the "
        "SM clock the GPU spec keeps unread"))),
])
def test_flash_llm_beats_cublas_by_at_most_its_published_speedup(sparsity):
    speedups = _speedups(sparsity)
    assert speedups.min() > 1.0
    assert speedups.max() <= PAPER_MAX * (1 + TOLERANCE)
