"""A full model's kernel table lowered from its distinct layers' kernels (kernels/layer_kernels.py) against lowering its
expanded trace op by op: the same table, every column of every row in order, under formats and parallel layouts."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from kernels.formats import NumericFormat
from kernels.fusion import ENGINE, fuse
from kernels.layer_kernels import stored_table
from kernels.lowering import lower_trace
from kernels.parallel import shard_tensor_parallel
from kernels.table import KernelTable
from tests.kernels.layer_traces import PASSES, captured, op_by_op, preset_config

# Dense (Llama-2-7B), dense with a sliding window (Mistral-7B), MoE (Mixtral-8x7B), MLA with dense first layers
# before MoE ones (DeepSeek-V2-Lite; DeepSeek-V3 among the slow tests) and MoE with a window in every other layer
# (gpt-oss-20b, its windows cut to 16 keys by preset_config), at full depth, with the tensor-parallel devices (experts
# spread whole over them) each is sharded over.
MODELS = {"llama-2-7b": 2, "mistral-7b": 2, "mixtral-8x7b": 2, "deepseek-v2-lite": 8, "gpt-oss-20b": 4}
# The traced precision, a uniform 4-bit format with an 8-bit KV cache, formats by layer and module (the first and last
# two layers and the attention at 8 bits, hot experts at 8), and DeepSeek-V3's block-scaled fp8 checkpoint.
FORMATS = (
    NumericFormat(),
    NumericFormat(weight_bits=4, group_size=128, kv_bits=8),
    NumericFormat(weight_bits=4, group_size=128, edge_layer_bits=8, edge_layers=2, attn_weight_bits=8),
    NumericFormat(weight_bits=4, group_size=128, hot_experts=0.25, hot_expert_bits=8),
    NumericFormat(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3", scale_type="fp32",
                  scale_granularity="block", group_size=128, head_bits=16),
)


def assert_same_table(got: KernelTable, want: KernelTable) -> None:
    """Every field of the two tables equal: the kernels (each field of each row, in order: layer and module
    included), each column (values and dtype) and the format."""
    assert len(got) == len(want)
    assert got.kernels == want.kernels
    for field in fields(KernelTable):
        a, b = getattr(got, field.name), getattr(want, field.name)
        if isinstance(b, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), field.name
        else:
            assert a == b, field.name


def check_table_from_layers(name: str, phase: str, tp: int) -> None:
    """stored_table of a model's pass captured from its distinct layers is the op-by-op lowering of its expanded trace,
    as traced, under each of FORMATS, and sharded over `tp` devices and fused as a serving engine runs it."""
    config, layers = preset_config(name), captured(name, phase)
    assert len(set(layers.sources)) < len(layers.sources) == config.num_layers  # most layers are copies
    got, want = stored_table(layers), op_by_op(name, phase)
    assert len({k.layer for k in want.kernels} - {None}) == config.num_layers
    assert_same_table(got, want)
    for fmt in FORMATS:
        assert_same_table(got.with_format(fmt, kv_head_dim=config.head_dim),
                          want.with_format(fmt, kv_head_dim=config.head_dim))
    assert_same_table(fuse(shard_tensor_parallel(got, tp, config, tp), ENGINE),
                      fuse(shard_tensor_parallel(want, tp, config, tp), ENGINE))


@pytest.mark.parametrize("phase", PASSES)
@pytest.mark.parametrize("name", MODELS)
def test_a_full_models_table_from_its_layers_is_the_op_by_op_lowering(name: str, phase: str) -> None:
    check_table_from_layers(name, phase, MODELS[name])


@pytest.mark.slow
@pytest.mark.parametrize("phase", PASSES)
def test_deepseek_v3s_table_from_its_layers_is_the_op_by_op_lowering(phase: str) -> None:
    """DeepSeek-V3 (examples/mtp.yaml's model): 3 dense layers, 58 MoE layers of 256 experts, on 8 devices."""
    check_table_from_layers("deepseek-v3", phase, 8)


def test_a_trace_stored_whole_is_lowered_op_by_op(trace_of, tiny_llama) -> None:
    trace = trace_of(tiny_llama, "decode", 2, 1, context_len=8)
    assert_same_table(stored_table(trace), KernelTable.from_kernels(lower_trace(trace)))
