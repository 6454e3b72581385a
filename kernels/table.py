"""KernelTable: kernels as columns of numpy arrays, so cost models price a whole pass in one call."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from functools import cached_property

import numpy as np

from kernels.format_kernels import FORMAT_OPS, decompression_kernels, outlier_bytes, outlier_kernels
from kernels.formats import DENSE, SPQR, UNQUANTIZED_BITS, NumericFormat, unquantized_module
from kernels.kernel import KIND_CLASS, Kernel, KernelKind, is_torch_sdpa
from kernels.kv_policy import Window, decode_reads
from kernels.moe import COLD_EXPERTS_MODULE, ROUTINGS, hot_expert_parts
from kernels.sparsity import ACTIVATION, DEJA_VU_RANK, PREDICTOR_BITS, exploits, parse_sparsity, union_share

KINDS = tuple(KernelKind)
KIND_CODE = {kind: i for i, kind in enumerate(KINDS)}
CLASS_OF_CODE = np.array([KIND_CLASS[kind] for kind in KINDS], dtype=object)
CLASS_CODES = {name: np.array([KIND_CODE[k] for k in KINDS if KIND_CLASS[k] == name])
               for name in dict.fromkeys(KIND_CLASS.values())}
_WEIGHT_KINDS = (KIND_CODE[KernelKind.GEMM], KIND_CODE[KernelKind.MOE])
_ATTENTION_KINDS = (KIND_CODE[KernelKind.ATTENTION_PREFILL], KIND_CODE[KernelKind.ATTENTION_DECODE])
# Per kernel class, whether each kind code belongs to it (KernelTable.class_rows).
_CLASS_OF_KIND = {name: np.isin(np.arange(len(KINDS)), codes) for name, codes in CLASS_CODES.items()}
# A decoder layer's MLP in the traced module paths ('layers.3.mlp.up_proj', workloads/decoder.py).
_MLP_MODULE = re.compile(r"(^|\.)mlp(\.|$)")


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
    # Whether each kernel is torch's scaled_dot_product_attention (kernel.is_torch_sdpa), which a cost model may
    # price apart from an engine's attention; derived from the kernels' ops unless given.
    torch_sdpa: np.ndarray | None = None
    # Whether each kernel is a pointwise one off the contiguous vectorized path (Kernel.general_layout).
    general_layout: np.ndarray | None = None
    # A reduction's rows and values per row (Kernel.reduce_rows, reduce_length; zero for other kernels).
    reduce_rows: np.ndarray | None = None
    reduce_length: np.ndarray | None = None
    # Attention's value width and cached elements per key and KV head where they are not the usual (Kernel.v_head_dim,
    # kv_width; zero elsewhere).
    v_head_dim: np.ndarray | None = None
    kv_width: np.ndarray | None = None
    # The devices each fused MoE layer's experts are spread over (Kernel.expert_parallel; 1 elsewhere).
    expert_parallel: np.ndarray | None = None
    # The tokens each fused MoE layer routes (Kernel.tokens; 0 elsewhere).
    tokens: np.ndarray | None = None
    # The thread blocks each GEMM's k loop is split over (Kernel.split_k; 1 elsewhere).
    split_k: np.ndarray | None = None
    # How each fused MoE layer routes its tokens (kernels/moe.py chunk_columns prices its calls by it): the routing
    # model's code in kernels/moe.py ROUTINGS (0, balanced, elsewhere), the layer's experts and its top-k (0
    # elsewhere); set by routed.
    moe_routing: np.ndarray | None = None
    moe_experts: np.ndarray | None = None
    moe_topk: np.ndarray | None = None
    # The numeric format the table is in (set by with_format; None: the traced precision). Cost models read its
    # element and scale types (hw_models/gpu_quant.py) for the rows with quantized weights (weight_bits < 16).
    numeric_format: NumericFormat | None = None

    def with_columns(self, **changes) -> KernelTable:
        """dataclasses.replace(self, **changes) for changes that are never None: the defaults __post_init__ fills are
        this table's already, so the copy skips __init__ (a serving run re-sizes attention rows for every new shape,
        where replace's 29-field __init__ cost more than the arithmetic). Cached properties are not carried over."""
        if not changes.keys() <= _FIELD_NAMES:
            raise TypeError(f"with_columns: found {sorted(changes.keys() - _FIELD_NAMES)}, allowed: KernelTable fields")
        table = object.__new__(type(self))
        state = self.__dict__
        table.__dict__.update({name: state[name] for name in _FIELDS}, **changes)
        return table

    def __post_init__(self) -> None:
        for name in ("weight_density", "sparse_weight_scale"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.ones(len(self.kernels)))
        if self.kv_heads is None:
            object.__setattr__(self, "kv_heads", np.array([k.kv_heads for k in self.kernels], dtype=float))
        if self.weight_bits is None:
            object.__setattr__(self, "weight_bits", np.full(len(self.kernels), 16.0))
        if self.torch_sdpa is None:
            object.__setattr__(self, "torch_sdpa", np.array([is_torch_sdpa(k.op) for k in self.kernels], dtype=bool))
        if self.general_layout is None:
            object.__setattr__(self, "general_layout", np.array([k.general_layout for k in self.kernels], dtype=bool))
        for name in ("reduce_rows", "reduce_length", "v_head_dim", "kv_width", "expert_parallel", "tokens", "split_k"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.array([getattr(k, name) for k in self.kernels], dtype=float))
        for name in ("moe_routing", "moe_experts", "moe_topk"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.zeros(len(self.kernels)))

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
                   numeric_format=first.numeric_format,
                   **{name: np.concatenate([getattr(t, name) for t in tables]) for name in first._columns()})

    def routed(self, routing: str, experts: int, topk: int) -> KernelTable:
        """This table with its fused MoE rows routed by the routing model `routing` (ModelConfig.moe_routing) over
        layers of `experts` experts, top-`topk`."""
        moe = self.kind == KIND_CODE[KernelKind.MOE]
        return self.with_columns(moe_routing=np.where(moe, float(ROUTINGS.index(routing)), self.moe_routing),
                                 moe_experts=np.where(moe, float(experts), self.moe_experts),
                                 moe_topk=np.where(moe, float(topk), self.moe_topk))

    def with_sizes_of(self, tables: list[KernelTable]) -> KernelTable:
        """concat(tables) where their rows, in order, are this table's kernels at other sizes (a frame,
        kernels/shapes.py StepTemplate.attention_table): the columns of what a kernel is (KERNEL_COLUMNS) and the
        shape-only caches are this table's, every other column and the kernels are concatenated."""
        sizes = {name: np.concatenate([getattr(t, name) for t in tables]) for name in _SIZE_COLUMNS}
        table = self.with_columns(kernels=tuple(k for t in tables for k in t.kernels), **sizes)
        _share_shape_caches(table, self)
        return table

    @classmethod
    def stack(cls, tables: list[KernelTable]) -> KernelTable:
        """The rows of several tables of one numeric format and sparsity, in order, as one table: a cost model that
        prices each row on its own (DeviceModel.cost_passes) prices several passes in one call. Unlike concat, it
        keeps the parts' dtype groups (the one shape cache cost models need per call) instead of recomputing them."""
        first = tables[0]
        # Memoized on the first table, per the others (kept alive, so their ids stay theirs): the passes of one
        # point's tables are stacked for every device a sweep prices them on.
        cache = first.__dict__.setdefault("_stack_cache", {})
        key = tuple(id(t) for t in tables[1:])
        hit = cache.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], tables[1:], strict=True)):
            return hit[1]
        for table in tables[1:]:
            same_format = table.numeric_format is first.numeric_format or table.numeric_format == first.numeric_format
            if not same_format or table.sparsity != first.sparsity:
                raise ValueError(f"stack: tables of formats {first.numeric_format} ({first.sparsity}) and "
                                 f"{table.numeric_format} ({table.sparsity}), allowed: one format and sparsity")
        stacked = cls(kernels=sum((t.kernels for t in tables), ()), sparsity=first.sparsity,
                      numeric_format=first.numeric_format,
                      **{name: np.concatenate([getattr(t, name) for t in tables]) for name in _COLUMNS})
        groups = [t.dtype_groups for t in tables]
        distinct = groups[0][0]
        if all(g[0] == distinct for g in groups):
            stacked.__dict__["dtype_groups"] = (distinct, np.concatenate([g[1] for g in groups]))
        else:
            distinct = sorted({pair for g in groups for pair in g[0]})
            position = {pair: i for i, pair in enumerate(distinct)}
            stacked.__dict__["dtype_groups"] = (distinct, np.concatenate(
                [np.array([position[pair] for pair in g[0]], dtype=int)[g[1]] for g in groups]))
        if len(cache) >= TABLES_KEPT:
            cache.clear()
        cache[key] = (tuple(tables[1:]), stacked)
        return stacked

    def distinct_counts(self, mask: np.ndarray | None = None, without: np.ndarray | None = None) -> np.ndarray:
        """How many of the kernels where `mask` is true (None: all) and `without` is not each distinct row
        (distinct_rows; every row where there is none) stands for: a sum over kernels of per-row values is a product
        with these. Memoized per pair of mask objects (the table's own: class_masks, decode_attention_mask)."""
        cache = self.__dict__.setdefault("_counts_cache", {})
        key = (id(mask), id(without))
        hit = cache.get(key)
        if hit is not None and hit[0] is mask and hit[1] is without:
            return hit[2]
        distinct = self.distinct_rows
        index, rows = (np.arange(len(self)), len(self)) if distinct is None else (distinct[1], len(distinct[0]))
        keep = np.ones(len(self), dtype=bool) if mask is None else np.array(mask, dtype=bool)
        if without is not None:
            keep &= ~without
        counts = np.bincount(index[keep], minlength=rows).astype(float)
        if len(cache) >= MASKS_KEPT:  # a caller's fresh masks (a unit's rows, step_costs) would pile up: bounded
            cache.clear()
        cache[key] = (mask, without, counts)  # the masks kept alive with their ids
        return counts

    def distinct_counts_matrix(self, masks: dict[str, np.ndarray], without: np.ndarray | None = None) -> np.ndarray:
        """distinct_counts(mask, without) of each of `masks` (by label) as the rows of one matrix: sums of per-row
        values over several masks are one product. Memoized per mapping object (the table's own: class_masks)."""
        return self._mask_matrix("_counts_matrix", masks, without,
                                 lambda: [self.distinct_counts(mask, without) for mask in masks.values()])

    def labelled_counts(self, masks: dict[str, np.ndarray], without: np.ndarray | None = None) -> np.ndarray:
        """distinct_counts of every kernel but `without` (row 0) and of each of `masks` (rows 1..., by label) as one
        matrix: every total of a pass is one product with it. Memoized per mapping object (the table's own)."""
        return self._mask_matrix("_labelled_counts", masks, without, lambda: [
            self.distinct_counts(None, without), *(self.distinct_counts(mask, without) for mask in masks.values())])

    def kernel_counts(self, masks: dict[str, np.ndarray]) -> np.ndarray:
        """How many kernels each of `masks` (by label) holds, in their order. Memoized per mapping object."""
        return self._mask_matrix("_kernel_counts", masks, None,
                                 lambda: [float(np.count_nonzero(mask)) for mask in masks.values()]).ravel()

    def masks_within(self, masks: dict[str, np.ndarray], within: np.ndarray) -> np.ndarray:
        """Each of `masks` (by label) restricted to the rows where `within` is true, as the rows of a 0/1 matrix: a
        sum over those rows of each mask's kernels is one product. Memoized per mapping object."""
        return self._mask_matrix("_within_matrix", masks, within, lambda: [mask[within] for mask in masks.values()])

    def _mask_matrix(self, cache_name: str, masks: dict, other: np.ndarray | None, rows) -> np.ndarray:
        cache = self.__dict__.setdefault(cache_name, {})
        key = (id(masks), id(other))
        hit = cache.get(key)
        if hit is None or hit[0] is not masks or hit[1] is not other:
            values = rows()
            matrix = np.array(values, dtype=float).reshape(len(values), -1)
            hit = cache[key] = (masks, other, matrix)  # the masks kept alive with their ids
        return hit[2]

    def class_rows(self, name: str) -> np.ndarray | None:
        """Row mask of kernel class `name` (gemm, attention, ...), None where the table has none: one lookup by kind
        code (class_masks finds every class at once), memoized."""
        cache = self.__dict__.setdefault("_class_rows", {})
        if name not in cache:
            rows = _CLASS_OF_KIND[name][self.kind]
            cache[name] = rows if rows.any() else None
        return cache[name]

    def kind_rows(self, kind: KernelKind) -> np.ndarray | None:
        """Row mask of one kernel kind, None where the table has none (see class_rows)."""
        cache = self.__dict__.setdefault("_kind_rows", {})
        if kind not in cache:
            rows = self.kind == KIND_CODE[kind]
            cache[kind] = rows if rows.any() else None
        return cache[kind]

    def rows_where(self, mask: np.ndarray) -> RowGroup:
        """The rows where `mask` is true, with their columns gathered when first read: memoized per mask value, so
        a cost model pricing this table on many devices gathers the columns of a group of rows once."""
        cache = self.__dict__.setdefault("_row_groups", {})
        key = mask.tobytes()
        group = cache.get(key)
        if group is None:
            group = cache[key] = RowGroup(self, np.flatnonzero(mask))
        return group

    def _columns(self) -> tuple[str, ...]:
        return _COLUMNS

    def __len__(self) -> int:
        return len(self.kernels)

    @cached_property
    def bytes(self) -> np.ndarray:
        """Bytes each kernel moves (weights, activations, KV cache): kept, as the columns do not change."""
        return self.weight_bytes + self.act_bytes + self.kv_bytes

    @property
    def kernel_class(self) -> np.ndarray:
        """Coarse class of each kernel (gemm, attention, norm, ...), for breakdowns and efficiency fits."""
        return CLASS_OF_CODE[self.kind]

    @cached_property
    def class_masks(self) -> dict[str, np.ndarray]:
        """Row mask of each kernel class present in the table (class_masks of its kind codes)."""
        return class_masks(self.kind)

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

    def dtype_rows(self, rows: np.ndarray, pairs: tuple[list[tuple[str, bool]], np.ndarray] | None = None
                   ) -> list[tuple[str, np.ndarray]]:
        """(dtype, row mask) of each distinct (dtype, tensor_core) pair (dtype_groups, or `pairs` as per_dtype takes
        them) among `rows` (a mask), in that order, those with no row left out: memoized per mask value (cost models
        group a table's rows by dtype on every device)."""
        cache = self.__dict__.setdefault("_dtype_rows", {})
        own = pairs is None or pairs is self.dtype_groups
        key = rows.tobytes() if own else (rows.tobytes(), tuple(pairs[0]), pairs[1].tobytes())
        if key not in cache:
            distinct, index = self.dtype_groups if own else pairs
            masks = [(dtype, rows & (index == i)) for i, (dtype, _) in enumerate(distinct)]
            cache[key] = [(dtype, mask) for dtype, mask in masks if mask.any()]
        return cache[key]

    def per_dtype(self, fn, pairs: tuple[list[tuple[str, bool]], np.ndarray] | None = None
                  ) -> np.ndarray | tuple[np.ndarray, ...]:
        """fn(dtype, tensor_core) for every kernel, called once per distinct pair (cost models look up rates); where
        fn returns a tuple (several rates of a pair), a tuple of such arrays, looked up in one pass. `pairs`: the
        pairs and each kernel's index into them where a cost model prices some rows as another pair (default:
        dtype_groups).

        A rate that is an array over design points (shape (points, 1)) gives (points, kernels)."""
        groups, index = self.dtype_groups if pairs is None else pairs
        values = [fn(dtype, tensor_core) for dtype, tensor_core in groups]
        if values and type(values[0]) is tuple:
            if all(type(v) is float for row in values for v in row):  # one gather for every rate
                return tuple(np.array(values, dtype=float).T.take(index, axis=1))
            return tuple(_per_kernel(list(column), index) for column in zip(*values, strict=True))
        return _per_kernel(values, index)

    def select(self, mask: np.ndarray) -> KernelTable:
        """The rows where mask is true (or the given row indices)."""
        index = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        return KernelTable(kernels=tuple(self.kernels[i] for i in index), sparsity=self.sparsity,
                           numeric_format=self.numeric_format,
                           **{name: getattr(self, name)[index] for name in self._columns()})

    def _kv_scales(self, fmt: NumericFormat, kv_head_dim: int | None = None) -> np.ndarray:
        """Each row's KV bytes under `fmt` over its traced 16-bit ones (NumericFormat.kv_scale): attention rows by
        their head size, the cache writes (no head size of their own) by `kv_head_dim`, the width of a KV head the
        cache stores, or else by their model's attention's."""
        dims = self.head_dim.copy()
        writes = (self.kv_bytes > 0) & ~self.attention_mask
        if writes.any():
            sizes = sorted(set(self.head_dim[self.attention_mask].tolist()))
            if kv_head_dim is None and len(sizes) != 1:
                raise ValueError(f"with_format: KV-cache writes beside attention of head sizes {sizes}, allowed: "
                                 f"the attention of one model")
            dims[writes] = sizes[0] if kv_head_dim is None else kv_head_dim
        scales = np.ones(len(self))
        for head_dim in np.unique(dims[self.kv_bytes > 0]).tolist():
            scales[dims == head_dim] = fmt.kv_scale(int(head_dim))
        return scales

    def with_format(self, fmt: NumericFormat, num_layers: int | None = None,
                    kv_head_dim: int | None = None) -> KernelTable:
        """Traffic and compute dtypes under a numeric format (the table is traced at 16 bits), followed by the
        kernels the format adds (kernels/format_kernels.py: outliers' sparse products, DFloat11's decompression).

        Each weight GEMM takes the bits of its module and layer (NumericFormat.module_bits: a mixed format keeps
        some at more bits than weight_bits, each run as the uniform format of its width, NumericFormat.at_bits);
        `num_layers`, the model's decoder layers, says which are its last layers (default: the table's own, which
        holds the whole model). A fused MoE layer whose hot experts keep more bits runs them as a kernel apart
        (kernels/moe.py hot_expert_parts). `kv_head_dim`: the width of a KV head the model's cache stores
        (ModelConfig.head_dim), what its cache writes are quantized by (_kv_scales); MLA's decompressed prefill attends
        with heads of another width."""
        if fmt.hot_experts:
            split = self._hot_experts_apart(fmt)
            if split is not None:
                return split.with_format(fmt, num_layers, kv_head_dim)
        # Weight GEMMs: projections, and fused MoE layers (grouped GEMMs over the experts' weights).
        weight_gemm = np.isin(self.kind, _WEIGHT_KINDS) & (self.weight_bytes > 0)
        bits = self._format_bits(fmt, weight_gemm, num_layers)
        dtype = self.dtype.copy()
        weight_scale = np.full(len(self), fmt.weight_scale)
        act_scale = np.full(len(self), fmt.act_scale)
        density = np.where(weight_gemm, fmt.weight_density, 1.0)
        sparse_scale = np.where(weight_gemm, fmt.sparse_weight_scale, 1.0)
        for width in np.unique(bits[weight_gemm]).tolist():
            rows = weight_gemm & (bits == width)
            row_fmt = fmt if width == fmt.weight_bits else fmt.at_bits(int(width))
            dtype[rows] = [row_fmt.gemm_dtype(d) for d in dtype[rows]]
            if row_fmt is not fmt:
                weight_scale[rows], act_scale[rows] = row_fmt.weight_scale, row_fmt.act_scale
                density[rows], sparse_scale[rows] = row_fmt.weight_density, row_fmt.sparse_weight_scale
        act_bytes = np.where(weight_gemm, self.act_bytes * _input_scale(self.k, self.n, act_scale), self.act_bytes)
        weight_bytes = self.weight_bytes * weight_scale
        added = []
        if fmt.outlier_fraction:
            rows = np.flatnonzero(weight_gemm & (bits < 16))
            if fmt.scale_type == SPQR:  # SpQR's kernel multiplies its outliers in the GEMM (format_kernels.py)
                weight_bytes[rows] += [outlier_bytes(self.kernels[i], fmt.outlier_fraction) for i in rows.tolist()]
            else:
                added += outlier_kernels(self.kernels, rows, fmt.outlier_fraction)
        table = replace(self, weight_bytes=weight_bytes, act_bytes=act_bytes,
                        kv_bytes=self.kv_bytes * self._kv_scales(fmt, kv_head_dim), dtype=dtype, sparsity=fmt.sparsity,
                        weight_density=density, sparse_weight_scale=sparse_scale,
                        weight_bits=np.where(weight_gemm, bits, 16.0), numeric_format=fmt)
        if fmt.weight_coding == "dfloat11":
            added += decompression_kernels(self.kernels, np.flatnonzero(weight_gemm & (bits >= 16)))
        if not added:
            return table
        return KernelTable.concat([table, replace(KernelTable.from_kernels(added), numeric_format=fmt)])

    def with_16bit_inputs(self, rows: np.ndarray) -> KernelTable:
        """This table with the given quantized weight GEMMs reading their input at 16 bits rather than at the format's
        act_bits: the GEMMs a device runs weight-only (hw_models/gpu_quant.py, a float format the GPU has no tensor
        cores for), whose mixed-input kernels take the 16-bit activations. Kept per mask."""
        fmt = self.numeric_format
        rows = rows & (self.weight_bits < 16)
        if fmt is None or fmt.act_bits >= 16 or not rows.any():
            return self
        cache = self.__dict__.setdefault("_16bit_inputs", {})
        key = rows.tobytes()
        if key not in cache:
            # Each row's bytes over its format's (with_format): those rows' inputs were scaled by fmt.act_scale.
            act_bytes = np.where(rows, self.act_bytes / _input_scale(self.k, self.n, fmt.act_scale), self.act_bytes)
            table = replace(self, act_bytes=act_bytes)
            _share_shape_caches(table, self)
            cache[key] = table
        return cache[key]

    def _hot_experts_apart(self, fmt: NumericFormat) -> KernelTable | None:
        """The table with each fused MoE row of experts at two widths split into its hot and other experts' rows,
        each with its experts' share of the work and traffic (kernels/moe.py hot_expert_parts); None where no row
        splits."""
        moe = np.flatnonzero(self.kind == KIND_CODE[KernelKind.MOE]).tolist()
        parts = {i: hot_expert_parts(self.kernels[i].module, float(self.batch[i]), fmt) for i in moe}
        if all(part == ((self.kernels[i].module, float(self.batch[i])),) for i, part in parts.items()):
            return None
        index, share, batch, kernels = [], [], [], []
        for i, kernel in enumerate(self.kernels):
            for module, experts in parts.get(i, ((kernel.module, float(self.batch[i])),)):
                index.append(i)
                share.append(experts / float(self.batch[i]) if i in parts else 1.0)
                batch.append(experts)
                kernels.append(replace(kernel, module=module, batch=experts) if i in parts else kernel)
        rows, share = self.select(np.array(index)), np.array(share)
        work = {name: getattr(rows, name) * share for name in ("flops", "weight_bytes", "act_bytes", "kv_bytes")}
        return replace(rows, kernels=tuple(kernels), batch=np.array(batch), **work)

    def _format_bits(self, fmt: NumericFormat, weight_gemm: np.ndarray, num_layers: int | None) -> np.ndarray:
        """Bits of each row's weights under a format (16 where the row has no weight GEMM)."""
        if not fmt.mixed:  # one width, but for the modules no format quantizes (NumericFormat.module_bits)
            return np.where(weight_gemm, np.where(self.unquantized_rows, float(UNQUANTIZED_BITS),
                                                  float(fmt.weight_bits)), 16.0)
        layers = [k.layer for k in self.kernels]
        if num_layers is None:
            num_layers = max((layer for layer in layers if layer is not None), default=-1) + 1
        bits = np.full(len(self), 16.0)
        for i in np.flatnonzero(weight_gemm).tolist():
            layer = layers[i]
            bits[i] = (fmt.head_bits or fmt.weight_bits) if layer is None else fmt.module_bits(
                self.kernels[i].module, fmt.is_edge_layer(layer, num_layers))
        return bits

    @cached_property
    def unquantized_rows(self) -> np.ndarray:
        """Rows of decoder-layer modules that keep 16 bits under every format (kernels/formats.py unquantized_module:
        the MoE routers)."""
        return np.array([k.layer is not None and unquantized_module(k.module) for k in self.kernels], dtype=bool)

    @cached_property
    def moe_rest_rows(self) -> np.ndarray:
        """Fused MoE rows of the other experts of a layer whose hot experts run as a kernel apart (kernels/moe.py
        hot_expert_parts): the layer's routing, activation and top-k sum run once, priced with its hot experts."""
        return np.array([k.kind == KernelKind.MOE and k.module.endswith(COLD_EXPERTS_MODULE) for k in self.kernels],
                        dtype=bool)

    @cached_property
    def format_rows(self) -> np.ndarray:
        """Rows whose work a numeric format sets: weight GEMMs and the kernels a format adds."""
        added = np.array([k.op in FORMAT_OPS for k in self.kernels], dtype=bool)
        return (np.isin(self.kind, _WEIGHT_KINDS) & (self.weight_bytes > 0)) | added

    def run_on(self, sparsity_patterns: frozenset[str]) -> KernelTable:
        """The work a device does with the sparsity it exploits (kernels/sparsity.py): a weight pattern moves its
        compressed layout and does the math the pattern leaves (N/M, the kept blocks; all of it for unstructured
        weights, which are computed dense); activation sparsity has the MLP's GEMMs read the union of their tokens'
        kept rows, plus the predictor's work. Sparsity it does not exploit (kernels/sparsity.py exploits: unsupported,
        or saving nothing there) runs dense, weights stored dense. In a table that changed, weight_density is the
        share of each row's dense math done."""
        fmt = self.numeric_format
        weights = exploits(sparsity_patterns, fmt)
        acts = fmt is not None and fmt.act_kept < 1.0 and ACTIVATION in sparsity_patterns
        if not (weights or acts):
            return self
        key = (self.sparsity if weights else DENSE, acts)
        cache = self.__dict__.setdefault("_run_on_cache", {})
        if key not in cache:
            done = np.where(self.weight_density < 1.0, parse_sparsity(self.sparsity).compute_density, 1.0) \
                if weights else np.ones(len(self))
            flops = self.flops * done
            weight_bytes = self.weight_bytes * self.sparse_weight_scale if weights else self.weight_bytes
            if acts:
                mlp = self.mlp_gemm_rows
                share = np.where(mlp, union_share(fmt.act_kept, self.m * np.maximum(self.batch, 1.0)), 1.0)
                done, flops, weight_bytes = done * share, flops * share, weight_bytes * share
                if fmt.act_predictor == "deja_vu":
                    flops, weight_bytes = self._with_predictor(mlp, flops, weight_bytes)
            table = replace(self, flops=flops, weight_bytes=weight_bytes, weight_density=done)
            _share_shape_caches(table, self)
            cache[key] = table
        return cache[key]

    @cached_property
    def mlp_gemm_rows(self) -> np.ndarray:
        """Weight GEMMs of a decoder layer's dense MLP (module path with an 'mlp' part; fused MoE rows excluded)."""
        return np.array([k.kind == KernelKind.GEMM and k.weight_bytes > 0 and k.layer is not None
                         and _MLP_MODULE.search(k.module) is not None for k in self.kernels], dtype=bool)

    def _with_predictor(self, mlp: np.ndarray, flops: np.ndarray, weight_bytes: np.ndarray):
        """(flops, weight_bytes) with Deja Vu's predictor added to each layer's MLP down projection (the MLP row
        whose k, the intermediate size, exceeds its n, the hidden size): DEJA_VU_RANK x (hidden + intermediate)
        16-bit weights read once per pass, two FLOPs per weight and token."""
        rows = mlp & (self.k > self.n)
        weights = DEJA_VU_RANK * (self.n + self.k) * np.maximum(self.batch, 1.0)
        tokens = self.m * np.maximum(self.batch, 1.0)
        return (np.where(rows, flops + 2.0 * tokens * DEJA_VU_RANK * (self.n + self.k), flops),
                np.where(rows, weight_bytes + weights * PREDICTOR_BITS / 8.0, weight_bytes))

    @cached_property
    def decode_attention_mask(self) -> np.ndarray:
        return self.kind == KIND_CODE[KernelKind.ATTENTION_DECODE]

    @cached_property
    def _key_caps(self) -> np.ndarray:
        """The most keys each row attends to: its layer's attention window (Kernel.window), or infinity."""
        return np.array([k.window or np.inf for k in self.kernels], dtype=float)

    @cached_property
    def _context_splits(self) -> np.ndarray:
        """The devices each row's keys are split over by token (Kernel.context_split; 1: each device holds them all)."""
        return np.array([k.context_split for k in self.kernels], dtype=float)

    @cached_property
    def _decode_attention_rows(self) -> KernelTable:
        return self.select(self.decode_attention_mask)

    def at_kv_lengths(self, kv_lens: np.ndarray, window: Window = None) -> KernelTable:
        """Decode-attention rows repeated for each KV length (step-major), with FLOPs and KV traffic rescaled.

        A decode step's attention work and KV reads are proportional to the keys it attends to, and
        nothing else in the step depends on the context length: one traced step gives every step. A window
        (kernels/kv_policy.py) caps the keys, for every head or for the streaming heads; a token selection reads and
        computes a share of them plus its scoring and top-k (kernels/token_select.py); a row's own layer's window
        (Kernel.window: gpt-oss's sliding layers) caps them too.
        """
        lens = np.asarray(kv_lens, dtype=float)
        # Memoized per KV lengths and window: every device a sweep prices this table on decodes the same steps (the
        # lengths follow from the prompt, which the table is traced at, and the output length).
        cache = self.__dict__.setdefault("_steps_cache", {})
        try:
            key = (lens.tobytes(), window)
            hit = cache.get(key)
        except TypeError:  # a window that is no cache key
            return self._decode_attention_rows._at_kv_lengths(*decode_reads(lens, window))
        if hit is None:
            if len(cache) >= TABLES_KEPT:
                cache.clear()  # a sweep varies the output length rarely: memory stays bounded
            hit = cache[key] = self._decode_attention_rows._at_kv_lengths(*decode_reads(lens, window))
        return hit

    @cached_property
    def attention_mask(self) -> np.ndarray:
        """Every attention row, of one query token or of several."""
        return np.isin(self.kind, _ATTENTION_KINDS)

    @property
    def cache_write_mask(self) -> np.ndarray:
        """Every KV-cache write: a row outside tensor cores that moves KV bytes. It stores the tokens whose slot is a
        cache slot alone; the cache-write kernels skip a token whose slot is PAD_SLOT_ID (-1), as vLLM gives the
        padding of a pass padded to a captured size and, under decode context parallelism, a token another device
        stores (vllm-project/vllm csrc/cache_kernels.cu at 002a0ba, reshape_and_cache_flash_kernel: "slot_idx can be
        -1 if the token is padded"; vllm/v1/worker/block_table.py at 01edfd0, _compute_slot_mapping_kernel: "Pad
        remaining slots for CUDA graph compatibility")."""
        return (self.kv_bytes > 0) & ~self.tensor_core

    def attention_at_kv_lengths(self, kv_lens: np.ndarray, window: Window = None) -> KernelTable:
        """at_kv_lengths over every attention row: a pass of a few query tokens per sequence against its KV cache
        (a speculative verification) reads every key once per step whatever its query length, and computes in
        proportion to the keys too."""
        return self.select(self.attention_mask)._at_kv_lengths(*decode_reads(np.asarray(kv_lens, dtype=float), window))

    def _at_kv_lengths(self, kv_lens: np.ndarray, flop_lens: np.ndarray | None = None) -> KernelTable:
        """at_kv_lengths of a table of decode-attention rows only: KV traffic as of `kv_lens` keys per step (also
        its kv_len: the keys' worth of bytes the kernel streams), FLOPs as of `flop_lens` (default: the same)."""
        traced, caps, splits = self.kv_len, self._key_caps[None, :], self._context_splits[None, :]

        def held(lens: np.ndarray) -> np.ndarray:  # [steps, rows]: the keys the busiest device of a row's split holds
            keys = np.minimum(lens[:, None], caps)
            # Every split-th key on each device (vLLM's interleave of one token): the busiest holds ceil(keys / split).
            return keys if (splits == 1).all() else np.where(splits > 1, np.ceil(keys / splits), keys)

        keys = held(kv_lens)
        ratio = (keys / traced[None, :]).ravel()
        flop_ratio = (ratio if flop_lens is None or flop_lens is kv_lens
                      else (held(flop_lens) / traced[None, :]).ravel())
        template = self._tiled(len(kv_lens))
        table = replace(template, flops=template.flops * flop_ratio, kv_bytes=template.kv_bytes * ratio,
                        kv_len=keys.ravel())
        _share_shape_caches(table, template)  # once per table and KV lengths (at_kv_lengths keeps the result)
        distinct = self.distinct_rows
        if distinct is not None:
            # Equal rows at one length are equal at every length (they were traced at the same one).
            rows, index = distinct
            steps = np.arange(len(kv_lens))[:, None] * len(rows)
            table.__dict__["distinct_rows"] = (rows._at_kv_lengths(kv_lens, flop_lens),
                                               (steps + index[None, :]).ravel())
        return table

    def _tiled(self, steps: int) -> KernelTable:
        """The rows repeated `steps` times, memoized by step count."""
        cache = self.__dict__.setdefault("_tiled_cache", {})
        if steps not in cache:
            # Attention has no weights: run_on leaves the tiled rows as they are; they keep the format's sparsity so
            # that they stack with the passes they belong to (KernelTable.stack).
            table = KernelTable(kernels=self.kernels * steps, sparsity=self.sparsity,
                                numeric_format=self.numeric_format,
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
                                                  if name not in ("dtype",)),
                                   *(getattr(self, name) for name in _PRICED_FLAGS),
                                   self._key_caps, self._context_splits]).astype(float)  # alike at one length only
        _, first, index = np.unique(columns, axis=0, return_index=True, return_inverse=True)
        if len(first) == len(self):
            return None
        rows = self.select(first)
        rows.__dict__["distinct_rows"] = None
        return rows, index.ravel()


def class_masks(kind: np.ndarray) -> dict[str, np.ndarray]:
    """Row mask of each kernel class present among rows of kind codes `kind` (a lookup by kind code each, as
    KernelTable.class_rows)."""
    masks = {name: of_kind[kind] for name, of_kind in _CLASS_OF_KIND.items()}
    return {name: mask for name, mask in masks.items() if mask.any()}


def _per_kernel(values: list, index: np.ndarray) -> np.ndarray:
    """Each kernel's value of its (dtype, tensor_core) pair: `values` per pair (numbers, or arrays over design points
    of shape (points, 1)), `index` each kernel's pair (KernelTable.dtype_groups)."""
    if all(type(v) is float or np.ndim(v) == 0 for v in values):
        return np.array(values, dtype=float)[index]
    lead = np.broadcast_shapes(*(np.shape(v) for v in values))[:-1]
    columns = [np.broadcast_to(np.asarray(v, dtype=float), (*lead, 1)) for v in values]
    return np.concatenate(columns, axis=-1)[..., index]


class RowGroup:
    """Some rows of a table (`index`, row numbers in order) and their columns, each gathered when first read and then
    kept: a table's columns do not change (KernelTable.rows_where)."""

    def __init__(self, table: KernelTable, index: np.ndarray):
        self.table, self.index = table, index

    def __len__(self) -> int:
        return len(self.index)

    def memo(self, name: str, make):
        """make(), computed once for these rows: a term that depends on their columns alone (not on a device)."""
        if name not in self.__dict__:
            self.__dict__[name] = make()
        return self.__dict__[name]

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_") or name in ("table", "index"):
            raise AttributeError(name)
        values = self.__dict__[name] = getattr(self.table, name)[self.index]
        return values


# Step tables (at_kv_lengths) and stacks (KernelTable.stack) a table keeps: a sweep varies the output length rarely,
# and a long output's step table is large (steps x attention rows), so memory stays bounded.
TABLES_KEPT = 2
# Mask pairs KernelTable.distinct_counts keeps: the table's own masks and a few more.
MASKS_KEPT = 64
_FIELDS = tuple(f.name for f in fields(KernelTable))
_FIELD_NAMES = frozenset(_FIELDS)
_COLUMNS = tuple(f.name for f in fields(KernelTable) if f.name not in ("kernels", "sparsity", "numeric_format"))
# The columns of what a kernel is, whatever its size: its kind, its math's dtype and units, its heads and head size,
# its weights' format, the kernel its op is, the devices its experts are spread over and how its tokens reach them
# (KernelTable.with_sizes_of keeps them; every other column is a size).
KERNEL_COLUMNS = ("kind", "dtype", "tensor_core", "heads", "kv_heads", "head_dim", "weight_density",
                  "sparse_weight_scale", "weight_bits", "torch_sdpa", "general_layout", "expert_parallel",
                  "moe_routing", "moe_experts", "moe_topk")
_SIZE_COLUMNS = tuple(name for name in _COLUMNS if name not in KERNEL_COLUMNS)
# Row masks a table derives from its kernels' modules rather than holding as columns, that pricing reads: run_on's
# activation sparsity thins the MLP's GEMMs (mlp_gemm_rows), a GPU charges a MoE layer's fixed time to its hot experts'
# row (moe_rest_rows). distinct_rows keys on them beside the columns, so that rows priced apart are never one row (a
# tiny Llama's LM head has its MLP's gate and up shapes).
_PRICED_FLAGS = ("mlp_gemm_rows", "moe_rest_rows")


def _input_scale(k: np.ndarray, n: np.ndarray, act_scale) -> np.ndarray:
    """A weight GEMM's activation bytes over its traced 16-bit ones with its input at act_scale of 16 bits: quantized
    activations shrink only the input operand (m x k of its m x k + m x n activation traffic), the output is written
    at 16 bits for the next kernels, and other kernels keep their precision."""
    input_share = np.divide(k, k + n, out=np.ones(len(k)), where=(k + n) > 0)
    return 1.0 - input_share * (1.0 - act_scale)


def _share_shape_caches(table: KernelTable, source: KernelTable, tile: int = 1) -> None:
    """Give `table` the shape-only caches of `source` (its rows repeated `tile` times): they depend on kinds and
    dtypes, not on work or traffic, and recomputing them per design point would cost more than the pricing."""
    distinct, index = source.dtype_groups
    if tile == 1:  # the same rows: the same (read-only) arrays, and the same row masks by class and kind as found
        table.__dict__["dtype_groups"] = (distinct, index)
        table.__dict__["class_masks"], table.__dict__["kind_masks"] = source.class_masks, source.kind_masks
        for name in ("_class_rows", "_kind_rows"):
            table.__dict__[name] = source.__dict__.setdefault(name, {})
        return
    table.__dict__["dtype_groups"] = (distinct, np.tile(index, tile))
    for name in ("class_masks", "kind_masks"):
        table.__dict__[name] = {key: np.tile(mask, tile) for key, mask in getattr(source, name).items()}
