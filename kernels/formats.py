"""Numeric formats: weight, activation and KV-cache bit widths, and what they do to a kernel's cost."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# Weights go down to 2 bits (LUT and bit-serial GEMV engines use 2-4 bit weights); activations and KV to 4.
ALLOWED_BITS = {"weight_bits": (16, 8, 4, 3, 2), "act_bits": (16, 8, 4), "kv_bits": (16, 8, 4)}
DENSE = "dense"
# Structured N:M weight sparsity: at most N nonzeros in every group of M consecutive weights.
NM_PATTERN = re.compile(r"^([1-9][0-9]*):([1-9][0-9]*)$")
ALLOWED_SPARSITY = "dense or N:M with 0 < N < M and M in 4, 8, 16 (e.g. 2:4, 1:4, 4:8)"


def parse_sparsity(pattern: str) -> tuple[int, int]:
    """(N, M) of a structured pattern; dense is (1, 1). ValueError names what is allowed."""
    if pattern == DENSE:
        return 1, 1
    match = NM_PATTERN.match(str(pattern))
    if match:
        n, m = int(match[1]), int(match[2])
        if 0 < n < m and m in (4, 8, 16):
            return n, m
    raise ValueError(f"sparsity: found {pattern!r}, allowed: {ALLOWED_SPARSITY}")

# Bits per value of each short dtype name.
DTYPE_BITS = {"fp64": 64, "fp32": 32, "tf32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int8": 8, "int4": 4}

# Short dtype names, as device presets key their peak rates.
DTYPE_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float8_e4m3fn": "fp8"}


@dataclass(frozen=True, kw_only=True)
class NumericFormat:
    """Bit widths of weights, activations and KV cache; quantized tensors carry one 16-bit scale per group.

    `group_size` is the number of values sharing one scale (128 is the common choice of GPTQ and AWQ);
    it adds 16 / group_size bits per value to quantized tensors.

    `sparsity` is the structured N:M pattern of the GEMM weights ("dense", "2:4", ...). A device whose
    matrix units skip the zeros of that pattern stores the kept values plus a log2(M)-bit position each
    and does N/M of the math; any other device runs the weights dense (see KernelTable.run_on).
    """

    weight_bits: int = 16
    act_bits: int = 16
    kv_bits: int = 16
    group_size: int = 128
    sparsity: str = DENSE

    def __post_init__(self) -> None:
        for name, allowed in ALLOWED_BITS.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name}: found {value!r}, allowed: {', '.join(map(str, allowed))}")
        if self.group_size < 1:
            raise ValueError(f"group_size: found {self.group_size!r}, allowed: an integer >= 1")
        parse_sparsity(self.sparsity)

    def storage_bits(self, bits: int) -> float:
        """Bits stored per value, scales included."""
        return float(bits) if bits >= 16 else bits + 16.0 / self.group_size

    @property
    def weight_scale(self) -> float:
        """Weight traffic relative to 16-bit weights."""
        return self.storage_bits(self.weight_bits) / 16.0

    @property
    def kv_scale(self) -> float:
        return self.storage_bits(self.kv_bits) / 16.0

    @property
    def act_scale(self) -> float:
        return self.act_bits / 16.0

    def gemm_dtype(self, traced_dtype: str) -> str:
        """Dtype the matrix units compute a weight GEMM in.

        Weight-only quantization (w4a16, w8a16) dequantizes to the activation type, so the math runs at
        16-bit rates; with 8-bit (or narrower) activations and weights the integer path is used.
        """
        if self.act_bits <= 8 and self.weight_bits <= 8:
            # 2- and 3-bit weights fit 4-bit integer lanes as well as 4-bit ones do.
            return "int4" if self.act_bits <= 4 and self.weight_bits <= 4 else "int8"
        return traced_dtype

    @property
    def weight_density(self) -> float:
        """Fraction of weights kept by the sparsity pattern (1 when dense)."""
        n, m = parse_sparsity(self.sparsity)
        return n / m

    @property
    def sparse_weight_scale(self) -> float:
        """Stored weight bytes of the sparse layout relative to the dense one: kept values plus their positions."""
        n, m = parse_sparsity(self.sparsity)
        if m == 1:
            return 1.0
        return n / m * (1.0 + math.log2(m) / self.storage_bits(self.weight_bits))

    @property
    def label(self) -> str:
        base = f"w{self.weight_bits}a{self.act_bits}kv{self.kv_bits}"
        return base if self.sparsity == DENSE else f"{base}-{self.sparsity}"
