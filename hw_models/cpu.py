"""CPU cost model: SIMD cores over a cache hierarchy and DRAM, with optional LUT GEMV (T-MAC on the SIMD
units, or SAIL's SRAM-PIM arrays in a cache level).

Time of a kernel = max(compute, memory) + the thread loss (below); a CPU has no per-kernel launch path.
- Memory: bytes at DRAM bandwidth. Weights are streamed from DRAM every pass unless the whole pass's
  weights fit in a cache level, then they come from the smallest such level at its bandwidth.
- Baseline compute (no LUT, or weights wider than the LUT kernels take): multiply-adds at the SIMD peak of
  the kernel's dtype (a dtype without SIMD arithmetic runs as the next wider one); GEMMs with quantized
  weights run llama.cpp style: activations quantized to int8 on the fly, int8 dot products, and for
  sub-8-bit weights `dequant_lane_ops_per_weight` byte-lane slots per weight of SIMD work besides the
  multiply-adds (unpacking the weights, and scaling and accumulating each block's sum), counted per format from
  llama.cpp's kernels (1-2 bits as Q2_K, 3 as Q3_K, 4 as Q4_0, 5 as Q5_0, 6-7 as Q6_K); 8-bit weights need no
  unpacking but still scale and accumulate each block's sum: `scale_lane_ops_per_weight` slots per weight. Issue
  slots only: a kernel's dependency chains (Q2_K's scalar sum per 16 weights) are not priced.
- LUT compute (weights of at most lut.max_weight_bits bits): per token and activation group of g values a
  table of 2^g partial sums is built on the SIMD units; each weight group of g weights then needs b
  lookups (one per bit plane) plus their accumulation. No dequantization: the tables are indexed by the
  packed weight bits. T-MAC ("simd") does the lookups in SIMD lanes; SAIL ("pim") reads table rows in the
  cache level's SRAM arrays, one row per array per cycle, and a row holds the same
  entry of row_bits / entry_bits tables, so that many tokens of a batch share one read (batched lookups); only the
  arrays holding a table read its rows: one copy of a GEMM's tables fills a few arrays (a batch-1 4096-wide GEMV's
  69 of 4,000), and the runtime writes as many copies as finish the lookups soonest, each written like the first;
  `cycle_saving` removes the cycles saved by activation-pattern reuse. Every looked-up entry is then added into
  its token's running sum for its output, and the partial sums of the arrays holding one token's groups are
  reduced: adds at `pim.add_GOPS`, beside the row reads (the slower of the two bounds the lookups). Before its
  lookups every table is written into the PIM level at that level's bandwidth (overlapping the builds), and tables
  beyond the level's capacity run in passes, each streaming the GEMM's weights from DRAM again. So per token a
  b-bit weight group of g weights (2g multiply-add FLOP) costs b adds: the LUT path's FLOP rate is at most
  add_GOPS x 2g / b, and a GEMM runs on whichever of it and the cores' kernel is faster (on ampere-altra-sail, whose
  adds run bit-serial in the arrays, a 256-token prefill runs on the lookups at DRAM's pace; with adds at the cores'
  SIMD rate it would run on the cores). Not priced: moving the arrays' partial sums to the adders that reduce them
(no source gives the level's internal bandwidth), and the adds run at the whole level's add_GOPS wherever the tables
sit.

Threads: a run uses `compute.threads` cores (default all). The SIMD rates above are per thread x threads; each
kernel's core time then follows Amdahl's law with an absolute serial part (thread_scaling.serial_us, fitted
per preset): on t threads a kernel whose core work takes C on one thread takes s + (C - s) / t with s =
min(serial, C), so a kernel smaller than its serial part runs as on one thread, large GEMMs scale almost
linearly and batch-1 GEMVs do not. PIM lookups and adds run in the PIM level and do not shrink with threads. DRAM
traffic moves at what the threads can draw: min(memory peak, threads x thread_scaling.core_dram_GBps).
The thread loss, s (1 - 1 / t) (the time over a perfect C / t: fork/join, barrier waits, load imbalance), is paid
on top of the kernel's parallel part whichever of compute or memory bounds it: time = max(C / t, memory) + loss,
the loss reported as overhead_s. While threads wait on each other they do not stream weights at the run's rate,
so the loss cannot hide DRAM time; counted inside the compute term it did (57 us per kernel on 16 M2 Ultra
threads hid all 21 us of an 8-bit 4096 x 4096 GEMV's weights, and 8-bit decode came out faster than 4-bit).
So a memory-bound kernel gets slower on more threads once its DRAM time exceeds C / t: the thread-count "sweet
spot" llama.cpp users report (ggml-org/llama.cpp issue #34: a 13900K's 7B decode at 18.3 tokens/s on 8 threads,
15.7 on 16). Not modeled: cache levels keep their whole-chip capacity and bandwidth at any thread count, and the
clock does not drop as more cores run.

Energy: multiply-adds by precision, SIMD lane ops (dequantization, table builds, SIMD lookups), PIM row
reads (as SRAM access of the PIM level), every byte's path through the cache levels it crosses and DRAM
per bit, and static (idle) power x time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw_models.cost import KernelCosts
from hw_models.cpu_spec import DequantSpec
from hw_models.device import DeviceModel
from hw_models.sparsity_support import cpu_support
from kernels.table import KernelTable

# Dequantization unpacks into byte lanes (int8 dot products); table builds run in 16-bit lanes (fp16 sums).
DEQUANT_LANE_BITS = 8
# What a GEMM with quantized weights multiplies in, whatever the format's element types: llama.cpp's kernels quantize
# its activations to 8 bits on the fly and use int8 dot products (a CPU without int8 SIMD runs the next wider type).
QUANTIZED_GEMM_DTYPE = "int8"


def threaded_s(single_s, threads: int, serial_s: float):
    """Time on `threads` threads of core work that takes `single_s` on one: Amdahl's law with an absolute serial
    part per kernel (serial_s, at most the whole kernel). Never more than single_s; equal to it at one thread."""
    return single_s / threads + thread_loss_s(single_s, threads, serial_s)  # s + (C - s) / t, C at one thread


def thread_loss_s(single_s, threads: int, serial_s: float):
    """What `threads` threads lose against a perfect single_s / threads: s (1 - 1 / t) with s = min(serial_s, C)."""
    return np.minimum(serial_s, single_s) * (1.0 - 1.0 / threads)


def dequant_lane_ops(dequant: DequantSpec, weight_bits: np.ndarray) -> np.ndarray:
    """Byte-lane slots per weight of llama.cpp's dequantizing kernel for each sub-8-bit weight width: the format it
    stores that width in, 1-2 bits Q2_K, 3 bits Q3_K, 4 bits Q4_0, 5 bits Q5_0, 6 bits Q6_K; 7-bit weights, which no
    llama.cpp format stores, are priced as Q6_K's, its widest sub-8-bit kernel (PROXY)."""
    return np.select([weight_bits <= 2, weight_bits <= 3, weight_bits <= 4, weight_bits <= 5],
                     [dequant.q2_k, dequant.q3_k, dequant.q4_0, dequant.q5_0], dequant.q6_k)


def parallel_efficiency(single_s, threads: int, serial_s: float):
    """Speedup of `threads` threads over one, divided by threads: 1 at one thread, at most 1."""
    single = np.asarray(single_s, dtype=float)
    time = threaded_s(single, threads, serial_s)
    return np.divide(single, threads * time, out=np.ones_like(single), where=time > 0)


class CPUModel(DeviceModel):
    """Prices kernels on one CPU spec. Pure: nothing but the spec and per-dtype rate caches."""

    kind = "cpu"
    units = ("cpu",)

    @property
    def weight_gemm_why(self) -> str:
        """Why a weight GEMM multiplies in another dtype than its format's (DeviceModel.weight_gemm_why)."""
        lut = self.spec.lut
        why = ("its SIMD kernels multiply quantized weights as llama.cpp's do, the activations quantized to int8 on "
               "the fly for int8 dot products")
        if lut is None:
            return why
        return f"{why} (GEMMs of at most {lut.max_weight_bits}-bit weights its LUT kernels run faster take lookups)"

    def weight_gemm_dtype(self, weight_bits: float, dtype: str) -> str:
        """The SIMD type a weight GEMM multiplies in (_baseline): QUANTIZED_GEMM_DTYPE's below 16-bit weights, else its
        dtype's own (LUT kernels, where faster, do lookups instead)."""
        return self.spec.matrix_dtype(QUANTIZED_GEMM_DTYPE if weight_bits < 16 else dtype)

    @property
    def sparsity_patterns(self) -> frozenset[str]:
        """Activation sparsity (hw_models/sparsity_support.py): the MLP's GEMMs arrive with the union of their tokens'
        kept rows; weight patterns run dense."""
        return cpu_support()

    @property
    def area_mm2(self) -> float:
        """Die area plus the PIM logic SAIL adds."""
        pim = self.spec.pim
        return self.spec.area.die_mm2 * (1.0 + (pim.area_overhead_fraction if pim else 0.0))

    def _weight_level(self, table: KernelTable) -> int | None:
        """Index of the smallest cache level holding all of the pass's weights (None: they stream from DRAM)."""
        total_B = float(table.weight_bytes.sum())
        for i, level in enumerate(self.spec.caches.levels().values()):
            if total_B <= level.capacity_MB * 1e6:
                return i
        return None

    def _memory(self, table: KernelTable) -> tuple[np.ndarray, np.ndarray]:
        """(memory_s, memory_J) of the traffic through DRAM and the caches it crosses."""
        levels = list(self.spec.caches.levels().values())
        path_J_per_B = np.cumsum([lv.read_pJ_per_byte * 1e-12 for lv in levels])  # level i and all inside it
        stream_B = table.act_bytes + table.kv_bytes
        dram_J = self.spec.dram_J_per_byte + path_J_per_B[-1]
        hit = self._weight_level(table)
        if hit is None:
            memory_s = table.bytes / self.spec.bandwidth_Bps
            return memory_s, table.bytes * dram_J
        weight_s = table.weight_bytes / (levels[hit].bandwidth_GBps * 1e9)
        memory_s = stream_B / self.spec.bandwidth_Bps + weight_s
        return memory_s, stream_B * dram_J + table.weight_bytes * path_J_per_B[hit]

    def _lut_rows(self, table: KernelTable) -> np.ndarray:
        """Weight GEMMs with low-bit weights that the LUT kernels take."""
        lut = self.spec.lut
        if lut is None or "gemm" not in table.class_masks:
            return np.zeros(len(table), dtype=bool)
        weight_gemm = table.class_masks["gemm"] & (table.weight_bytes > 0)
        return weight_gemm & (table.weight_bits < 16) & (table.weight_bits <= lut.max_weight_bits)

    def _baseline(self, table: KernelTable) -> tuple[np.ndarray, np.ndarray]:
        """(compute_s, compute_J) on the SIMD units: multiply-adds plus the per-weight work of quantized weights
        (unpacking sub-8-bit weights, scaling each block's sum), at threads x one core's rate (before thread-scaling
        losses)."""
        spec = self.spec
        weight_gemm = table.weight_bytes > 0
        # llama.cpp-style kernels quantize the activations to 8 bits on the fly and use int8 dot products.
        lowbit = weight_gemm & (table.weight_bits < 16)
        peak = table.per_dtype(lambda dtype, _: self.peak_flops(dtype))
        mac_J = table.per_dtype(lambda dtype, _: spec.mac_J(dtype))
        compute_s = table.flops / np.where(lowbit, self.peak_flops(QUANTIZED_GEMM_DTYPE), peak)
        compute_J = table.flops / 2 * np.where(lowbit, spec.mac_J(QUANTIZED_GEMM_DTYPE), mac_J)
        unpack = weight_gemm & (table.weight_bits < 8)
        per_weight = np.where(unpack, dequant_lane_ops(spec.compute.dequant_lane_ops_per_weight, table.weight_bits),
                              np.where(lowbit, spec.compute.scale_lane_ops_per_weight, 0.0))
        ops = _weights(table) * per_weight
        compute_s = compute_s + ops / spec.lane_ops_per_s(DEQUANT_LANE_BITS)
        return compute_s, compute_J + ops * spec.energy.lane_op_pJ * 1e-12

    def _loss(self, ideal_s: np.ndarray) -> np.ndarray:
        """The thread loss of core work priced at threads x one core's rate (ideal_s), paid on top of
        max(ideal_s, memory): threads waiting on each other do not stream DRAM at the run's rate either."""
        threads = self.spec.threads
        return thread_loss_s(ideal_s * threads, threads, self.spec.serial_s)

    def _lut(self, table: KernelTable, rows: np.ndarray) -> LUTCost:
        """The LUT GEMV's cost on `rows` (zeros elsewhere): compute_s on the run's threads without their loss, loss_s
        that loss (PIM lookups and adds run in the PIM level: no loss)."""
        spec, lut = self.spec, self.spec.lut
        g = lut.group_size
        batches = np.maximum(table.batch, 1)
        groups = np.where(rows, batches * table.m * table.k / g, 0.0)  # one table per token and group
        build_ops = groups * 2**g * lut.build_lane_ops_per_entry
        build_s = build_ops / spec.lane_ops_per_s(lut.build_lane_bits)
        # One lookup per bit plane of every weight group, per token.
        weight_groups = np.where(rows, _weights(table) / g, 0.0)
        lookups = weight_groups * table.weight_bits * table.m
        lane_J = spec.energy.lane_op_pJ * 1e-12
        zeros = np.zeros(len(table))
        if lut.engine == "simd":
            lookup_ops = lookups * lut.lookup_lane_ops
            lookup_s = lookup_ops / spec.lane_ops_per_s(lut.table_entry_bits)
            core_s = build_s + lookup_s
            return LUTCost(core_s, self._loss(core_s), (build_ops + lookup_ops) * lane_J, zeros, zeros, zeros)
        pim = spec.pim
        tables_per_row = max(pim.row_bits // lut.table_entry_bits, 1)
        token_sets = np.ceil(table.m / tables_per_row)
        row_reads = weight_groups * table.weight_bits * token_sets
        # One add per lookup into its token's running sum (activation-pattern reuse saves row reads, not the adds of
        # the reused entries into each token's sum); an array holds the tables of rows_per_array / 2^g activation
        # groups, so a token's k / g groups leave that many arrays' partial sums per output to reduce.
        groups_per_array = max(pim.rows_per_array // 2**g, 1)
        partials = np.ceil(table.k / g / groups_per_array)
        adds = lookups + np.where(rows, batches * table.m * table.n * (partials - 1), 0.0)
        add_s = adds / (pim.add_GOPS * 1e9)
        read_J = row_reads * pim.row_bits / 8 * pim.read_pJ_per_byte * 1e-12
        # The cores write every table into the PIM level's arrays before its lookups, at that level's bandwidth
        # (overlapping the builds that produce them; a write costs the energy of a read of that level, PROXY).
        # Tables beyond the level's capacity run in passes of the tokens whose tables fit, each pass streaming the
        # GEMM's weights again.
        level = spec.caches.levels()[pim.cache_level]
        table_B = groups * 2**g * lut.table_entry_bits / 8
        write_s = table_B / (level.bandwidth_GBps * 1e9)
        passes = np.maximum(np.ceil(table_B / (level.capacity_MB * 1e6)), 1.0)
        again_B = np.where(rows, (passes - 1) * table.weight_bytes, 0.0)
        # Only the arrays holding a table read its rows: one copy of a GEMM's tables fills `holding` arrays (each
        # token set's k / g groups, groups_per_array to an array). More copies, each written like the first, let more
        # arrays read at once (each copy serving a share of the outputs); the runtime writes as many as finish soonest.
        holding = np.where(rows, batches * token_sets * partials, spec.pim_arrays)
        read_s = row_reads * (1.0 - pim.cycle_saving) / (pim.frequency_GHz * 1e9)  # on one array
        copies = table_copies(build_s, write_s, read_s, add_s, holding, spec.pim_arrays)
        lookup_s = read_s / np.minimum(copies * holding, spec.pim_arrays)
        write_s, table_B = copies * write_s, copies * table_B
        return LUTCost(np.maximum(build_s, write_s) + np.maximum(lookup_s, add_s), self._loss(build_s),
                       (build_ops + adds) * lane_J,
                       read_J + table_B * level.read_pJ_per_byte * 1e-12, again_B / spec.bandwidth_Bps,
                       again_B * spec.dram_J_per_byte)

    def _cost_table(self, table: KernelTable, execution: str) -> KernelCosts:
        compute_s, compute_J = self._baseline(table)
        memory_s, memory_J = self._memory(table)
        costs = self._costs(compute_s, memory_s, self._loss(compute_s), compute_J, memory_J)
        rows = self._lut_rows(table)
        if rows.any():
            lut = self._lut(table, rows)
            # The runtime runs each low-bit GEMM with the faster of its two kernels (the cheaper in energy where both
            # wait on the same DRAM stream): lookups win on GEMV-like shapes, while tables built per token and one add
            # per lookup make them lose to the SIMD kernel as the batch grows (T-MAC targets batch-1 decode; llama.cpp
            # keeps its own kernels for larger batches; SAIL targets batched decode).
            costs = costs.faster(self._costs(lut.compute_s, memory_s + lut.memory_s, lut.loss_s, lut.compute_J,
                                             memory_J + lut.pim_J + lut.memory_J), rows)
        return costs

    def _costs(self, compute_s, memory_s, overhead_s, compute_J, memory_J) -> KernelCosts:
        """Costs of kernels whose compute and memory overlap and whose thread loss is paid on top."""
        time_s = np.maximum(compute_s, memory_s) + overhead_s
        return KernelCosts(time_s=time_s, compute_s=compute_s, memory_s=memory_s, overhead_s=overhead_s,
                           compute_J=compute_J, memory_J=memory_J, static_J=self.idle_power_W * time_s)


def table_copies(build_s, write_s, read_s, add_s, holding, arrays: float) -> np.ndarray:
    """Copies of each GEMM's lookup tables that finish its lookups soonest (the fewest on a tie): r copies take
    max(build_s, r x write_s) to write and read_s / min(r x holding, arrays) to read, beside add_s of adds; at most as
    many copies as the arrays hold (one where a copy needs more arrays than there are: its tables run in passes)."""
    most = np.maximum(np.floor(arrays / holding), 1.0)
    # Up to `most` copies, r x holding <= arrays (or r = 1 alone), so the time is max(B, rW) + max(R / (rH), D): the sum
    # of two functions convex in r > 0 (a maximum of affine ones, and of the convex R / (rH) and a constant), itself
    # convex. Convex, it falls strictly up to the least real r where it is least, and never falls after it: the fewest
    # copies among the soonest are the floor or ceiling of that r, clipped to [1, most]. That r is an end, a kink
    # (B / W where the writes outlast the builds, R / (HD) where the adds outlast the reads) or where rW + R / (rH) is
    # flat (sqrt(R / (HW))): the pieces B + R / (rH) and rW + D fall or rise, B + D is flat from a kink on.
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero term: its point is inf or NaN, clipped or dropped
        turns = np.stack([build_s / write_s, read_s / (holding * add_s), np.sqrt(read_s / (holding * write_s))])
    r = np.fmin(np.fmax(np.concatenate([np.floor(turns), np.ceil(turns), np.ones((1, len(most))), most[None]]), 1.0),
                most)
    time_s = np.maximum(build_s, r * write_s) + np.maximum(read_s / np.minimum(r * holding, arrays), add_s)
    return np.where(time_s == time_s.min(axis=0), r, np.inf).min(axis=0)


@dataclass(frozen=True)
class LUTCost:
    """Per kernel row, what the LUT GEMV costs (zeros on rows it does not take)."""

    compute_s: np.ndarray  # table builds (PIM: and table writes, row reads, adds) at the run's threads, before losses
    loss_s: np.ndarray  # the threads' loss on the cores' part
    compute_J: np.ndarray  # SIMD lane ops (and, PIM, the adds, at a lane op's energy each)
    pim_J: np.ndarray  # PIM row reads and table writes into the PIM level
    memory_s: np.ndarray  # DRAM time beyond the kernel's own traffic (weights streamed again per PIM pass)
    memory_J: np.ndarray  # its energy


def _weights(table: KernelTable) -> np.ndarray:
    """Weight values each GEMM row reads (n x k per GEMM, `batch` GEMMs)."""
    return table.n * table.k * np.maximum(table.batch, 1)

