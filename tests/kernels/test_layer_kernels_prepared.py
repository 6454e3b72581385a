"""A full model's kernel table sharded and fused on a shorter model, then expanded (kernels/layer_kernels.py
LayerTable), against the full table sharded and fused row by row: the same table, every column of every row in order,
under formats by layer and block-scaled fp8."""

from __future__ import annotations

import pytest

from kernels.fusion import ENGINE, fuse, fused_rows
from kernels.layer_kernels import context_layers, layer_table
from kernels.parallel import shard_tensor_parallel, sharded_rows
from tests.kernels.layer_traces import captured, op_by_op, preset_config
from tests.kernels.test_layer_kernels import FORMATS, assert_same_table

# Each model's layouts: tensor-parallel devices and the devices its experts are spread over (1: each expert split).
# Dense (Llama-2-7B), with a sliding window (Mistral-7B), MoE (Mixtral-8x7B), MLA with a dense first layer before MoE
# ones (DeepSeek-V2-Lite; DeepSeek-V3 among the slow tests), MoE with a window every other layer (gpt-oss-20b).
LAYOUTS = {"llama-2-7b": [(1, 1), (2, 1), (8, 1)], "mistral-7b": [(8, 1)],
           "mixtral-8x7b": [(1, 1), (2, 1), (2, 2), (8, 8)], "deepseek-v2-lite": [(1, 1), (2, 2), (8, 1), (8, 8)],
           "gpt-oss-20b": [(1, 1), (4, 4), (8, 1)]}


def check_prepared_from_layers(name: str, phase: str, tp: int, ep: int, fusion: str) -> None:
    """A pass's table sharded over `tp` devices (experts spread over `ep`) and fused by `fusion` on its short model
    then expanded is the op-by-op table sharded and fused, and so under formats by layer (edge layers, attention at 8
    bits; hot experts) and DeepSeek-V3's block-scaled fp8."""
    config, layers = preset_config(name), captured(name, phase)
    short = layer_table(layers)
    assert len(short.table) < len(op_by_op(name, phase)) / 3  # prepared on a fraction of the rows
    got = short.transformed(lambda table: sharded_rows(table, tp, config, ep)).transformed(
        lambda table: fused_rows(table, fusion)).expanded()
    want = fuse(shard_tensor_parallel(op_by_op(name, phase), tp, config, ep), fusion)
    assert_same_table(got, want)
    for fmt in FORMATS[2:]:
        assert_same_table(got.with_format(fmt, kv_head_dim=config.head_dim),
                          want.with_format(fmt, kv_head_dim=config.head_dim))


@pytest.mark.parametrize("fusion", ["", ENGINE])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize(("name", "tp", "ep"), [(name, tp, ep) for name, layouts in LAYOUTS.items()
                                                for tp, ep in layouts])
def test_a_tables_sharding_and_fusion_on_its_short_model_are_the_full_tables(name: str, phase: str, tp: int, ep: int,
                                                                            fusion: str) -> None:
    check_prepared_from_layers(name, phase, tp, ep, fusion)


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["", ENGINE])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_deepseek_v3s_sharding_and_fusion_on_its_short_model_are_the_full_tables(phase: str, fusion: str) -> None:
    """examples/mtp.yaml's layout: 8 devices, each expert split over them."""
    check_prepared_from_layers("deepseek-v3", phase, 8, 1, fusion)


def test_the_short_model_has_every_layer_between_neighbours_like_its_own() -> None:
    # DeepSeek-V3's sources (3 dense layers, 57 MoE ones, the last traced apart): a run cut to its ends and a middle.
    assert context_layers((0, 0, 0) + (1,) * 57 + (2,)) == ((0, 0, 0, 1, 1, 1, 2), (0, 1, 2, 3) + (4,) * 55 + (5, 6))
    # Layers alternating (a window every other layer), a layer alone, runs of two: nothing or little to leave out.
    assert context_layers((0, 1) * 11 + (0, 2)) == ((0, 1, 0, 1, 0, 2), (0,) + (3, 2) * 10 + (3, 4, 5))
    assert context_layers((0,)) == ((0,), (0,))
    assert context_layers((0, 0, 1, 1)) == ((0, 0, 1, 1), (0, 1, 2, 3))
