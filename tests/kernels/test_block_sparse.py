"""SALE's block-sparse prefill (kernels/block_sparse.py) and its estimate's kernels (kernels/block_estimate.py): pairs,
operations and bytes counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.block_estimate import ESTIMATE_OP, QUANTIZE_OP, with_estimate
from kernels.block_sparse import PrefillSelection
from kernels.kernel import Kernel, KernelKind
from kernels.kv_policy import KVPolicy, estimate_pairs, prefill_pairs
from kernels.shapes import step_shape
from kernels.table import KernelTable

# Selecting at every length (SALE runs chunks of up to 1,024 queries dense: test_short_chunks_run_dense), so that
# the formulas are checked by hand on a 1,024-token prompt.
SALE = KVPolicy(prefill=PrefillSelection(0.25, dense_queries=0))

# A 1,024-token prompt: 1,024 x 1,025 / 2 = 524,800 causal pairs. Its 128-token local window: the first 128 queries
# see 1 + 2 + ... + 128 = 8,256 keys, the other 896 queries 128 each (114,688): 122,944. Kept 0.25 of the other
# 401,856: 100,464, so 223,408 in all.
ALL_PAIRS, LOCAL_PAIRS, KEPT_PAIRS = 524_800, 122_944, 223_408


def test_pairs_of_a_1024_token_prompt_by_hand():
    assert PrefillSelection(0.25, dense_queries=0).pairs(1024, 1024) == KEPT_PAIRS
    assert PrefillSelection(1.0, dense_queries=0).pairs(1024, 1024) == ALL_PAIRS
    assert prefill_pairs(1024, 1024, SALE) == KEPT_PAIRS
    assert estimate_pairs(1024, 1024, SALE) == ALL_PAIRS  # the estimate scores every causal pair
    assert estimate_pairs(1024, 1024, None) == estimate_pairs(1024, 1024, KVPolicy()) == 0
    shape = step_shape([(1024, 0), (1024, 0)], sampled=2, window=SALE)
    assert (shape.prefill_pairs, shape.estimate_pairs) == (2 * KEPT_PAIRS, 2 * ALL_PAIRS)
    assert step_shape([(1024, 0)], sampled=1).estimate_pairs == 0


def test_a_short_window_or_prompt_keeps_its_local_pairs():
    """Within the local window nothing is dropped: a prompt of 128 tokens, or a model window of 64, is computed
    whole; a model window of 512 keeps the 128 local keys of each query and a share of the other 384."""
    assert PrefillSelection(0.1, dense_queries=0).pairs(128, 128) == 128 * 129 // 2
    assert PrefillSelection(0.1, dense_queries=0).pairs(1024, 1024, 64) == prefill_pairs(1024, 1024, None, 64)
    windowed = prefill_pairs(1024, 1024, None, 512)
    half = PrefillSelection(0.5, dense_queries=0)
    assert half.pairs(1024, 1024, 512) == pytest.approx(LOCAL_PAIRS + 0.5 * (windowed - LOCAL_PAIRS))


def test_retrieval_heads_and_selection_compose():
    """DuoAttention's streaming heads attend to their window, the retrieval heads to everything; a selection keeps
    its share of each head's pairs beyond the local window."""
    duo = KVPolicy(window=320, full_heads=0.5)
    both = KVPolicy(window=320, full_heads=0.5, prefill=PrefillSelection(0.25, dense_queries=0))
    streaming = prefill_pairs(1024, 1024, None, 320)
    want = 0.5 * KEPT_PAIRS + 0.5 * (LOCAL_PAIRS + 0.25 * (streaming - LOCAL_PAIRS))
    assert prefill_pairs(1024, 1024, both) == pytest.approx(want)
    assert estimate_pairs(1024, 1024, both) == prefill_pairs(1024, 1024, duo)


@pytest.mark.parametrize("kept", [0.0, -0.5, 1.5])
def test_a_share_outside_0_1_is_refused(kept):
    with pytest.raises(ValueError, match="prefill_kept: found"):
        PrefillSelection(kept)


def _prefill(layers: int = 2) -> KernelTable:
    """A traced-like prefill of 2 prompts of 1,024 tokens: per layer a GEMM and a causal attention row (32 query heads,
    8 KV heads, head dim 128)."""
    kernels = []
    for layer in range(layers):
        kernels.append(Kernel(kind=KernelKind.GEMM, op="mm", flops=1.0, weight_bytes=1.0, act_bytes=1.0, kv_bytes=0.0,
                              dtype="bf16", tensor_core=True, layer=layer, module=f"layers.{layer}.mlp", m=2048, n=64,
                              k=64, batch=1))
        kernels.append(Kernel(kind=KernelKind.ATTENTION_PREFILL, op="_scaled_dot_product_flash_attention",
                              flops=2 * 32 * ALL_PAIRS * 4.0 * 128, weight_bytes=0.0, act_bytes=1.0, kv_bytes=0.0,
                              dtype="bf16", tensor_core=True, layer=layer, module=f"layers.{layer}.self_attn",
                              heads=32, kv_heads=8, q_len=1024, kv_len=1024, head_dim=128, batch=2, causal=True))
    return KernelTable.from_kernels(kernels)


def test_the_estimate_rows_ops_and_bytes_by_hand():
    """Per layer: the quantization pass reads Q (2,048 tokens x 32 heads x 128) and K (2,048 x 8 x 128) at 2 bytes and
    writes them at half a byte; the Q.K does 2 x 128 operations per pair and query head, 2 x 524,800 pairs x 32
    heads, at int4 on the tensor cores, reading Q and K at half a byte."""
    table = with_estimate(_prefill(), lambda q, kv: estimate_pairs(q, kv, SALE))
    assert len(table) == 8
    ops = [k.op for k in table.kernels]
    assert ops == ["mm", QUANTIZE_OP, ESTIMATE_OP, "_scaled_dot_product_flash_attention"] * 2  # before its attention
    assert [k.layer for k in table.kernels] == [0] * 4 + [1] * 4
    elements = (2048 * 32 + 2048 * 8) * 128
    quantize, estimate = (np.flatnonzero(np.array(ops) == op)[0] for op in (QUANTIZE_OP, ESTIMATE_OP))
    assert table.act_bytes[quantize] == elements * (2 + 0.5)
    assert not table.tensor_core[quantize]
    assert table.flops[estimate] == 2 * 128 * 32 * 2 * ALL_PAIRS
    assert table.act_bytes[estimate] == elements * 0.5
    assert (table.dtype[estimate], bool(table.tensor_core[estimate])) == ("int4", True)
    assert table.weight_bytes[[quantize, estimate]].sum() == 0 and table.kv_bytes[[quantize, estimate]].sum() == 0
    # Half the Q.K FLOPs of the dense attention beside it (no P.V).
    assert table.flops[estimate] == table.flops[3] / 2


def test_short_chunks_run_dense():
    """SALE's patch runs a forward of at most 1,024 queries as plain FlashAttention, with no estimate: a 1,024-token
    prompt computes every pair and scores none; a 2,048-token one selects, its estimate scoring all 2,098,176."""
    sale = KVPolicy(prefill=PrefillSelection(0.25))
    assert prefill_pairs(1024, 1024, sale) == ALL_PAIRS and estimate_pairs(1024, 1024, sale) == 0
    assert prefill_pairs(2048, 2048, sale) < 2048 * 2049 // 2 == estimate_pairs(2048, 2048, sale)
    # A chunk of 512 after 3,584 cached tokens: dense, whatever the prefix.
    assert prefill_pairs(512, 4096, sale) == prefill_pairs(512, 4096, None) and estimate_pairs(512, 4096, sale) == 0
