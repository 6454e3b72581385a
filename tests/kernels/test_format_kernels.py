"""DFloat11's decompression kernel (kernels/format_kernels.py) priced on GPUs: its Huffman decoding on the CUDA
cores against its bytes.

Expected values are hand-computed from a Llama-3-8B decoder block's shapes (hidden 4,096, 8 KV heads of 128,
intermediate 14,336: HF config meta-llama/Meta-Llama-3-8B), DFloat11's published compressed size (67.7% of bf16),
the decoding's instruction count and the datasheets' rates (A100 SXM: FP32 19.5 TFLOP/s, 2,039 GB/s; H100 SXM:
FP32 67 TFLOP/s, 3,350 GB/s; one lane instruction per FMA issue, half the FP32 FLOP rate), or are the README's
invariant that the decompression does not depend on the batch."""

from __future__ import annotations

import numpy as np
import pytest

from hw_models.registry import load_device
from kernels.format_kernels import DECOMPRESS_OP, DFLOAT11_DECODE_OPS
from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable

HIDDEN, KV, INTER = 4096, 8 * 128, 14336
# One Llama-3-8B block's projections, k x n: q, k, v, o, gate, up, down.
BLOCK = [(HIDDEN, HIDDEN), (HIDDEN, KV), (HIDDEN, KV), (HIDDEN, HIDDEN), (HIDDEN, INTER), (HIDDEN, INTER),
         (INTER, HIDDEN)]
WEIGHTS = sum(k * n for k, n in BLOCK)  # 218,103,808
CODED_B = 2.0 * WEIGHTS * 10.9 / 16.1  # DFloat11: Llama 3.1 8B 16.1 GB -> 10.9 GB
WRITTEN_B = 2.0 * WEIGHTS


def _block(tokens: int) -> KernelTable:
    rows = [Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * tokens * k * n, weight_bytes=2.0 * k * n,
                   act_bytes=2.0 * tokens * (k + n), kv_bytes=0.0, dtype="bf16", tensor_core=True, layer=0,
                   module=f"model.layers.0.proj{i}", m=tokens, n=n, k=k, batch=1) for i, (k, n) in enumerate(BLOCK)]
    return KernelTable.from_kernels(rows).with_format(NumericFormat(weight_coding="dfloat11"))


def _decompress_s(device: str, tokens: int = 1) -> float:
    table = _block(tokens)
    rows = np.array([k.op == DECOMPRESS_OP for k in table.kernels])
    assert rows.sum() == 1  # one decompression per transformer block
    return float(load_device(device).cost_table(table, "device").time_s[rows][0])


def test_the_block_decompression_carries_its_decoding_work():
    """24 lane instructions a weight, two vector FLOPs each, on the block's 218,103,808 weights."""
    table = _block(1)
    (flops,) = [f for f, k in zip(table.flops, table.kernels, strict=True) if k.op == DECOMPRESS_OP]
    assert WEIGHTS == 218_103_808
    assert flops == pytest.approx(2 * 24 * WEIGHTS)
    assert DFLOAT11_DECODE_OPS == 24


def test_on_an_a100_the_decompression_is_bound_by_its_decoding():
    """A100: 218e6 x 24 / 9.75e12 = 0.537 ms of decoding against (295 + 436) MB / 2,039 GB/s = 0.359 ms of
    traffic at full bandwidth: the decoding sets the time (up to the kernel's fixed latency)."""
    decode_s = WEIGHTS * 24 / (19.5e12 / 2)
    traffic_s = (CODED_B + WRITTEN_B) / 2039e9
    assert decode_s > traffic_s
    assert decode_s <= _decompress_s("a100-sxm-80gb") <= decode_s * 1.1


def test_on_an_h100_the_decompression_is_bound_by_its_bytes():
    """H100 SXM: 218e6 x 24 / 33.5e12 = 0.156 ms of decoding, under (295 + 436) MB / 3,350 GB/s = 0.218 ms of
    traffic: the bytes set the time, at or above the full-bandwidth figure."""
    decode_s = WEIGHTS * 24 / (67e12 / 2)
    traffic_s = (CODED_B + WRITTEN_B) / 3350e9
    assert decode_s < traffic_s
    assert _decompress_s("h100-sxm") >= traffic_s


def test_the_decompression_does_not_depend_on_the_batch():
    """DFloat11 README: 'Decompression overhead is constant per forward pass and independent of batch size'."""
    assert _decompress_s("a100-sxm-80gb", 1) == pytest.approx(_decompress_s("a100-sxm-80gb", 64))
