"""LoRA adapters' kernels (kernels/lora.py) against hand calculations: one layer's shrink and expand FLOPs and bytes,
an adapter's bytes over Llama-3-8B's layers, and the rows a step template adds per iteration."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kernels.formats import NumericFormat
from kernels.fusion import ENGINE
from kernels.kernel import Kernel, KernelKind
from kernels.lora import LoraKernels, adapter_bytes, wrapped_rows
from kernels.shapes import StepTemplate, step_shape
from kernels.table import KernelTable
from workloads.model_config import load_model_config


def _gemm(module: str, k: int, n: int, layer: int | None = 0) -> Kernel:
    return Kernel(kind=KernelKind.GEMM, op="mm", flops=0.0, weight_bytes=0.0, act_bytes=0.0, kv_bytes=0.0,
                  dtype="bf16", tensor_core=True, layer=layer, module=module, m=1, n=n, k=k, batch=1)


# One Llama-3-8B layer as an engine runs it: qkv merged (4,096 -> 4,096 + 2 x 1,024), o, gate_up merged, down; and
# the LM head, outside the layers, which LoRA leaves alone.
LAYER = KernelTable.from_kernels([
    _gemm("model.layers.0.self_attn.qkv_proj", 4096, 6144), _gemm("model.layers.0.self_attn.o_proj", 4096, 4096),
    _gemm("model.layers.0.mlp.gate_up_proj", 4096, 2 * 14336), _gemm("model.layers.0.mlp.down_proj", 14336, 4096),
    _gemm("lm_head", 4096, 128256, layer=None)])


def test_one_layers_shrink_and_expand_by_hand():
    """10 tokens over 3 adapters of rank 16. qkv's shrink: each token through 3 slices' A (4,096 x 16 each), 2 x 10 x
    4,096 x 48 = 3,932,160 FLOPs, the 3 adapters' As read once, 3 x 3 x 4,096 x 16 x 2 B = 1,179,648 B; its expand:
    2 x 10 x 16 x 6,144 = 1,966,080 FLOPs, 3 x 16 x 6,144 x 2 B = 589,824 B. down's shrink: 2 x 10 x 14,336 x 16 =
    4,587,520 FLOPs. Each a grouped GEMM of 3 adapters of 10 / 3 rows."""
    assert wrapped_rows(LAYER).tolist() == [0, 1, 2, 3]
    rows = LoraKernels.of(LAYER, 16).at(10, 3)
    assert [k.op for k in rows.kernels] == ["lora_shrink", "lora_expand"] * 4
    assert rows.flops[:2].tolist() == [3_932_160, 1_966_080]
    assert rows.weight_bytes[:2].tolist() == [1_179_648, 589_824]
    assert rows.flops[6] == 4_587_520 and rows.weight_bytes[6] == 3 * 14336 * 16 * 2
    # Activations: qkv's shrink reads x for each slice (3 x 4,096 x 2 B) and, split 64 ways (vLLM's SPLIT_K below 128
    # rows), each of its 64 blocks adds 48 fp32 values a token into the buffer; its expand reads those once and reads
    # and writes y (6,144 x 2 B each way).
    assert rows.act_bytes[:2].tolist() == [10 * (3 * 4096 * 2 + 64 * 48 * 4), 10 * (48 * 4 + 2 * 6144 * 2)]
    assert rows.batch.tolist() == [3.0] * 8 and np.allclose(rows.m, 10 / 3)
    assert rows.n[:2].tolist() == [48, 6144] and rows.k[:2].tolist() == [4096, 16]
    # Twice the adapters read twice the weights, the same work; twice the tokens twice the work, the same weights.
    more = LoraKernels.of(LAYER, 16).at(10, 6)
    assert np.array_equal(more.weight_bytes, 2 * rows.weight_bytes) and np.array_equal(more.flops, rows.flops)
    assert np.array_equal(LoraKernels.of(LAYER, 16).at(20, 3).flops, 2 * rows.flops)


def test_the_shrink_splits_as_vllm_splits_it():
    """vLLM's lora_shrink runs SPLIT_K = 64 below 128 input rows, 8 from 128 (lora_shrink_op.py at 6c038d0f6dcc); the
    expand is never split. The rows are the padded batch's where the engine pads it (input_rows)."""
    lora = LoraKernels.of(LAYER, 16)
    for tokens, rows, split in [(1, None, 64), (127, None, 64), (128, None, 8), (4096, None, 8), (120, 128, 8)]:
        table = lora.at(tokens, 1, input_rows=rows)
        assert table.split_k.tolist() == [split, 1] * 4
    # From 128 rows, 8 blocks a tile add a token's 48 values: qkv's shrink at 200 tokens.
    assert lora.at(200, 1).act_bytes[0] == 200 * (3 * 4096 * 2 + 8 * 48 * 4)


def test_a_pass_of_fewer_tokens_than_adapters_is_refused():
    with pytest.raises(ValueError, match="adapters: found 4 over 3 tokens"):
        LoraKernels.of(LAYER, 16).at(3, 4)


@pytest.mark.parametrize("fusion", ["", ENGINE])
def test_llama_3_8b_rank_16_adapter_bytes(trace_of, fusion):
    """Llama-3-8B's rank-16 adapter on its 7 projections: per layer 16 x ((4,096 + 4,096) x 2 + (4,096 + 1,024) x 2 +
    (4,096 + 14,336) x 3) = 1,310,720 values, 41,943,040 over 32 layers (what PEFT prints as its trainable
    parameters), 83,886,080 B in bf16; the same whether q, k, v and gate, up run apart (eager) or merged (an engine's
    slices)."""
    def trace(phase: str, batch: int, prompt: int):
        if phase == "decode":
            return trace_of("llama-3-8b", "decode", batch, 1, prompt)
        return trace_of("llama-3-8b", "prefill", batch, prompt)

    template = StepTemplate.from_model(load_model_config("llama-3-8b"), NumericFormat(), trace, fusion=fusion)
    assert adapter_bytes(template.linear, template.count, 16) == 41_943_040 * 2
    # Its rows in a pass: each layer's (the attention table's rows, one a layer), only where the pass runs adapters.
    lora = replace(template, lora_rank=16)
    shape = step_shape(decode_kv=[100] * 8, sampled=8)
    plain, _ = lora.table(shape)
    with_adapters, counts = lora.table(replace(shape, lora_adapters=2))
    assert len(with_adapters) == len(plain) + 2 * len(wrapped_rows(template.linear))
    added = np.array([k.op in ("lora_shrink", "lora_expand") for k in with_adapters.kernels])
    assert set(counts[added].tolist()) == {32.0}
    # Weights read a pass: the 2 adapters' whole (every layer's A and B).
    assert float((with_adapters.weight_bytes * counts)[added].sum()) == 2 * 41_943_040 * 2
    assert float((with_adapters.flops * counts)[added].sum()) == 2 * 8 * 41_943_040  # 2 FLOPs a value a token
