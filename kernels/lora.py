"""LoRA adapters' kernels: the shrink and expand GEMMs vLLM adds to each linear layer it wraps.

With LoRA on, vLLM wraps the decoder layers' linear layers (vllm/lora/layers: QKVParallelLinearWithLoRA and
MergedQKVParallelLinearWithLoRA for qkv_proj, RowParallelLinearWithLoRA for o_proj and down_proj,
MergedColumnParallelLinearWithLoRA for gate_up_proj; the experts of an MoE layer are not among them here) and adds, to
each, y += (x @ A) @ B for every token with its own adapter's A (in x r) and B (r x out). Its punica wrapper runs that
as two kernels over the whole pass (vllm-project/vllm vllm/lora/punica_wrapper/punica_gpu.py at 010c9386,
add_lora_linear): lora_shrink of x into an fp32 buffer of (slices, tokens, r), then lora_expand of the buffer into y
(add_inputs=True: y read and written). A merged layer has a slice per projection it merges (qkv: 3, gate_up: 2), each
with its own A and B. Each kernel groups the tokens by adapter (vllm/lora/ops/triton_ops lora_shrink_op.py,
lora_expand_op.py: a program per adapter's tokens), so each active adapter's A and B are read once.

Priced as grouped GEMMs (a batch of `adapters` GEMMs of tokens / adapters rows each, as a fused MoE layer's experts)
through the shared kernel mechanism, so every device kind sees them. The shrink splits its long k (the layer's input,
4,096 or more) over SPLIT_K thread blocks a tile, each adding its fp32 partial sums into the zeroed buffer by atomic
adds; vLLM picks SPLIT_K by the pass's input rows, M (vllm-project/vllm vllm/lora/ops/triton_ops/lora_shrink_op.py at
6c038d0f6dcc: SPLIT_K = 64 if M < 128 else 8, BLOCK_K 256 or 32, BLOCK_M 32, BLOCK_N 16; kernel_utils.py at
a5cdcfaafbb3, do_shrink_kernel: tl.atomic_add of every block's partial where SPLIT_K > 1, including the blocks past k,
whose partials are zeros; later commits keep these defaults in utils.get_lora_op_configs, a tuned table read only from
VLLM_TUNED_CONFIG_FOLDER). The rows carry the split (Kernel.split_k: a GPU's GEMM model runs the tiles of its own menu,
split_k blocks each) and the atomic adds as bytes moved. The expand's k is the rank: vLLM runs it whole
(do_expand_kernel: SPLIT_K = 1).

Under tensor parallelism a device runs the shard of its base GEMM: vLLM's default (LoRAConfig.fully_sharded_loras
False, vllm/config/lora.py at 01230b40) keeps A whole and shards B beside a column-parallel layer, and shards A beside a
row-parallel one, which are the traced shard's k (input) and n (output): the same arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels.kernel import Kernel, KernelKind
from kernels.table import KIND_CODE, KernelTable

# The projections vLLM's LoRA wraps, by the module name of our decoder (workloads/decoder.py; kernels/fusion.py names
# the merged ones as vLLM does), and the slices (adapters' A and B matrices) each holds.
WRAPPED_SLICES = {"q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 1, "gate_proj": 1, "up_proj": 1, "down_proj": 1,
                  "qkv_proj": 3, "gate_up_proj": 2}
ADAPTER_BYTES_PER_VALUE = 2  # LoRAConfig.lora_dtype 'auto': the base model's dtype (bf16/fp16), under any quantization
BUFFER_BYTES_PER_VALUE = 4  # the fp32 buffer between shrink and expand (punica_gpu.py add_lora_linear)
# vLLM's shrink split (lora_shrink_op.py above): SPLIT_K of a pass of fewer input rows than SHRINK_SPLIT_ROWS, else
# the other.
SHRINK_SPLIT_ROWS = 128
SHRINK_SPLIT_K = (64, 8)
_GEMM = KIND_CODE[KernelKind.GEMM]


def wrapped_rows(table: KernelTable) -> np.ndarray:
    """Indices of the GEMM rows of decoder layers that LoRA wraps (WRAPPED_SLICES), in table order."""
    return np.array([i for i, k in enumerate(table.kernels) if table.kind[i] == _GEMM and k.layer is not None
                     and k.module.rsplit(".", 1)[-1] in WRAPPED_SLICES], dtype=int)


def _slices(table: KernelTable, rows: np.ndarray) -> np.ndarray:
    return np.array([WRAPPED_SLICES[table.kernels[i].module.rsplit(".", 1)[-1]] for i in rows], dtype=float)


def adapter_bytes(table: KernelTable, count: np.ndarray, rank: int) -> float:
    """Bytes of one adapter at `rank` on a device running `table`'s rows `count` times each: every wrapped row's A
    (slices x k x rank) and B (rank x n)."""
    rows = wrapped_rows(table)
    values = (_slices(table, rows) * table.k[rows] + table.n[rows]) * rank
    return float((values * count[rows]).sum() * ADAPTER_BYTES_PER_VALUE)


@dataclass(frozen=True)
class LoraKernels:
    """One decoder layer's shrink and expand rows at one token and one adapter, re-sized per pass (at)."""

    frame: KernelTable  # shrink, expand for each wrapped row, at tokens = adapters = 1, unsplit
    partial_bytes: np.ndarray  # a token's output bytes each further split block adds again (shrink rows; 0: expand)

    @classmethod
    def of(cls, table: KernelTable, rank: int) -> LoraKernels | None:
        """The kernels LoRA of `rank` adds to one layer of `table`'s rows; None where it wraps none of them."""
        rows = wrapped_rows(table)
        if rank < 1 or not len(rows):
            return None
        kernels, partial_bytes = [], []
        for i, slices in zip(rows.tolist(), _slices(table, rows).tolist(), strict=True):
            base = table.kernels[i]
            k, n, r = float(table.k[i]), float(table.n[i]), slices * rank
            # Shrink: x (k) read for each slice, its r values a slice written to the fp32 buffer.
            kernels.append(Kernel(kind=KernelKind.GEMM, op="lora_shrink", module=f"{base.module}.lora_a",
                                  flops=2.0 * k * r, weight_bytes=k * r * ADAPTER_BYTES_PER_VALUE,
                                  act_bytes=slices * k * ADAPTER_BYTES_PER_VALUE + r * BUFFER_BYTES_PER_VALUE,
                                  kv_bytes=0.0, dtype=base.dtype, tensor_core=True, layer=base.layer,
                                  m=1.0, n=int(r), k=int(k), batch=1.0))
            # Expand: the buffer read, y (n) read and written back with the product added.
            kernels.append(Kernel(kind=KernelKind.GEMM, op="lora_expand", module=f"{base.module}.lora_b",
                                  flops=2.0 * rank * n, weight_bytes=rank * n * ADAPTER_BYTES_PER_VALUE,
                                  act_bytes=r * BUFFER_BYTES_PER_VALUE + 2 * n * ADAPTER_BYTES_PER_VALUE,
                                  kv_bytes=0.0, dtype=base.dtype, tensor_core=True, layer=base.layer,
                                  m=1.0, n=int(n), k=int(rank), batch=1.0))
            partial_bytes += [r * BUFFER_BYTES_PER_VALUE, 0.0]
        return cls(frame=KernelTable.from_kernels(kernels), partial_bytes=np.array(partial_bytes))

    def at(self, tokens: int, adapters: int, input_rows: int | None = None) -> KernelTable:
        """The rows of a pass of `tokens` tokens over `adapters` distinct adapters: work and activations grow with the
        tokens, weights with the adapters (each read once), each adapter's GEMM its share of the tokens; the shrink
        split as vLLM splits it for a pass of `input_rows` rows (its padded batch; default: the tokens), each split
        block's atomic adds of a token's partial sums counted."""
        if adapters < 1 or tokens < adapters:
            raise ValueError(f"adapters: found {adapters} over {tokens} tokens, allowed: 1 to the pass's tokens")
        f = self.frame
        rows = len(f)
        split = SHRINK_SPLIT_K[(tokens if input_rows is None else input_rows) >= SHRINK_SPLIT_ROWS]
        act_bytes = (f.act_bytes + (split - 1) * self.partial_bytes) * tokens
        return f.with_columns(flops=f.flops * tokens, act_bytes=act_bytes,
                              weight_bytes=f.weight_bytes * adapters, m=np.full(rows, tokens / adapters),
                              batch=np.full(rows, float(adapters)),
                              split_k=np.where(self.partial_bytes > 0, float(split), 1.0))
