"""The kernels a numeric format adds to a pass, beside the GEMMs it re-prices (KernelTable.with_format).

- Outliers kept apart (NumericFormat.outlier_fraction; SpQR, SqueezeLLM): after each quantized GEMM a sparse
  product multiplies the outliers' CSR matrix by the GEMM's input and adds it into the GEMM's output. It reads the
  outliers (OUTLIER_BITS each), the input once, and the output once more to accumulate into it, and does two FLOPs
  per outlier and token on the vector units. It is a kernel of its own, as SqueezeLLM runs its balanced CSR kernel
  beside the dense LUT kernel (Kim et al., ICML 2024, Section 5). SpQR's kernel multiplies its outliers inside the
  quantized matvec instead (Vahe1994/SpQR inference_lib spqr_cuda_kernel.cu, spqr_quantized_matvec_fused, the dense
  and sparse parts of a tile in one launch, on the input it has already loaded): their bytes join the GEMM's weight
  traffic (outlier_bytes) and no kernel is added. Its rows are elementwise kernels: memory-bound
  streaming work, priced as the device prices streaming kernels (a GPU's fitted streaming efficiency where its
  calibration has one, else the roofline). That is optimistic for a CSR product, whose input reads are gathers;
  no measurement of one at these densities is in the project's data.
- Entropy-coded weights (weight_coding dfloat11; DFloat11, Zhang et al., 2025): before its GEMMs run, each
  transformer block's weights are decompressed into a 16-bit buffer ("transformer-block-level decompression",
  Section 3 of the paper), one kernel per block that reads the coded weights and writes 16-bit ones; the GEMMs then
  read the 16-bit weights as they would uncompressed. Weights outside the blocks (the LM head) are decompressed
  by a kernel of their own. The kernel's time is the larger of its bytes and its Huffman decoding, which runs on
  the CUDA cores: DFLOAT11_DECODE_OPS lane instructions per weight, carried as two vector FLOPs each (a lane
  instruction is one FMA's issue, as the GPU model counts dequantization), so a device prices them at its vector
  rate. Decoding is serial within a thread (each code's length sets where the next one starts), so its
  instructions cannot hide under the traffic the way a fixed-width unpack does.

DFLOAT11_DECODE_OPS, counted per weight. DFloat11 ships its kernel as PTX (LeanModels/DFloat11,
dfloat11/modeling_dfloat11_llama.py loads decode.ptx's huffman_decode: 256 threads a block, 8 coded bytes a
thread, a shared-memory output buffer of 4 values per coded byte); its two-phase design decodes each thread's
bytes twice, once to count the values they hold (a block-wide prefix sum of the counts then gives each thread its
output position) and once to write them (paper Section 3.3). The decoding step is the paper's hierarchical-LUT
lookup, written out in CUDA C in bf16_huffman_infer (PyPI bf16-huffman-infer 0.0.2, bf16_huffman_infer/src/kernel.cu,
decoder::decode_symbol, a reimplementation of DFloat11's decoder): per value, a byte of the bit buffer indexes the
first 256-entry LUT in shared memory (byte extract and load, 2), the result is tested for the escape to the next
LUT (compare and branch, 2; codes longer than 8 bits are rare and not counted), the code length is looked up (a
shared load, 1), the 64-bit bit buffer shifts by it (two funnel shifts, 2) and the remaining-bit count drops and is
tested for a refill (2), a 32-bit refill every ~11 values at ~2.6 bits a code (load, two shifts, two ors, an add:
~0.5 a value): 9.5. Twice (19), plus one count increment in the first phase, and in the second the value's sign
and mantissa byte placed beside the decoded exponent (load, shift, merge: 3) and written to the shared buffer (1)
that is copied out with 128-bit loads and stores (0.25): 24.25, rounded to 24.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from kernels.formats import DFLOAT11_BITS, OUTLIER_BITS, element_B
from kernels.kernel import Kernel, KernelKind

OUTLIER_OP = "outlier_spmm"
# Lane instructions of DFloat11's Huffman decoding per weight (see the module docstring) and the vector FLOPs one
# lane instruction is priced as (an FMA's issue: two FLOPs).
DFLOAT11_DECODE_OPS = 24.0
FLOPS_PER_LANE_OP = 2.0
DECOMPRESS_OP = "dfloat11_decompress"
FORMAT_OPS = (OUTLIER_OP, DECOMPRESS_OP)
_BLOCK = re.compile(r"^(.*?(?<![^.])layers\.\d+)")


def outlier_bytes(gemm: Kernel, fraction: float) -> float:
    """Bytes of a GEMM's outliers in CSR (OUTLIER_BITS each), `fraction` of its weights (at the traced precision)."""
    return fraction * gemm.weight_bytes / element_B(gemm.dtype) * OUTLIER_BITS / 8.0


def outlier_kernels(kernels: Sequence[Kernel], rows: np.ndarray, fraction: float) -> list[Kernel]:
    """The sparse product of each given GEMM row's outliers (`rows` index `kernels`, at the traced precision)."""
    out = []
    for i in rows.tolist():
        gemm = kernels[i]
        output_share = gemm.n / (gemm.k + gemm.n) if gemm.k + gemm.n > 0 else 0.0
        out.append(Kernel(kind=KernelKind.ELEMENTWISE, op=OUTLIER_OP, flops=fraction * gemm.flops,
                          weight_bytes=outlier_bytes(gemm, fraction),
                          act_bytes=gemm.act_bytes * (1.0 + output_share), kv_bytes=0.0, dtype=gemm.dtype,
                          tensor_core=False, layer=gemm.layer, module=gemm.module))
    return out


def decompression_kernels(kernels: Sequence[Kernel], rows: np.ndarray) -> list[Kernel]:
    """One DFloat11 decompression per transformer block of the given weight rows (and one per weight row outside
    the blocks): it reads the coded weights, writes them at 16 bits, and decodes each on the vector units."""
    blocks: dict[tuple, list[Kernel]] = {}
    for i in rows.tolist():
        kernel = kernels[i]
        blocks.setdefault(("block", kernel.layer) if kernel.layer is not None else ("model", i), []).append(kernel)
    out = []
    for group in blocks.values():
        first = group[0]
        weights_B = sum(k.weight_bytes * 16.0 / (8.0 * element_B(k.dtype)) for k in group)
        block = _BLOCK.match(first.module)
        out.append(Kernel(kind=KernelKind.ELEMENTWISE, op=DECOMPRESS_OP,
                          flops=FLOPS_PER_LANE_OP * DFLOAT11_DECODE_OPS * weights_B / 2.0,
                          weight_bytes=weights_B * DFLOAT11_BITS / 16.0, act_bytes=weights_B, kv_bytes=0.0,
                          dtype=first.dtype, tensor_core=False, layer=first.layer,
                          module=block[1] if block and first.layer is not None else first.module))
    return out
