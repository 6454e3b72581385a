"""Numeric formats: weight, activation and KV-cache bit widths, and what they do to a kernel's cost."""

from __future__ import annotations

from dataclasses import dataclass

ALLOWED_BITS = (16, 8, 4)

# Short dtype names, as device presets key their peak rates.
DTYPE_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float8_e4m3fn": "fp8"}


@dataclass(frozen=True, kw_only=True)
class NumericFormat:
    """Bit widths of weights, activations and KV cache; quantized tensors carry one 16-bit scale per group.

    `group_size` is the number of values sharing one scale (128 is the common choice of GPTQ and AWQ);
    it adds 16 / group_size bits per value to quantized tensors.
    """

    weight_bits: int = 16
    act_bits: int = 16
    kv_bits: int = 16
    group_size: int = 128

    def __post_init__(self) -> None:
        for name in ("weight_bits", "act_bits", "kv_bits"):
            value = getattr(self, name)
            if value not in ALLOWED_BITS:
                raise ValueError(f"{name}: found {value!r}, allowed: {', '.join(map(str, ALLOWED_BITS))}")
        if self.group_size < 1:
            raise ValueError(f"group_size: found {self.group_size!r}, allowed: an integer >= 1")

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
            return "int4" if self.act_bits == 4 and self.weight_bits == 4 else "int8"
        return traced_dtype

    @property
    def label(self) -> str:
        return f"w{self.weight_bits}a{self.act_bits}kv{self.kv_bits}"
