"""Systolic NPU cost model, optionally with HBM-PIM banks beside it (NeuPIMs, Heo et al., ASPLOS 2024).

Matrix kernels (GEMMs, and attention where the PIM banks, if any, are not faster) are tiled onto the
arrays. A dataflow keeps two dimensions of the problem stationary in an R x C array and streams the third:
weight-stationary holds a (k x n) weight tile and streams the m rows; output-stationary holds an (m x n)
output tile and streams k. The stationary dimensions split into ceil(rows/R) x ceil(cols/C) tiles (edge
tiles are padded: the waste of a partial tile is counted), the streamed dimension into chunks that fit the
on-chip buffers (weight-stationary: partial sums of a chunk fill the accumulator buffer, inputs of a chunk
half the scratchpad, the other half taking the next chunk). Each (tile, chunk) is a fold, and folds spread
over the arrays:

    double-buffered:  cycles = ceil(folds / arrays) * max(chunk, R) + R + (R + C - 2)
    single-buffered:  cycles = ceil(folds / arrays) * (R + chunk + R + C - 2)

With a second weight register the next tile loads (R cycles) while the current chunk streams, so a fold
costs the longer of the two, plus one first load and one pipeline fill and drain (R + C - 2) per kernel;
without it every fold loads, streams, fills and drains in turn. Either operand may be held: A x B, or its transpose
B^T x A^T, which holds the inputs and streams the weights (SCALE-Sim's input-stationary dataflow on the same array);
each kernel takes the faster. A GEMV (m = 1) therefore costs R cycles per tile for one useful row, or streams its
weights past one used column: its utilization is about 1/R of a large GEMM's either way. Attention is two
products (QK^T, PV) per KV head, the query heads sharing it (GQA) its rows, so its keys pass the arrays once.
Decode attention holds the queries and streams the keys (one fold per KV head where holding the keys loads
ceil(kv/C) tiles of R cycles for a few rows each). Taller arrays cost a kernel with a short streamed side more
per fold (max(chunk, R)), and a tile of a head_dim-deep product (128) leaves rows of a 256-row array idle: a bigger
weight-stationary array speeds only the GEMMs that stream at least R rows per fold (prefill), not memory-bound
decode.

Off-chip traffic: what the table says moves, plus the re-reads an SRAM-limited tiling forces: the cheaper of
re-reading the held operand once per further streamed chunk, or re-reading the streamed one once per further
group of column tiles the arrays hold at once. Time = max(compute, memory); no per-kernel launch cost (the NPU runs
its own program).

Mapping: the arrays share the buffers, so a kernel spread over fewer of them streams longer chunks (fewer weight
re-reads) but runs fewer folds at once and holds fewer n-tiles (more input re-reads). Each kernel runs on the number
of arrays (1 to array_count) that finishes it soonest, the least off-chip traffic (so memory energy) breaking ties
and then the most arrays, as a mapper ranks mappings by delay, then energy (Timeloop, NVlabs/timeloop
src/applications/mapper: its optimization-metrics are compared in order). A chip with more arrays at the same
buffers is therefore never slower; a narrower format or a faster MAC unit may take a mapping that re-reads more
where that is faster.

Vector kernels (norm, softmax, elementwise, embedding) run on the vector units at their op rate.

PIM: attention over the KV cache may run in the banks, unit "pim", each query a GEMV over its KV head's keys
(g GEMVs for the g query heads sharing one, each reading its rows) at the in-bank MAC rate (channels x banks x
multipliers per command interval), derated by row switches (precharge, activating every bank, tRCD between rows),
plus the queries and results crossing the external channels. Each such kernel runs on the faster of the banks and
the arrays, as PIM schedulers for speculative decoding place attention by its queries per key (PAPI, ASPLOS 2025;
SpecPIM, ASPLOS 2024): on neupims a KV head serving up to 5 queries (a decode step's query heads sharing it, a
verification's k + 1 each) takes the banks, more (a prefill) the arrays. Everything else runs on the NPU, unit "npu".
Dual row buffers with sub-batch interleaving give sub_batches = 2 (the simulator overlaps one
sub-batch's PIM attention with the other's NPU GEMMs); a single row buffer blocks memory while PIM computes,
so nothing overlaps (sub_batches = 1).

Mixed-precision GEMMs (weights narrower than activations: W4A16, W4A8, ternary): with a `mixed_precision:` unit
(MixPE PEs, or a bit-serial LUT unit) the arrays run those it takes at its MACs per PE per cycle and energy per MAC
(hw_models/mixed_precision.py); without one, at the activation dtype's rate, the weights only moving fewer bytes.

Energy: MACs x energy per MAC (by dtype, or the unit's), vector ops x energy per op, SRAM bytes x energy per byte,
off-chip bits x HBM energy per bit, in-bank bits x PIM energy per bit, static power x time.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from hw_models.cost import KernelCosts
from hw_models.device import DeviceModel
from hw_models.gpu_attention import kv_groups
from hw_models.mixed_precision import faster_on_unit
from hw_models.npu_spec import NPUSpec
from hw_models.sparsity_support import npu_support
from kernels.formats import DTYPE_BITS
from kernels.kernel import KernelKind
from kernels.table import KIND_CODE, KernelTable

# Bytes per operand element by compute dtype (16-bit elsewhere).
PREFILL_ATTENTION = KIND_CODE[KernelKind.ATTENTION_PREFILL]
DECODE_ATTENTION = KIND_CODE[KernelKind.ATTENTION_DECODE]


def buffer_rows(spec: NPUSpec, element_bytes):
    """Rows of the streamed dimension the shared buffers hold in all, for the arrays a kernel runs on to share
    (weight-stationary): partial sums of a row (C x accumulator_bytes) in the accumulator, inputs of a row
    (R x element_bytes) in half the scratchpad (the other half takes the next chunk)."""
    a, sram = spec.npu, spec.sram
    acc_rows = sram.accumulator_KB * 1024 / (a.array_cols * sram.accumulator_bytes)
    spad_rows = sram.scratchpad_KB * 1024 / 2 / (a.array_rows * element_bytes)
    return np.floor(np.minimum(acc_rows, spad_rows))


def array_counts(spec: NPUSpec, element_bytes: np.ndarray, longest_stream: float) -> np.ndarray:
    """The array counts (of 1 .. array_count) a kernel may be fastest on: the most arrays whose chunks hold each
    length a chunk can take.

    On u arrays a chunk holds floor(rows / u) rows (at least one). Of the counts giving one chunk length, the most
    arrays run the fewest rounds and hold the most n-tiles at once (the fewest input re-reads), so the others never
    win on time or traffic; every length from the longest stream up streams it in one chunk."""
    count = spec.npu.array_count
    candidates = [np.array([count])]
    for rows in np.unique(buffer_rows(spec, element_bytes)):
        arrays = np.arange(1, min(rows, count) + 1)
        # The most arrays giving a chunk length may be more than the chip has; the chip's count gives it then.
        candidates.append(np.minimum(rows // np.minimum(rows // arrays, longest_stream), count))
    return np.unique(np.concatenate(candidates))


def systolic_cycles(spec: NPUSpec, rows_dim, cols_dim, stream_dim, count, element_bytes, arrays) -> tuple:
    """(cycles, chunks) of `count` problems with (rows_dim x cols_dim) stationary and stream_dim streamed,
    spread over `arrays` of the arrays (arguments broadcast)."""
    a = spec.npu
    r, c = a.array_rows, a.array_cols
    tiles = np.ceil(rows_dim / r) * np.ceil(cols_dim / c)
    if a.dataflow == "weight_stationary":
        # Each array's share of the buffers bounds its chunk; arrays left idle leave theirs to the others.
        chunk_limit = np.maximum(np.floor(buffer_rows(spec, element_bytes) / arrays), 1)
    else:
        chunk_limit = np.inf  # output-stationary: partial sums stay in the PEs whatever the length of k
    chunks = np.maximum(np.ceil(stream_dim / chunk_limit), 1)
    chunk = np.ceil(stream_dim / chunks)
    folds = count * tiles * chunks
    rounds = np.ceil(folds / arrays)
    if a.double_buffered:
        cycles = rounds * np.maximum(chunk, r) + r + (r + c - 2)
    else:
        cycles = rounds * (r + chunk + r + c - 2)
    return cycles, chunks


def fastest_mapping(time_s: np.ndarray, traffic_B: np.ndarray) -> np.ndarray:
    """Column of each row's fastest mapping: among equally fast ones the least off-chip traffic (so the least memory
    energy: SRAM traffic is twice it plus what no mapping changes), then the last column (the most arrays, so a
    kernel leaves arrays idle only where that is faster or cheaper)."""
    fastest = time_s <= time_s.min(axis=1, keepdims=True)
    key = np.where(fastest, traffic_B, np.inf)[:, ::-1]
    return key.shape[1] - 1 - np.argmin(key, axis=1)


@dataclass(frozen=True)
class ArrayWork:
    """Matrix kernels as the arrays run them: stationary (rows x cols) and streamed dimensions, problems, operand
    bytes, seconds per array cycle, weight and input bytes, and the bytes they move read once."""

    rows: np.ndarray
    cols: np.ndarray
    stream: np.ndarray
    count: np.ndarray
    element_bytes: np.ndarray
    cycle_s: np.ndarray
    weight_B: np.ndarray
    input_B: np.ndarray
    once_B: np.ndarray

    def columns(self, mask: np.ndarray) -> ArrayWork:
        """The kernels where `mask` is true, each a row of one column (to broadcast against array counts)."""
        return ArrayWork(*(getattr(self, f.name)[mask, None] for f in fields(self)))


def on_arrays(spec: NPUSpec, work: ArrayWork, arrays) -> tuple:
    """(compute_s, traffic_B, chunks) of `work` spread over `arrays` of the arrays (broadcast)."""
    cycles, chunks = systolic_cycles(spec, work.rows, work.cols, work.stream, work.count, work.element_bytes, arrays)
    # Re-reads an SRAM-limited tiling forces: the weights once per further chunk, or the inputs once per further
    # group of n-tiles the arrays hold at once, whichever is cheaper.
    groups = np.ceil(work.cols / (spec.npu.array_cols * arrays))
    reread = np.where(work.weight_B > 0,
                      np.minimum(work.weight_B * (chunks - 1), work.input_B * (groups - 1)), 0.0)
    return cycles * work.cycle_s, work.once_B + reread, chunks


class NPUModel(DeviceModel):
    """Prices kernels on one NPU (and its PIM banks, if any). Pure: the spec and derived rates only."""

    kind = "npu"
    # A kernel's mapping, time and energy read its own row alone (array_counts reads the pass's rows only to trim
    # the counts tried, never a row's best).
    prices_rows_alone = True

    def __init__(self, spec: NPUSpec, reference: NPUSpec | None = None, calibration=None):
        super().__init__(spec, reference, calibration)
        self.units = ("npu", "pim") if spec.pim is not None else ("npu",)

    @property
    def sparsity_patterns(self) -> frozenset[str]:
        """Block patterns whose zero blocks cover whole array tiles (hw_models/sparsity_support.py): their folds
        are skipped, which the kernel's FLOPs below its dense shape's already shorten."""
        return npu_support(self.spec.npu.array_rows, self.spec.npu.array_cols)

    @property
    def sub_batches(self) -> int:
        pim = self.spec.pim
        return 2 if pim is not None and pim.row_buffers == "dual" and pim.sub_batch_interleaving else 1

    @property
    def area_mm2(self) -> float:
        pim = self.spec.pim
        extra = pim.logic_area_mm2 if pim is not None and pim.logic_area_mm2 is not None else 0.0
        return self.spec.area.die_mm2 + extra

    def matrix_shapes(self, table: KernelTable, rows: np.ndarray) -> tuple:
        """(m, n, k, count, dense_flops) of the matrix kernels in `rows`; attention as its two GEMMs per KV head.

        Attention shapes come from the table's columns (a decode step's keys from its kv_len).
        """
        m, n, k = table.m[rows].copy(), table.n[rows].copy(), table.k[rows].copy()
        count = np.maximum(table.batch[rows], 1.0)
        attention = np.isin(table.kind[rows], (PREFILL_ATTENTION, DECODE_ATTENTION))
        if attention.any():
            idx = np.flatnonzero(rows)[attention]
            # The query heads sharing a KV head multiply its keys as rows of one product (FlashDecoding's and
            # FlashInfer's GQA grouping, as the GPU model packs them): each KV head's keys pass the arrays once.
            groups, group_rows = kv_groups(table.heads[idx], table.kv_heads[idx], table.q_len[idx])
            kv, head_dim = table.kv_len[idx], np.maximum(table.head_dim[idx], 1.0)
            # QK^T ([q x d] x [d x kv]) and PV ([q x kv] x [kv x d]) cost about alike on the arrays: price
            # one as (m=q, k=d, n=kv) and count it twice.
            m[attention], n[attention], k[attention] = group_rows, np.maximum(kv, 1), head_dim
            count[attention] = 2 * count[attention] * groups
        return m, n, k, count, 2 * m * n * k * count

    def _matrix(self, table: KernelTable, rows: np.ndarray, element_bytes: np.ndarray, macs_per_s: np.ndarray):
        """(compute_s, traffic_B, sram_B) of the matrix kernels in `rows`, each on its fastest mapping."""
        spec, a = self.spec, self.spec.npu
        m, n, k, count, dense_flops = self.matrix_shapes(table, rows)
        rate_per_pe = macs_per_s[rows] / (spec.pes * spec.frequency_Hz)
        # Sparse or causal work (flops below the dense shape's) shortens the streaming in proportion.
        share = np.where(dense_flops > 0, table.flops[rows] / np.maximum(dense_flops, 1), 1.0)
        inputs = table.act_bytes[rows] * k / np.maximum(k + n, 1)  # act_bytes holds inputs and outputs
        cycle_s = share / (spec.frequency_Hz * rate_per_pe)
        weight_B, once_B = table.weight_bytes[rows], table.bytes[rows]
        # Either product runs: A x B, or its transpose B^T x A^T, which holds the other operand in the arrays and
        # streams the first (SCALE-Sim's input-stationary dataflow beside its weight-stationary one on the same
        # array, scale-sim-v2 scalesim/compute/systolic_compute_is.py). The transpose wins where the streamed side
        # is short: a decode step's attention streams one query past each head's keys, each key tile a fold of R
        # cycles for one row, where holding the query streams every key once.
        if a.dataflow == "weight_stationary":
            direct = ArrayWork(k, n, m, count, element_bytes[rows], cycle_s, weight_B, inputs, once_B)
            transposed = ArrayWork(k, m, n, count, element_bytes[rows], cycle_s, inputs, weight_B, once_B)
        else:
            direct = ArrayWork(m, n, k, count, element_bytes[rows], cycle_s, weight_B, inputs, once_B)
            transposed = ArrayWork(n, m, k, count, element_bytes[rows], cycle_s, inputs, weight_B, once_B)
        mapped = [self._on_best_arrays(work) for work in (transposed, direct)]
        compute_s, traffic = (np.stack([c[i] for c in mapped], axis=1) for i in (0, 1))
        # The faster orientation, the least traffic breaking ties, then the direct one (last column).
        pick = fastest_mapping(np.maximum(compute_s, traffic / spec.bandwidth_Bps), traffic)
        kernel = np.arange(len(pick))
        # SRAM: every off-chip byte is written and read once; streamed inputs are read once per n-tile;
        # partial sums are read and written once per k-tile.
        sram = [2 * traffic[:, i] + (self._streamed_B(work) + self._psum_B(work)) * share
                for i, work in enumerate((transposed, direct))]
        return compute_s[kernel, pick], traffic[kernel, pick], np.stack(sram, axis=1)[kernel, pick]

    def _streamed_B(self, work: ArrayWork) -> np.ndarray:
        """SRAM bytes of the streamed operand: each streamed row read once per tile of the stationary columns."""
        return work.stream * work.rows * work.count * work.element_bytes * np.ceil(work.cols / self.spec.npu.array_cols)

    def _psum_B(self, work: ArrayWork) -> np.ndarray:
        """SRAM bytes of partial sums: read and written once per tile of the stationary rows."""
        acc_B = self.spec.sram.accumulator_bytes
        return 2 * work.stream * work.cols * work.count * acc_B * np.ceil(work.rows / self.spec.npu.array_rows)

    def _on_best_arrays(self, work: ArrayWork) -> tuple:
        """(compute_s, traffic_B) of `work` on its fastest number of arrays."""
        spec, a = self.spec, self.spec.npu
        compute_s, traffic, chunks = on_arrays(spec, work, a.array_count)
        # Fewer arrays can be faster only for a kernel streamed in several chunks on all of them (in one chunk there,
        # fewer arrays stream the same in more rounds, holding fewer n-tiles at once), and only where all of them take
        # at least the least time fewer could: each tile streaming every row once over array_count - 1 arrays, or
        # the bytes read once. Those kernels try each count that lengthens their chunks (array_counts), as columns.
        tiles = np.ceil(work.rows / a.array_rows) * np.ceil(work.cols / a.array_cols)
        fewer_s = np.maximum(work.count * tiles * work.stream * work.cycle_s / max(a.array_count - 1, 1),
                             work.once_B / spec.bandwidth_Bps)
        split = (chunks > 1) & (np.maximum(compute_s, traffic / spec.bandwidth_Bps) >= fewer_s)
        if a.array_count > 1 and split.any():
            some = work.columns(split)
            arrays = array_counts(spec, some.element_bytes, some.stream.max())[None, :]
            c, t, _ = on_arrays(spec, some, arrays)
            pick = fastest_mapping(np.maximum(c, t / spec.bandwidth_Bps), t)
            kernel = np.arange(len(pick))
            compute_s[split], traffic[split] = c[kernel, pick], t[kernel, pick]
        return compute_s, traffic

    def _cost_table(self, table: KernelTable, execution: str) -> KernelCosts:
        spec, energy = self.spec, self.spec.energy
        size = len(table)
        matrix, vector = table.tensor_core, ~table.tensor_core
        element_bytes = table.per_dtype(lambda d, _: DTYPE_BITS.get(d, 16) / 8)
        macs_per_s = table.per_dtype(lambda d, _: spec.macs_per_s(d))
        mac_J = table.per_dtype(lambda d, _: spec.mac_J(d))
        if spec.mixed_precision is not None and matrix.any():
            macs_per_s, mac_J = faster_on_unit(spec.mixed_precision, table, macs_per_s, mac_J,
                                               spec.pes * spec.frequency_Hz)
        compute_s, memory_s = np.zeros(size), table.bytes / spec.bandwidth_Bps
        offchip_B, sram_B = table.bytes.copy(), 2 * table.bytes
        compute_J = np.zeros(size)
        if matrix.any():
            c, traffic, sram = self._matrix(table, matrix, element_bytes, macs_per_s)
            compute_s[matrix], offchip_B[matrix], sram_B[matrix] = c, traffic, sram
            memory_s[matrix] = traffic / spec.bandwidth_Bps
            compute_J[matrix] = table.flops[matrix] / 2 * mac_J[matrix]
        compute_s[vector] = table.flops[vector] / spec.vector_ops_per_s
        compute_J[vector] = table.flops[vector] * energy.vector_op_pJ * 1e-12
        memory_J = offchip_B * 8 * energy.hbm_pJ_per_bit * 1e-12 + sram_B * energy.sram_pJ_per_byte * 1e-12
        time_s = np.maximum(compute_s, memory_s)
        costs = KernelCosts(time_s=time_s, compute_s=compute_s, memory_s=memory_s, overhead_s=np.zeros(size),
                            compute_J=compute_J, memory_J=memory_J, static_J=spec.power.idle_W * time_s,
                            unit=np.zeros(size, dtype=int))
        # Attention over a KV cache in the banks runs on whichever unit is faster, as PIM schedulers for speculative
        # decoding place it by its queries per key (PAPI, ASPLOS 2025; SpecPIM, ASPLOS 2024): a decode step's one
        # query or a verification's k + 1 take the banks, a long prefill's many take the arrays.
        in_banks = table.attention_mask & (table.kv_bytes > 0) if spec.pim is not None else np.zeros(size, bool)
        return costs.faster(self._pim(table, in_banks), in_banks) if in_banks.any() else costs

    def _pim(self, table: KernelTable, rows: np.ndarray) -> KernelCosts:
        """Attention in the banks (unit "pim") of the kernels in `rows` (zeros elsewhere): each query a GEMV over the
        keys, so q queries cost q GEMVs, and the g query heads sharing a KV head (GQA) g GEMVs over its keys."""
        spec, energy = self.spec, self.spec.energy
        macs = np.where(rows, table.flops / 2, 0.0)
        # A bank GEMV multiplies the open row by one query (NeuPIMs computes each head's GEMV in the banks): the
        # rows of a KV head are read once per query they serve.
        _, group_rows = kv_groups(table.heads, table.kv_heads, table.q_len)
        read_B = np.where(rows, table.kv_bytes * group_rows, 0.0)
        act = np.where(rows, table.act_bytes, 0.0)
        # The multipliers consume the open row at the in-bank rate; row switches stall them.
        bank_s = np.maximum(macs / spec.pim_macs_per_s, read_B / spec.pim_internal_Bps) / spec.pim_row_efficiency
        # The queries go in and the scores/outputs come out through the external channels.
        io_s = act / spec.bandwidth_Bps
        time_s = bank_s + io_s
        memory_J = (read_B * 8 * energy.pim_access_pJ_per_bit + act * 8 * energy.hbm_pJ_per_bit) * 1e-12
        return KernelCosts(time_s=time_s, compute_s=macs / spec.pim_macs_per_s,
                           memory_s=read_B / spec.pim_internal_Bps + io_s, overhead_s=np.zeros(len(table)),
                           compute_J=macs * energy.pim_mac_pJ * 1e-12, memory_J=memory_J,
                           static_J=spec.power.idle_W * time_s, unit=np.where(rows, 1, 0))
