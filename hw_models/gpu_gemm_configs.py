"""Tile rules of GEMM libraries that pick their kernel configuration by problem shape, not by least padding.

vLLM's per-tensor fp8 linear layer (CutlassFP8ScaledMMLinearKernel) calls CUTLASS's scaled GEMM through a
dispatch that picks one tile per range of M (and on some architectures N or K), read from vllm-project/vllm at
commit 1051220ee1cee87a829f35fc6faf4bd7a419aa13, csrc/libtorch_stable/quantization/w8a8/cutlass/:
  - SM89 (L40S, L4): scaled_mm_c2x_sm89_fp8_dispatch.cuh, by next_pow_2(M) (at least 16) and next_pow_2(N);
  - SM90 (H100, H200): c3x/scaled_mm_sm90_fp8_dispatch.cuh, by M, N <= 1280 and M >= 8192 with K >= 6144; for
    M <= 64 it swaps A and B (the kernel's M tile runs along the GEMM's N);
Each tile is given here as the rows x columns of C[m, n] it covers (a swapped kernel's TileShape read back), with
the SMs that share it (one on SM89 and SM90; the field is there for 2-SM MMAs).
SM100 (B200, c3x/scaled_mm_sm100_fp8_dispatch.cuh: 2-SM tiles by M range) is left out: its dispatch's tiles, 2-SM
MMAs counted as CUTLASS builds them (NVIDIA/cutlass commit 019c5c979aea82c3f314c1eda803bda2b8b44077,
include/cutlass/gemm/collective/builders/sm100_common.inl) or not, did not lower B200's held-out fp8 error (21.4% with
the least-padded menu, 21.7% and 21.4% with them, compared before the fp8 fits had an output write rate and a
quantization time per row of their own), so B200 keeps the menu.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Compute capability of the presets a tile policy prices (NVIDIA's CUDA GPUs list: Hopper 9.0, Ada 8.9); a preset
# not here keeps the least-padded tile menu.
ARCHITECTURE = {"h100-sxm": "sm90", "h100-pcie": "sm90", "h200": "sm90", "l40s": "sm89", "l4": "sm89"}

Tiles = tuple[np.ndarray, np.ndarray, np.ndarray]  # (tile_m, tile_n, SMs per tile) per GEMM


def _next_pow2(x: np.ndarray) -> np.ndarray:
    return 2.0 ** np.ceil(np.log2(np.maximum(x, 1.0)))


def _pick(conditions: list[np.ndarray], tiles: list[tuple[int, int, int]], default: tuple[int, int, int]) -> Tiles:
    """The first matching condition's (tile_m, tile_n, SMs) per GEMM, else the default."""
    return tuple(np.select(conditions, [float(t[i]) for t in tiles], float(default[i])) for i in range(3))


def _vllm_fp8_sm89(m: np.ndarray, n: np.ndarray, k: np.ndarray) -> Tiles:
    mp2, np2 = np.maximum(16.0, _next_pow2(m)), _next_pow2(n)
    m16, m32, m64, m128, m256 = (mp2 <= b for b in (16, 32, 64, 128, 256))
    return _pick([
        m16 & (np2 <= 8192), m16 & (np2 <= 24576), m16,
        m32 & (np2 <= 8192), m32 & (np2 <= 16384), m32,
        m64 & (np2 <= 8196), m64 & (np2 <= 16384), m64,  # 8196 as the source writes it
        m128 & (np2 <= 8192), m128 & (np2 <= 16384), m128,
        m256 & (np2 <= 4096), m256,
        np2 <= 4096, np2 <= 8192,
    ], [(16, 64, 1), (16, 128, 1), (32, 64, 1),
        (32, 64, 1), (32, 128, 1), (32, 64, 1),
        (64, 64, 1), (64, 128, 1), (64, 64, 1),
        (64, 128, 1), (128, 128, 1), (128, 64, 1),
        (64, 128, 1), (128, 128, 1),
        (128, 128, 1), (256, 128, 1)], (128, 128, 1))


def _vllm_fp8_sm90(m: np.ndarray, n: np.ndarray, k: np.ndarray) -> Tiles:
    # Swapped kernels (M <= 64): TileShape 64 x 16 covers 16 rows x 64 columns of C, 64 x 64 covers 64 x 64.
    return _pick([m <= 16, (m <= 64) & (n <= 1280), m <= 64, m <= 128, (m >= 8192) & (k >= 6144)],
                 [(16, 64, 1), (16, 64, 1), (64, 64, 1), (64, 128, 1), (256, 128, 1)], (128, 128, 1))


TILE_POLICIES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], Tiles]] = {
    "vllm-cutlass-fp8/sm89": _vllm_fp8_sm89,
    "vllm-cutlass-fp8/sm90": _vllm_fp8_sm90,
}


def tile_policy(library: str, device: str) -> str:
    """The tile policy of a library's GEMMs on a preset ('' where the preset's architecture has none)."""
    policy = f"{library}/{ARCHITECTURE.get(device, '')}"
    return policy if policy in TILE_POLICIES else ""


def policy_tiles(policy: str, m, n, k) -> Tiles:
    """(tile_m, tile_n, SMs per tile) that a tile policy runs each GEMM with."""
    m, n, k = np.broadcast_arrays(*(np.atleast_1d(np.asarray(x, dtype=float)) for x in (m, n, k)))
    return TILE_POLICIES[policy](m, n, k)
