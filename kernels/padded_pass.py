"""A traced pass as an engine runs it padded to a captured CUDA-graph size (sim/cuda_graphs.py), from two traces.

vLLM pads a pass's input to the captured size it replays (vllm-project/vllm vllm/v1/worker/gpu_model_runner.py at
000fc94, execute_model: num_tokens_padded): every kernel outside attention runs the padded tokens, attention runs the
real sequences. The same pass traced at the padded size has the kernels in the decoder layers at the padded tokens (an
MoE layer's router sends its padding to experts as it sends real tokens, as vLLM does by default); its attention is
taken from the pass traced at its own size. What follows the decoder layers (the last residual add on every token, the
final norm, the LM head and sampling on the sampled positions) grows with both, which no trace of whole sequences
tells apart: those rows are the step template's at the padded tokens and the real sequences (kernels/shapes.py), as
the serving core prices a padded iteration (StepShape.padding).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kernels.shapes import PLACE_TAIL, StepShape, StepTemplate, step_shape
from kernels.table import KernelTable


def padded_pass(own: KernelTable, padded: KernelTable, tail: KernelTable,
                head: KernelTable | None = None) -> KernelTable:
    """The pass `own` run padded: `padded` (the same pass traced at the padded size) with its attention rows replaced
    by `own`'s, each where `padded` had its layer's, the rows after its decoder layers by `tail` (template_tail) and,
    where `head` is given, those before them by `head` (template_rows)."""
    padded = _own_cache_writes(own, padded)
    own_layer, padded_layer = _layers(own), _layers(padded)
    before = _before_layers(padded_layer) if head is not None else np.zeros(len(padded), dtype=bool)
    kept = ~(padded.attention_mask | _after_layers(padded_layer) | before)
    # Order keys: a kept row where it was; an attention row at its layer's first attention row in `padded`; the tail
    # last. Ties keep each table's own order (a stable sort).
    first_attention = {}
    for i in np.flatnonzero(padded.attention_mask).tolist():
        first_attention.setdefault(padded_layer[i], i)
    attention = np.flatnonzero(own.attention_mask)
    missing = {own_layer[i] for i in attention.tolist()} - first_attention.keys()
    if missing:
        raise ValueError(f"padded_pass: found attention in layers {sorted(missing)} of the pass at its own size that "
                         f"the padded trace lacks, allowed: the same pass at two sizes")
    heads = [] if head is None else [head]
    keys = np.concatenate([np.full(len(head) if head is not None else 0, -1), np.flatnonzero(kept),
                           [first_attention[own_layer[i]] for i in attention.tolist()],
                           np.full(len(tail), len(padded))]).astype(int)
    rows = KernelTable.concat([*heads, padded.select(kept), own.select(attention), tail])
    return rows.select(np.argsort(keys, kind="stable"))


def template_tail(template: StepTemplate, tokens: int, sampled: int) -> KernelTable:
    """The kernels after the decoder layers of a decode step of `sampled` sequences padded to `tokens` tokens, one row
    a launch, as `template` prices them."""
    shape = replace(step_shape(decode_kv=[1] * sampled, sampled=sampled), padding=tokens - sampled)
    return template_rows(template, shape, PLACE_TAIL)


def template_rows(template: StepTemplate, shape: StepShape, place: int) -> KernelTable:
    """The kernels of an iteration of `shape` at `place` (PLACE_HEAD or PLACE_TAIL: StepTemplate.row_places), one row
    a launch, as `template` prices them."""
    table, rows = template.linear_table(shape)
    at = np.flatnonzero(template.row_places(shape, len(table)) == place)
    return table.select(np.repeat(at, template.count[rows[at]].astype(int)))


def _own_cache_writes(own: KernelTable, padded: KernelTable) -> KernelTable:
    """`padded` with its KV-cache writes (KernelTable.cache_write_mask) `own`'s, each layer's in order: the padding's
    slots are PAD_SLOT_ID, which the cache-write kernels skip, so a padded pass stores its real tokens' KV alone."""
    mine, theirs = np.flatnonzero(own.cache_write_mask), np.flatnonzero(padded.cache_write_mask)
    if _layers(own)[mine].tolist() != _layers(padded)[theirs].tolist():
        raise ValueError(f"padded_pass: found {len(mine)} KV-cache writes in the pass at its own size and "
                         f"{len(theirs)} in the padded trace, allowed: the same writes in the same layers")
    index = np.arange(len(padded))
    index[theirs] = len(padded) + np.arange(len(mine))
    return KernelTable.concat([padded, own.select(mine)]).select(index)


def _layers(table: KernelTable) -> np.ndarray:
    """Each row's decoder layer, -1 outside the layers."""
    return np.array([-1 if k.layer is None else k.layer for k in table.kernels])


def _before_layers(layers: np.ndarray) -> np.ndarray:
    """The rows outside the decoder layers that come before the first row in them."""
    inside = np.flatnonzero(layers >= 0)
    return np.arange(len(layers)) < (inside[0] if len(inside) else 0)


def _after_layers(layers: np.ndarray) -> np.ndarray:
    """The rows outside the decoder layers that follow the last row in them."""
    inside = np.flatnonzero(layers >= 0)
    after = np.zeros(len(layers), dtype=bool)
    after[(inside[-1] + 1) if len(inside) else 0:] = True
    return after & (layers < 0)
