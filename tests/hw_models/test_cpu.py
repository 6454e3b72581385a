"""CPU family: hand calculations of the baseline, T-MAC and SAIL paths, invariants, and bad-input messages."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from hw_models.registry import load_device, read_device_yaml
from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable


def _gemv(n: int = 4096, k: int = 4096, m: int = 1) -> Kernel:
    return Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * m * n * k, weight_bytes=2.0 * n * k,
                  act_bytes=2.0 * (m * k + m * n), kv_bytes=0.0, dtype="bf16", tensor_core=True, m=m, n=n, k=k)


def _table(bits: int, copies: int = 200, m: int = 1, n: int = 4096, k: int = 4096) -> KernelTable:
    """Many copies of a GEMV, so that the pass's weights overflow every cache (streamed from DRAM)."""
    return KernelTable.from_kernels([_gemv(n=n, k=k, m=m)] * copies).with_format(NumericFormat(weight_bits=bits))


# ampere-altra-sail by hand: 80 cores x 3.0 GHz x 2 SIMD pipes; int8 dot products at 2 FLOP per byte lane; 32 MB /
# 8 kB = 4,000 arrays reading one 256-bit row (32 one-byte entries) a cycle at 3.0 GHz, 13.8% of the reads saved;
# 250 rows per array hold the 16-entry tables of 15 activation groups; the arrays' adds bit-serial, 16-bit sums in
# 17 cycles on each of 256 bit lines (pim.add_GOPS, Neural Cache's n + 1 cycles).
SAIL_LANES8 = 80 * 3.0e9 * 2 * 16
SAIL_INT8_PEAK = 2 * SAIL_LANES8
SAIL_ARRAYS, SAIL_GROUPS_PER_ARRAY = 32e6 / 8e3, 250 // 16
SAIL_ADDS_PER_S = 180706e9  # 4,000 x 256 / 17 x 3.0 GHz, to the preset's G/s
# A what-if where the adders never bind (the top of pim.add_GOPS's plausible range), so that a test sees the row
# reads, table writes and passes.
FREE_ADDS = {"pim.add_GOPS": 1e8}


def _sail_lookups_s(m: int, n: int, k: int, bits: int, add_s: float = 0.0) -> tuple[float, int]:
    """(time, copies) of SAIL's lookups by hand: a copy of the tables fills ceil(m / 32) token sets x ceil(k / 4 / 15)
    arrays and is written at the SLC's 409.6 GB/s (m x k / 4 x 16 one-byte entries, overlapping the builds at 80 x 3.0
    GHz x 2 pipes x 8 16-bit lanes); the n x k / 4 x bits x ceil(m / 32) row reads (13.8% saved) spread over the
    arrays holding a copy; r copies take r writes. The fewest copies that finish soonest, at most 4,000 / arrays."""
    holding = -(-m // 32) * -(-k / 4 // SAIL_GROUPS_PER_ARRAY)
    read_s = n * k / 4 * bits * -(-m // 32) * (1 - 0.138) / 3.0e9
    build_s, write_s = m * k / 4 * 16 / (80 * 3.0e9 * 2 * 8), m * k / 4 * 16 / 409.6e9
    best = min((max(build_s, r * write_s) + max(read_s / min(r * holding, SAIL_ARRAYS), add_s), r)
               for r in range(1, max(int(SAIL_ARRAYS // holding), 1) + 1))
    return best


def test_baseline_hand_calculation():
    """Altra, 4-bit GEMV: int8 MACs + 4.5 byte-lane slots per weight (unpacking, block scaling), against DRAM."""
    dev = load_device("ampere-altra")
    table = _table(4)
    costs = dev.cost_table(table)
    n = k = 4096
    lanes8 = 80 * 3.0e9 * 2 * 16  # cores x clock x pipes x byte lanes
    compute_s = 2.0 * n * k / (2 * lanes8) + 4.5 * n * k / lanes8
    assert costs.compute_s[0] == pytest.approx(compute_s, rel=1e-9)
    memory_s = (n * k * (4 + 16 / 128) / 8 + 2.0 * (k + n)) / 204.8e9
    assert costs.memory_s[0] == pytest.approx(memory_s, rel=1e-9)
    assert costs.time_s[0] == pytest.approx(max(compute_s, memory_s), rel=1e-9)


# llama.cpp's NEON dot kernels (ggml_vec_dot_<format>_q8_<0|K>, __ARM_NEON path), SIMD/FP instructions per 256 weights
# counted by hand from the source (the preset's dequant_lane_ops_per_weight source lists each one): the vdotq_s32
# multiply-adds (one per 16 weights), then the rest.
Q2_K_PER_SUPER_BLOCK = {
    "vdotq_s32": 16,
    "d, dmin: fp16-to-fp32, times q8_K's d": 4,
    "mins x bsums: and, shr, 2 vmovl, 4 vmull_s16, 3 add, addv, to float, multiply-add": 14,
    "unpack 64 bytes: per 128 weights 2 and + 3 x (2 shr + 2 and)": 28,
    "per 16-weight sum: addv + lane to a general register": 32,
    "sum += d * isum: to float, multiply-add": 2,
}
Q3_K_PER_SUPER_BLOCK = {
    "vdotq_s32": 16,
    "d: fp16-to-fp32, times q8_K's d": 2,
    "scales less 32": 1,
    "unpack: per 128 weights 8 bic, 4 shl, 2 + 6 shr, 8 and, 8 sub; 2 shr once": 2 * 36 + 2,
    "per 16-weight sum: addv + lane to a general register": 32,
    "sum += d * isum: to float, multiply-add": 2,
}
# Q4_0: per 32-weight block 2 vdotq_s32, 4 unpacking (and, shr, 2 sub), 5 scaling (convert, 2 fp16-to-fp32, product,
# multiply-add), eight blocks per 256 weights.
Q4_0_PER_256 = 8 * (2 + 4 + 5)
# Q5_0: Q4_0's block, its two dot products started from zero and joined by one add (the fifth bit's bytes come from
# scalar table lookups, no SIMD instruction).
Q5_0_PER_256 = 8 * (2 + 4 + 1 + 5)
Q6_K_PER_SUPER_BLOCK = {
    "vdotq_s32": 16,
    "d: fp16-to-fp32, times q8_K's d": 2,
    "scales x bsums: 2 vmovl_s8, 4 vmull_s16, 3 add, addv, lane to a general register": 11,
    "unpack: per 128 weights 6 shr + 8 and + 8 shl (high bits), 4 and + 4 shr (low bits), 8 orr": 2 * 38,
    "per 16-weight sum: addv + lane to a general register": 32,
    "sum += d * isum: to float, multiply-add": 2,
}


@pytest.mark.parametrize("bits, instructions", [(2, sum(Q2_K_PER_SUPER_BLOCK.values())),
                                                (3, sum(Q3_K_PER_SUPER_BLOCK.values())), (4, Q4_0_PER_256),
                                                (5, Q5_0_PER_256), (6, sum(Q6_K_PER_SUPER_BLOCK.values()))])
def test_llama_cpp_gemv_on_one_m2_core_by_hand(bits, instructions):
    """A 4096 x 4096 GEMV on one M2 performance core with llama.cpp's kernels (no LUT): the instructions per 256
    weights (Q2_K 96, Q3_K 127, Q4_0 88, Q5_0 96, Q6_K 139) on 4 SIMD pipes at 3.49 GHz, 65,536 super-blocks; its
    4.5-13 MB of weights take under 17 us even from DRAM (800 GB/s), so the kernel is bound by those instructions:
    451 us at 2 bits, 596 at 3, 413 at 4, 451 at 5, 652 at 6 (2-, 5- and 6-bit weights priced as Q4_0's, as before
    the per-format counts, gave 413 us)."""
    dev = load_device("m2-ultra-tmac", {"compute.threads": 1, "lut": None})
    costs = dev.cost_table(_table(bits, copies=1))
    time_s = 4096 * 4096 / 256 * instructions / 4 / 3.49e9
    assert costs.compute_s[0] == pytest.approx(time_s, rel=1e-9)
    assert costs.time_s[0] == pytest.approx(time_s, rel=1e-9)


def test_tmac_lookup_hand_calculation():
    """M2 Ultra on one core, 2-bit GEMV: per token 2 lookups per 4 weights, 4 byte-lane ops each."""
    dev = load_device("m2-ultra-tmac", {"compute.cores": 1})
    costs = dev.cost_table(_table(2))
    n = k = 4096
    lanes8 = 3.49e9 * 4 * 16
    lookup_s = n * k / 4 * 2 * 4 / lanes8
    build_s = k / 4 * 16 * 1 / (3.49e9 * 4 * 8)
    assert costs.compute_s[0] == pytest.approx(lookup_s + build_s, rel=1e-9)


def test_sail_batched_row_reads_hand_calculation():
    """SAIL with adders that never bind (what-if): 32 tokens share one 256-bit row read of int8 tables; 13.8% of
    cycles saved. Before their lookups the tables (16 one-byte entries per token and group of 4 activations) are
    written into the SLC at its 409.6 GB/s, overlapping the builds that produce them (the writes are the slower here).
    One copy fills ceil(1024 / 15) = 69 arrays, whose 2.41 ms of row reads (one array's) take 34.9 us; each further
    copy (1.28 us of writes) shares them: 5 copies, 6.4 + 7.0 us."""
    dev = load_device("ampere-altra-sail", FREE_ADDS)
    costs = dev.cost_table(_table(2, m=32))
    lookups_s, copies = _sail_lookups_s(32, 4096, 4096, 2)
    assert copies == 5 and lookups_s == pytest.approx(13.39e-6, rel=1e-3)
    assert costs.compute_s[0] == pytest.approx(lookups_s, rel=1e-9)
    # 33 tokens need a second token set: twice the arrays per copy, each reading as many rows.
    more = dev.cost_table(_table(2, m=33))
    assert more.compute_s[0] == pytest.approx(_sail_lookups_s(33, 4096, 4096, 2)[0], rel=1e-9)


def test_sail_reads_only_on_the_arrays_holding_tables():
    """Batch-1 4-bit GEMV, adders that never bind: its tables (16 KB) fill 69 arrays, one token's entry per row read,
    16.8 M row reads. On all 4,000 arrays they would take 1.2 us; on the 69 holding them, 69.9 us. Copies cost 40 ns
    of writes each: the runtime writes 42 (sqrt(69.9 us / 40 ns)), 2,898 arrays reading, 3.34 us, never below the
    reads on every array plus one copy's writes. DRAM made fast (what-if) so that the lookups beat the cores' 12.0 us
    rather than tie with them at the DRAM floor."""
    dev = load_device("ampere-altra-sail", {"memory.bandwidth_GBps": 1e5, **FREE_ADDS})
    compute_s = dev.cost_table(_table(4, m=1)).compute_s[0]
    lookups_s, copies = _sail_lookups_s(1, 4096, 4096, 4)
    assert copies == 42 and lookups_s == pytest.approx(3.34e-6, rel=1e-2)
    assert compute_s == pytest.approx(lookups_s, rel=1e-9)
    all_arrays_s = 4096 * 1024 * 4 * (1 - 0.138) / (SAIL_ARRAYS * 3.0e9) + 4096 / 4 * 16 / 409.6e9
    assert compute_s > 2 * all_arrays_s


def test_sail_accumulation_and_reduction_hand_calculation():
    """SAIL as the preset has it, 2-bit GEMM of 32 tokens: each token adds every looked-up entry into its sum (4096 x
    1024 groups x 2 bit planes x 32 tokens) and then reduces, per output, the partial sums of the ceil(1024 / 15) = 69
    arrays holding its groups (68 adds), at 180,706 G adds/s: 1.53 us, less than the 7.0 us of row reads on 5 copies
    of the tables after their 6.4 us of writes (13.4 us), against the cores' 69.9 us of int8 dot products and 9.8 us
    of unpacking (79.7 us), so the lookups run."""
    dev = load_device("ampere-altra-sail")
    m, n, k = 32, 4096, 4096
    adds = n * k / 4 * 2 * m + m * n * (-(-k / 4 // SAIL_GROUPS_PER_ARRAY) - 1)
    lut_s, copies = _sail_lookups_s(m, n, k, 2, adds / SAIL_ADDS_PER_S)
    cores_s = 2.0 * m * n * k / SAIL_INT8_PEAK + 4.5 * n * k / SAIL_LANES8
    assert copies == 5 and lut_s < cores_s
    assert dev.cost_table(_table(2, m=m)).compute_s[0] == pytest.approx(lut_s, rel=1e-9)


@pytest.mark.parametrize("slc_GBps", [409.6, 100, 25])
@pytest.mark.parametrize("m", [256, 4096, 32768])
def test_sail_gemm_never_beats_writing_its_tables(m, slc_GBps):
    """A PIM-LUT GEMM cannot finish before its tables are in the arrays: m tokens x k/4 groups x 16 one-byte entries
    written into the SLC at its bandwidth (the preset's, and slower what-ifs where the writes, not DRAM, bound), with
    adders that never bind so that the lookups stay faster than the cores."""
    dev = load_device("ampere-altra-sail", {"caches.slc.bandwidth_GBps": slc_GBps, **FREE_ADDS})
    costs = dev.cost_table(_table(4, copies=20, m=m))
    table_B = m * 4096 / 4 * 16
    assert costs.time_s[0] >= table_B / (slc_GBps * 1e9) * (1 - 1e-12)


def test_sail_tables_beyond_the_slc_run_in_passes():
    """32768 tokens of a 4096 x 4096 GEMM need 537 MB of tables against a 32 MB SLC: 17 passes of the tokens whose
    tables fit, each streaming the 4-bit weights (8.65 MB with their fp16 group scales) from DRAM again (adders that
    never bind, so that the lookups run: at the preset's the cores' kernel is faster)."""
    dev = load_device("ampere-altra-sail", FREE_ADDS)
    m, n, k = 32768, 4096, 4096
    costs = dev.cost_table(_table(4, copies=20, m=m))
    passes = -(-m * k / 4 * 16 // 32e6)
    assert passes == 17
    weight_B = n * k * (4 + 16 / 128) / 8
    act_B = 2.0 * (m * k + m * n)
    assert costs.memory_s[0] == pytest.approx((act_B + passes * weight_B) / 204.8e9, rel=1e-9)


@pytest.mark.parametrize("overrides", [{}, {"pim.add_GOPS": 3840}, {"pim.add_GOPS": 384000}])
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
@pytest.mark.parametrize("n,k", [(4096, 4096), (11008, 4096), (4096, 11008)])
def test_no_sail_gemm_beats_the_cores_peak_or_the_lut_units_bound(n, k, bits, overrides):
    """Invariant: a GEMM's FLOP rate is at most the larger of the cores' int8 peak (15.36 TFLOP/s) and what the LUT
    units do: per token a b-bit group of 4 weights (8 FLOP) takes b lookups and b adds, so at most min(adds/s, entries
    read/s) x 8 / b, entries read at 4,000 arrays x 3.0 GHz x min(m, 32) / (1 - 0.138). The preset's adds
    (180,706 G/s), adds on the cores (3,840 G/s) and one add per entry read per array per cycle (384,000 G/s), from
    batch-1 decode to prefill
    (the tables of 32,768 tokens overflow the SLC). Unpriced adds once let a 256-token prefill run at 240 TFLOP/s."""
    dev = load_device("ampere-altra-sail", overrides)
    adds_per_s = overrides.get("pim.add_GOPS", SAIL_ADDS_PER_S / 1e9) * 1e9
    for m in (1, 8, 32, 33, 256, 2048, 32768):
        table = _table(bits, copies=20, m=m, n=n, k=k)
        flops_per_s = table.flops[0] / dev.cost_table(table).time_s[0]
        entries_per_s = SAIL_ARRAYS * 3.0e9 * min(m, 32) / (1 - 0.138)
        lut_bound = min(adds_per_s, entries_per_s) * 8 / bits
        assert flops_per_s <= max(SAIL_INT8_PEAK, lut_bound) * (1 + 1e-9), (m, flops_per_s / 1e12)


def test_sail_prefill_gemm_hand_calculation():
    """Llama-2-7B's gate projection (11008 x 4096) over a 256-token prompt, 4-bit weights: the lookups take 95.6 us
    (a copy of the tables, 256 x 1024 x 16 one-byte entries, fills 8 token sets x 69 = 552 arrays and is written at
    409.6 GB/s in 10.2 us; 3 copies, then 11.54 G adds of looked-up entries and 0.19 G adds reducing 69 arrays' partial
    sums per output at 180,706 G/s, 64.9 us, over 62.6 us of row reads on the 1,656 arrays), the cores 1.53 ms (23.1
    GFLOP of int8 dot products at 15.36 TFLOP/s and 4.5 byte-lane slots per weight of unpacking), DRAM 0.151 ms: the
    lookups run it, at DRAM's pace (152.6 TFLOP/s-equivalent). With adds at the cores' SIMD rate (3,840 G/s, the
    what-if of adds done on the cores) the lookups take 3.06 ms and the cores run it."""
    m, n, k = 256, 11008, 4096
    table = _table(4, copies=20, m=m, n=n, k=k)
    memory_s = (n * k * (4 + 16 / 128) / 8 + 2.0 * (m * k + m * n)) / 204.8e9
    adds = n * k / 4 * 4 * m + m * n * (-(-k / 4 // SAIL_GROUPS_PER_ARRAY) - 1)
    write_s = m * k / 4 * 16 / 409.6e9
    lut_s, copies = _sail_lookups_s(m, n, k, 4, adds / SAIL_ADDS_PER_S)
    cores_s = 2.0 * m * n * k / SAIL_INT8_PEAK + 4.5 * n * k / SAIL_LANES8
    assert copies == 3 and lut_s == pytest.approx(95.6e-6, rel=1e-3)
    assert lut_s < memory_s < cores_s
    costs = load_device("ampere-altra-sail").cost_table(table)
    assert costs.compute_s[0] == pytest.approx(lut_s, rel=1e-9)
    assert costs.time_s[0] == pytest.approx(memory_s, rel=1e-9)
    assert 2.0 * m * n * k / costs.time_s[0] == pytest.approx(152.6e12, rel=0.001)
    on_cores = load_device("ampere-altra-sail", {"pim.add_GOPS": 3840}).cost_table(table)
    assert write_s + adds / 3840e9 > cores_s
    assert on_cores.time_s[0] == pytest.approx(cores_s, rel=1e-9)


@pytest.mark.parametrize("bits", [5, 6, 8])
def test_a_tie_in_time_takes_the_cheaper_kernel(bits):
    """Batch-1 GEMVs of 5 to 8-bit weights wait on DRAM on the Altra whether the cores or SAIL's lookups run them, so
    both take the same time; the runtime then runs the one that costs less energy, the cores' (a full 256-bit row
    read per lookup of one token's entry costs more than the int8 dot products): the same time and energy as the
    Altra without PIM."""
    table = _table(bits)
    sail = load_device("ampere-altra-sail").cost_table(table)
    altra = load_device("ampere-altra").cost_table(table)
    assert np.array_equal(sail.time_s, altra.time_s)
    assert sail.energy_J == pytest.approx(altra.energy_J, rel=1e-12)


def test_bf16_runs_at_fp32_rate_on_neoverse_n1():
    dev = load_device("ampere-altra")
    assert dev.peak_flops("bf16") == pytest.approx(80 * 3.0e9 * 2 * 4 * 2)
    assert dev.peak_flops("fp16") == pytest.approx(2 * dev.peak_flops("fp32"))
    assert load_device("m2-ultra-tmac").peak_flops("bf16") == load_device("m2-ultra-tmac").peak_flops("fp16")


@pytest.mark.parametrize("name", ["ampere-altra", "ampere-altra-sail", "m2-ultra-tmac"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8, 16])
def test_time_floor_and_energy_parts(name, bits):
    dev = load_device(name)
    costs = dev.cost_table(_table(bits, copies=50, m=4))
    assert np.all(costs.time_s >= np.maximum(costs.compute_s, costs.memory_s) - 1e-18)
    parts = costs.compute_J + costs.memory_J + costs.static_J
    assert np.allclose(costs.energy_J, parts)
    assert np.all(costs.compute_J > 0) and np.all(costs.memory_J > 0) and np.all(costs.static_J > 0)


@pytest.mark.parametrize("name", ["ampere-altra", "ampere-altra-sail", "m2-ultra-tmac"])
def test_more_bandwidth_never_slower(name):
    table = _table(2)
    slow = load_device(name, {"memory.bandwidth_GBps": 50}).cost_table(table).time_s
    fast = load_device(name).cost_table(table).time_s
    assert np.all(fast <= slow) and fast.sum() < slow.sum()


def test_more_pim_arrays_never_slower():
    """Smaller arrays, more of them, read more rows at once (adders that never bind: smaller arrays also leave more
    partial sums to reduce, which at the preset's add rate outweighs the reads)."""
    table = _table(4, m=64)
    base = load_device("ampere-altra-sail", FREE_ADDS).cost_table(table).compute_s
    more = load_device("ampere-altra-sail", {"pim.array_kB": 4, **FREE_ADDS}).cost_table(table).compute_s
    assert np.all(more <= base) and more.sum() < base.sum()


def test_lut_fewer_bits_never_slower():
    """Fewer weight bits mean fewer lookups and less traffic; with the runtime picking the faster kernel,
    a kernel is never slower for it, and 2-bit weights are strictly faster than 4-bit ones."""
    for name in ("ampere-altra-sail", "m2-ultra-tmac"):
        dev = load_device(name)
        times = [dev.cost_table(_table(bits)).time_s.sum() for bits in (4, 3, 2)]
        assert times[0] >= times[1] >= times[2] and times[0] > times[2]


def _m2_gemv_times_by_hand(m: int) -> dict[int, float]:
    """A 4096 x 4096 GEMM of m tokens on m2-ultra-tmac's 16 threads, by hand from the preset: byte lanes per
    second 16 x 3.49e9 x 4 pipes x 16 (int8 dot products: 2 FLOP per lane op), 61 us serial part per kernel (its
    loss 61 x 15/16 us, every kernel here taking longer than 61 us on one thread), 800 GB/s of DRAM. 8-bit weights
    take the int8 dot product plus llama.cpp Q8_0's block scaling (6 NEON instructions per 32 weights besides the two
    dot products: 3 byte-lane slots per weight); 4-bit ones the cheaper of T-MAC's lookups (4 byte-lane ops per
    lookup, one lookup per 4 weights per bit plane per token) and the dequantizing kernel (the dot product plus 4.5
    byte-lane slots per weight of unpacking and block scaling)."""
    n = k = 4096
    lanes8, loss_s = 16 * 3.49e9 * 4 * 16, 61e-6 * (1 - 1 / 16)
    dot_s = 2.0 * m * n * k / (2 * lanes8)
    act_B = 2.0 * (m * k + m * n)
    memory_s = {bits: (n * k * (bits + 16 / 128) / 8 + act_B) / 800e9 for bits in (4, 8)}
    lookups_s = m * n * k / 4 * 4 * 4 / lanes8 + m * k / 4 * 16 / (16 * 3.49e9 * 4 * 8)
    four_s = min(dot_s + 4.5 * n * k / lanes8, lookups_s)
    eight_s = dot_s + 3 * n * k / lanes8
    return {8: max(eight_s, memory_s[8]) + loss_s, 4: max(four_s, memory_s[4]) + loss_s}


@pytest.mark.parametrize("m", [1, 16])
def test_4_and_8_bit_gemvs_on_16_m2_threads_by_hand(m):
    """Batch 1: the 8-bit GEMV is bound by its weights (21.3 us at 800 GB/s against 4.7 us of dot products and 14.1
    us of block scaling), so 4-bit weights (18.8 us of T-MAC lookups, cheaper than the dequantizing kernel's 25.8 us;
    10.8 us of traffic) are faster, 76.0 against 78.5 us with the 57.2 us thread loss paid on top of either bound.
    Counting that loss inside the compute term instead hid the 8-bit weights' traffic (8-bit decode came out faster).
    Batch 16: both are bound by compute (75 us of int8 dot products), 8-bit weights add 14.1 us of block scaling and
    4-bit ones 21.1 us of unpacking and block scaling (T-MAC's per-token lookups, 300 us, lose): a genuine regime
    where 8-bit weights are faster, as llama.cpp's Q8_0 kernel issues 6 instructions per 32-weight block besides its
    dot products against Q4_0's 9."""
    dev = load_device("m2-ultra-tmac")
    times = {bits: float(dev.cost_table(_table(bits, copies=40, m=m)).time_s[0]) for bits in (4, 8)}
    assert times == pytest.approx(_m2_gemv_times_by_hand(m), rel=1e-9)
    assert (times[4] < times[8]) if m == 1 else (times[4] > times[8])


def test_q8_0_weights_pay_block_scaling_hand_calculation():
    """Altra, 8-bit GEMM of 16 tokens: int8 dot products plus llama.cpp's Q8_0 per-block work
    (ggml_vec_dot_q8_0_q8_0, NEON: per 32 weights one vaddq_s32, vcvtq_f32_s32, two fp16-to-fp32 scale
    conversions, their product and vmlaq_n_f32 = 6 instructions x 16 byte lanes / 32 weights = 3 slots per weight),
    which every token's row pays like the 4-bit kernel's unpacking (once per weight per GEMM row)."""
    dev = load_device("ampere-altra")
    n = k = 4096
    lanes8 = 80 * 3.0e9 * 2 * 16
    compute_s = 2.0 * 16 * n * k / (2 * lanes8) + 3 * n * k / lanes8
    assert dev.cost_table(_table(8, m=16)).compute_s[0] == pytest.approx(compute_s, rel=1e-9)


@pytest.mark.parametrize("name", ["ampere-altra", "ampere-altra-sail"])
def test_fewer_weight_bits_never_slower_on_a_memory_bound_decode(name):
    """Batch-1 GEMVs on the Altra's 80 cores sit at the DRAM floor at every width, so fewer bits are never slower."""
    dev = load_device(name)
    times = [float(dev.cost_table(_table(bits)).time_s.sum()) for bits in (8, 6, 5, 4, 3, 2)]
    assert times == sorted(times, reverse=True), times


def test_runtime_picks_the_faster_kernel():
    """At batch 64 the per-token tables make T-MAC's lookups slower than the dequantizing SIMD kernel, so the
    kernel is priced as the baseline's: never slower than the same CPU without LUT kernels."""
    tmac = load_device("m2-ultra-tmac")
    plain = load_device("m2-ultra-tmac", {"lut": None})
    for m in (1, 64):
        table = _table(4, copies=20, m=m)
        assert np.all(tmac.cost_table(table).time_s <= plain.cost_table(table).time_s * (1 + 1e-12))


def test_tmac_removes_dequantization_cost():
    """The same M2 cores without LUT kernels (baseline) pay unpacking + MACs; T-MAC at 2 bits is cheaper."""
    data, _ = read_device_yaml("m2-ultra-tmac")
    table = _table(2)
    lut = load_device("m2-ultra-tmac").cost_table(table).compute_s.sum()
    baseline = load_device("m2-ultra-tmac", {"lut.max_weight_bits": 1}).cost_table(table).compute_s.sum()
    assert lut < baseline
    assert data["lut"]["max_weight_bits"] == 4


def test_weights_that_fit_in_cache_come_from_cache():
    """One small GEMV: its weights fit in L2, so they stream at L2 bandwidth, not DRAM."""
    dev = load_device("ampere-altra")
    small = KernelTable.from_kernels([_gemv(n=1024, k=1024)]).with_format(NumericFormat(weight_bits=4))
    costs = dev.cost_table(small)
    weight_B = 1024 * 1024 * (4 + 16 / 128) / 8
    act_B = 2.0 * (1024 + 1024)
    level = 0 if weight_B <= 5.12e6 else 1
    bandwidth = (7680e9, 7680e9)[level]
    assert costs.memory_s[0] == pytest.approx(act_B / 204.8e9 + weight_B / bandwidth, rel=1e-9)


def test_sail_area_adds_two_percent():
    assert load_device("ampere-altra-sail").area_mm2 == pytest.approx(1.02 * load_device("ampere-altra").area_mm2)


@pytest.fixture
def bad_preset(tmp_path, one_line_error):
    """bad_preset(edit): the error message (after the file name) of the SAIL preset edited by `edit`."""
    def load(edit) -> str:
        data, _ = read_device_yaml("ampere-altra-sail")
        edit(data)
        path = tmp_path / "cpu.yaml"
        path.write_text(yaml.safe_dump(data))
        where, message = one_line_error(lambda: load_device(str(path)))
        assert where == str(path) or where.startswith(f"{path}:")  # the file, and the line when it has one
        return message
    return load


def test_typo_in_cpu_key_is_one_line(bad_preset):
    message = bad_preset(lambda d: d["compute"].update(simd_pipe=d["compute"].pop("simd_pipes")))
    assert "compute.simd_pipe" in message and "simd_pipes" in message


def test_pim_level_must_exist(bad_preset):
    def edit(d):
        d["pim"]["cache_level"] = "l3"
    assert bad_preset(edit).startswith("pim.cache_level: found 'l3', allowed: l1, l2, slc")


def test_a_simd_engine_without_its_lookup_cost_is_one_line_in_found_allowed_form(bad_preset):
    def edit(d):
        d.pop("pim")
        d["lut"].update(engine="simd")
        d["lut"].pop("lookup_lane_ops", None)
    assert "lookup_lane_ops: found none with engine 'simd', allowed: the lane ops a lookup takes" in bad_preset(edit)


def test_pim_engine_needs_pim_section(bad_preset):
    assert bad_preset(lambda d: d.pop("pim")).startswith("lut.engine: found 'pim' without a pim section, allowed: ")


@pytest.mark.parametrize("edit,found", [
    (lambda d: d.pop("lut"), "no lut section"),
    (lambda d: d["lut"].update(engine="simd", lookup_lane_ops=4), "lut.engine 'simd'"),
])
def test_pim_section_needs_the_pim_engine(bad_preset, edit, found):
    """SRAM-PIM arrays run only a LUT engine's lookups: a pim section beside none would be priced for its area alone,
    a silent no-op in time and energy."""
    assert bad_preset(edit).startswith(f"pim: found beside {found}, allowed: beside a lut section with engine 'pim'")


@pytest.mark.parametrize("group_size,largest", [(5, 4), (8, 4)])
def test_simd_tables_must_fit_one_register(tmp_path, one_line_error, group_size, largest):
    """T-MAC's NEON kernel looks up a 2^4-entry int8 table with one TBL on a 128-bit register (Wei et al., EuroSys
    2025: g = 4 so that the table fits one register); the lookup count prices that instruction only, so a larger
    table is refused rather than priced as fewer lookups."""
    data, _ = read_device_yaml("m2-ultra-tmac")
    data["lut"]["group_size"] = group_size
    path = tmp_path / "cpu.yaml"
    path.write_text(yaml.safe_dump(data))
    where, message = one_line_error(lambda: load_device(str(path)))
    assert where.startswith(str(path))
    assert message.startswith(f"lut.group_size: found {group_size}, allowed: 1 to {largest} on the simd engine")


def test_wider_simd_registers_take_larger_tables():
    """A 512-bit register holds a 64-entry int8 table (2^6 x 8 bits): group size 6 is accepted there."""
    assert load_device("m2-ultra-tmac", {"compute.simd_width_bits": 512, "lut.group_size": 6}).spec.lut.group_size == 6
