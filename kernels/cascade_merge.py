"""The merge of cascade attention's two partial outputs as a kernel of its own: the shared-prefix kernel's output and
log-sum-exp with the per-sequence kernel's, per query token and head (FlashInfer's merge_state_in_place, which its
MultiLevelCascadeAttentionWrapper.run calls once per shared level; vLLM's merge_attn_states after its cascade)."""

from __future__ import annotations

from dataclasses import replace

from kernels.formats import element_B
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable

MERGE_OP = "cascade_merge"
# A partial output's elements are in the attention's dtype, its query's, which merge_kernel reads from the attention
# row (flashinfer/cascade.py merge_state_in_place: v and v_other of shape (tokens, heads, head_dim); vLLM's
# merge_attn_states CUDA kernel is templated on the output's scalar_t: float32, half or bfloat16).
# Bytes of a log-sum-exp, whatever the outputs' dtype (flashinfer/cascade.py: s and s_other "expected to be a float32
# tensor", (tokens, heads); vLLM's kernel reads and writes them as float).
LSE_B = 4.0
# Partial outputs the merge reads (the prefix kernel's and the per-sequence kernel's) and merged ones it writes
# (merge_state_in_place updates v and s in place): three passes over an output and its log-sum-exp.
STATES_READ, STATES_WRITTEN = 2, 1
# FLOPs per output element: v_a x w_a + v_b x w_b, times 1 / (w_a + w_b): a multiply, a fused multiply-add (two), a
# multiply; the weights' exponentials are once per (token, head), head_dim times fewer.
MERGE_FLOPS_PER_ELEMENT = 4.0


def merge_kernel(attention: KernelTable, queries: float) -> KernelTable:
    """The merge of `queries` query tokens' two partial attention outputs, each (heads x value width) of the first
    row of `attention` (its heads, value width, dtype, layer and module): it reads both outputs and log-sum-exps and
    writes the merged ones, an elementwise kernel priced by its bytes, the outputs at the attention's dtype."""
    kernel = attention.kernels[0]
    # An output is as wide as the values (MLA's decompressed form: 128, narrower than its 192-wide keys).
    heads, head_dim = float(attention.heads[0]), float(attention.v_head_dim[0] or attention.head_dim[0])
    states = queries * heads  # one (output, log-sum-exp) per query token and head
    merge = Kernel(kind=KernelKind.ELEMENTWISE, op=MERGE_OP, flops=MERGE_FLOPS_PER_ELEMENT * states * head_dim,
                   weight_bytes=0.0, kv_bytes=0.0, dtype=kernel.dtype, tensor_core=False, layer=kernel.layer,
                   module=kernel.module,
                   act_bytes=(STATES_READ + STATES_WRITTEN) * states * (head_dim * element_B(kernel.dtype) + LSE_B))
    return replace(KernelTable.from_kernels([merge]), numeric_format=attention.numeric_format,
                   sparsity=attention.sparsity)
