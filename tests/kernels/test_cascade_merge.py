"""The merge of cascade attention's two partial outputs (kernels/cascade_merge.py) by hand."""

from __future__ import annotations

import pytest

from kernels.cascade_merge import merge_kernel
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable


def _attention(dtype: str) -> KernelTable:
    """One decode attention row of 4 query heads 16 wide, computed in `dtype`."""
    row = Kernel(kind=KernelKind.ATTENTION_DECODE, op="attn", flops=1.0, weight_bytes=0.0, act_bytes=1.0,
                 kv_bytes=1.0, dtype=dtype, tensor_core=True, layer=0, module="layers.0.self_attn", heads=4,
                 kv_heads=2, q_len=1, kv_len=100, head_dim=16)
    return KernelTable.from_kernels([row])


@pytest.mark.parametrize(("dtype", "output_B"), [("bf16", 2), ("fp16", 2), ("fp32", 4)])
def test_the_merge_moves_its_partial_outputs_at_the_attentions_dtype(dtype, output_B):
    """vLLM's merge_attn_states reads the prefix and suffix outputs and writes the merged one in the output's own
    dtype (its CUDA kernel templated on scalar_t: float32, half or bfloat16), each log-sum-exp a float32: 8 queries of
    4 heads read two outputs of 16 values and two 4-byte log-sum-exps and write one of each, 3 x 8 x 4 x (16 x 2 +
    4) = 3,456 bytes in 16 bits, 3 x 8 x 4 x (16 x 4 + 4) = 6,528 in fp32."""
    merge = merge_kernel(_attention(dtype), 8)
    assert float(merge.act_bytes[0]) == 3 * 8 * 4 * (16 * output_B + 4)
    assert str(merge.dtype[0]) == dtype
