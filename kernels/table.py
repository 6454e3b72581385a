"""KernelTable: kernels as columns of numpy arrays, so cost models price a whole pass in one call."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind


@dataclass(frozen=True)
class KernelTable:
    """Columns of per-kernel work and traffic; `kernels` keeps the row objects for names and shapes."""

    kernels: tuple[Kernel, ...]
    flops: np.ndarray
    weight_bytes: np.ndarray
    act_bytes: np.ndarray
    kv_bytes: np.ndarray
    dtype: np.ndarray  # compute dtype per kernel, e.g. "bf16", "int8"
    tensor_core: np.ndarray  # bool: matrix units (GEMM, attention) rather than vector units

    @classmethod
    def from_kernels(cls, kernels: list[Kernel] | tuple[Kernel, ...]) -> KernelTable:
        kernels = tuple(kernels)
        return cls(
            kernels=kernels,
            flops=np.array([k.flops for k in kernels], dtype=float),
            weight_bytes=np.array([k.weight_bytes for k in kernels], dtype=float),
            act_bytes=np.array([k.act_bytes for k in kernels], dtype=float),
            kv_bytes=np.array([k.kv_bytes for k in kernels], dtype=float),
            dtype=np.array([k.dtype for k in kernels], dtype=object),
            tensor_core=np.array([k.tensor_core for k in kernels], dtype=bool),
        )

    def __len__(self) -> int:
        return len(self.kernels)

    @property
    def bytes(self) -> np.ndarray:
        return self.weight_bytes + self.act_bytes + self.kv_bytes

    @cached_property
    def kernel_class(self) -> np.ndarray:
        """Coarse class of each kernel (gemm, attention, norm, ...), for breakdowns."""
        return np.array([k.kernel_class for k in self.kernels], dtype=object)

    @cached_property
    def class_labels(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.kernel_class.tolist())))

    @cached_property
    def dtype_groups(self) -> tuple[list[tuple[str, bool]], np.ndarray]:
        """Distinct (dtype, tensor_core) pairs and each kernel's index into them: cost models look up
        rates once per pair instead of once per kernel."""
        pairs = list(zip(self.dtype.tolist(), self.tensor_core.tolist(), strict=True))
        distinct = sorted(set(pairs))
        index = {p: i for i, p in enumerate(distinct)}
        return distinct, np.array([index[p] for p in pairs], dtype=int)

    def select(self, mask: np.ndarray) -> KernelTable:
        """The rows where mask is true (or the given row indices)."""
        index = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        return KernelTable(
            kernels=tuple(self.kernels[i] for i in index), flops=self.flops[index],
            weight_bytes=self.weight_bytes[index], act_bytes=self.act_bytes[index], kv_bytes=self.kv_bytes[index],
            dtype=self.dtype[index], tensor_core=self.tensor_core[index],
        )

    def with_format(self, fmt: NumericFormat) -> KernelTable:
        """Traffic and compute dtypes under a numeric format (the table is traced at 16 bits)."""
        weight_gemm = np.array([k.kind == KernelKind.GEMM and k.weight_bytes > 0 for k in self.kernels], dtype=bool)
        dtype = self.dtype.copy()
        if weight_gemm.any():
            dtype[weight_gemm] = [fmt.gemm_dtype(d) for d in dtype[weight_gemm]]
        # Quantized activations shrink only the GEMM input operand traffic; other kernels keep their precision.
        act_bytes = np.where(weight_gemm, self.act_bytes * fmt.act_scale, self.act_bytes)
        return replace(self, weight_bytes=self.weight_bytes * fmt.weight_scale, act_bytes=act_bytes,
                       kv_bytes=self.kv_bytes * fmt.kv_scale, dtype=dtype)

    @cached_property
    def decode_attention_mask(self) -> np.ndarray:
        return np.array([k.kind == KernelKind.ATTENTION_DECODE for k in self.kernels], dtype=bool)

    @cached_property
    def _decode_attention_rows(self) -> tuple[KernelTable, np.ndarray]:
        rows = self.select(self.decode_attention_mask)
        return rows, np.array([k.kv_len for k in rows.kernels], dtype=float)

    def at_kv_lengths(self, kv_lens: np.ndarray, window: int | None = None) -> KernelTable:
        """Decode-attention rows repeated for each KV length (step-major), with FLOPs and KV traffic rescaled.

        A decode step's attention work and KV reads are proportional to the keys it attends to, and
        nothing else in the step depends on the context length: one traced step gives every step.
        """
        rows, traced = self._decode_attention_rows
        kv_lens = np.asarray(kv_lens, dtype=float)
        if window:
            kv_lens = np.minimum(kv_lens, window)
        ratio = (kv_lens[:, None] / traced[None, :]).ravel()
        steps = len(kv_lens)
        tile = lambda a: np.tile(a, steps)  # noqa: E731
        table = KernelTable(
            kernels=rows.kernels * steps, flops=tile(rows.flops) * ratio, weight_bytes=tile(rows.weight_bytes),
            act_bytes=tile(rows.act_bytes), kv_bytes=tile(rows.kv_bytes) * ratio, dtype=tile(rows.dtype),
            tensor_core=tile(rows.tensor_core),
        )
        # Fill the dtype-group cache from the rows: this runs once per design point, on a hot path.
        distinct, index = rows.dtype_groups
        table.__dict__["dtype_groups"] = (distinct, tile(index))
        return table
