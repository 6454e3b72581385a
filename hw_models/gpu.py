"""GPU cost model: device time of each kernel, plus a per-kernel host launch cost, and an energy model.

Device time: with a calibration for the preset (hw_models/calibration/<name>.yaml, fitted by
`explore calibrate` on measured kernels, or its architecture sibling's, see registry.load_device), GEMMs
(a fit per dtype where one was measured: 16-bit, fp8, fp4; block-scaled formats on the fit of their measured
implementation), attention, fused MoE layers and streaming kernels
follow the fitted efficiency models of gpu_efficiency.py (a fused MoE layer without a MoE fit is priced by the
GEMM fit as the grouped GEMM it is); kernels without a fit (uncalibrated presets) take the roofline:
the larger of math at the dense peak rate of the kernel's dtype and traffic at peak DRAM bandwidth.
GEMMs with quantized weights add the CUDA-core work that dequantizes them and run at the rate of their plan's math
dtype, on the GEMM and MoE fits of that dtype: a float format whose dtype the GPU lacks runs weight-only at the 16-bit
rate, its fused MoE layers on the measured weight-only MoE fit, and an integer one is emulated at the next wider dtype
(hw_models/gpu_quant.py; quant_plan says so).
Host cost per kernel depends on the execution mode: "eager" launches every kernel from the host
(kernel_launch_us, added serially: a host no faster than one launch per kernel), "graphs" replays a
captured CUDA graph (graph_launch_us per kernel), "piecewise" launches attention from the host and replays the rest
(a serving engine's mixed pass: DeviceModel.launch_s), "device" counts kernel time only (what a profiler's
kernel durations measure).

Energy: static (idle) power x time, plus per-FLOP and per-byte dynamic energy. DRAM energy per bit
is a published figure for the memory technology (in the preset). The FLOP energy of a dtype is
derived, not looked up: we assume the board reaches its TDP when its math units run as fast as its GEMMs
ever do (the fitted GEMM ceiling, compute_fraction of the dtype's datasheet peak; the whole peak where no fit
prices the dtype) and DRAM streams at full bandwidth, so
    J/FLOP(dtype) = (TDP - idle - bandwidth x J/byte) / (ceiling(dtype) x peak(dtype)),
with every number taken from the preset as shipped. Boards do meet their power limit on compute-bound work: an
H100 SXM's training throughput already falls at a 600 W limit (Mayr et al., arXiv:2603.16164, Table 4), where the
datasheet peak would put a GEMM at 75% of it well under the TDP. FLOP energy is a property of the chip's circuits,
so a what-if override (more bandwidth, a higher peak) leaves it unchanged; for the preset itself the
assumption keeps the average power of any fitted kernel at or below the TDP. A kernel no fit prices runs on the
datasheet roofline at the whole peak, optimistic in time, and so draws up to peak / ceiling times the dynamic power
(attention prefill on an A100, whose GEMMs are fitted and its attention not: about 1.2x the TDP). Under a power
limit (power.cap_W) a kernel that would draw more runs at a lower clock (hw_models/gpu_power.py); unset, no kernel
is slowed for its power.

The CUDA cores' instructions (dequantization, conversions) are charged as one FMA's two FLOPs at the fp32 J/FLOP:
28.9 pJ a lane instruction on an A100, 30.5 on a V100, 15.6 on an H100 SXM. That is the order of the one published
per-instruction figure found: an HFMA's 1.5 pJ plus about 30 pJ of instruction fetch, decode and operand fetch
(Dally, DAC 2021 keynote, as reported by Semiconductor Engineering, "Is Programmable Overhead Worth The Cost?", 2022;
copies of the Hot Chips 2023 version of the slide place its energies at 45 nm; if so the derived energy is several
times too high at 7 and 4 nm, by a factor no source here carries between nodes). ALU-only energies (Horowitz, ISSCC
2014, 45 nm: fp32 add 0.9 pJ, int32 add 0.1 pJ) leave that overhead out, and measured per-PTX-instruction energies
(Arafa et al., CF 2020) are of a single thread's stream, the whole GPU's response to it, not one lane's share.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np

from hw_models.cost import TIME_ENERGY_FIELDS, KernelCosts
from hw_models.device import PIECEWISE, VECTOR_DTYPE, DeviceModel, check_execution
from hw_models.gpu_attention import attention_shapes, shaped_attention_times
from hw_models.gpu_deep_gemm import deep_gemm_rows, runs_deep_gemm
from hw_models.gpu_efficiency import (
    TILE_SHAPES,
    Calibration,
    gemm_times,
    moe_times,
    stream_memory_s,
    tile_counts,
)
from hw_models.gpu_moe import POINT_MOE_KERNEL, named_kernel
from hw_models.gpu_power import DVFS_EXPONENT, capped_busy_s, capped_clock
from hw_models.gpu_quant import MIXED_INPUT_TILES, QuantPlan, dequant_ops, lane_ops_per_s, quant_plan
from hw_models.gpu_reduction import serial_steps
from hw_models.gpu_spec import GPUSpec
from hw_models.gpu_unstructured import expansion_s
from hw_models.sparsity_support import gpu_support
from kernels.format_kernels import FLOPS_PER_LANE_OP
from kernels.formats import DTYPE_BITS, NumericFormat
from kernels.kernel import KernelKind
from kernels.measured import GENERAL_LAYOUT
from kernels.moe import FUSED_MOE_CHUNK_TOKENS, chunk_columns, moe_chunks
from kernels.sparsity import UNSTRUCTURED, exploits, support_key
from kernels.table import KINDS, KernelTable
from workloads.errors import InputError

# The launch modes of a serving engine's passes, which run the engine's kernel choices (GPUModel._cost_table): launched
# from its host, or replayed from piecewise graphs around the attention it launches.
ENGINE_PASSES = ("engine", PIECEWISE)

class GPUModel(DeviceModel):
    """Prices kernels on one GPU spec. Pure: no state besides the spec and a per-dtype rate cache."""

    kind = "gpu"
    units = ("gpu",)
    # Not the SM count (it sets the GEMM waves and the attention splits) nor the L2 size (replays only).
    block_fields = ("memory.bandwidth_GBps", "memory.capacity_GB", "compute.peak_TFLOPS.*", "power.idle_W",
                    "energy.dram_pJ_per_bit", "overhead.kernel_launch_us", "overhead.graph_launch_us")
    prices_rows_alone = True
    # Bytes a kernel's working set may occupy and still be in the L2 cache at its next call: none in a model
    # pass (each layer reads its own KV cache once per step); see replaying(). A GEMM's: gemm_cache_bytes.
    replay_cache_bytes = 0.0
    gemm_cache_bytes = 0.0
    # SMs DeepGEMM's kernels may run on (hw_models/gpu_deep_gemm.py; None: all): see sharing_sms.
    deep_gemm_sms: int | None = None

    def __init__(self, spec: GPUSpec, reference: GPUSpec | None = None, calibration: Calibration | None = None):
        super().__init__(spec, reference, calibration)
        self._flop_J: dict[str, float] = {}
        ref = self.reference
        self._dynamic_W = ref.power.tdp_W - ref.power.idle_W - ref.bandwidth_Bps * ref.dram_J_per_byte
        if self._dynamic_W <= 0:
            raise InputError(f"{ref.name}: power.tdp_W: found {ref.power.tdp_W}, allowed: above idle_W plus DRAM "
                             f"power at full bandwidth ({ref.power.tdp_W - self._dynamic_W:.0f} W)")

    def replaying(self, gemm_copies: int = 0) -> GPUModel:
        """This model pricing kernels as a benchmark times them: one call replayed on the same tensors, so a
        working set that fits in the L2 cache (memory.l2_cache_MB) is still there at the next call (attention and
        fused MoE layers). A GEMM benchmark runs `gemm_copies` copies of the GEMM in turn (0: it rotates or flushes
        its operands out of the L2), so a GEMM's stay where that many fit."""
        model = copy.copy(self)
        model.replay_cache_bytes = self.spec.memory.l2_cache_MB * 1e6
        model.gemm_cache_bytes = model.replay_cache_bytes / gemm_copies if gemm_copies else 0.0
        return model

    def sharing_sms(self, comm_sms: int) -> GPUModel:
        """This model while communication kernels hold `comm_sms` of its SMs and DeepGEMM's kernels are told to run on
        the rest, as vLLM's dual-batch overlap does (vllm-project/vllm vllm/v1/worker/gpu_ubatch_wrapper.py at 01e3c43:
        SMControlContextManager sets DeepGEMM's set_num_sms to total - comm_sms where comm_sms > 0); every other
        kernel keeps every SM (vLLM limits no other library's). Itself where no SM is held or vLLM runs no DeepGEMM
        here."""
        if not comm_sms or not runs_deep_gemm(self.spec.compute.compute_capability):
            return self
        if not 0 < comm_sms < self.spec.compute.sm_count:
            raise ValueError(f"comm_sms: found {comm_sms}, allowed: 0 to {self.spec.compute.sm_count - 1} "
                             f"(fewer than {self.spec.name}'s SMs)")
        model = copy.copy(self)
        model.deep_gemm_sms = self.spec.compute.sm_count - comm_sms
        return model

    @property
    def sparsity_patterns(self) -> frozenset[str]:
        patterns = self.__dict__.get("_sparsity_patterns")
        if patterns is None:  # the spec does not change under a model: read it once
            patterns = self.__dict__["_sparsity_patterns"] = gpu_support(self.spec.compute.structured_sparsity,
                                                                         self.spec.compute.peak_TFLOPS)
        return patterns

    def joules_per_flop(self, dtype: str) -> float:
        """Energy of one FLOP in `dtype`, derived from the reference preset (see the module docstring); a dtype whose
        rate a what-if adds (fp8 on an A100) has no circuits on the chip as shipped: its energy follows from the
        what-if's rate by the same rule."""
        if dtype not in self._flop_J:
            added = self.spec.matrix_dtype(dtype) not in self.reference.compute.peak_TFLOPS
            peak = (self.spec if added else self.reference).peak_flops(dtype)
            self._flop_J[dtype] = self._dynamic_W / (self._math_ceiling(dtype) * peak)
        return self._flop_J[dtype]

    def _math_ceiling(self, dtype: str) -> float:
        """The share of a dtype's datasheet peak at which the board draws its TDP: its fitted GEMMs' ceiling
        (compute_fraction) where the preset has a fit for it, else the whole peak (the vector units, an uncalibrated
        preset)."""
        fit = None if self.calibration is None or dtype == VECTOR_DTYPE else self.calibration.gemm_fit(dtype)
        return 1.0 if fit is None else fit.compute_fraction

    @property
    def tdp_W(self) -> float:
        """The most power the GPU may draw: its power limit where one is set (power.cap_W, which its kernels are held
        to: hw_models/gpu_power.py), else its TDP."""
        cap = self.spec.power.cap_W
        return self.spec.power.tdp_W if cap is None else cap

    @property
    def memory_bytes(self):
        """Bytes a CUDA program can allocate (GPUSpec.memory_bytes). A what-if capacity_GB on a card whose usable
        memory is measured keeps the card's usable share of its datasheet capacity: the driver's reserve scales
        with the memory it manages (a what-if that sets usable_GiB itself gets that figure)."""
        spec, ref = self.spec.memory, self.reference.memory
        if spec.usable_GiB is None or spec.usable_GiB != ref.usable_GiB:
            return self.spec.memory_bytes
        return self.spec.memory_bytes * (spec.capacity_GB / ref.capacity_GB)

    def host_s(self, execution: str) -> float:
        """Launch cost per kernel in an execution mode, in series with the kernels: a stream launch for PyTorch
        eager and for an engine's host-launched passes, a graph node for replayed graphs (an engine's decode)."""
        check_execution(execution)
        overhead = self.spec.overhead
        if execution in ("eager", "engine"):
            return overhead.kernel_launch_us * 1e-6
        if execution == "graphs":
            return overhead.graph_launch_us * 1e-6
        return 0.0

    def quant_plan(self, fmt: NumericFormat | None) -> QuantPlan | None:
        """How this GPU runs a format's weight GEMMs (None: 16-bit weights), memoized per format."""
        # Looked up by the format object first: points of one format share it, and hashing a format reads every field.
        by_id = self.__dict__.setdefault("_quant_plans_by_id", {})
        hit = by_id.get(id(fmt))
        if hit is not None and hit[0] is fmt:
            return hit[1]
        plans = self.__dict__.setdefault("_quant_plans", {})
        if fmt not in plans:
            plans[fmt] = quant_plan(fmt, self.spec.compute.peak_TFLOPS, self.spec.name,
                                    compute_capability=self.spec.compute.compute_capability)
        if len(by_id) >= _FORMATS_KEPT:  # a mixed format's widths are new objects per table (at_bits): bounded
            by_id.clear()
        by_id[id(fmt)] = (fmt, plans[fmt])  # the format kept alive with its id
        return plans[fmt]

    def weight_gemm_dtype(self, weight_bits: float, dtype: str) -> str:
        """The format's own dtype: a GPU runs a dtype it lacks as its quant plan says (weight-only at the 16-bit rate,
        or emulated), and the plan's notice and math_dtype say so (explore/format_checks.py reads both)."""
        return dtype

    def gemm_pricing_unmeasured(self, plan: QuantPlan) -> str:
        """What prices a plan's GEMMs where no GEMM run as they run was measured for this GPU (or its sibling):
        '16-bit fit' (native math of a dtype without a fit of its own, at that dtype's peak), with '+ dequantization'
        where the CUDA cores' unpacking is counted from the kernels (weight-only and W4A8 formats); '' where a fit
        of the plan's own dtype prices them as they run, for emulated math (the plan's notice says what runs) and
        for a GPU without a GEMM fit (the calibration text says so)."""
        cal = self._calibration_for(plan)
        if cal is None or cal.gemm is None or plan.emulated:
            return ""
        counted = " + dequantization" if plan.adds_work else ""
        if plan.mixed_input:  # 16-bit math on quantized weights
            return f"16-bit fit{counted}"
        if plan.dtype in (cal.gemm_dtypes or {}):
            return f"{plan.dtype} fit{counted}" if counted else ""
        return f"16-bit fit{counted}"

    def _calibration_for(self, plan: QuantPlan | None) -> Calibration | None:
        """The calibration with the fits of the plan's block-scaled implementation pricing its dtype."""
        cal = self.calibration
        if cal is None or plan is None or not plan.variant:
            return cal
        variants = self.__dict__.setdefault("_variant_calibrations", {})
        key = (plan.gemm_variant, plan.variant)
        if key not in variants:  # the GEMM fallback first, so that the plan's own variant prices what it has fits for
            base = cal.with_variant(plan.gemm_variant) if plan.gemm_variant else cal
            variants[key] = base.with_variant(plan.variant)
        return variants[key]

    def row_plans(self, table: KernelTable) -> list[tuple[QuantPlan, np.ndarray]]:
        """The plan of each weight width of a table's quantized GEMMs and its rows: one for a uniform format, one per
        width of a mixed one (each width runs as its own uniform format, NumericFormat.at_bits)."""
        fmt = table.numeric_format
        if fmt is None:
            return []
        if not fmt.mixed:
            plan = self.quant_plan(fmt)
            return [] if plan is None else [(plan, table.weight_bits < 16)]
        quantized = table.weight_bits < 16
        plans = []
        for bits in np.unique(table.weight_bits[quantized]).tolist():
            plan = self.quant_plan(fmt if bits == fmt.weight_bits else fmt.at_bits(int(bits)))
            if plan is not None:
                plans.append((plan, table.weight_bits == bits))
        return plans

    def as_run(self, table: KernelTable) -> KernelTable:
        """The table as this GPU runs it: the sparsity it exploits applied, and the inputs of the GEMMs its plans run
        weight-only (QuantPlan.mixed_input) at 16 bits: a format whose activations are narrower (fp8 on an A100, fp4
        on an H100) runs on kernels that take 16-bit ones."""
        run = super().as_run(table)
        rows = [rows for plan, rows in self.row_plans(run) if plan.mixed_input]
        return run.with_16bit_inputs(np.logical_or.reduce(rows)) if rows else run

    def _moe_parts(self, cal: Calibration, plans: list[tuple[QuantPlan, np.ndarray]],
                   moe: np.ndarray) -> list[tuple[Calibration, np.ndarray]]:
        """(calibration, rows) of a table's fused MoE rows: each weight-only width's rows on the calibration of its
        variant (the measured weight-only MoE fit, gpu_moe.quantized_weight_key), every other row on `cal`.
        InputError where the variant names a kernel (the engine's or the point's moe_kernel) with no fit here."""
        parts, rest = [], moe
        for plan, rows in plans:
            own = moe & rows if plan.mixed_input and plan.variant else None
            if own is not None and own.any():
                self._check_moe_kernel_fit(cal, plan.variant)
                parts.append((self._calibration_for(plan), own))
                rest = rest & ~own
        return [*parts, (cal, rest)] if rest.any() else parts

    def _check_moe_kernel_fit(self, cal: Calibration, variant: str) -> None:
        """InputError (one line) where an MoE fit key names a kernel (gpu_moe.named_kernel) that no fit of this GPU's
        calibration (its sibling's included) prices while other kernels on the same weights have fits: the layers
        would be priced on another kernel's. Where no kernel on those weights has a fit (an A100, a fit in progress)
        the layers take the MoE fit of their math dtype, as every quantized MoE layer without a fit does."""
        kernel = named_kernel(variant)
        weights = variant.rsplit("/", 1)[0]  # 'bf16/w4fp4': the fits of every kernel on these weights
        fitted = sorted(named_kernel(key) or POINT_MOE_KERNEL[key.split("/")[0]] for key in cal.moe_dtypes or {}
                        if key.startswith(weights))
        if not kernel or variant in (cal.moe_dtypes or {}) or not fitted:
            return
        raise InputError(f"format.moe_kernel: the MoE layers' kernel is {kernel!r} on {self.spec.name}, which has no "
                         f"MoE fit of it ({variant}); allowed: a kernel fitted for {self.spec.name}: "
                         f"{', '.join(fitted)} (moe_kernel: engine picks vLLM's kernel for the device)")

    @staticmethod
    def _vector_ops(table: KernelTable, plans: list[tuple[QuantPlan, np.ndarray]]) -> np.ndarray | None:
        """CUDA-core instructions that dequantize or convert each kernel's operands (None: none); `plans` is
        row_plans(table)."""
        ops = [dequant_ops(plan, m=table.m, n=table.n, k=table.k, batch=table.batch, quantized=rows)
               for plan, rows in plans if plan.adds_work]
        return sum(ops[1:], ops[0]) if ops else None

    def _device_times(self, table: KernelTable, peak: np.ndarray, plans: list[tuple[QuantPlan, np.ndarray]],
                      pairs: tuple[list[tuple[str, bool]], np.ndarray], vector_ops: np.ndarray | None = None):
        """(compute_s, memory_s, busy_s, latency_s): busy_s blends compute and memory; latency is fixed.
        `plans`: row_plans(table); `pairs`: each kernel's dtype as it runs (_math_pairs), which picks its GEMM and MoE
        fits; `vector_ops`: CUDA-core instructions per kernel (dequantization), in series with its matrix math.

        Over a block of design points (spec fields of shape (points, 1), hw_models/device_block.py) every array
        is (points, kernels): rows of a kernel class are selected on the last axis. Each class is priced in one
        call over all its rows, whatever pass they come from (DeviceModel.cost_passes stacks passes).
        """
        bytes_moved = table.bytes
        bandwidth_Bps = self.spec.bandwidth_Bps
        vector_s = 0.0 if vector_ops is None else vector_ops / lane_ops_per_s(self.peak_flops(VECTOR_DTYPE))
        compute_s = table.flops / peak if vector_ops is None else table.flops / peak + vector_s
        memory_s = bytes_moved / bandwidth_Bps
        busy_s = np.maximum(compute_s, memory_s)
        latency_s = np.zeros(busy_s.shape)
        # Widths of one format share its scale layout: at most one block-scaled variant among them. A weight-only
        # width's variant names the fit of its own fused MoE layers (_moe_parts), not the table's: its dtype is the
        # 16-bit one, which 16-bit layers of a mixed format share.
        cal = self._calibration_for(next((plan for plan, _ in plans if plan.variant and not plan.mixed_input), None)
                                    if plans else None)
        if cal is None:
            return compute_s, memory_s, busy_s, latency_s
        shape = busy_s.shape
        # Fresh arrays of the full shape, written by class below (a block's rates make them (points, kernels)).
        if compute_s.shape != shape:
            compute_s = np.array(np.broadcast_to(compute_s, shape))
        if memory_s.shape != shape:
            memory_s = np.array(np.broadcast_to(memory_s, shape))

        def vector(rows):  # CUDA-core time of some rows (none: no dequantization)
            if type(vector_s) is float or np.ndim(vector_s) == 0:
                return vector_s
            return np.broadcast_to(vector_s, shape)[..., rows]

        def put(rows, compute, memory, busy, latency):  # a class's times into its rows (None: compute_s kept)
            # One design point's arrays are indexed directly: numpy indexes through an ellipsis several times slower.
            at = rows if len(shape) == 1 else (Ellipsis, rows)
            if compute is not None:
                compute_s[at] = compute
            memory_s[at], busy_s[at], latency_s[at] = memory, busy, latency

        sm_count = self.spec.compute.sm_count
        limited = None if self.deep_gemm_sms is None else deep_gemm_rows(table, plans)
        gemm = table.class_rows("gemm")
        moe = table.kind_rows(KernelKind.MOE)
        if moe is not None:
            for part_cal, part in self._moe_parts(cal, plans, moe):
                for fit, rows in part_cal.moe_groups(table, part, pairs):
                    rate = peak[..., rows]
                    if limited is not None:  # DeepGEMM's grouped GEMM: its math on deep_gemm_sms of the SMs
                        rate = np.where(limited[rows], rate * (self.deep_gemm_sms / sm_count), rate)
                    c, m, busy, latency = moe_times(
                        m=table.m[rows], n=table.n[rows], k=table.k[rows], batch=table.batch[rows],
                        weight_bytes=table.weight_bytes[rows], act_bytes=table.act_bytes[rows],
                        flops_per_s=rate, bandwidth_Bps=bandwidth_Bps, fit=fit,
                        cached_bytes=self.replay_cache_bytes, vector_s=vector(rows),
                        expert_parallel=table.expert_parallel[rows])
                    # A layer whose hot experts run apart pays its fixed time (routing, activation, top-k sum) once.
                    if table.numeric_format is not None and table.numeric_format.hot_experts:
                        latency = np.where(table.moe_rest_rows[rows], 0.0, latency)
                    put(rows, c, m, busy, latency)
                    gemm = gemm & ~rows  # priced: the GEMM fits below price the MoE rows no MoE fit covers
        if gemm is not None:
            # The table is the work this GPU does (run_on): a pattern it supports has its zeros skipped.
            sparse = exploits(self.sparsity_patterns, table.numeric_format)
            expands = sparse and support_key(table.sparsity) == UNSTRUCTURED  # loaded sparse, computed dense
            mixed_rows = [rows for plan, rows in plans if plan.mixed_input]
            mixed = np.logical_or.reduce(mixed_rows) if mixed_rows else None
            for fit, group in cal.gemm_groups(table, gemm, pairs):
                # Weight-only GEMMs run mixed-input kernels with tiles of their own (hw_models/gpu_quant.py), not
                # the tile dispatch of the library the fit was measured on.
                parts = [(group, TILE_SHAPES, None, None)] if mixed is None else [
                    (group & ~mixed, TILE_SHAPES, None, None), (group & mixed, MIXED_INPUT_TILES, "", None)]
                if limited is not None:  # DeepGEMM's GEMMs on deep_gemm_sms of the SMs
                    parts = [part for mask, tiles, policy, _ in parts for part in (
                        (mask & ~limited, tiles, policy, None), (mask & limited, tiles, policy, self.deep_gemm_sms))]
                for mask, tiles, tile_policy, sm_limit in parts:
                    # Each tile's count depends on the rows' shapes alone: kept with them, per tile set.
                    memo = "tile_counts" if tiles is TILE_SHAPES else "mixed-input tile_counts"
                    g = table.rows_where(mask)  # the rows and their shape columns, gathered once per table
                    rows = g.index
                    if not len(rows):
                        continue
                    kept = g.weight_density if sparse else 1.0
                    counts = g.memo(memo, lambda: tile_counts(g.m, g.n, g.batch, tiles))  # noqa: B023 (called here)
                    c, m, busy, latency = gemm_times(
                        m=g.m, n=g.n, k=g.k, batch=g.batch, flops=g.flops, flops_per_s=peak.take(rows, axis=-1),
                        bytes_moved=g.bytes, bandwidth_Bps=bandwidth_Bps, sm_count=sm_count, fit=fit, kept=kept,
                        vector_s=vector(rows), tiles=tiles, tile_policy=tile_policy, counts=counts,
                        cached_bytes=self.gemm_cache_bytes, split_k=g.split_k, sm_limit=sm_limit)
                    if expands:  # Flash-LLM's dense tiles in shared memory, whatever share of weights is kept
                        busy = np.maximum(busy, expansion_s(
                            n=g.n, k=g.k, m=g.m, batch=g.batch, density=g.weight_density, sm_count=sm_count,
                            clock_MHz=self.spec.compute.boost_clock_MHz) * (g.weight_bytes > 0))
                    put(rows, c, m, busy, latency)
        attention = table.class_rows("attention")
        if cal.attention is not None and attention is not None:
            g = table.rows_where(attention)
            rows = g.index
            fmt = table.numeric_format
            shapes = g.memo("attention_shapes", lambda: attention_shapes(**{name: getattr(g, name) for name in (
                "flops", "act_bytes", "kv_bytes", "batch", "heads", "kv_heads", "q_len", "kv_len", "head_dim",
                "torch_sdpa", "v_head_dim", "kv_width")}, kv_packing=1.0 if fmt is None else np.array(
                    [fmt.kv_packing(int(d)) for d in g.head_dim.tolist()])))
            c, m, busy, latency = shaped_attention_times(shapes, flops_per_s=peak.take(rows, axis=-1),
                                                         bandwidth_Bps=bandwidth_Bps, sm_count=sm_count,
                                                         fit=cal.attention, cached_bytes=self.replay_cache_bytes)
            put(rows, c, m, busy, latency)
        # Streaming kernels (norm, elementwise, ...): each row takes its kind's fit by one lookup (stream_columns);
        # a pointwise kernel off the contiguous vectorized loop takes the general-layout fit where there is one.
        has_fit, fractions, latencies = stream_columns(cal)
        general = cal.stream(GENERAL_LAYOUT)
        priced = has_fit[table.kind] if general is None else has_fit[table.kind] | table.general_layout
        g = table.rows_where(priced)
        if len(g):
            streaming, codes = g.index, g.kind
            fraction, latency = fractions[codes], latencies[codes]
            if general is not None:
                fraction = np.where(g.general_layout, general.bandwidth_fraction, fraction)
                latency = np.where(g.general_layout, general.latency_s, latency)
            m = stream_memory_s(bytes_moved=g.bytes, bandwidth_Bps=bandwidth_Bps, bandwidth_fraction=fraction)
            busy = np.maximum(compute_s.take(streaming, axis=-1), m)
            step_ns = self.spec.memory.serial_load_ns
            if step_ns is not None and g.reduce_rows.any():  # a reduction waits on its threads' serial loads
                def steps_on(sms):
                    return serial_steps(g.reduce_rows, g.reduce_length, sms)  # noqa: B023 (called here)

                # Kept with the rows per SM count (a block of design points may vary it: computed afresh).
                steps = g.memo(f"serial_steps {sm_count}", lambda: steps_on(sm_count)) if np.ndim(sm_count) == 0 \
                    else steps_on(sm_count)
                busy = np.maximum(busy, steps * (step_ns * 1e-9))
            put(streaming, None, m, busy, latency)
        return compute_s, memory_s, busy_s, latency_s

    @staticmethod
    def _math_pairs(table: KernelTable, plans: list[tuple[QuantPlan, np.ndarray]]
                    ) -> tuple[list[tuple[str, bool]], np.ndarray]:
        """Each kernel's (dtype, tensor_core) pair as it runs, which its rate and its GEMM and MoE fits are looked up
        by: the table's own (KernelTable.dtype_groups), a quantized GEMM's on its plan's math dtype (`plans`: row_plans;
        a float format the GPU lacks runs weight-only at the 16-bit rate, an integer one at the next wider dtype)."""
        pairs = table.dtype_groups
        moved = [(plan.math_dtype, rows) for plan, rows in plans if plan.math_dtype != plan.dtype]
        if not moved:
            return pairs
        groups, index = list(pairs[0]), pairs[1].copy()
        for math_dtype, rows in moved:
            pair = (math_dtype, True)
            if pair not in groups:
                groups.append(pair)
            index[rows & table.tensor_core] = groups.index(pair)
        return groups, index

    def _kernel_rates(self, table: KernelTable,
                      pairs: tuple[list[tuple[str, bool]], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(peak FLOP/s, joules per FLOP) of each kernel by its (dtype, tensor_core) pair (`pairs`: _math_pairs): the
        pairs' rates kept per set of pairs where they are numbers (the spec does not change under a model), so a call
        is one gather; rates that are arrays over a block of design points are looked up per call."""
        groups, index = pairs
        cache = self.__dict__.setdefault("_rates_by_pairs", {})
        key = tuple(groups)
        rates = cache.get(key)
        if rates is None:
            values = [self._pair_rates(*pair) for pair in groups]
            if not all(type(v) is float for row in values for v in row):  # arrays over a block of design points
                return table.per_dtype(self._pair_rates, pairs)
            rates = cache[key] = np.array(values, dtype=float).reshape(len(values), 2).T
        peak, flop_J = rates.take(index, axis=1)
        return peak, flop_J

    def _pair_rates(self, dtype: str, matrix: bool) -> tuple:
        """(peak FLOP/s, joules per FLOP) of kernels of a dtype on the matrix units or (not matrix) the vector units."""
        unit = dtype if matrix else VECTOR_DTYPE
        return self.peak_flops(unit), self.joules_per_flop(unit)

    def _cost_table(self, table: KernelTable, execution: str) -> KernelCosts:
        """Each kernel as it runs. Under a serving engine a GEMM whose plan has another path (QuantPlan.apart_ops) runs
        the faster of the two (KernelCosts.faster), as an engine picks its kernel by the batch's tokens (vLLM's AWQ
        layer dequantizes and runs the 16-bit GEMM from 256 tokens, its AQLM layer from 7, while its int, fp8 and
        fp4 MoE layers keep their kernel: QuantPlan.moe_apart); PyTorch eager, its graphs and a harness's isolated
        kernel run the format's own kernel at every size (gpt-fast's tinygemm, SqueezeLLM's QuantLinearLUT)."""
        plans = self.row_plans(table)
        costs = self._moe_calls(table, execution, self._priced(table, execution, plans))
        if execution not in ENGINE_PASSES:
            return costs
        moe = table.kind_rows(KernelKind.MOE)  # None where the table has no MoE rows
        for plan, rows in plans:
            apart = rows if plan.moe_apart or moe is None else rows & ~moe
            if plan.apart_ops and apart.any():
                costs = costs.faster(self._dequantized_apart(table, apart, plan, execution, costs), apart)
        return costs

    def _dequantized_apart(self, table: KernelTable, rows: np.ndarray, plan: QuantPlan, execution: str,
                           costs: KernelCosts) -> KernelCosts:
        """`costs` with the given GEMM rows run as two kernels: one that reads their stored weights and writes them
        at the plan's 16-bit math dtype (plan.apart_ops lane instructions a weight on the CUDA cores, carried as two
        vector FLOPs each, as format_kernels.py carries DFloat11's decompression), and the 16-bit GEMM on those
        weights. Both are priced as any such kernel is (the streaming fit, the GEMM fit, a launch each), and summed; a
        fused MoE layer past vLLM's chunk runs its 16-bit experts in the chunk's calls after one dequantization
        (BitsAndBytesMoEMethod.apply dequantizes the experts, then calls fused_experts: vllm-project/vllm
        vllm/model_executor/layers/quantization/bitsandbytes.py at 01f5395fdf04; _moe_calls)."""
        index = np.flatnonzero(rows)
        gemms = table.select(index)
        weights = gemms.n * gemms.k * np.maximum(gemms.batch, 1.0)
        written_B = weights * DTYPE_BITS.get(plan.math_dtype, 16) / 8.0
        zeros, sixteen = np.zeros(len(index)), np.full(len(index), 16.0)
        dense = replace(gemms, weight_bytes=written_B, weight_bits=sixteen,
                        dtype=np.full(len(index), plan.math_dtype, dtype=gemms.dtype.dtype))
        dequantize = replace(gemms, kind=np.full(len(index), KINDS.index(KernelKind.ELEMENTWISE)),
                             flops=FLOPS_PER_LANE_OP * plan.apart_ops * weights, act_bytes=written_B, kv_bytes=zeros,
                             tensor_core=np.zeros(len(index), dtype=bool), m=zeros, n=zeros, k=zeros, batch=zeros,
                             weight_bits=sixteen, general_layout=np.zeros(len(index), dtype=bool),
                             reduce_rows=zeros, reduce_length=zeros, tokens=zeros)
        apart = KernelTable.concat([dense, dequantize])
        both = self._moe_calls(apart, execution, self._priced(apart, execution, []))
        return _summed_into(costs, both, [(index, 1.0), (index, 1.0)])

    def _moe_calls(self, table: KernelTable, execution: str, costs: KernelCosts) -> KernelCosts:
        """`costs` with each fused MoE layer of more tokens than vLLM's chunk priced as the calls vLLM runs it in
        (kernels/moe.py, Chunks): its whole chunks' call each, and one of the tokens left where there are any."""
        whole, left = moe_chunks(table.tokens)
        chunked = np.flatnonzero(whole)
        if not len(chunked):
            return costs
        rest = chunked[left[chunked] > 0]
        calls = []
        for rows, tokens in ((chunked, FUSED_MOE_CHUNK_TOKENS), (rest, left[rest])):
            layers = table.select(rows)
            calls.append(layers.with_columns(**chunk_columns(
                tokens=layers.tokens, m=layers.m, batch=layers.batch, flops=layers.flops,
                weight_bytes=layers.weight_bytes, act_bytes=layers.act_bytes, call_tokens=tokens,
                routing=layers.moe_routing, experts=layers.moe_experts, topk=layers.moe_topk,
                expert_parallel=layers.expert_parallel)))
        both = KernelTable.concat(calls)
        return _summed_into(costs, self._priced(both, execution, self.row_plans(both)),
                            [(chunked, whole[chunked]), (rest, 1.0)])

    def _priced(self, table: KernelTable, execution: str, plans: list[tuple[QuantPlan, np.ndarray]]) -> KernelCosts:
        """Each kernel's costs on the plans of its quantized GEMMs (row_plans)."""
        spec = self.spec
        host_s = self.launch_s(table, execution)
        pairs = self._math_pairs(table, plans)
        peak, flop_J = self._kernel_rates(table, pairs)
        vector_ops = self._vector_ops(table, plans)
        compute_s, memory_s, busy_s, latency_s = self._device_times(table, peak, plans, pairs, vector_ops)
        compute_J = table.flops * flop_J
        if vector_ops is not None:  # a lane instruction is one FMA's issue: two FLOPs of vector energy
            compute_J = compute_J + 2.0 * vector_ops * self.joules_per_flop(VECTOR_DTYPE)
        memory_J = table.bytes * spec.dram_J_per_byte
        if spec.power.cap_W is not None:  # under a power limit, a kernel that would draw more runs at a lower clock
            clock = capped_clock(busy_s=busy_s, compute_s=compute_s, memory_s=memory_s, compute_J=compute_J,
                                 memory_J=memory_J, idle_W=spec.power.idle_W, cap_W=spec.power.cap_W)
            busy_s = capped_busy_s(busy_s, compute_s, memory_s, clock)
            compute_s, compute_J = compute_s / clock, compute_J * clock ** (DVFS_EXPONENT - 1)
        overhead_s = latency_s + host_s
        time_s = busy_s + overhead_s
        static_J = spec.power.idle_W * time_s
        return KernelCosts.broadcast(time_s=time_s, compute_s=compute_s, memory_s=memory_s, overhead_s=overhead_s,
                                     compute_J=compute_J, memory_J=memory_J, static_J=static_J)


def _summed_into(costs: KernelCosts, parts: KernelCosts, segments: list[tuple[np.ndarray, object]]) -> KernelCosts:
    """`costs` with rows replaced by sums of `parts`' rows (the kernels or calls a row runs as): `parts` is
    consecutive segments, one per (rows, times) of `segments`, each segment's row j adding `times` its costs to row
    rows[j]."""
    replaced = np.unique(np.concatenate([rows for rows, _ in segments]))
    fields = {}
    for name in TIME_ENERGY_FIELDS:
        both, mine = getattr(parts, name), getattr(costs, name)
        shape = np.broadcast_shapes(mine.shape, both.shape[:-1] + mine.shape[-1:])  # (points, kernels) in a block
        column = np.array(np.broadcast_to(mine, shape))
        column[..., replaced] = 0.0
        start = 0
        for rows, times in segments:
            column[..., rows] += times * both[..., start:start + len(rows)]
            start += len(rows)
        fields[name] = column
    return KernelCosts.broadcast(**fields)


# Format objects GPUModel.quant_plan keeps by id: a sweep's few formats, without holding every one ever priced.
_FORMATS_KEPT = 64


def stream_columns(cal: Calibration) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(whether a streaming fit prices it, the fit's bandwidth_fraction, its latency_s) per kernel kind code
    (kernels/table.py KINDS) under a calibration's streaming fits (Calibration.stream): computed once per
    calibration (kept beside its fields)."""
    columns = cal.__dict__.get("_stream_columns")
    if columns is None:
        fits = [cal.stream(kind.value) for kind in KINDS]
        columns = (np.array([fit is not None for fit in fits]),
                   np.array([fit.bandwidth_fraction if fit else 1.0 for fit in fits]),
                   np.array([fit.latency_s if fit else 0.0 for fit in fits]))
        cal.__dict__["_stream_columns"] = columns  # a frozen dataclass: eq and hash read the fields only
    return columns
