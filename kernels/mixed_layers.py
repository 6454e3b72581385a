"""Step templates of formats whose first and last decoder layers keep more bits (NumericFormat.edge_layer_bits).

A step template is read from traces of a model's first TEMPLATE_LAYERS layers and counts each layer's rows
num_layers times (kernels/shapes.py), so it cannot tell the last layer from the others. A format with edge layers
is priced from two templates instead: one with every layer in the format of the layers between the edges
(NumericFormat.interior) and one with every layer in the edge layers' format (NumericFormat.at_edge). The mixed
template keeps the first's rows, and splits the rows a format sets (weight GEMMs and the kernels a format adds,
KernelTable.format_rows) of the decoder layers between the two: the interior rows counted for the share of layers
between the edges, the edge rows for the edge share (NumericFormat.edge_share). Every count is linear in the
layers, so the mix prices the edge layers exactly as a whole-model trace with per-layer formats does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from kernels.formats import NumericFormat
from kernels.shapes import SPAN_MODEL, StepTemplate
from kernels.table import KernelTable


def edge_mixed_template(build: Callable[[NumericFormat], StepTemplate], fmt: NumericFormat,
                        num_layers: int) -> StepTemplate:
    """The template of `fmt` for a model of `num_layers` decoder layers, from `build` (a format's template)."""
    if not fmt.edge_layer_bits:
        return build(fmt)
    share = fmt.edge_share(num_layers)
    interior, edge = build(fmt.interior()), build(fmt.at_edge())
    if share >= 1.0:
        return replace(edge, linear=replace(edge.linear, numeric_format=fmt))
    inner = _layer_format_rows(interior)
    outer = np.flatnonzero(_layer_format_rows(edge))
    linear = KernelTable.concat([interior.linear, edge.linear.select(outer)])
    return replace(
        interior, linear=replace(linear, numeric_format=fmt),
        coef={name: np.concatenate([c, edge.coef[name][outer]]) for name, c in interior.coef.items()},
        expert=np.concatenate([interior.expert, edge.expert[outer]]),
        general_layout=np.concatenate([interior.general_layout, edge.general_layout[:, outer]], axis=1),
        count=np.concatenate([np.where(inner, interior.count * (1.0 - share), interior.count),
                              edge.count[outer] * share]),
        span=np.concatenate([interior.span, edge.span[outer]]))


def _layer_format_rows(template: StepTemplate) -> np.ndarray:
    """Rows of a template's decoder layers whose work the format sets."""
    return template.linear.format_rows & (template.span != SPAN_MODEL)
