"""The per-op table of a design point: each op of the prefill and of the first decode step, summed over the
layers that repeat it, with its work, traffic, arithmetic intensity, what bounds it on the device, and time.

Kernels are grouped by pass, kind, traced op and module with the layer index left out ('layers.*.mlp.down_proj'),
so a 32-layer model shows one row per op of a layer plus the ops outside the layers. Times are device time
(each kernel's compute, memory and launch parts as the device model prices them under the point's execution
mode); a host that dispatches slower than the device runs, as PyTorch eager at small batch, adds its wait on top,
which the run's TTFT and TPOT include (time_host_wait_s) and each pass's title line states.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from hw_models.cost import bound_name
from kernels.table import KernelTable
from sim.speculative import SpeculativeTables
from sim.step_costs import batch_modes, pass_host_wait_s
from sim.workload import BatchWorkload, PassTables

LAYER_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)")  # 'layers.12.mlp' -> 'layers.*.mlp'


@dataclass(frozen=True)
class OpRow:
    """One op of a pass, over every layer that runs it."""

    phase: str  # a key of PHASE_TITLES: "prefill" or "decode" (the first decode step), or a speculative pass
    kind: str  # kernel kind: gemm, attention_decode, norm, ...
    op: str  # the traced aten op
    module: str  # the module it came from, the layer index as '*'
    count: int  # kernels in the group
    flops: float
    bytes: float
    bound: str  # compute, memory or overhead: the largest of the group's summed time parts; link for a collective
    time_s: float
    share: float  # of the pass's device time

    @property
    def intensity_flop_per_byte(self) -> float:
        return self.flops / self.bytes if self.bytes > 0 else float("inf")


# Each pass a table shows, in order, by its title. A speculative point decodes in verification passes (k + 1 query
# tokens a sequence, Medusa heads inside), each after a draft's k steps: its first over the verified tokens, then k - 1
# decode steps (sim/speculative.py).
PHASE_TITLES = {"prefill": "prefill", "draft_prefill": "the draft's prefill", "decode": "first decode step",
                "verify": "first verification pass",
                "draft_first": "the draft's first step over the verified tokens (one a speculative step)",
                "draft_decode": "a draft decode step (k - 1 a speculative step)"}
DECODE_PHASES = ("decode", "verify", "draft_first", "draft_decode")  # passes replayed as decode steps


def op_rows(tables: PassTables, device, execution: str, speculative: SpeculativeTables | None = None, *,
            workload: BatchWorkload | None = None) -> list[OpRow]:
    """The prefill's ops, then the first decode step's, each pass's rows by descending time; of a `speculative`
    point, its passes instead of the plain decode step. Each pass in the launch mode the run prices it in, for the
    batch `workload` the tables were traced for (sim/step_costs.py batch_modes; needed under an engine)."""
    query = 1 if speculative is None else speculative.speculation.verified
    prefill_mode, decode_mode = batch_modes(device, execution, workload, query)
    rows = []
    for phase, table in _passes(tables, speculative):
        mode = decode_mode if phase in DECODE_PHASES else prefill_mode
        # The work and bytes the device moves (DeviceModel.as_run: a weight-only GEMM's 16-bit inputs, sparsity).
        rows.extend(_pass_rows(phase, device.as_run(table), device.cost_table(table, mode)))
    return rows


def _passes(tables: PassTables, speculative: SpeculativeTables | None) -> list[tuple[str, KernelTable]]:
    """(phase, table) of each pass the point runs."""
    if speculative is None:
        return [("prefill", tables.prefill), ("decode", tables.decode)]
    draft = speculative.draft
    # A draft's one-token steps, k - 1 a speculative step, run where it drafts more than one token.
    return ([("prefill", speculative.prefill)] + ([("draft_prefill", draft.prefill)] if draft else [])
            + [("verify", speculative.verify)]
            + ([("draft_first", speculative.draft_first)] if speculative.draft_first is not None else [])
            + ([("draft_decode", draft.decode)] if draft and speculative.speculation.drafted > 1 else []))


# The suffix of an aten op as the tracing machine's CPU ran it (_scaled_dot_product_flash_attention_for_cpu): the
# table names the op the priced device runs.
CPU_SUFFIX = "_for_cpu"


def _pass_rows(phase: str, table: KernelTable, costs) -> list[OpRow]:
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for i, kernel in enumerate(table.kernels):
        groups[(kernel.kind.value, kernel.op.removesuffix(CPU_SUFFIX), LAYER_INDEX.sub("*", kernel.module))].append(i)
    total_s = float(costs.time_s.sum())
    rows = []
    for (kind, op, module), members in groups.items():
        index = np.array(members)
        parts = [float(getattr(costs, name)[index].sum()) for name in ("compute_s", "memory_s", "overhead_s")]
        time_s = float(costs.time_s[index].sum())
        rows.append(OpRow(phase=phase, kind=kind, op=op, module=module, count=len(members),
                          flops=float(table.flops[index].sum()), bytes=float(table.bytes[index].sum()),
                          bound=bound_name(kind, int(np.argmax(parts))), time_s=time_s,
                          share=time_s / total_s if total_s > 0 else 0.0))
    return sorted(rows, key=lambda row: -row.time_s)


def format_op_table(rows: list[OpRow], limit: int | None = None, dispatch_s: float = 0.0) -> str:
    """The rows as an aligned text table, a block per pass (at most `limit` rows each, then one line of the rest);
    a pass whose kernels the host dispatches (`dispatch_s` each) slower than the device runs them says how long it
    waits on the host."""
    header = f"{'op':<62} {'n':>4} {'GFLOP':>10} {'MB':>10} {'FLOP/B':>8} {'bound':>8} {'time ms':>9} {'share':>6}"
    lines = []
    for phase, title in PHASE_TITLES.items():
        part = [row for row in rows if row.phase == phase]
        if not part:
            continue
        kernels, device_s = sum(r.count for r in part), sum(r.time_s for r in part)
        wait_s = pass_host_wait_s(dispatch_s, kernels, device_s)
        host = (f"; the host dispatches them in {dispatch_s * kernels * 1e3:,.3f} ms ({dispatch_s * 1e6:.1f} us a "
                f"kernel), so the pass waits {wait_s * 1e3:,.3f} ms on it" if wait_s > 0 else "")
        lines += [f"{title}: {len(part)} ops, {kernels} kernels, {device_s * 1e3:,.3f} ms of device time{host}",
                  header]
        shown = part if limit is None else part[:limit]
        for row in shown:
            name = f"{row.kind} {row.op} {row.module}".strip()[:62]
            lines.append(f"{name:<62} {row.count:>4} {row.flops / 1e9:>10,.3f} {row.bytes / 1e6:>10,.3f} "
                         f"{row.intensity_flop_per_byte:>8,.1f} {row.bound:>8} {row.time_s * 1e3:>9,.4f} "
                         f"{row.share:>6.1%}")
        if len(shown) < len(part):
            rest = part[len(shown):]
            lines.append(f"... {len(rest)} more ops: {sum(r.time_s for r in rest) * 1e3:,.4f} ms, "
                         f"{sum(r.share for r in rest):.1%}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
