"""Fitted GPU efficiency models: what fraction of peak a kernel achieves, and its fixed latency.

GEMM: the problem is cut into thread-block tiles that run in waves over the SMs, so a partial last wave
or a ragged edge tile costs a full one (tile and wave quantization) — in part: libraries recover some of
that padding (split-K and stream-K schedules, a tile menu wider than ours), so a fitted share of the padded
work is paid; math runs at a fraction of peak, traffic at a fraction of peak bandwidth (the output written at a
fraction of its own where a fit has one), the two blend smoothly where neither dominates, and every kernel has a
fixed latency. Streaming kernels (norm, elementwise, embedding): a fixed latency plus one pass over their bytes
at a fraction of peak bandwidth. Fused attention (prefill and split-KV decode): hw_models/gpu_attention.py; fused
MoE layers: hw_models/gpu_moe.py. Every parameter is fitted by `explore calibrate` on measured kernels; fractions
are capped at 1 so no kernel beats the roofline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from hw_models.gpu_attention import ATTENTION_Q_TILE, AttentionFit, attention_times, smooth_max  # noqa: F401 (re-exported)
from hw_models.gpu_gemm_configs import policy_tiles
from hw_models.gpu_moe import MoeFit, moe_times  # noqa: F401 (re-exported)

# Thread-block tile shapes (rows x columns of C) of CUTLASS's SM80/SM90 tensor-core GEMM kernels, which
# cuBLAS's heuristics choose among; the model picks the one with the least padded work.
TILE_SHAPES = np.array([(256, 128), (128, 256), (128, 128), (128, 64), (64, 128), (64, 64)], dtype=float)
# Bytes per output element a GEMM writes: 16-bit (low-precision scaled-mm kernels return bf16 too).
OUTPUT_BYTES = 2.0
_TILE_SHAPES_FLOPS = 2.0 * TILE_SHAPES[:, 0:1] * TILE_SHAPES[:, 1:2]


@dataclass(frozen=True, kw_only=True)
class GemmFit:
    compute_fraction: float  # achieved fraction of the dtype's dense peak
    bandwidth_fraction: float  # achieved fraction of peak DRAM bandwidth
    latency_s: float  # fixed time of any kernel
    blend: float  # p of (compute^p + memory^p)^(1/p): large p is a sharp roofline corner
    padding_share: float = 1.0  # share of the tile and wave padding's work that is paid (0: none, 1: all)
    # The library's tile dispatch by shape (gpu_gemm_configs.TILE_POLICIES); '': the least-padded of the tile menu.
    tile_policy: str = ""
    # Operand bandwidth one SM streams where a tile policy leaves SMs without a tile, as a multiple of its even share
    # of DRAM bandwidth (bandwidth / SMs), so it moves with the preset's bandwidth as the fractions do (0: no limit).
    sm_bandwidth_share: float = 0.0
    # A low-precision GEMM whose 16-bit input is first quantized by a kernel of its own (vLLM's fp8 linear: a
    # static per-tensor scaled_fp8_quant, or a dynamic per-token-group quantization for block-scaled weights):
    # the bytes that kernel moves per input element (reads 16 bits, writes the narrow value and its scales; 0:
    # no such kernel), its fixed latency and its achieved fraction of DRAM bandwidth.
    quantize_bytes_per_input: float = 0.0
    quantize_latency_s: float = 0.0
    quantize_bandwidth_fraction: float = 1.0
    # That kernel's time per input row where it runs one thread block per row (vLLM's static_scaled_fp8_quant:
    # grid(num_tokens)): each block's fixed work, spread over the SMs (0: none).
    quantize_row_s: float = 0.0
    # Host time of one call launched eagerly from Python (vLLM's block-scaled fp8 path: several kernels and
    # their glue): an eagerly timed call takes the longer of it and the device time (0: the preset's launch).
    host_interval_s: float = 0.0
    # Achieved fraction of DRAM bandwidth at which the kernel's epilogue writes its 16-bit output, where it differs
    # from the main loop's reads (0: the same, `bandwidth_fraction`).
    output_bandwidth_fraction: float = 0.0
    # L2 over DRAM streaming rate of a GEMM whose operands stay in the L2 between calls of a benchmark that replays
    # it on the same tensors (cached_bytes); a model pass reads each layer's weights once a step, so it has none.
    cache_speedup: float = 1.0


@dataclass(frozen=True, kw_only=True)
class StreamFit:
    bandwidth_fraction: float
    latency_s: float


def tile_counts(m: np.ndarray, n: np.ndarray, batch: np.ndarray, tiles: np.ndarray = TILE_SHAPES) -> np.ndarray:
    """Thread-block tiles of C[m, n] (times the batch) under each of `tiles`, shape (tiles, kernels): device-free, so
    a cost model keeps them with a table's rows."""
    return np.ceil(m / tiles[:, 0][:, None]) * np.ceil(n / tiles[:, 1][:, None]) * batch


def padded_flops(m: np.ndarray, n: np.ndarray, k: np.ndarray, batch: np.ndarray, sm_count: int,
                 tiles: np.ndarray = TILE_SHAPES, tile_policy: str = "", counts: np.ndarray | None = None,
                 split_k=1.0) -> np.ndarray:
    """FLOPs executed when C[m, n] is tiled and the tiles run in whole waves over sm_count SMs: the best of `tiles`,
    or the tile a library's shape dispatch picks (`tile_policy`, hw_models/gpu_gemm_configs.py; a tile shared by
    several SMs fills sm_count / SMs slots per wave). `counts`: tile_counts(m, n, batch, tiles), where kept.
    `split_k`: thread blocks per tile, each looping over ceil(k / split_k) of k (Kernel.split_k), so a GEMM of few
    tiles and a long k fills more of a wave and each block's loop is shorter."""
    split = not (type(split_k) is float and split_k == 1.0) and bool((np.asarray(split_k) != 1).any())
    block_k = np.ceil(k / split_k) if split else k  # each thread block's share of the k loop
    if tile_policy:  # the dispatch picks its tile by the whole GEMM's shape
        tile_m, tile_n, sms = (t[None, :] for t in policy_tiles(tile_policy, m, n, k))
        slots = np.floor(sm_count / sms)
        counts = np.ceil(m / tile_m) * np.ceil(n / tile_n) * batch * split_k
        return (2.0 * np.ceil(counts / slots) * slots * tile_m * tile_n * block_k).min(axis=0)
    # Each tile on one SM: a slot per SM. Whole numbers below 2^53 throughout, so the products are exact in any order.
    slots = float(math.floor(sm_count))
    if counts is None:
        counts = tile_counts(m, n, batch, tiles)
    if split:
        counts = counts * split_k
    return (np.ceil(counts / slots) * (_tile_flops(tiles) * slots) * block_k).min(axis=0)


def _tile_flops(tiles: np.ndarray) -> np.ndarray:
    """2 x the output elements of each tile, as a column: FLOPs per unit of k (TILE_SHAPES' kept with it)."""
    if tiles is TILE_SHAPES:
        return _TILE_SHAPES_FLOPS
    return 2.0 * tiles[:, 0:1] * tiles[:, 1:2]


def busy_sms(m, n, k, batch, sm_count: int, tile_policy: str, split_k=1.0) -> np.ndarray:
    """SMs that hold a tile's thread block of each GEMM under a tile policy (`split_k` blocks a tile; at most all of
    them; at least one, so that a GEMM with no rows, which moves no bytes, has a rate)."""
    tile_m, tile_n, sms = policy_tiles(tile_policy, m, n, k)
    return np.clip(np.ceil(m / tile_m) * np.ceil(n / tile_n) * batch * sms * split_k, 1.0, sm_count)


def gemm_times(*, m, n, k, batch, flops, flops_per_s, bytes_moved, bandwidth_Bps, sm_count: int,
               fit: GemmFit, kept=1.0, vector_s=0.0, tiles: np.ndarray = TILE_SHAPES, tile_policy: str | None = None,
               counts: np.ndarray | None = None, cached_bytes: float = 0.0, split_k=1.0, sm_limit: int | None = None,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(compute_s, memory_s, busy_s, latency_s) of GEMMs, as the other fitted kernel classes give them: a GEMM's
    device time is busy_s (the blend of its math and traffic, and the input's quantization kernel where the fit
    has one) plus the fit's fixed latency_s.

    Padding never makes less work than the GEMM's own FLOPs (which also covers kernels with no shape). A
    sparse GEMM pads the same tiles but does only the `kept` share of their math (N/M of an N:M pattern the
    GPU skips the zeros of). `vector_s` is CUDA-core time in the main loop (dequantizing quantized weights,
    hw_models/gpu_quant.py), in series with the tensor-core math; `tiles` the thread-block tiles the kernel
    chooses among (mixed-input kernels have their own, gpu_quant.MIXED_INPUT_TILES), `tile_policy` the library's
    tile dispatch that replaces them (None: the fit's, GemmFit.tile_policy; '': none); `counts` the GEMMs'
    tile_counts under `tiles`, where kept. A GEMM moving at most `cached_bytes` (a replayed benchmark's share of the
    L2 per copy it cycles through) streams `fit.cache_speedup` times faster. `split_k`: thread blocks each tile's k
    loop is split over (padded_flops; the partial sums' traffic is in `bytes_moved`, Kernel.split_k). `sm_limit`: the
    SMs of the sm_count the kernel may run on where fewer (None: all), as a library told to use fewer (DeepGEMM's
    set_num_sms): its tiles run in waves over them, its math at their share of the peak, and its operands are streamed
    by at most that many SMs, each at its share of the whole GPU's bandwidth.
    """
    policy = fit.tile_policy if tile_policy is None else tile_policy
    sms = sm_count if sm_limit is None else sm_limit
    if sm_limit is not None:
        flops_per_s = flops_per_s * (sm_limit / sm_count)
    padded = padded_flops(m, n, k, batch, sms, tiles, policy, counts, split_k)
    if not (isinstance(kept, float) and kept == 1.0):  # dense: every padded FLOP is done
        padded = padded * kept
    padded = np.maximum(padded, flops)
    work = flops + fit.padding_share * (padded - flops)
    # Clamped at zero: a step template's affine rows can leave a GEMM that does no work (an LM head with no
    # sampled token) a rounding error below zero, which the blend's power would turn into NaN.
    compute_s = np.maximum(work, 0.0) / (flops_per_s * fit.compute_fraction)
    if type(vector_s) is not float or vector_s:  # no CUDA-core work: nothing to add
        compute_s = compute_s + vector_s
    rate_Bps = bandwidth_Bps * fit.bandwidth_fraction
    if policy and fit.sm_bandwidth_share:
        # Fewer thread blocks than SMs (no split-K in the library's dispatch): only the SMs holding one stream the
        # operands.
        sm_Bps = fit.sm_bandwidth_share * bandwidth_Bps / sm_count
        rate_Bps = np.minimum(rate_Bps, busy_sms(m, n, k, batch, sms, policy, split_k) * sm_Bps)
    moved = np.maximum(bytes_moved, 0.0)
    if cached_bytes and fit.cache_speedup != 1.0:
        rate_Bps = rate_Bps * np.where(moved <= cached_bytes, fit.cache_speedup, 1.0)
    if fit.output_bandwidth_fraction:
        written = np.minimum(np.maximum(batch, 1) * m * n * OUTPUT_BYTES, moved)
        memory_s = (moved - written) / rate_Bps + written / (bandwidth_Bps * fit.output_bandwidth_fraction)
    else:
        memory_s = moved / rate_Bps
    busy_s = smooth_max([compute_s, memory_s], fit.blend)
    if fit.quantize_bytes_per_input:
        busy_s = busy_s + input_quantize_s(m, k, batch, bandwidth_Bps, fit)
    return compute_s, memory_s, busy_s, fit.latency_s


def input_quantize_s(m, k, batch, bandwidth_Bps: float, fit: GemmFit):
    """Device time of the kernel that quantizes a GEMM's m x k input before it (zero where the fit has none)."""
    if not fit.quantize_bytes_per_input:
        return 0.0
    rows = np.maximum(batch, 1) * m
    traffic = rows * k * fit.quantize_bytes_per_input
    stream_s = traffic / (bandwidth_Bps * fit.quantize_bandwidth_fraction)
    return fit.quantize_latency_s + rows * fit.quantize_row_s + stream_s


def stream_memory_s(*, bytes_moved, bandwidth_Bps, bandwidth_fraction) -> np.ndarray:
    """Time streaming kernels take to move their bytes at a fitted fraction of the bandwidth (StreamFit's; each
    kernel's fixed latency_s comes on top)."""
    return bytes_moved / (bandwidth_Bps * bandwidth_fraction)


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Fitted efficiency of one GPU preset, with where it came from."""

    device: str
    gemm: GemmFit | None = None  # 16-bit GEMMs, and any dtype without a fit of its own
    # GEMMs of one low-precision dtype ("fp8", "fp4"), and implementation variants fitted apart ("fp8/block128"),
    # which price measured rows of that variant and the block-scaled float formats (kernels/formats.py
    # NumericFormat.block_scaled_variant, hw_models/gpu_quant.py).
    gemm_dtypes: dict[str, GemmFit] | None = None
    streams: dict[str, StreamFit] | None = None  # by kernel kind: norm, elementwise, activation, rope, embedding
    attention: AttentionFit | None = None
    # Fused MoE layers: 16-bit (and any dtype without a fit of its own), and by low-precision dtype or variant key
    # as gemm_dtypes ("fp8", "fp8/block128", "fp4/nvfp4").
    moe: MoeFit | None = None
    moe_dtypes: dict[str, MoeFit] | None = None
    provenance: dict | None = None  # table, sha256, rows, train_sources, date, command
    sibling: str = ""  # the preset whose fits filled the classes in `borrowed`
    borrowed: tuple[str, ...] = ()  # kernel classes ("gemm", "gemm fp8", "attention", "norm", ...) from the sibling

    @cached_property  # a frozen value: its fits do not change
    def fitted_classes(self) -> tuple[str, ...]:
        """Every kernel class a fit prices ('gemm', 'gemm fp8', 'attention', 'norm', ...)."""
        return (*(("gemm",) if self.gemm else ()), *(f"gemm {k}" for k in self.gemm_dtypes or {}),
                *(("attention",) if self.attention else ()), *(("moe",) if self.moe else ()),
                *(f"moe {k}" for k in self.moe_dtypes or {}), *(self.streams or {}))

    def filled_from(self, sibling: Calibration) -> Calibration:
        """This calibration with the classes it lacks taken from a sibling preset's (its own fits win)."""
        merged = Calibration(
            device=self.device, gemm=self.gemm or sibling.gemm,
            gemm_dtypes={**(sibling.gemm_dtypes or {}), **(self.gemm_dtypes or {})} or None,
            streams={**(sibling.streams or {}), **(self.streams or {})} or None,
            attention=self.attention or sibling.attention, moe=self.moe or sibling.moe,
            moe_dtypes={**(sibling.moe_dtypes or {}), **(self.moe_dtypes or {})} or None, provenance=self.provenance)
        own = set(self.fitted_classes)
        borrowed = tuple(c for c in merged.fitted_classes if c not in own)
        return replace(merged, sibling=sibling.device if borrowed else "", borrowed=borrowed)

    @cached_property
    def label(self) -> str:
        """'fitted' where the preset has fits of its own, 'sibling' where every fit is borrowed."""
        return "sibling" if self.borrowed and set(self.borrowed) == set(self.fitted_classes) else "fitted"

    def gemm_fit(self, dtype: str) -> GemmFit | None:
        """The GEMM fit that prices `dtype` (or a 'dtype/variant' key)."""
        return (self.gemm_dtypes or {}).get(dtype) or self.gemm

    def gemm_groups(self, table, rows: np.ndarray, pairs=None) -> list[tuple[GemmFit, np.ndarray]]:
        """(fit, row mask) for the GEMM rows (a mask) of a KernelTable, one group per distinct dtype (GEMMs no fit
        prices are left out); `pairs`: each row's (dtype, tensor_core) pair where a cost model prices some rows as
        another dtype (KernelTable.dtype_rows; default: the table's own)."""
        return _groups(self.gemm, self.gemm_dtypes, self.gemm_fit, table, rows, pairs)

    def moe_groups(self, table, rows: np.ndarray, pairs=None) -> list[tuple[MoeFit, np.ndarray]]:
        """(fit, row mask) for the fused-MoE rows of a table, as gemm_groups."""
        return _groups(self.moe, self.moe_dtypes, self.moe_fit, table, rows, pairs)

    def moe_fit(self, dtype: str) -> MoeFit | None:
        """The fused-MoE fit that prices `dtype` (or a 'dtype/variant' key)."""
        return (self.moe_dtypes or {}).get(dtype) or self.moe

    def with_variant(self, variant_key: str) -> Calibration:
        """This calibration with a variant's fits ('fp8/block128', GEMM and MoE where fitted) pricing its dtype and
        each key it extends (a kernel's 'bf16/w4fp4/oaitriton' also prices 'bf16/w4fp4', which a point's plan names)."""
        parts = variant_key.split("/")
        shorter = ["/".join(parts[:n]) for n in range(1, len(parts))]
        changed = {}
        for name in ("gemm_dtypes", "moe_dtypes"):
            fits = getattr(self, name) or {}
            if variant_key in fits:
                changed[name] = {**fits, **dict.fromkeys(shorter, fits[variant_key])}
        return replace(self, **changed) if changed else self

    def stream(self, kind: str) -> StreamFit | None:
        """The fit for a streaming kernel kind. Softmax and the separate pointwise ops of an eager norm or rotary
        embedding (norm_part, rope_part: a fused kernel's fit, such as Vidur's rotary kernel for 'rope', does not
        describe them) have no measurements of their own, and calibrations written before activation and RoPE
        kernels were told apart have one fit for all: those use the elementwise fit. So does an engine's fused
        residual add + RMSNorm (add_norm), which no source timed alone: like the residual add, it streams its rows
        once in 16-byte vector loads, and TokenWeave's deletions of it on H100 (Fig. 3) put it near the add's rate,
        where the norm fit (Vidur's rms_norm: one 2-byte load a thread at a time) prices it at about twice its time
        (tests/explore/test_paper_tokenweave.py)."""
        streams = self.streams or {}
        return streams.get(kind) or (streams.get("elementwise") if kind in POINTWISE_FALLBACK else None)


def _groups(default, by_dtype: dict | None, fit_of, table, rows: np.ndarray, pairs=None) -> list:
    """(fit, row mask) per distinct dtype of `rows` that a fit prices: the default fit for all when there are no
    per-dtype fits, else each dtype's fit_of(dtype) (the table keeps its rows of each dtype: KernelTable.dtype_rows)."""
    if not by_dtype:
        return [(default, rows)] if default is not None else []
    return [(fit, mask) for dtype, mask in table.dtype_rows(rows, pairs) if (fit := fit_of(dtype)) is not None]


POINTWISE_FALLBACK = ("softmax", "activation", "rope", "norm_part", "rope_part", "add_norm")


def calibration_label(device) -> str:
    """How a device model's kernels are priced: 'fitted' (its preset's own fits, perhaps with a sibling's for
    classes it lacks), 'sibling' (every fit borrowed from an architecture sibling) or 'none'."""
    cal = getattr(device, "calibration", None)
    return cal.label if cal is not None else "none"
