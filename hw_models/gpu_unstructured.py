"""Flash-LLM's "load-as-sparse, compute-as-dense" GEMMs on a GPU (kernels/sparsity.py, pattern unstructured:S): the
shared-memory traffic of expanding the kept weights into dense tiles, which does not shrink with the sparsity.

Per K step of a thread block (AlibabaResearch/flash-llm csrc/SpMM_Kernel.cuh), the dense A tile of weights is
zero-filled in shared memory (SpMM_InitSharedMemory, cp.async with zero fill: ZERO_FILL_BYTES a dense weight), the
tile's nonzeros are scattered into it with one 16-bit store each (SpMM_DecompressFromRegisterToShared; a store
occupies a 32-bit bank word: SCATTER_BYTES a kept weight) and the tile is read back densely for the tensor cores
(DENSE_READ_BYTES a dense weight). Each weight tile is expanded once per tile of TOKEN_TILE tokens of the output
(csrc/SpMM_API.cu SpMM_SplitK_API: TILE_N of 16 to 128 tokens, a grid of N / TILE_N tiles of them).

Shared memory moves 32 banks x 4 bytes a clock on each SM (CUDA C++ Programming Guide, "Shared Memory": 32 banks of
successive 32-bit words, each serving one word a clock), so at the SM clock of the preset (boost_clock_MHz) an
A100's 108 SMs move 19.5 TB/s there. At 90% sparsity the expansion takes 2 + 2 + 4 x 0.1 = 4.4 bytes of bank traffic
a weight, 0.226 ps on an A100, more than the 0.4 bytes of its Tiled-CSL traffic at 2,039 GB/s (0.196 ps): the kernel
is bound there, which caps its speed-up over dense cuBLAS near 2.6x (tests/hw_models/test_paper_flash_llm.py).
"""

from __future__ import annotations

import numpy as np

ZERO_FILL_BYTES = 2.0  # per dense weight: the fp16 tile cleared
DENSE_READ_BYTES = 2.0  # per dense weight: the fp16 tile read by the tensor cores' fragment loads
SCATTER_BYTES = 4.0  # per kept weight: a 16-bit store, one 32-bit bank word
TOKEN_TILE = 128  # tokens of the output one expansion of a weight tile serves (the largest TILE_N)
BANK_BYTES_PER_CLOCK = 32 * 4  # per SM


def expansion_s(*, n, k, m, batch, density, sm_count, clock_MHz) -> np.ndarray:
    """Seconds of shared-memory traffic to expand each GEMM's weights (n x k, `density` of them kept) into dense
    tiles, once per TOKEN_TILE of its m tokens, over every SM of the GPU."""
    n, k, m, batch, density = (np.asarray(x, dtype=float) for x in (n, k, m, batch, density))
    per_weight_B = ZERO_FILL_BYTES + DENSE_READ_BYTES + SCATTER_BYTES * density
    passes = np.ceil(np.maximum(m, 1.0) / TOKEN_TILE)
    shared_Bps = sm_count * BANK_BYTES_PER_CLOCK * np.asarray(clock_MHz, dtype=float) * 1e6
    return np.maximum(batch, 1.0) * n * k * per_weight_B * passes / shared_Bps
