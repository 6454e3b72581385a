"""DeviceModel: the one interface every device kind's cost model implements.

A device model prices a KernelTable (the kernels of one pass) into KernelCosts: time, the parts of time
(compute, memory, overhead), energy by part (compute, memory, static), and the execution unit of each
kernel. Units matter for devices with more than one engine (an NPU beside PIM banks): the simulator
overlaps kernels on different units where the workload allows it, and runs a decode batch as
`sub_batches` interleaved sub-batches when the device asks for it (NeuPIMs-style).

Subclasses set `kind` and implement `_cost_table`; the spec supplies memory_bytes, bandwidth_Bps and
peak_flops(dtype); `_cost_table` gets the table as the device runs it (`as_run`). They may override `units`,
`sparsity_patterns`, `as_run`, `sub_batches`, `host_s` and the roofline figures.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from hw_models.cost import IndexedCosts, KernelCost, KernelCosts
from hw_models.gpu_spec import FRAMEWORK_DISPATCH_US
from kernels.kernel import Kernel
from kernels.table import KernelTable

# How kernels are dispatched: PyTorch eager ("eager": framework dispatch on the host, then a launch each),
# replayed from a captured graph ("graphs"), a serving engine's fused kernels ("engine": its passes within the
# largest captured size replayed from full or piecewise CUDA graphs, larger ones launched from its host loop;
# sim.step_costs.pass_launch picks per pass), or device time only ("device", what a profiler's kernel durations
# measure). Devices without a host launch path (an NPU's own controller, an FPGA's instruction stream) price every
# mode alike.
EXECUTION_MODES = ("eager", "graphs", "engine", "device")
# A serving engine's pass replayed from piecewise CUDA graphs (sim/cuda_graphs.py): its attention kernels launched from
# the host as under "engine", every other kernel replayed as under "graphs" (DeviceModel.launch_s). A launch mode a
# pass is priced in, not an execution a design point names.
PIECEWISE = "piecewise"
LAUNCH_MODES = (*EXECUTION_MODES, PIECEWISE)
# Device kinds a serving engine runs from CUDA graphs (sim/cuda_graphs.py); the others' runtimes price every launch
# mode alike.
CUDA_GRAPH_KINDS = frozenset({"gpu"})
# Host time PyTorch eager spends per kernel before its launch, by default (a GPU spec's
# overhead.framework_dispatch_us sets a host's own; hw_models/gpu_spec.py gives the source).
EAGER_DISPATCH_S = FRAMEWORK_DISPATCH_US * 1e-6
# Device kinds PyTorch eager drives kernel by kernel from Python; the others are priced as their own runtimes
# run them (an NPU controller, an FPGA instruction stream, llama.cpp and T-MAC on CPUs).
EAGER_DISPATCH_KINDS = frozenset({"gpu"})
# Device kinds whose runtime runs a model op by op even as an engine, so that 'engine' execution prices their eager
# kernels: llama.cpp (and T-MAC, which runs llama.cpp's graphs) builds a Llama layer as a ggml graph with separate q,
# k and v GEMMs and separate gate and up GEMMs (ggml-org/llama.cpp src/models/llama.cpp: attn_q/attn_k/attn_v and
# ffn_gate/ffn_up tensors, build_ffn with LLM_FFN_PAR), not a serving engine's fused QKV and gate/up GEMMs.
UNFUSED_ENGINE_KINDS = frozenset({"cpu"})
# The dtype key of a device's vector (non-matrix) rate: peak_flops(VECTOR_DTYPE) is what pointwise work gets.
VECTOR_DTYPE = "fp32"


class DeviceModel:
    """Prices kernels on one device spec. Pure: nothing but the spec and caches of derived numbers."""

    kind: ClassVar[str] = ""
    # The engines kernels run on; KernelCosts.unit indexes this tuple.
    units: tuple[str, ...] = ("device",)
    devices: int = 1  # devices whose memory memory_bytes sums (a SystemModel: tp x pp)
    # Spec fields (dotted paths, '*' a wildcard) that may take one value per design point of a block priced in
    # one call (hw_models/device_block.py): fields the cost model uses only elementwise per kernel.
    block_fields: ClassVar[tuple[str, ...]] = ()
    # Why a weight GEMM's math runs in another dtype than its format's (weight_gemm_dtype), as a notice says it.
    weight_gemm_why: ClassVar[str] = "its matrix units have no mode for them"
    # Whether a kernel's cost depends on its own row only (not on the rest of the pass, as a cache that holds
    # some of a pass's weights makes it): then equal rows are priced once (KernelTable.distinct_rows).
    prices_rows_alone: ClassVar[bool] = False

    def __init__(self, spec: Any, reference: Any = None, calibration: Any = None):
        """`reference` is the preset as shipped, before what-if overrides (default: spec itself)."""
        self.spec = spec
        self.reference = reference or spec
        self.calibration = calibration

    @property
    def name(self) -> str:
        return self.spec.name

    def sharing_sms(self, comm_sms: int) -> DeviceModel:
        """This model while communication kernels hold `comm_sms` of its compute units and an engine limits some
        kernels to the rest (hw_models/gpu.py GPUModel.sharing_sms): itself, a device whose kernels no engine limits."""
        return self

    @property
    def memory_bytes(self) -> float:
        """Capacity that holds weights, KV cache and activations."""
        return self.spec.memory_bytes

    @property
    def idle_power_W(self) -> float:
        return self.spec.power.idle_W

    @property
    def tdp_W(self) -> float:
        """The most power the device is rated to draw (power.tdp_W): a limit no cost model applies, so that what the
        energy per action adds up to can be checked against it."""
        return self.spec.power.tdp_W

    @property
    def area_mm2(self) -> float:
        """Silicon area; families that add units (PIM logic, LUT arrays) add their area."""
        return self.spec.area.die_mm2

    @property
    def price(self):
        return self.spec.price

    @property
    def sparsity_patterns(self) -> frozenset[str]:
        """Structured weight-sparsity patterns whose zeros the device skips (others run dense)."""
        return frozenset()

    @property
    def sub_batches(self) -> int:
        """Sub-batches a decode batch is split into so that they overlap on different units (1: no split)."""
        return 1

    def host_s(self, execution: str) -> float:
        """Launch cost per kernel in an execution mode, paid in series with the kernels (none unless the device
        is launched kernel by kernel); framework dispatch on the host is dispatch_s, apart."""
        check_execution(execution)
        return 0.0

    def launch_s(self, table: KernelTable, execution: str) -> float | np.ndarray:
        """Each kernel's launch cost in a launch mode (host_s), in series with it: in a PIECEWISE pass its attention
        kernels are launched from the host ("engine") and the others replayed from graphs ("graphs")."""
        if execution != PIECEWISE:
            return self.host_s(execution)
        return np.where(table.attention_mask, self.host_s("engine"), self.host_s("graphs"))

    def replaying(self, gemm_copies: int = 0) -> DeviceModel:
        """This model pricing kernels as a benchmark times them, replayed on the same tensors: the same model where
        no cache holds a replayed call's working set beyond what the model prices already (a GPU's L2 does)."""
        return self

    def as_run(self, table: KernelTable) -> KernelTable:
        """The work and traffic of a table's kernels as this device runs them, what it prices: the sparsity it exploits
        applied (KernelTable.run_on). A model whose kernels read their operands otherwise than the format says
        overrides it (a GPU's weight-only GEMMs read 16-bit inputs)."""
        return table.run_on(self.sparsity_patterns)

    def cost_table(self, table: KernelTable, execution: str = "eager") -> KernelCosts:
        """Costs of every kernel in the table, vectorized, priced as the device runs them (as_run)."""
        costs, index = self.cost_rows(table, execution)
        return costs if index is None else costs.take(index)

    def cost_rows(self, table: KernelTable, execution: str = "eager") -> tuple[KernelCosts, np.ndarray | None]:
        """Costs of the table's distinct rows and each kernel's index into them (None: a cost per kernel, in
        order). A model whose kernels cost by their own row alone prices equal rows once."""
        check_execution(execution)
        if len(table) == 0:
            zero = np.zeros(0)
            return KernelCosts(time_s=zero, compute_s=zero, memory_s=zero, overhead_s=zero, compute_J=zero,
                               memory_J=zero, static_J=zero), None
        distinct = table.distinct_rows if self.prices_rows_alone else None
        if distinct is not None:
            rows, index = distinct
            return self._cost_table(self.as_run(rows), execution), index
        return self._cost_table(self.as_run(table), execution), None

    def _cost_table(self, table: KernelTable, execution: str) -> KernelCosts:
        raise NotImplementedError

    def cost(self, kernel: Kernel, execution: str = "eager") -> KernelCost:
        """Cost of one kernel."""
        return self.cost_table(KernelTable.from_kernels([kernel]), execution).row(0)

    def weight_gemm_dtype(self, weight_bits: float, dtype: str) -> str:
        """The dtype the math of a weight GEMM runs in, as this model prices it, for `weight_bits`-bit weights and the
        format's GEMM dtype `dtype` (kernels/formats.py gemm_dtype): the spec's matrix_dtype, the next wider dtype its
        matrix units have."""
        return self.spec.matrix_dtype(dtype)

    # Roofline figures: the peak math rate of a dtype (memoized per model) and the off-chip bandwidth.
    def peak_flops(self, dtype: str) -> float:
        rates = self.__dict__.setdefault("_peak_flops", {})
        if dtype not in rates:
            rates[dtype] = self.spec.peak_flops(dtype)
        return rates[dtype]

    @property
    def bandwidth_Bps(self) -> float:
        return self.spec.bandwidth_Bps


def check_execution(execution: str) -> None:
    if execution not in LAUNCH_MODES:
        raise ValueError(f"execution: found {execution!r}, allowed: {', '.join(LAUNCH_MODES)}")


def dispatch_s(device, execution: str) -> float:
    """Host-side framework time per kernel in an execution mode (the GPU spec's overhead.framework_dispatch_us for
    PyTorch eager, 0 otherwise): a term apart from the device's per-kernel launch gap (host_s), which the device
    pays between kernels whatever the host does."""
    check_execution(execution)
    if execution != "eager" or device.kind not in EAGER_DISPATCH_KINDS:
        return 0.0
    return device.spec.overhead.framework_dispatch_us * 1e-6


def cost_passes(device, tables: list[KernelTable], execution: str = "eager") -> list[KernelCosts | IndexedCosts]:
    """device.cost_table of each table. A device model whose kernels cost by their own row alone
    (DeviceModel.prices_rows_alone) prices the distinct rows of all of them stacked (KernelTable.stack) in one call,
    where the tables share their numeric format and sparsity: the same numbers for one call's overhead, each table's
    costs held by distinct row (IndexedCosts). Other devices and systems, and tables of several formats, are priced
    one table at a time."""
    stacked = stacked_costs(device, tables, execution)
    if stacked is None:
        return [device.cost_table(table, execution) for table in tables]
    costs, _, spans = stacked
    costs.matrix  # noqa: B018 (the summed fields stacked once: each pass's costs hold a slice of them)
    out = []
    for table, (start, end, index) in zip(tables, spans, strict=True):
        part = costs.rows_slice(start, end)
        out.append(part if index is None else IndexedCosts(part, index, table))
    return out


def stacked_costs(device, tables: list[KernelTable], execution: str = "eager",
                  ) -> tuple[KernelCosts, KernelTable, list[tuple[int, int, np.ndarray | None]]] | None:
    """cost_passes' one call: the costs of the tables' distinct rows stacked (KernelTable.stack), that stacked table,
    and each table's (start, end) in it with each kernel's index into its distinct rows (None: a row per kernel);
    None where the tables are priced one at a time (see cost_passes)."""
    if not getattr(device, "prices_rows_alone", False) or len(tables) < 2:
        return None
    fmt, sparsity = tables[0].numeric_format, tables[0].sparsity
    for t in tables:
        if not len(t) or t.sparsity != sparsity or (t.numeric_format is not fmt and t.numeric_format != fmt):
            return None
    check_execution(execution)
    parts = [table.distinct_rows or (table, None) for table in tables]
    stacked = KernelTable.stack([device.as_run(rows) for rows, _ in parts])
    costs = device._cost_table(stacked, execution)
    spans, start = [], 0
    for rows, index in parts:
        spans.append((start, start + len(rows), index))
        start += len(rows)
    return costs, stacked, spans
