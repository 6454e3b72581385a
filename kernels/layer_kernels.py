"""The kernel table of a trace as the trace cache stores it: a full model's fake trace lowered from its distinct layers.

A full model's fake trace is captured from its distinct layers, each other layer's ops its source layer's renumbered:
their layer and the layer's number in their module paths (workloads/layer_replication.py). Lowering an op
(kernels/lowering.py lower_op) reads the op, the trace's dtype and its layer's attention window alone (a traced layer's
window is that of every layer it repeats for); of the renumbered fields a kernel keeps both and reads the module's last
part only (a norm or an attention module), which renumbering leaves as it is. So each layer's kernels are its source
layer's, renumbered the same way: the traced layers are lowered once (DeepSeek-V3's 3 of 61) and their rows copied, the
table op for op, row for row, the expanded trace's.

Sharding (kernels/parallel.py) and fusion (kernels/fusion.py) read module names, which they compare and match but
never count, and a layer's kernels under them depend on its own eager rows and its neighbours' alone: a residual add
ending one layer is fused with the norm starting the next, and the first layer's norm, after the embedding, is fused
with none. So a layer's kernels are those of any layer whose source, and whose neighbours' sources, are its own
(context_layers): they are prepared on a shorter model (LayerTable: DeepSeek-V3's 7 layers of 61, Llama's 4 of 32)
and copied, renumbered, for the full model last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kernels.kernel import Kernel
from kernels.lowering import lower_op, lower_trace
from kernels.table import KernelTable
from workloads.collector import collector_paused
from workloads.layer_replication import LayerTrace, layer_regions
from workloads.trace import Op, Trace

# A table transform that also says, for each row it returns, the row of its input it runs at (non-decreasing).
RowTransform = Callable[[KernelTable], tuple[KernelTable, np.ndarray]]


@dataclass(frozen=True)
class LayerTable:
    """A full model's kernel table held as a shorter model's (context_layers): `table` holds its kernels before the
    layer stack, then its layers' (each a run of rows starting at `starts`), then those after the stack (from
    starts[-1]); `layers` names, for each layer of the full model, the layer of `table` whose rows it takes."""

    table: KernelTable
    starts: tuple[int, ...]
    layers: tuple[int, ...]

    def expanded(self) -> KernelTable:
        """The full model's table: each layer's rows its `layers` entry's, renumbered."""
        return _copied(self.table, self.starts, self.layers)

    def transformed(self, transform: RowTransform) -> LayerTable:
        """The table under a transform (sharding, fusion) that acts on each layer's rows and its neighbours' alone."""
        table, positions = transform(self.table)
        starts = np.searchsorted(positions, self.starts, side="left")
        return LayerTable(table=table, starts=tuple(starts.tolist()), layers=self.layers)


def context_layers(sources: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A shorter model's layers, as the traced layers each takes its rows from, in which every layer of the model whose
    layers take theirs from `sources` has one of the same source between neighbours of the same sources (or the
    stack's ends): `sources` with layers left out one by one while that holds. And for each full layer, the short
    model's layer standing for it."""
    def triples(layers: list[int]) -> list[tuple[int, ...]]:
        padded = [-1, *layers, -1]  # -1: the kernels before or after the stack
        return [tuple(padded[i:i + 3]) for i in range(len(layers))]

    needed, short, i = set(triples(list(sources))), list(sources), 0
    while i < len(short):
        trial = short[:i] + short[i + 1:]
        if needed <= set(triples(trial)):
            short = trial
        else:
            i += 1
    standing = {triple: k for k, triple in enumerate(triples(short))}
    return tuple(short), tuple(standing[triple] for triple in triples(list(sources)))


def layer_table(stored: Trace | LayerTrace) -> LayerTable:
    """The kernels of a trace as stored (module docstring); a trace stored whole as it is, one run of rows."""
    if isinstance(stored, Trace):
        table = KernelTable.from_kernels(lower_trace(stored))
        return LayerTable(table=table, starts=(len(table),), layers=())
    trace = stored.traced
    before, runs, after = layer_regions(trace.ops, len(stored.layer_sizes))

    def lowered(ops: tuple[Op, ...]) -> list[Kernel]:
        kernels = (lower_op(op, trace.dtype, trace.window_of(op.layer)) for op in ops)
        return [k for k in kernels if k is not None]

    parts = [lowered(before), *(lowered(run) for run in runs), lowered(after)]
    starts = tuple(np.cumsum([len(part) for part in parts[:-1]]).tolist())
    traced = KernelTable.from_kernels([k for part in parts for k in part])
    short, standing = context_layers(stored.sources)
    sizes = [starts[s + 1] - starts[s] for s in short]
    short_starts = tuple(np.cumsum([starts[0], *sizes]).tolist())
    return LayerTable(table=_copied(traced, starts, short), starts=short_starts, layers=standing)


def stored_table(stored: Trace | LayerTrace) -> KernelTable:
    """KernelTable.from_kernels(lower_trace(trace)) of a trace, or of a LayerTrace's expanded trace, the latter from
    its traced layers' kernels (module docstring)."""
    return layer_table(stored).expanded()


def _copied(table: KernelTable, starts: tuple[int, ...], sources: tuple[int, ...]) -> KernelTable:
    """The table of a model whose layer i's rows are `table`'s layer sources[i]'s, renumbered, between `table`'s rows
    before its layers and after them; `starts`: the row where each layer of `table` starts, and where the rows after
    them start."""
    if not sources:
        return table
    kernels = list(table.kernels[:starts[0]])
    with collector_paused():  # a million copies for DeepSeek-V3's prefill, no reference cycles among them
        for layer, source in enumerate(sources):
            run = table.kernels[starts[source]:starts[source + 1]]
            kernels.extend(run if layer == source else _renumbered(run, layer - source))
    kernels.extend(table.kernels[starts[-1]:])
    index = np.concatenate([np.arange(starts[0]), *(np.arange(starts[s], starts[s + 1]) for s in sources),
                            np.arange(starts[-1], len(table))])
    return table.select(index).with_columns(kernels=tuple(kernels))


def _renumbered(run: tuple[Kernel, ...], shift: int) -> list[Kernel]:
    """Kernels of a layer moved `shift` layers on: their layer and its number in their module paths, as
    layer_replication renumbers their ops (a fused kernel of the next layer's, at the end of a run, moves with it)."""
    make, assign = object.__new__, object.__setattr__
    prefixes: dict[int, tuple[int, str]] = {}
    out = []
    for kernel in run:
        if kernel.layer is None:
            out.append(kernel)
            continue
        if kernel.layer not in prefixes:
            prefixes[kernel.layer] = (len(f"layers.{kernel.layer}"), f"layers.{kernel.layer + shift}")
        cut, new = prefixes[kernel.layer]
        # The fields copied as one dict: a frozen dataclass's __init__ sets them one by one.
        fields = kernel.__dict__.copy()
        fields["layer"], fields["module"] = kernel.layer + shift, new + kernel.module[cut:]
        copy = make(Kernel)
        assign(copy, "__dict__", fields)
        out.append(copy)
    return out
