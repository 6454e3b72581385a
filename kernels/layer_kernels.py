"""The kernel table of a trace as the trace cache stores it: a full model's fake trace lowered from its distinct layers.

A full model's fake trace is captured from its distinct layers, each other layer's ops its source layer's renumbered:
their layer and the layer's number in their module paths (workloads/layer_replication.py). Lowering an op
(kernels/lowering.py lower_op) reads the op, the trace's dtype and its layer's attention window alone (a traced layer's
window is that of every layer it repeats for); of the renumbered fields a kernel keeps both and reads the module's last
part only (a norm or an attention module), which renumbering leaves as it is. So each layer's kernels are its source
layer's, renumbered the same way: the traced layers are lowered once (DeepSeek-V3's 3 of 61) and their rows copied, the
table op for op, row for row, the expanded trace's.
"""

from __future__ import annotations

import numpy as np

from kernels.kernel import Kernel
from kernels.lowering import lower_op, lower_trace
from kernels.table import KernelTable
from workloads.collector import collector_paused
from workloads.layer_replication import LayerTrace, layer_regions
from workloads.trace import Op, Trace


def stored_table(stored: Trace | LayerTrace) -> KernelTable:
    """KernelTable.from_kernels(lower_trace(trace)) of a trace, or of a LayerTrace's expanded trace, the latter from
    its traced layers' kernels (module docstring)."""
    if isinstance(stored, Trace):
        return KernelTable.from_kernels(lower_trace(stored))
    trace = stored.traced
    before, runs, after = layer_regions(trace.ops, len(stored.layer_sizes))

    def lowered(ops: tuple[Op, ...]) -> list[Kernel]:
        kernels = (lower_op(op, trace.dtype, trace.window_of(op.layer)) for op in ops)
        return [k for k in kernels if k is not None]

    parts = [lowered(before), *(lowered(run) for run in runs), lowered(after)]
    starts = np.cumsum([0, *(len(part) for part in parts)])
    rows = [np.arange(starts[i], starts[i + 1]) for i in range(len(parts))]
    traced = KernelTable.from_kernels([k for part in parts for k in part])
    kernels = list(parts[0])
    with collector_paused():  # a million copies for DeepSeek-V3's prefill, no reference cycles among them
        for layer, source in enumerate(stored.sources):
            run = parts[1 + source]
            kernels.extend(run if layer == source else _renumbered(run, source, layer))
    kernels.extend(parts[-1])
    index = np.concatenate([rows[0], *(rows[1 + source] for source in stored.sources), rows[-1]])
    return traced.select(index).with_columns(kernels=tuple(kernels))


def _renumbered(run: list[Kernel], source: int, layer: int) -> list[Kernel]:
    """Layer `source`'s kernels as layer `layer`'s: `layer` and its number in their module paths, as
    layer_replication renumbers their ops."""
    cut, new = len(f"layers.{source}"), f"layers.{layer}"
    make, assign = object.__new__, object.__setattr__
    out = []
    for kernel in run:
        # The fields copied as one dict: a frozen dataclass's __init__ sets them one by one.
        fields = kernel.__dict__.copy()
        fields["layer"], fields["module"] = layer, new + kernel.module[cut:]
        copy = make(Kernel)
        assign(copy, "__dict__", fields)
        out.append(copy)
    return out
