"""Which sparsity each device family exploits (kernels/sparsity.py SparsitySupport); a pattern outside a device's
support runs dense there, and `explore run` and the sparsity_use column say so.

- GPUs: the N:M patterns of their sparse tensor cores (the preset's structured_sparsity), and, on Ampere and later,
  the software kernels measured there: unstructured weights computed dense (Flash-LLM, built for sm_80: cp.async
  and mma.m16n8k16, evaluated on A100), block-sparse tiles (the tensor-core tiles of a zero block are skipped: Triton
  and cuSPARSE block-sparse GEMMs with blocks of 16 to 128) and activation sparsity (TEAL's and Deja Vu's sparse
  GEMV kernels, evaluated on A100 / A6000). A preset with a bf16 tensor-core rate is Ampere or later (bf16 tensor
  cores arrived with sm_80); older GPUs (V100) run these patterns dense, since no measured kernel backs them.
- NPUs: whole zero tiles of the systolic arrays: a block pattern whose block is a multiple of the array's rows and
  columns covers whole weight tiles, whose folds the controller skips (their math and their weight loads). Smaller
  blocks, N:M and unstructured zeros land inside a tile and run dense; no NPU preset exploits activations.
- FPGAs: the N:M patterns of the preset's sparse DSP chains (FlightLLM); nothing else.
- CPUs: activation sparsity, whose MLP GEMVs read only the kept rows (PowerInfer's neuron-aware sparse operators on
  the CPU, Song et al., SOSP 2024, Section 6); weight sparsity runs dense (llama.cpp and T-MAC kernels are dense).
"""

from __future__ import annotations

from kernels.sparsity import ACTIVATION, UNSTRUCTURED, SparsitySupport, block_keys

# Patterns the software kernels of Ampere-and-later GPUs exploit (see the module docstring).
GPU_SOFTWARE = (UNSTRUCTURED, *block_keys(), ACTIVATION)


def gpu_support(structured: tuple[str, ...], peak_TFLOPS: dict[str, float]) -> SparsitySupport:
    """A GPU's: its sparse tensor cores' N:M patterns, and the software patterns where it is Ampere or later."""
    return SparsitySupport.of(structured, GPU_SOFTWARE if "bf16" in peak_TFLOPS else ())


def npu_support(array_rows: int, array_cols: int) -> SparsitySupport:
    """An NPU's: block patterns whose blocks cover whole array tiles."""
    return SparsitySupport.of(block_keys((array_rows, array_cols)))


def fpga_support(patterns: tuple[str, ...]) -> SparsitySupport:
    """An FPGA's: the N:M patterns of its sparse DSP chains."""
    return SparsitySupport.of(patterns)


def cpu_support() -> SparsitySupport:
    """A CPU's: activation sparsity (PowerInfer-style sparse GEMVs)."""
    return SparsitySupport.of((ACTIVATION,))
