"""Fitted time of fused attention kernels (FlashAttention-style prefill, split-KV paged decode) on a GPU.

A kernel runs thread blocks (CTAs) over the SMs. With GQA a block serves one KV head and packs the query
heads sharing it as rows of its tile (FlashAttention-3's PackGQA, FlashInfer and TensorRT-LLM decode), or one
query head (`packs_gqa` false: kernels that do not pack); a block covers ATTENTION_Q_TILE of those rows. When
the blocks cannot fill the SMs, the keys are split over more blocks (split-KV, FlashAttention's heuristic,
`kv_splits`). The time of a call is its fixed latency, plus per-sequence work, plus a smooth maximum of three
limits, each the time of the whole call if nothing else bound it:

- math: the (query, key) pairs at a fraction of the tensor-core peak over the blocks that run (a partial last
  wave runs on part of the SMs). A pair costs its QK^T and PV multiply-adds (2 x (head_dim + value width) FLOPs:
  4 x head_dim where the value is as wide as the key; MLA's are not) and its
  softmax exponential on the special-function units, about `softmax_flops` MMA-equivalent FLOPs, which
  FlashAttention-3 and later overlap with the MMAs: the two blend with exponent `softmax_overlap` (1: in
  series, large: fully overlapped). So a small head dim, with less MMA work per exponential, runs below the
  peak (the head-dim effect);
- traffic: KV cache, queries and outputs at a fraction of DRAM bandwidth;
- blocks: the waves of blocks each paying a fixed cost (prologue, page-table reads, epilogue) and streaming
  its share of the KV cache at the rate one block sustains: few blocks (small batch x KV heads, short
  sequences) cannot draw the full bandwidth.

A benchmark that replays one call on the same tensors finds a working set smaller than the L2 cache still
there (attention tables measured that way: `cached_bytes`); it streams `cache_speedup` times faster. A model
pass reads each layer's KV cache once per step, so the simulator passes no cached bytes.

Fits are kept apart where engines run different kernels: decode (a few query rows against a longer cache:
`decode_like`; MLA's absorbed decode at any rows a KV head, in FlashMLA's 64-row tiles: MLA_Q_TILE) and prefill, and
a KV cache in fp8 (the kernel dequantizes every element, or runs another backend):
`AttentionFit.decode` and `.fp8_kv`. PyTorch's own scaled_dot_product_attention, which an eager model (and its CUDA
graph) runs over a contiguous KV cache, is another library's kernel (cuDNN's on Hopper): `AttentionFit.torch_sdpa`,
with decode and prefill of its own, prices the kernels a table marks as torch's (KernelTable.torch_sdpa) where
measurements of it exist.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# Query rows per thread block (FlashAttention-2/3 kernel launch templates: 128 rows for head dims up to 128 on
# A100/H100; Dao, "FlashAttention-2", 2023) and keys per block iteration (FlashAttention-3's kBlockN for head
# dim 128, hopper/tile_size.h).
ATTENTION_Q_TILE = 128
ATTENTION_KV_TILE = 128
# FlashMLA, the kernel of MLA's absorbed decode (every query head over one latent KV head, read inside its key:
# kv_width), runs a KV head's query rows (positions x query heads) in tiles of 64 rows (csrc/kernels/config.h
# BLOCK_SIZE_M = 64, Hopper's wgmma M) and launches dim3(ceil_div(q_seq_per_hk, BLOCK_SIZE_M), h_k, num_sm_parts)
# blocks (csrc/flash_api.cpp, splitkv_mla.cu): every tile computes all 64 rows and streams the whole cache, its
# splits of the keys spread over the SMs (get_mla_metadata's num_sm_parts), whatever the rows a KV head.
MLA_Q_TILE = 64
# vLLM caps split-KV at 16 splits when decode runs from CUDA graphs (vllm/v1/attention/backends/flash_attn.py:
# _DEFAULT_MAX_NUM_SPLITS_FOR_CUDA_GRAPH = 16).
MAX_KV_SPLITS = 16
# A KV cache element narrower than this (bytes) is a quantized (fp8) cache.
NARROW_KV_BYTES = 1.5


@dataclass(frozen=True, kw_only=True)
class AttentionFit:
    """Fitted parameters of one family of fused attention kernels; `decode` and `fp8_kv` (each an AttentionFit)
    price decode kernels and kernels reading an fp8 KV cache where those were fitted apart."""

    compute_fraction: float  # achieved fraction of the 16-bit dense peak, over the blocks that run
    bandwidth_fraction: float  # achieved fraction of peak DRAM bandwidth
    latency_s: float  # fixed time of a call (its kernels' launch-to-finish with no work)
    block_s: float = 0.0  # fixed time of one thread block on its SM
    sequence_s: float = 0.0  # SM time per sequence (KV-cache append, per-sequence metadata)
    block_bandwidth_Bps: float = float("inf")  # KV streaming rate one block sustains
    softmax_flops: float = 0.0  # MMA-equivalent FLOPs of one score's exponential
    softmax_overlap: float = 1.0  # p of (mma^p + softmax^p)^(1/p): 1 in series, large overlapped
    blend: float = 50.0  # p of (math^p + traffic^p + blocks^p)^(1/p): large is a sharp maximum
    cache_speedup: float = 1.0  # L2 over DRAM streaming rate, for working sets resident in a replayed benchmark
    packs_gqa: bool = True  # one block per KV head (query heads packed as rows), else one per query head
    decode: AttentionFit | None = None  # decode kernels (q_len 1), where fitted apart
    fp8_kv: AttentionFit | None = None  # kernels reading an fp8 KV cache, where fitted apart
    torch_sdpa: AttentionFit | None = None  # torch's scaled_dot_product_attention kernels, where fitted apart

    def __post_init__(self) -> None:
        for name in ("decode", "fp8_kv", "torch_sdpa"):  # read back from YAML as plain mappings
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, AttentionFit(**value))

    def variant(self, *, decode: bool, fp8_kv: bool, torch_sdpa: bool = False) -> AttentionFit:
        """The fit that prices decode (or prefill) kernels with an fp8 (or 16-bit) KV cache, of torch's SDPA or
        of the library the top-level fit was measured on."""
        fit = (self.torch_sdpa or self) if torch_sdpa else self
        fit = (fit.fp8_kv or fit) if fp8_kv else fit
        return (fit.decode or fit) if decode else fit


_SPLITS = np.arange(1, MAX_KV_SPLITS + 1)
_SPLIT_COLUMN = _SPLITS[:, None]


def kv_splits(blocks: np.ndarray, sm_count: int, kv_tiles: np.ndarray) -> np.ndarray:
    """Split-KV count of FlashAttention-3's num_splits_heuristic (hopper/heuristics.h): no split when the blocks
    nearly fill the SMs (>= 80%) or the keys are 4 tiles or fewer; otherwise the fewest splits whose wave
    efficiency is within 85% of the best, up to MAX_KV_SPLITS."""
    blocks, kv_tiles = np.asarray(blocks), np.asarray(kv_tiles)
    return _kv_splits(blocks, sm_count, np.minimum(MAX_KV_SPLITS, kv_tiles), kv_tiles <= 4)


def _kv_splits(blocks: np.ndarray, sm_count: int, split_tiles: np.ndarray, few_tiles: np.ndarray) -> np.ndarray:
    """kv_splits from the device-free terms of the keys (AttentionShapes): their tiles capped at MAX_KV_SPLITS, and
    whether they are 4 tiles or fewer."""
    unsplit = (blocks >= 0.8 * sm_count) | few_tiles
    if unsplit.all():  # every call fills the SMs or has few keys: no search
        return np.ones(np.shape(blocks), dtype=int)
    splits = _SPLIT_COLUMN if blocks.ndim == 1 else _SPLITS.reshape(-1, *([1] * blocks.ndim))  # a leading axis
    waves = blocks * splits / sm_count
    efficiency = np.where(splits <= np.minimum(sm_count, split_tiles), waves / np.ceil(waves), 0.0)
    good = efficiency >= 0.85 * efficiency.max(axis=0)
    return np.where(unsplit, 1, np.argmax(good, axis=0) + 1)


@functools.cache
def split_table(sm_count: int) -> np.ndarray:
    """kv_splits of every whole number of blocks (rows; the last row: this many or more, which fill 80% of the SMs
    and never split) and every count of key tiles capped at MAX_KV_SPLITS (columns, 0 unused): the search done
    once per SM count, so that a call's split count is one lookup."""
    filled = math.ceil(0.8 * sm_count)  # the fewest whole blocks with blocks >= 0.8 x sm_count
    blocks, tiles = np.meshgrid(np.arange(1, filled + 1, dtype=float), np.arange(1, MAX_KV_SPLITS + 1, dtype=float),
                                indexing="ij")
    table = np.ones((filled + 1, MAX_KV_SPLITS + 1), dtype=int)
    table[1:, 1:] = _kv_splits(blocks, sm_count, tiles, tiles <= 4)
    return table


def smooth_max(parts: list[np.ndarray], p: float) -> np.ndarray:
    """(sum of part^p)^(1/p): the largest part where p is large, a blend where parts are close."""
    top = parts[0]
    for part in parts[1:]:
        top = np.maximum(top, part)
    top = np.maximum(top, 1e-30)  # scaled before the power: no overflow
    # In place on the fresh arrays of each step (the same operations, without a temporary per step).
    total = parts[0] / top
    total **= p
    for part in parts[1:]:
        term = part / top
        term **= p
        total += term
    total **= 1.0 / p
    total *= top
    return total


def _times(fit: _RowFits, shapes: AttentionShapes, *, flops_per_s, bandwidth_Bps, sm_count: int,
           cached_bytes: float):
    # Thread blocks before split-KV: per KV head (query heads packed as rows of its tiles) or per query head.
    blocks = np.where(fit.packs_gqa, shapes.packed_blocks, shapes.head_blocks)
    if shapes.whole_blocks:  # the search's answer looked up (split_table)
        table = split_table(sm_count)
        splits = table[np.minimum(blocks, len(table) - 1).astype(np.intp), shapes.split_column]
    else:
        splits = _kv_splits(blocks, sm_count, shapes.split_tiles, shapes.few_tiles)
    blocks = blocks * splits
    waves = np.ceil(blocks / sm_count)
    mma = shapes.mma_flops
    per_pair = smooth_max([mma, fit.softmax_flops], fit.softmax_overlap)
    compute_s = shapes.flops * (per_pair / mma) / (flops_per_s * fit.compute_fraction * blocks / (waves * sm_count))
    # A simulated pass passes no cached bytes: every call streams from DRAM.
    stream_Bps, block_Bps = bandwidth_Bps * fit.bandwidth_fraction, fit.block_bandwidth_Bps
    if cached_bytes:
        speed = np.where(shapes.traffic <= cached_bytes, fit.cache_speedup, 1.0)
        stream_Bps, block_Bps = stream_Bps * speed, block_Bps * speed
    memory_s = shapes.traffic / stream_Bps
    blocks_s = waves * (fit.block_s + shapes.keys_values / blocks / block_Bps)
    busy_s = shapes.batch * fit.sequence_s / sm_count + smooth_max([compute_s, memory_s, blocks_s], fit.blend)
    return compute_s, memory_s, busy_s


def kv_groups(heads, kv_heads, q_len) -> tuple:
    """(groups, rows) of attention calls: the KV heads (the query heads where a row gives none) and the query rows
    each one serves, its positions x the query heads sharing it (GQA; 1 x q_len under MHA)."""
    heads, q_len = np.maximum(heads, 1), np.maximum(q_len, 1)
    groups = np.where(kv_heads > 0, kv_heads, heads)
    return groups, q_len * heads / groups


def decode_like(q_len, kv_len, heads, kv_heads):
    """Whether attention calls run as decode kernels: every query row of a KV head (its positions x the query heads
    packed with it) fits one query tile and attends to a longer cache. One new token, or the k + 1 tokens of a
    speculative verification: FlashAttention-3 packs the positions with the query heads into the tile's rows
    (PackGQA) and splits the keys over blocks as for one token, so the decode fit prices them; the prefill fit,
    measured only on prompts attending to themselves (queries = keys), would charge each block a prefill's
    per-block streaming rate. The decode fit's own rows are one token; longer queries are an extrapolation."""
    return (q_len == 1) | ((q_len * heads / kv_heads <= ATTENTION_Q_TILE) & (q_len < kv_len))


@dataclass(frozen=True)
class AttentionShapes:
    """What the time of fused attention calls depends on besides the device (arrays, one entry per kernel): their
    work, traffic, tiling terms, and the fit variant that prices each (an index into variant_columns: 4 x torch SDPA
    + 2 x decode_like + fp8 KV). A table's attention rows have one (hw_models/gpu.py keeps it with them)."""

    flops: np.ndarray
    traffic: np.ndarray  # activation and KV-cache bytes
    keys_values: np.ndarray  # bytes of keys and values streamed (16-bit K, V where the trace has no KV cache bytes)
    batch: np.ndarray  # sequences (at least 1)
    split_tiles: np.ndarray  # ATTENTION_KV_TILE-key tiles of the keys, capped at MAX_KV_SPLITS
    few_tiles: np.ndarray  # whether there are 4 tiles or fewer (never split)
    variant: np.ndarray
    mma_flops: np.ndarray  # QK^T and PV FLOPs of one (query, key) pair: 2 x (head_dim + value width)
    # Thread blocks of a call before split-KV: one per ATTENTION_Q_TILE query rows of a group, the groups being the
    # KV heads with their query heads packed as rows (packs_gqa) or the query heads themselves.
    packed_blocks: np.ndarray
    head_blocks: np.ndarray
    whole_blocks: bool  # whether both block counts are whole numbers (split_table's rows)
    split_column: np.ndarray  # split_tiles as split_table's column index

    @functools.cached_property
    def row_values(self) -> tuple[list, ...]:
        """The columns _scalar_times reads, as lists of Python numbers (kept: the shapes do not change); only a
        column of fewer dimensions is broadcast (numpy's broadcast_to costs more than the list)."""
        shape = self.flops.shape
        return tuple((column if np.shape(column) == shape else np.broadcast_to(column, shape)).tolist()
                     for column in (self.flops, self.traffic, self.keys_values, self.batch, self.split_column,
                                    self.mma_flops, self.packed_blocks, self.head_blocks, self.variant))


def attention_shapes(*, flops, act_bytes, kv_bytes, batch, heads, kv_heads, q_len, kv_len, head_dim,
                     torch_sdpa=False, kv_packing: float | np.ndarray = 1.0, v_head_dim=0,
                     kv_width=0) -> AttentionShapes:
    """The device-free terms of attention_times (`torch_sdpa`: which kernels are torch's, KernelTable.torch_sdpa).
    `kv_packing`: the cache's stored bytes over its values', per row or for all (below 1 for a bitmap-packed sparse
    cache, NumericFormat.kv_packing): the kernel reads the packed bytes, and its fit is chosen by the values' width.
    `v_head_dim` and `kv_width` (0: head_dim, and a key and a value apart): the value's width and the elements a key
    holds in the cache per KV head, where they differ (MLA, KernelTable.v_head_dim and kv_width)."""
    if np.ndim(flops) == 1 and len(flops) <= SCALAR_ROWS:
        try:
            return _scalar_shapes(flops, act_bytes, kv_bytes, batch, heads, kv_heads, q_len, kv_len, head_dim,
                                  torch_sdpa, kv_packing, v_head_dim, kv_width)
        except (ValueError, ZeroDivisionError, OverflowError):  # a row count apart, a zero or an infinity: numpy's way
            pass
    batch, heads, q_len = np.maximum(batch, 1), np.maximum(heads, 1), np.maximum(q_len, 1)
    kv_heads, _ = kv_groups(heads, kv_heads, q_len)
    kv_len, head_dim = np.maximum(kv_len, 1), np.maximum(head_dim, 1)
    pair_dims = head_dim + np.where(np.asarray(v_head_dim) > 0, v_head_dim, head_dim)  # a key's and a value's
    cached = np.where(np.asarray(kv_width) > 0, kv_width, pair_dims)  # elements a key holds in the cache
    # A traced prefill reads its keys and values as activations (kv_bytes 0): a 16-bit cache.
    narrow = (kv_bytes > 0) & (kv_bytes < NARROW_KV_BYTES * kv_packing * batch * kv_heads * kv_len * cached)
    # MLA's absorbed decode runs as FlashMLA (MLA_Q_TILE); DRAM serves a split's keys once (its tiles are neighbours
    # in the launch grid, run together).
    latent = (np.asarray(kv_width) > 0) & (q_len < kv_len)
    decode = decode_like(q_len, kv_len, heads, kv_heads) | latent
    rows = q_len * heads / kv_heads
    mla_tiles = np.where(latent, np.ceil(rows / MLA_Q_TILE), 1.0)

    kv_tiles = np.ceil(kv_len / ATTENTION_KV_TILE)

    def blocks(groups):  # query rows per group: positions x the query heads packed in it
        return batch * groups * np.ceil(q_len * heads / groups / ATTENTION_Q_TILE)

    packed_blocks, head_blocks = np.where(latent, batch * kv_heads * mla_tiles, blocks(kv_heads)), blocks(heads)
    split_tiles = np.minimum(MAX_KV_SPLITS, kv_tiles)
    return AttentionShapes(
        flops=np.where(latent, flops * mla_tiles * MLA_Q_TILE / rows, flops), traffic=act_bytes + kv_bytes,
        keys_values=mla_tiles * np.where(kv_bytes > 0, kv_bytes, 2.0 * batch * kv_heads * kv_len * pair_dims),
        batch=batch, split_tiles=split_tiles, few_tiles=kv_tiles <= 4,
        variant=4 * np.asarray(torch_sdpa, dtype=int) + 2 * np.asarray(decode, dtype=int) + narrow,
        mma_flops=2.0 * pair_dims,
        packed_blocks=packed_blocks, head_blocks=head_blocks,
        whole_blocks=bool(np.all(packed_blocks % 1 == 0) and np.all(head_blocks % 1 == 0)),
        split_column=np.asarray(split_tiles, dtype=np.intp))


def _scalar_shapes(*columns) -> AttentionShapes:
    """attention_shapes of a few rows (columns of one row count, or single values) in Python floats: numpy's overhead
    per call on arrays this short exceeds the arithmetic. Each row as attention_shapes takes it, step by step."""
    rows = len(columns[0])
    values = [np.asarray(column).tolist() if np.ndim(column) else [column] * rows for column in columns]
    out: list[list] = [[] for _ in range(10)]
    for flops, act_bytes, kv_bytes, batch, heads, kv_heads, q_len, kv_len, head_dim, sdpa, packing, v_dim, width in zip(
            *values, strict=True):
        batch, heads, q_len = max(batch, 1.0), max(heads, 1.0), max(q_len, 1.0)
        kv_heads = kv_heads if kv_heads > 0 else heads  # kv_groups
        kv_len, head_dim = max(kv_len, 1.0), max(head_dim, 1.0)
        pair_dims = head_dim + (v_dim if v_dim > 0 else head_dim)
        cached = width if width > 0 else pair_dims
        narrow = 0 < kv_bytes < NARROW_KV_BYTES * packing * batch * kv_heads * kv_len * cached
        latent = width > 0 and q_len < kv_len
        query_rows = q_len * heads / kv_heads
        decode = q_len == 1 or (query_rows <= ATTENTION_Q_TILE and q_len < kv_len) or latent  # decode_like
        mla_tiles = float(math.ceil(query_rows / MLA_Q_TILE)) if latent else 1.0
        kv_tiles = float(math.ceil(kv_len / ATTENTION_KV_TILE))
        head_blocks = batch * heads * float(math.ceil(q_len * heads / heads / ATTENTION_Q_TILE))
        packed_blocks = batch * kv_heads * mla_tiles if latent else (
            batch * kv_heads * float(math.ceil(q_len * heads / kv_heads / ATTENTION_Q_TILE)))
        split_tiles = min(float(MAX_KV_SPLITS), kv_tiles)
        for part, value in zip(out, (
                flops * mla_tiles * MLA_Q_TILE / query_rows if latent else flops, act_bytes + kv_bytes,
                mla_tiles * (kv_bytes if kv_bytes > 0 else 2.0 * batch * kv_heads * kv_len * pair_dims), batch,
                split_tiles, kv_tiles <= 4, 4 * int(sdpa) + 2 * int(decode) + int(narrow), 2.0 * pair_dims,
                packed_blocks, head_blocks), strict=True):
            part.append(value)
    flops, traffic, keys_values, batch, split_tiles, mma_flops, packed_blocks, head_blocks = (
        [float(value) for value in part] for part in (*out[:5], *out[7:]))
    few_tiles, variant = out[5:7]
    shapes = AttentionShapes(
        flops=np.array(flops), traffic=np.array(traffic), keys_values=np.array(keys_values), batch=np.array(batch),
        split_tiles=np.array(split_tiles), few_tiles=np.array(few_tiles, dtype=bool),
        variant=np.array(variant, dtype=int), mma_flops=np.array(mma_flops), packed_blocks=np.array(packed_blocks),
        head_blocks=np.array(head_blocks), whole_blocks=all(b % 1 == 0 for b in packed_blocks + head_blocks),
        split_column=np.array(split_tiles, dtype=np.intp))
    # The lists _scalar_times reads: these, rather than the arrays' tolist() again.
    shapes.__dict__["row_values"] = (flops, traffic, keys_values, batch, [int(tiles) for tiles in split_tiles],
                                     mma_flops, packed_blocks, head_blocks, variant)
    return shapes


def attention_times(*, flops, act_bytes, kv_bytes, batch, heads, kv_heads, q_len, kv_len, head_dim, flops_per_s,
                    bandwidth_Bps, sm_count: int, fit: AttentionFit, cached_bytes: float = 0.0):
    """(compute_s, memory_s, busy_s, latency_s) of fused attention kernels (arrays, one entry per kernel):
    busy_s is the device time past the fixed latency_s of the fit that prices the kernel (see the module
    docstring). A KV cache element narrower than NARROW_KV_BYTES picks the fp8-KV fit; decode_like calls the decode
    fit."""
    shapes = attention_shapes(flops=flops, act_bytes=act_bytes, kv_bytes=kv_bytes, batch=batch, heads=heads,
                              kv_heads=kv_heads, q_len=q_len, kv_len=kv_len, head_dim=head_dim)
    return shaped_attention_times(shapes, flops_per_s=flops_per_s, bandwidth_Bps=bandwidth_Bps, sm_count=sm_count,
                                  fit=fit, cached_bytes=cached_bytes)


def shaped_attention_times(shapes: AttentionShapes, *, flops_per_s, bandwidth_Bps, sm_count: int, fit: AttentionFit,
                           cached_bytes: float = 0.0):
    """attention_times of calls whose device-free terms are `shapes` (attention_shapes). Each kernel takes its fit's
    parameters by one lookup (variant_columns), so kernels of every variant are priced in one pass."""
    if len(shapes.flops) <= SCALAR_ROWS and shapes.whole_blocks and np.ndim(flops_per_s) == 1 \
            and np.ndim(bandwidth_Bps) == 0:
        try:
            return _scalar_times(shapes, flops_per_s=flops_per_s, bandwidth_Bps=float(bandwidth_Bps),
                                 sm_count=sm_count, fit=fit, cached_bytes=cached_bytes)
        except (ZeroDivisionError, OverflowError):  # a zero rate: numpy's inf (with its warning) as on any other path
            pass
    row_fit = _RowFits(*variant_columns(fit)[shapes.variant].T)
    parts = _times(row_fit, shapes, flops_per_s=flops_per_s, bandwidth_Bps=bandwidth_Bps, sm_count=sm_count,
                   cached_bytes=cached_bytes)
    # (kernels,), or (points, kernels) where a rate varies by design point (a block, hw_models/device_block.py);
    # the shape-only terms (blocks, waves, splits) stay one per kernel.
    out = (*parts, row_fit.latency_s)
    if np.ndim(flops_per_s) < 2 and np.ndim(bandwidth_Bps) < 2:  # one design point: every part one per kernel
        return out
    shape = np.broadcast_shapes(*(part.shape for part in out))
    return tuple(part if np.shape(part) == shape else np.broadcast_to(part, shape) for part in out)


# Attention rows of one design point (a prefill's and a decode step's) priced in Python floats: numpy's overhead per
# call on arrays this short exceeds the arithmetic, and _times makes some forty calls.
SCALAR_ROWS = 4


def _scalar_smooth_max(parts: list[float], p: float) -> float:
    """smooth_max of floats, in the same order of operations."""
    top = max(max(parts), 1e-30)
    total = (parts[0] / top) ** p
    for part in parts[1:]:
        total = total + (part / top) ** p
    return top * total ** (1.0 / p)


def _scalar_times(shapes: AttentionShapes, *, flops_per_s: np.ndarray, bandwidth_Bps: float, sm_count: int,
                  fit: AttentionFit, cached_bytes: float):
    """shaped_attention_times of a few rows of one design point (whole block counts): _times row by row in floats,
    each step as _times takes it."""
    rows = variant_rows(fit)
    table = split_table(sm_count)
    last = len(table) - 1
    compute, memory, busy, latency = [], [], [], []
    for flops, traffic, keys_values, batch, column, mma, packed, head, variant, rate in zip(
            *shapes.row_values, flops_per_s.tolist(), strict=True):
        fit_row = rows[variant]
        blocks = packed if fit_row.packs_gqa else head
        blocks = blocks * int(table[int(min(blocks, last)), column])
        waves = float(math.ceil(blocks / sm_count))
        per_pair = _scalar_smooth_max([mma, fit_row.softmax_flops], fit_row.softmax_overlap)
        compute_s = flops * (per_pair / mma) / (rate * fit_row.compute_fraction * blocks / (waves * sm_count))
        stream_Bps, block_Bps = bandwidth_Bps * fit_row.bandwidth_fraction, fit_row.block_bandwidth_Bps
        if cached_bytes:
            speed = fit_row.cache_speedup if traffic <= cached_bytes else 1.0
            stream_Bps, block_Bps = stream_Bps * speed, block_Bps * speed
        memory_s = traffic / stream_Bps
        blocks_s = waves * (fit_row.block_s + keys_values / blocks / block_Bps)
        compute.append(compute_s)
        memory.append(memory_s)
        busy.append(batch * fit_row.sequence_s / sm_count
                    + _scalar_smooth_max([compute_s, memory_s, blocks_s], fit_row.blend))
        latency.append(fit_row.latency_s)
    return np.array(compute), np.array(memory), np.array(busy), np.array(latency)


def variant_rows(fit: AttentionFit) -> list[_RowFits]:
    """variant_columns(fit) as one _RowFits of floats per variant: computed once per fit (kept beside its fields)."""
    rows = fit.__dict__.get("_variant_rows")
    if rows is None:
        rows = [_RowFits(*row) for row in variant_columns(fit).tolist()]
        fit.__dict__["_variant_rows"] = rows  # a frozen dataclass: eq and hash read the fields only
    return rows


class _RowFits(NamedTuple):
    """AttentionFit's parameters with one value per kernel (arrays; packs_gqa as 0 or 1), as _times reads them."""

    compute_fraction: np.ndarray
    bandwidth_fraction: np.ndarray
    latency_s: np.ndarray
    block_s: np.ndarray
    sequence_s: np.ndarray
    block_bandwidth_Bps: np.ndarray
    softmax_flops: np.ndarray
    softmax_overlap: np.ndarray
    blend: np.ndarray
    cache_speedup: np.ndarray
    packs_gqa: np.ndarray


_ROW_FIELDS = _RowFits._fields


def variant_columns(fit: AttentionFit) -> np.ndarray:
    """The parameters (_RowFits' fields, in order) of the eight fits that price attention kernels (fit.variant), one
    row per variant, indexed by 4 x torch SDPA + 2 x decode + fp8 KV: computed once per fit (kept beside its
    fields)."""
    columns = fit.__dict__.get("_variant_columns")
    if columns is None:
        variants = [fit.variant(decode=decode, fp8_kv=narrow, torch_sdpa=sdpa) for sdpa in (False, True)
                    for decode in (False, True) for narrow in (False, True)]
        columns = np.array([[float(getattr(v, name)) for name in _ROW_FIELDS] for v in variants])
        fit.__dict__["_variant_columns"] = columns  # a frozen dataclass: eq and hash read the fields only
    return columns
