"""A pass padded to a captured CUDA-graph size writes the KV of its real tokens alone: vLLM gives the padding the slot
PAD_SLOT_ID, which its cache-write kernels skip (KernelTable.cache_write_mask)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from explore.design_point import DesignPoint
from explore.evaluate import fusion_of
from kernels.formats import NumericFormat
from kernels.shapes import step_shape

# The tiny Llama (tests/explore/tiny_sweep.py): 2 KV heads of 64 / 4 = 16 values, 16-bit, 2 layers. A token's write
# stores its key and value: 2 x 2 x 16 x 2 = 128 bytes a layer, read from its K and V activations (as many).
TOKEN_WRITE_B = 2 * 2 * 16 * 2
LAYERS = 2


def _write_rows(table) -> np.ndarray:
    """The KV-cache writes: the rows outside tensor cores that move KV bytes."""
    return (table.kv_bytes > 0) & ~table.tensor_core


def _writes(table) -> tuple[np.ndarray, np.ndarray]:
    write = _write_rows(table)
    return table.kv_bytes[write], table.act_bytes[write]


def _point(model: str, batch: int) -> DesignPoint:
    return DesignPoint(model=model, device="h100-sxm", batch=batch, prompt=32, output=4, execution="engine")


@pytest.mark.parametrize(("batch", "padded"), [(3, 4), (12, 16)])
def test_a_padded_static_decode_writes_its_own_tokens(tiny_config, tiny_evaluator, batch, padded):
    """A decode of 3 sequences runs as 4 tokens (every other kernel of its layers on 4) but writes 3 tokens' KV."""
    point = _point(tiny_config, batch)
    decode = tiny_evaluator.point_tables(point, tiny_evaluator.point_device(point)).decode
    kv, act = _writes(decode)
    assert len(kv) == LAYERS  # one reshape_and_cache a layer, launched whatever it skips
    assert kv.tolist() == act.tolist() == [batch * TOKEN_WRITE_B] * LAYERS
    # The rest of the layers runs the padded tokens: the layers' GEMMs have `padded` rows.
    in_layers = np.array([kernel.layer is not None for kernel in decode.kernels])
    assert set(decode.m[in_layers & decode.tensor_core & (decode.weight_bytes > 0)].tolist()) == {padded}


def test_a_padded_serving_iteration_writes_its_own_tokens(tiny_config, tiny_evaluator):
    """The step template prices 3 decodes padded to 4 with the writes of 3, and 4 real ones with the writes of 4."""
    template = tiny_evaluator.template(tiny_config, NumericFormat(), 1, 1, fusion_of("engine", "gpu"))
    for real, padding in ((3, 1), (4, 0), (1, 3)):
        table, rows = template.linear_table(replace(step_shape(decode_kv=[33] * real, sampled=real), padding=padding))
        kv, act = _writes(table)
        assert kv.tolist() == act.tolist() == [real * TOKEN_WRITE_B]  # one row, counted in each layer
        assert template.count[rows][_write_rows(table)].tolist() == [LAYERS]
