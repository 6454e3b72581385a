"""The estimate of a block-sparse prefill (SALE, kernels/block_sparse.py) as kernels of its own, so that a device prices
its 4-bit Q.K at its own dtype's rate: per prefill attention row, the quantization pass and the estimate."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable

# Bits of the estimate's Q and K (SALE's int4_flash_attn/quant_triton.py packs two 4-bit values a byte; the Q.K runs
# on INT4 MMA: the paper's "4-bit" estimation).
ESTIMATE_BITS = 4
ESTIMATE_DTYPE = "int4"
# Bytes of a 16-bit element, which the quantization pass reads.
SIXTEEN_BIT_B = 2.0
ESTIMATE_OP = "sale_estimate"
QUANTIZE_OP = "sale_quantize"


def estimate_kernels(attention: KernelTable, pairs, queries, keys) -> KernelTable:
    """The estimate's kernels for each prefill attention row of `attention` (the row's heads, KV heads and head dim;
    its layer and module), two a row: the quantization pass (reads the `queries` new tokens' Q and the `keys` keys' K
    at 16 bits and writes them at 4) and the 4-bit Q.K of `pairs` (query, key) pairs per query head (2 x head_dim
    operations a pair; Q and K read at 4 bits). `pairs`, `queries` and `keys` are per row, summed over its sequences.
    The block scores the Q.K keeps (one per 64 x 32 block) and the quantization scales are left out: under 1% of
    those bytes."""
    kernels = []
    for i, kernel in enumerate(attention.kernels):
        heads, kv_heads, head_dim = (float(getattr(attention, name)[i]) for name in ("heads", "kv_heads", "head_dim"))
        batch, q, k = float(attention.batch[i]), float(queries[i]), float(keys[i])
        elements = (q * heads + k * kv_heads) * head_dim  # Q of the new tokens, K of every key
        shape = dict(layer=kernel.layer, module=kernel.module, weight_bytes=0.0, kv_bytes=0.0)
        kernels.append(Kernel(kind=KernelKind.ELEMENTWISE, op=QUANTIZE_OP, flops=elements, dtype=kernel.dtype,
                              act_bytes=elements * (SIXTEEN_BIT_B + ESTIMATE_BITS / 8), tensor_core=False, **shape))
        kernels.append(Kernel(kind=KernelKind.ATTENTION_PREFILL, op=ESTIMATE_OP, dtype=ESTIMATE_DTYPE,
                              flops=2.0 * head_dim * heads * float(pairs[i]), act_bytes=elements * ESTIMATE_BITS / 8,
                              tensor_core=True, heads=int(heads), kv_heads=int(kv_heads), head_dim=int(head_dim),
                              batch=batch, q_len=q / max(batch, 1.0), kv_len=k / max(batch, 1.0), causal=True,
                              **shape))
    return replace(KernelTable.from_kernels(kernels), numeric_format=attention.numeric_format,
                   sparsity=attention.sparsity)


def with_estimate(prefill: KernelTable, pairs_of) -> KernelTable:
    """A traced prefill with the estimate's kernels before each of its attention rows that selects; `pairs_of(q_len,
    kv_len)`: the pairs the estimate scores per sequence and query head (arrays over the rows; 0 where a row runs
    dense)."""
    rows = np.flatnonzero(prefill.attention_mask & (prefill.q_len > 0))
    pairs = np.asarray(pairs_of(prefill.q_len[rows], prefill.kv_len[rows]), dtype=float) * np.ones(len(rows))
    rows, pairs = rows[pairs > 0], pairs[pairs > 0]  # a row that runs dense has no estimate
    if not len(rows):
        return prefill
    attention = prefill.select(rows)
    batch = np.maximum(attention.batch, 1.0)
    added = estimate_kernels(attention, batch * pairs, batch * attention.q_len, batch * attention.kv_len)
    per_row = len(added) // len(rows)
    order = []
    start = {row: len(prefill) + per_row * i for i, row in enumerate(rows.tolist())}
    for i in range(len(prefill)):
        if i in start:
            order.extend(range(start[i], start[i] + per_row))
        order.append(i)
    return KernelTable.concat([prefill, added]).select(np.array(order))
