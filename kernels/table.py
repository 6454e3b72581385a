"""KernelTable: kernels as columns of numpy arrays, so cost models price a whole pass in one call."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import cached_property

import numpy as np

from kernels.formats import DENSE, NumericFormat
from kernels.kernel import KIND_CLASS, Kernel, KernelKind

KINDS = tuple(KernelKind)
KIND_CODE = {kind: i for i, kind in enumerate(KINDS)}
CLASS_OF_CODE = np.array([KIND_CLASS[kind] for kind in KINDS], dtype=object)
CLASS_CODES = {name: np.array([KIND_CODE[k] for k in KINDS if KIND_CLASS[k] == name])
               for name in dict.fromkeys(KIND_CLASS.values())}
_WEIGHT_KINDS = (KIND_CODE[KernelKind.GEMM], KIND_CODE[KernelKind.MOE])


@dataclass(frozen=True)
class KernelTable:
    """Columns of per-kernel work, traffic and shape; `kernels` keeps the row objects for names and labels."""

    kernels: tuple[Kernel, ...]
    kind: np.ndarray  # index into KINDS
    flops: np.ndarray
    weight_bytes: np.ndarray
    act_bytes: np.ndarray
    kv_bytes: np.ndarray
    dtype: np.ndarray  # compute dtype per kernel, e.g. "bf16", "int8"
    tensor_core: np.ndarray  # bool: matrix units (GEMM, attention) rather than vector units
    m: np.ndarray  # GEMM shape, zero for other kernels
    n: np.ndarray
    k: np.ndarray
    batch: np.ndarray
    # Attention shape (zero for other kernels); at_kv_lengths sets each decode step's kv_len.
    heads: np.ndarray
    q_len: np.ndarray
    kv_len: np.ndarray
    head_dim: np.ndarray
    # Weight sparsity (set by with_format): fraction of weights kept and stored size of the sparse layout,
    # both relative to dense, per kernel (1 where there are no sparse weights), and the pattern's name.
    weight_density: np.ndarray | None = None
    sparse_weight_scale: np.ndarray | None = None
    sparsity: str = DENSE
    # Bits per weight value (set by with_format on GEMMs with weights; 16 elsewhere): LUT and bit-serial
    # engines cost by it.
    weight_bits: np.ndarray | None = None
    # KV heads of attention kernels (zero elsewhere): with kv_bytes they give the KV cache's element width.
    kv_heads: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("weight_density", "sparse_weight_scale"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.ones(len(self.kernels)))
        if self.kv_heads is None:
            object.__setattr__(self, "kv_heads", np.array([k.kv_heads for k in self.kernels], dtype=float))
        if self.weight_bits is None:
            object.__setattr__(self, "weight_bits", np.full(len(self.kernels), 16.0))

    @classmethod
    def from_kernels(cls, kernels: list[Kernel] | tuple[Kernel, ...]) -> KernelTable:
        kernels = tuple(kernels)

        def column(name: str, dtype=float) -> np.ndarray:
            return np.array([getattr(k, name) for k in kernels], dtype=dtype)

        return cls(
            kernels=kernels, kind=np.array([KIND_CODE[k.kind] for k in kernels], dtype=int),
            flops=column("flops"), weight_bytes=column("weight_bytes"), act_bytes=column("act_bytes"),
            kv_bytes=column("kv_bytes"), dtype=column("dtype", object), tensor_core=column("tensor_core", bool),
            m=column("m"), n=column("n"), k=column("k"), batch=column("batch"), heads=column("heads"),
            q_len=column("q_len"), kv_len=column("kv_len"), head_dim=column("head_dim"), kv_heads=column("kv_heads"),
        )

    @classmethod
    def concat(cls, tables: list[KernelTable]) -> KernelTable:
        """The rows of several tables of one numeric format, in order."""
        first = tables[0]
        return cls(kernels=tuple(k for t in tables for k in t.kernels), sparsity=first.sparsity,
                   **{name: np.concatenate([getattr(t, name) for t in tables]) for name in first._columns()})

    def _columns(self) -> list[str]:
        return [f.name for f in fields(self) if f.name not in ("kernels", "sparsity")]

    def __len__(self) -> int:
        return len(self.kernels)

    @property
    def bytes(self) -> np.ndarray:
        return self.weight_bytes + self.act_bytes + self.kv_bytes

    @property
    def kernel_class(self) -> np.ndarray:
        """Coarse class of each kernel (gemm, attention, norm, ...), for breakdowns and efficiency fits."""
        return CLASS_OF_CODE[self.kind]

    @cached_property
    def class_masks(self) -> dict[str, np.ndarray]:
        """Row mask of each kernel class present in the table."""
        masks = {name: np.isin(self.kind, codes) for name, codes in CLASS_CODES.items()}
        return {name: mask for name, mask in masks.items() if mask.any()}

    @cached_property
    def kind_masks(self) -> dict[str, np.ndarray]:
        """Row mask of each kernel kind present in the table (finer than classes: activation, rope, ...)."""
        return {KINDS[code].value: self.kind == code for code in np.unique(self.kind).tolist()}

    @cached_property
    def dtype_groups(self) -> tuple[list[tuple[str, bool]], np.ndarray]:
        """Distinct (dtype, tensor_core) pairs and each kernel's index into them: cost models look up
        rates once per pair instead of once per kernel."""
        pairs = list(zip(self.dtype.tolist(), self.tensor_core.tolist(), strict=True))
        distinct = sorted(set(pairs))
        index = {p: i for i, p in enumerate(distinct)}
        return distinct, np.array([index[p] for p in pairs], dtype=int)

    def per_dtype(self, fn) -> np.ndarray:
        """fn(dtype, tensor_core) for every kernel, called once per distinct pair (cost models look up rates).

        A rate that is an array over design points (shape (points, 1)) gives (points, kernels)."""
        groups, index = self.dtype_groups
        values = [fn(dtype, tensor_core) for dtype, tensor_core in groups]
        if all(np.ndim(v) == 0 for v in values):
            return np.array(values, dtype=float)[index]
        lead = np.broadcast_shapes(*(np.shape(v) for v in values))[:-1]
        columns = [np.broadcast_to(np.asarray(v, dtype=float), (*lead, 1)) for v in values]
        return np.concatenate(columns, axis=-1)[..., index]

    def select(self, mask: np.ndarray) -> KernelTable:
        """The rows where mask is true (or the given row indices)."""
        index = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        return KernelTable(kernels=tuple(self.kernels[i] for i in index), sparsity=self.sparsity,
                           **{name: getattr(self, name)[index] for name in self._columns()})

    def with_format(self, fmt: NumericFormat) -> KernelTable:
        """Traffic and compute dtypes under a numeric format (the table is traced at 16 bits)."""
        # Weight GEMMs: projections, and fused MoE layers (grouped GEMMs over the experts' weights).
        weight_gemm = np.isin(self.kind, _WEIGHT_KINDS) & (self.weight_bytes > 0)
        dtype = self.dtype.copy()
        if weight_gemm.any():
            dtype[weight_gemm] = [fmt.gemm_dtype(d) for d in dtype[weight_gemm]]
        # Quantized activations shrink only the GEMM's input operand (m x k of its m x k + m x n activation
        # traffic): the output is written at 16 bits for the next kernels; other kernels keep their precision.
        input_share = np.divide(self.k, self.k + self.n, out=np.ones(len(self.k)), where=(self.k + self.n) > 0)
        act_bytes = np.where(weight_gemm, self.act_bytes * (1.0 - input_share * (1.0 - fmt.act_scale)),
                             self.act_bytes)
        return replace(self, weight_bytes=self.weight_bytes * fmt.weight_scale, act_bytes=act_bytes,
                       kv_bytes=self.kv_bytes * fmt.kv_scale, dtype=dtype, sparsity=fmt.sparsity,
                       weight_density=np.where(weight_gemm, fmt.weight_density, 1.0),
                       sparse_weight_scale=np.where(weight_gemm, fmt.sparse_weight_scale, 1.0),
                       weight_bits=np.where(weight_gemm, float(fmt.weight_bits), 16.0))

    def run_on(self, sparsity_patterns: frozenset[str]) -> KernelTable:
        """The work a device does: a sparsity pattern it supports skips the zeros (N/M of the GEMM math, the
        compressed weights moved); any other pattern runs dense, weights stored dense."""
        if self.sparsity == DENSE or self.sparsity not in sparsity_patterns:
            return self
        cache = self.__dict__.setdefault("_run_on_cache", {})
        if self.sparsity not in cache:
            table = replace(self, flops=self.flops * self.weight_density,
                            weight_bytes=self.weight_bytes * self.sparse_weight_scale)
            _share_shape_caches(table, self)
            cache[self.sparsity] = table
        return cache[self.sparsity]

    @cached_property
    def decode_attention_mask(self) -> np.ndarray:
        return self.kind == KIND_CODE[KernelKind.ATTENTION_DECODE]

    @cached_property
    def _decode_attention_rows(self) -> KernelTable:
        return self.select(self.decode_attention_mask)

    def at_kv_lengths(self, kv_lens: np.ndarray, window: int | None = None) -> KernelTable:
        """Decode-attention rows repeated for each KV length (step-major), with FLOPs and KV traffic rescaled.

        A decode step's attention work and KV reads are proportional to the keys it attends to, and
        nothing else in the step depends on the context length: one traced step gives every step.
        """
        kv_lens = np.asarray(kv_lens, dtype=float)
        if window:
            kv_lens = np.minimum(kv_lens, window)
        return self._decode_attention_rows._at_kv_lengths(kv_lens)

    def _at_kv_lengths(self, kv_lens: np.ndarray) -> KernelTable:
        """at_kv_lengths of a table of decode-attention rows only."""
        traced = self.kv_len
        ratio = (kv_lens[:, None] / traced[None, :]).ravel()
        template = self._tiled(len(kv_lens))
        table = replace(template, flops=template.flops * ratio, kv_bytes=template.kv_bytes * ratio,
                        kv_len=np.repeat(kv_lens, len(traced)))
        _share_shape_caches(table, template)  # this runs once per design point
        distinct = self.distinct_rows
        if distinct is not None:
            # Equal rows at one length are equal at every length (they were traced at the same one).
            rows, index = distinct
            steps = np.arange(len(kv_lens))[:, None] * len(rows)
            table.__dict__["distinct_rows"] = (rows._at_kv_lengths(kv_lens), (steps + index[None, :]).ravel())
        return table

    def _tiled(self, steps: int) -> KernelTable:
        """The rows repeated `steps` times, memoized by step count."""
        cache = self.__dict__.setdefault("_tiled_cache", {})
        if steps not in cache:
            # Attention has no weights: the tiled rows are dense whatever the format's sparsity (run_on is a no-op).
            table = KernelTable(kernels=self.kernels * steps,
                                **{name: np.tile(getattr(self, name), steps) for name in self._columns()})
            _share_shape_caches(table, self, tile=steps)
            cache.clear()  # one step count at a time: sweeps vary it rarely, and memory stays bounded
            cache[steps] = table
        return cache[steps]

    @cached_property
    def distinct_rows(self) -> tuple[KernelTable, np.ndarray] | None:
        """(the distinct rows, each row's index into them), or None when no two rows are equal: a model's
        layers repeat the same kernels, and a cost model that prices each row on its own prices each once."""
        if len(self) < 2:
            return None
        _, dtype_index = self.dtype_groups
        columns = np.column_stack([dtype_index, *(getattr(self, name) for name in self._columns()
                                                  if name not in ("dtype",))]).astype(float)
        _, first, index = np.unique(columns, axis=0, return_index=True, return_inverse=True)
        if len(first) == len(self):
            return None
        rows = self.select(first)
        rows.__dict__["distinct_rows"] = None
        return rows, index.ravel()

def _share_shape_caches(table: KernelTable, source: KernelTable, tile: int = 1) -> None:
    """Give `table` the shape-only caches of `source` (its rows repeated `tile` times): they depend on kinds and
    dtypes, not on work or traffic, and recomputing them per design point would cost more than the pricing."""
    distinct, index = source.dtype_groups
    table.__dict__["dtype_groups"] = (distinct, np.tile(index, tile))
    for name in ("class_masks", "kind_masks"):
        table.__dict__[name] = {key: np.tile(mask, tile) for key, mask in getattr(source, name).items()}
