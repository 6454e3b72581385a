"""NPU (systolic) and HBM-PIM cost model: hand calculations from the preset's numbers, and invariants."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import yaml

from explore.design_point import DesignPoint
from hw_models.npu import array_counts
from hw_models.registry import load_device, read_device_yaml
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable
from workloads.errors import InputError

PRESETS = ("neupims", "npu-only", "npu-pim-naive")


def gemm(m: int, n: int, k: int, dtype: str = "fp16") -> Kernel:
    return Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * m * n * k, weight_bytes=2.0 * k * n,
                  act_bytes=2.0 * (m * k + m * n), kv_bytes=0.0, dtype=dtype, tensor_core=True, m=m, n=n, k=k,
                  batch=1)


def decode_attention(batch: int, heads: int, kv_len: int, head_dim: int) -> Kernel:
    return Kernel(kind=KernelKind.ATTENTION_DECODE, op="sdpa", flops=4.0 * batch * heads * kv_len * head_dim,
                  weight_bytes=0.0, act_bytes=2.0 * 2 * batch * heads * head_dim,
                  kv_bytes=2.0 * 2 * batch * heads * kv_len * head_dim, dtype="fp16", tensor_core=True,
                  batch=batch, heads=heads, kv_heads=heads, q_len=1, kv_len=kv_len, head_dim=head_dim)


def norm(elements: int) -> Kernel:
    return Kernel(kind=KernelKind.NORM, op="layer_norm", flops=5.0 * elements, weight_bytes=0.0,
                  act_bytes=4.0 * elements, kv_bytes=0.0, dtype="fp16", tensor_core=False)


def costs(device, kernels):
    return device.cost_table(KernelTable.from_kernels(kernels))


def utilization(device, m: int, n: int, k: int) -> float:
    """Useful MACs over PE-cycles of the kernel's compute time."""
    c = device.cost(gemm(m, n, k))
    spec = device.spec
    return m * n * k / (spec.pes * spec.frequency_Hz * c.breakdown["compute_s"])


def test_presets_load_with_units_and_sub_batches():
    neupims, only, naive = (load_device(name) for name in PRESETS)
    assert neupims.units == ("npu", "pim") and naive.units == ("npu", "pim") and only.units == ("npu",)
    # Dual row buffers with interleaving split the decode batch; a single row buffer cannot overlap.
    assert (neupims.sub_batches, naive.sub_batches, only.sub_batches) == (2, 1, 1)


def test_peak_rates_from_the_neupims_config():
    # systolic_ws_128x128_dev.json: 8 arrays of 128 x 128 at 1 GHz, 8 vector cores of 128 lanes.
    device = load_device("neupims")
    assert device.peak_flops("bf16") == pytest.approx(2 * 8 * 128 * 128 * 1e9)
    assert device.peak_flops("fp32") == pytest.approx(8 * 128 * 1e9)
    assert device.bandwidth_Bps == pytest.approx(32 * 128 / 8 * 2 * 1e9)  # 32 channels, 128 bit, DDR at 1 GHz


def test_large_gemm_cycles_match_hand_tiling():
    # m=256, n=k=4096 on 8 arrays of 128x128, double-buffered: the accumulator (1024 KB / 8 arrays / (128 x 4 B))
    # and the half scratchpad (1024 KB / 8 / 2 / (128 x 2 B)) both hold 256 rows: one chunk of 256.
    # 32 x 32 tiles = 1024 folds, 128 rounds of max(256, 128) cycles, plus a first load (128) and fill/drain (254).
    device = load_device("neupims")
    cycles = 128 * 256 + 128 + 254
    assert device.cost(gemm(256, 4096, 4096)).breakdown["compute_s"] == pytest.approx(cycles / 1e9)


def test_gemv_uses_the_array_about_one_row_in_rows():
    # Batch-1 GEMV: each fold streams one row but still waits R = 128 cycles for the next weight tile.
    # Hand: util_gemv = 1 / (R + (2R + C - 2) / rounds) with 128 rounds; util_gemm from the cycles above.
    device = load_device("neupims")
    gemv, large = utilization(device, 1, 4096, 4096), utilization(device, 256, 4096, 4096)
    assert gemv == pytest.approx(1 / (128 + (2 * 128 + 128 - 2) / 128), rel=1e-9)
    assert large == pytest.approx(256 * 128 / (128 * 256 + 382), rel=1e-9)
    assert gemv / large == pytest.approx(1 / 128, rel=0.05)


def test_edge_tiles_are_padded():
    # k = 129 needs 2 row tiles where 128 needs 1, whichever operand the arrays hold (k is the held rows either
    # way). Direct: 8 (k = 128) or 16 column-by-row tiles x 2 chunks of 256 rows = 16 or 32 folds, 2 or 4 rounds on
    # 8 arrays; transposed (holding the 128 x 512 inputs, streaming n = 1024 in 4 chunks of 256): 4 or 8 tiles x 4
    # chunks, the same rounds. The one extra row of k costs two rounds, and utilization drops.
    device = load_device("neupims")
    full = device.cost(gemm(512, 1024, 128)).breakdown["compute_s"]
    edge = device.cost(gemm(512, 1024, 129)).breakdown["compute_s"]
    assert full == pytest.approx((2 * 256 + 382) / 1e9)
    assert edge == pytest.approx((4 * 256 + 382) / 1e9)
    assert utilization(device, 512, 1024, 129) < 0.8 * utilization(device, 512, 1024, 128)


def test_single_buffered_array_pays_the_load_and_fill_every_fold():
    device = load_device("neupims", {"npu.double_buffered": False})
    # 1024 folds / 8 arrays = 128 rounds of (load 128 + stream 256 + fill/drain 254).
    assert device.cost(gemm(256, 4096, 4096)).breakdown["compute_s"] == pytest.approx(128 * (128 + 256 + 254) / 1e9)


def test_sram_limited_chunks_force_weight_or_input_rereads():
    # m = 2048, n = k = 4096 on 8 arrays whose buffers hold 256 streamed rows each. Direct (weights held, the 2048
    # input rows streamed in 8 chunks): re-read the weights 7 more times (7 x 32 MiB) or the inputs (16 MiB) once
    # per further group of 1024 columns (4096 / (128 x 8) = 4 groups: 3 more), 48 MiB. Transposed (inputs held, the
    # 4096 weight rows streamed in 16 chunks): the inputs 15 more times, or the weights once per further group of
    # 1024 of the 2048 input columns (1 more), 32 MiB. Both take 1024 rounds of 256 cycles (8192 folds), so the
    # tie goes to the lesser traffic: 32 MiB.
    device = load_device("neupims")
    k = gemm(2048, 4096, 4096)
    inputs = 2.0 * 2048 * 4096
    direct = min(7 * k.weight_bytes, 3 * inputs)
    transposed = min(15 * inputs, 1 * k.weight_bytes)
    assert transposed < direct
    assert device.cost(k).breakdown["memory_s"] == pytest.approx((k.total_bytes + transposed) / device.bandwidth_Bps)


def test_decode_attention_holds_the_query_and_streams_the_keys():
    # npu-only with 256-row arrays and 2048 KB buffers, decode attention of 64 sequences x 32 heads over 300 keys
    # (head_dim 128): 4096 products (QK^T and PV per head, priced alike) of one query row. Holding each key tile
    # and streaming the one query costs ceil(300 / 128) = 3 tiles of 256 load cycles each: 12288 folds, 1536
    # rounds, 393,854 cycles (393.9 us), above the memory floor. Holding the query (128 x 1, one tile) and
    # streaming the 300 keys: the half scratchpad holds 2048 KB / 2 / (256 x 2 B) = 2048 rows, 256 per array,
    # so 2 chunks of 150: 8192 folds, 1024 rounds of max(150, 256) + 256 + 382 = 262,782 cycles. The KV read,
    # 315.6 MB at 1024 GB/s = 308.2 us, then bounds it, as it does on the 128-row arrays: twice the rows do not slow
    # a memory-bound kernel.
    sram = {"sram.scratchpad_KB": 2048, "sram.accumulator_KB": 2048}
    wide, square = load_device("npu-only", {"npu.array_rows": 256, **sram}), load_device("npu-only", sram)
    kernel = decode_attention(batch=64, heads=32, kv_len=300, head_dim=128)
    floor_s = (2 * 2 * 64 * 32 * 128 + 2 * 2 * 64 * 32 * 300 * 128) / 1024e9
    cost = wide.cost(kernel)
    assert cost.breakdown["compute_s"] == pytest.approx((1024 * 256 + 256 + 382) / 1e9)
    assert cost.time_s == pytest.approx(floor_s)
    assert square.cost(kernel).time_s == pytest.approx(floor_s)


def test_decode_attention_on_pim_from_the_bank_rate():
    # 32 channels x 32 banks x 16 multipliers every 2 cycles at 1 GHz = 8.192e12 MAC/s; a 1 KB row is 32 commands
    # (64 cycles) then a 120-cycle row switch, so a row takes the artifact's 184-cycle GEMV latency
    # (casys-kaist/NeuPIMs src/scheduler/Scheduler.cc); the query/outputs cross the 1024 GB/s channels.
    device = load_device("neupims")
    k = decode_attention(batch=64, heads=32, kv_len=512, head_dim=128)
    table = costs(device, [k])
    macs = k.flops / 2
    bank_s = macs / 8.192e12 * 184 / 64
    assert table.time_s[0] == pytest.approx(bank_s + k.act_bytes / 1.024e12)
    assert device.units[int(table.unit_index[0])] == "pim"


def test_pim_beats_the_npu_on_decode_attention_and_leaves_gemms_on_the_npu():
    k = decode_attention(batch=64, heads=32, kv_len=512, head_dim=128)
    pim, npu = costs(load_device("neupims"), [k, gemm(64, 4096, 4096)]), costs(load_device("npu-only"), [k])
    # On the NPU the GEMV is memory-bound at the external bandwidth: 16x less than the in-bank rate here.
    assert npu.time_s[0] == pytest.approx(k.total_bytes / 1.024e12)
    assert pim.time_s[0] < npu.time_s[0] / 5
    assert pim.unit_index.tolist() == [1, 0]


def multi_query_attention(queries: int, kv_len: int, batch: int = 8, heads: int = 32, head_dim: int = 128) -> Kernel:
    """A speculative verification's attention: `queries` tokens per sequence over a KV cache of kv_len keys."""
    return Kernel(kind=KernelKind.ATTENTION_PREFILL, op="sdpa",
                  flops=4.0 * batch * heads * queries * kv_len * head_dim, weight_bytes=0.0,
                  act_bytes=2.0 * 2 * batch * heads * queries * head_dim,
                  kv_bytes=2.0 * 2 * batch * heads * kv_len * head_dim, dtype="fp16", tensor_core=True,
                  batch=batch, heads=heads, kv_heads=heads, q_len=queries, kv_len=kv_len, head_dim=head_dim)


def test_attention_of_few_queries_over_a_long_kv_runs_in_the_banks_and_of_many_on_the_arrays():
    # Each query is one GEMV over the keys in the banks (the 184-cycle row per 64 cycles of commands, as above):
    # q x 2 x batch x heads x kv x d MACs / 8.192e12 x 184 / 64, plus the queries and outputs over 1024 GB/s. The
    # arrays cannot beat reading the KV cache over the 1024 GB/s channels. At q = 2 the banks take 2 x 184 / 64 =
    # 5.75 MACs' time per 2-byte key element where the channels take 2 B / 1.024e12 = 16 (in 1 / 8.192e12 s units):
    # 2.8x faster. At q = 16, 46 against 16: the arrays, which stream the keys past the queries once, win.
    neupims, only = load_device("neupims"), load_device("npu-only")
    for queries in (1, 2, 3, 5, 6, 8, 16, 64):
        k = multi_query_attention(queries, kv_len=4096)
        in_banks_s = k.flops / 2 / 8.192e12 * 184 / 64 + k.act_bytes / 1.024e12
        on_arrays_s = float(costs(only, [k]).time_s[0])
        table = costs(neupims, [k])
        assert table.time_s[0] == pytest.approx(min(in_banks_s, on_arrays_s))
        assert neupims.units[int(table.unit_index[0])] == ("pim" if in_banks_s < on_arrays_s else "npu")
        if queries == 2:
            assert in_banks_s < k.kv_bytes / 1.024e12 < on_arrays_s
        if queries == 16:
            assert table.time_s[0] == pytest.approx(on_arrays_s) and on_arrays_s < in_banks_s


def gqa_decode_attention(batch: int, heads: int, kv_heads: int, kv_len: int, head_dim: int = 128) -> Kernel:
    """Decode attention of `heads` query heads sharing `kv_heads` KV heads (GQA): the KV cache of the KV heads."""
    return replace(decode_attention(batch, heads, kv_len, head_dim), kv_heads=kv_heads,
                   kv_bytes=2.0 * 2 * batch * kv_heads * kv_len * head_dim)


def test_gqa_decode_attention_runs_each_kv_head_once_for_its_query_heads():
    # Llama-3-8B (32 query heads, 8 KV heads, head_dim 128), batch 1, 4096 keys, on npu-only. Off-chip: the 8 KV
    # heads' keys and values, 2 x 8 x 4096 x 128 x 2 B = 16,777,216 B, plus the 32 queries and outputs (16,384 B),
    # at 1024 GB/s: 16.40 us. Each KV head's 4 query heads are the rows of one product (m = 4, k = 128, n = 4096),
    # QK^T and PV: 16 products. Holding the 128 x 4 queries (one tile) and streaming the keys in chunks of 256
    # (2048 buffer rows over 8 arrays): 16 x 16 = 256 folds, 32 rounds of 256 cycles + 382 = 8,574 cycles, under
    # the KV read. One product per query head (before: 64 products, 1024 folds) took 128 x 256 + 382 = 33,150
    # cycles, twice the KV read.
    device = load_device("npu-only")
    cost = device.cost(gqa_decode_attention(batch=1, heads=32, kv_heads=8, kv_len=4096))
    floor_s = (2 * 2 * 8 * 4096 * 128 + 2 * 2 * 32 * 128) / 1024e9
    assert cost.breakdown["compute_s"] == pytest.approx((32 * 256 + 382) / 1e9)
    assert cost.breakdown["memory_s"] == pytest.approx(floor_s)
    assert cost.time_s == pytest.approx(floor_s)


def test_gqa_decode_attention_takes_the_faster_of_the_banks_and_the_arrays():
    # On neupims each query is a GEMV in the banks: 32 queries x 2 x 4096 x 128 MACs / 8.192e12 x 184 / 64
    # (11.78 us) for Llama-3-8B at batch 1 and 4096 keys, below the arrays' 16.40 us KV read (above): the banks.
    # The banks read a KV head's rows once per query it serves: 4 x 16,777,216 B at 1.99 pJ/bit, and the queries and
    # outputs cross the channels at 3.97 pJ/bit. Llama-2-70B's 64 query heads over 8 KV heads (g = 8): 23.55 us of
    # GEMVs against the same 16.40 us KV read on the arrays (16 products x 16 chunks = 256 folds, 8,574 cycles):
    # the arrays. Before, the arrays ran one product per query head (2048 folds, 65,918 cycles) and the banks won.
    device = load_device("neupims")
    for heads, unit in ((32, "pim"), (64, "npu")):
        k = gqa_decode_attention(batch=1, heads=heads, kv_heads=8, kv_len=4096)
        in_banks_s = heads * 2 * 4096 * 128 / 8.192e12 * 184 / 64 + k.act_bytes / 1.024e12
        floor_s = (k.kv_bytes + k.act_bytes) / 1.024e12
        table = costs(device, [k])
        assert device.units[int(table.unit_index[0])] == unit
        assert table.time_s[0] == pytest.approx(min(in_banks_s, floor_s))
        if unit == "pim":
            in_bank_J = heads // 8 * k.kv_bytes * 8 * 1.99e-12 + k.act_bytes * 8 * 3.97e-12
            assert table.memory_J[0] == pytest.approx(in_bank_J)


@pytest.mark.parametrize("name", ("npu-only", "neupims", "npu-pim-naive"))
@pytest.mark.parametrize("queries", (1, 4))
def test_fewer_kv_heads_never_make_attention_slower_or_read_more(name, queries):
    # Invariant: at equal query heads, sharing KV heads among more of them (MHA 32, GQA 8 and 4, MQA 1) reads fewer
    # keys and runs no more products, so attention never slows and never reads more off-chip.
    device = load_device(name)
    for batch, kv_len in ((1, 4096), (16, 1000), (64, 300)):
        kernels = [replace(gqa_decode_attention(batch, 32, kv_heads, kv_len), q_len=queries,
                           flops=4.0 * batch * 32 * queries * kv_len * 128,
                           act_bytes=2.0 * 2 * batch * 32 * queries * 128) for kv_heads in (32, 8, 4, 1)]
        table = costs(device, kernels)
        assert np.all(np.diff(table.time_s) <= 1e-15), (batch, kv_len)
        if name == "npu-only":
            assert np.all(np.diff(table.memory_s) <= 1e-15), (batch, kv_len)


def test_mha_attention_is_one_product_per_head():
    # g = 1: a KV head per query head, as a row without KV heads (0) is read, so naming them changes nothing; the
    # MHA hand figures above (test_decode_attention_holds_the_query_and_streams_the_keys, the PIM bank rate) hold.
    for name in PRESETS:
        device = load_device(name)
        mha = decode_attention(batch=8, heads=32, kv_len=2048, head_dim=128)
        table = costs(device, [mha, replace(mha, kv_heads=0)])
        assert table.time_s[0] == table.time_s[1] and table.energy_J[0] == table.energy_J[1]


def test_vector_kernels_at_the_vector_rate():
    device = load_device("npu-only")
    k = norm(64 * 4096)
    c = device.cost(k)
    assert c.breakdown["compute_s"] == pytest.approx(k.flops / (8 * 128 * 1e9))
    assert c.time_s == pytest.approx(max(k.flops / 1.024e12, k.total_bytes / 1.024e12))


KERNELS = [gemm(1, 4096, 4096), gemm(64, 4096, 4096), gemm(512, 16384, 4096), gemm(4096, 4096, 4096),
           gemm(3, 100, 77), decode_attention(8, 32, 300, 128), norm(4096 * 8)]


@pytest.mark.parametrize("name", PRESETS)
def test_time_at_least_floors_and_energy_sums(name):
    table = costs(load_device(name), KERNELS)
    assert np.all(table.time_s >= np.maximum(table.compute_s, table.memory_s) - 1e-15)
    assert np.allclose(table.energy_J, table.compute_J + table.memory_J + table.static_J)
    assert np.all(table.compute_J > 0) and np.all(table.memory_J > 0) and np.all(table.static_J > 0)


@pytest.mark.parametrize("field, low, high", [
    ("memory.bandwidth_GBps", 500, 2000), ("npu.array_count", 4, 16), ("npu.frequency_MHz", 500, 2000),
    ("sram.accumulator_KB", 512, 4096), ("pim.multipliers_per_bank", 8, 32),
])
def test_more_resources_never_slower(field, low, high):
    slow = costs(load_device("neupims", {field: low}), KERNELS).time_s
    fast = costs(load_device("neupims", {field: high}), KERNELS).time_s
    assert np.all(fast <= slow * (1 + 1e-12))


ARRAY_SHAPES = ((1, 4096, 4096), (64, 4096, 4096), (256, 4096, 4096), (256, 11008, 4096), (1024, 4096, 4096),
                (2048, 4096, 11008), (512, 1025, 128), (3, 100, 77))


@pytest.mark.parametrize("name", ["npu-only", "neupims"])
def test_more_arrays_at_the_same_buffers_never_slower(name, evaluator):
    """16 arrays priced a 256 x 4096 x 4096 GEMM 38.9 us against 8 arrays' 36.9, and Llama-2-7B's TTFT on npu-only
    at batch 1, 256 tokens 20.7 ms against 19.6: the arrays share the buffers, so 16 of them stream chunks of 128 rows
    and re-read the inputs. A kernel may leave arrays idle, which a chip with fewer arrays does perforce, so more
    arrays are never slower, kernel by kernel and over a whole prefill."""
    kernels = [gemm(m, n, k) for m, n, k in ARRAY_SHAPES] + KERNELS
    times = [costs(load_device(name, {"npu.array_count": count}), kernels).time_s for count in (4, 8, 16)]
    for fewer, more in zip(times, times[1:], strict=False):
        assert np.all(more <= fewer * (1 + 1e-12))
    ttft = [evaluator.evaluate(DesignPoint(model="llama-2-7b", device=name, batch=1, prompt=256, output=32,
                                           overrides=(("npu.array_count", count),))).metrics["ttft_s"]
            for count in (4, 8, 16)]
    assert ttft[2] <= ttft[1] * (1 + 1e-12) and ttft[1] <= ttft[0] * (1 + 1e-12), ttft


def test_a_gemm_leaves_arrays_idle_where_their_share_of_the_buffers_is_too_small():
    """256 x 4096 x 4096 on 16 arrays by hand. On all 16 a chunk holds 1024 KB / 16 / (128 x 4 B) = 128 rows: two
    chunks, and holding 16 of the 32 n-tiles at once re-reads the 2 MiB of inputs once (38.9 us at 1,024 GB/s). On 8
    a chunk holds all 256 rows: 128 rounds of 256 cycles plus a first load (128) and fill/drain (254), 33.2 us, under
    the 36.9 us of reading the weights and activations once, so it runs there."""
    device = load_device("npu-only", {"npu.array_count": 16})
    k = gemm(256, 4096, 4096)
    once = 2.0 * 4096 * 4096 + 2.0 * 256 * (4096 + 4096)
    c = device.cost(k)
    assert c.time_s == pytest.approx(once / 1.024e12, rel=1e-12)
    assert c.breakdown["compute_s"] == pytest.approx((128 * 256 + 128 + 254) / 1e9, rel=1e-12)
    assert c.time_s < (once + 2.0 * 256 * 4096) / 1.024e12  # what all 16 arrays would take


@pytest.mark.parametrize("name", ["npu-only", "neupims"])
def test_each_kernel_takes_its_best_array_count(name):
    """A chip of 16 arrays prices each kernel at the least time of the same chip with 1 to 16 arrays: its mappings
    are theirs (the buffers' share of u arrays does not depend on how many sit beside them)."""
    kernels = [gemm(m, n, k) for m, n, k in ARRAY_SHAPES] + KERNELS
    best = np.min([costs(load_device(name, {"npu.array_count": count}), kernels).time_s for count in range(1, 17)],
                  axis=0)
    np.testing.assert_array_equal(costs(load_device(name, {"npu.array_count": 16}), kernels).time_s, best)


@pytest.mark.parametrize("count", [45, 50, 60, 100])
def test_a_kernel_runs_on_no_more_arrays_than_the_chip_has(count):
    """npu-only's buffers hold 2,048 rows: on 50 arrays a chunk holds 40, and the most arrays whose chunk holds 40
    rows is 2048 // 40 = 51, one more than a 50-array chip has."""
    device = load_device("npu-only", {"npu.array_count": count})
    tried = array_counts(device.spec, np.array([2.0]), 4096.0)
    assert tried.max() == count and tried.min() >= 1


def test_in_bank_access_cheaper_than_external():
    k = decode_attention(batch=64, heads=32, kv_len=512, head_dim=128)
    assert costs(load_device("neupims"), [k]).memory_J[0] < costs(load_device("npu-only"), [k]).memory_J[0]


def test_gemm_energy_from_action_counts():
    # fp16 MAC 1.5 pJ; off-chip 3.97 pJ/bit; SRAM 2.5 pJ/B on 2 x traffic + streamed inputs + partial sums.
    device = load_device("npu-only")
    m, n, k = 64, 4096, 4096
    c = costs(device, [gemm(m, n, k)])
    assert c.compute_J[0] == pytest.approx(m * n * k * 1.5e-12)
    traffic = gemm(m, n, k).total_bytes
    sram = 2 * traffic + m * k * 2 * (n / 128) + 2 * m * n * 4 * (k / 128)
    assert c.memory_J[0] == pytest.approx(traffic * 8 * 3.97e-12 + sram * 2.5e-12)
    assert c.static_J[0] == pytest.approx(device.spec.power.idle_W * c.time_s[0])


def _write(tmp_path, data) -> str:
    path = tmp_path / "npu.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_wrong_key_is_one_line(tmp_path):
    data, _ = read_device_yaml("neupims")
    data["pim"]["multipliers_per_bnak"] = data["pim"].pop("multipliers_per_bank")
    path = _write(tmp_path, data)
    with pytest.raises(InputError) as info:
        load_device(path)
    message = str(info.value)
    assert "\n" not in message and path in message and "pim.multipliers_per_bnak" in message
    assert "multipliers_per_bank" in message


def test_interleaving_without_dual_row_buffers_is_refused(tmp_path, one_line_error):
    data, _ = read_device_yaml("neupims")
    data["pim"]["row_buffers"] = "single"
    _, message = one_line_error(lambda: load_device(_write(tmp_path, data)))
    assert message.startswith("pim: sub_batch_interleaving needs row_buffers: dual")


def test_mac_energies_without_a_16_bit_one_are_refused(tmp_path, one_line_error):
    """A device file whose energy.mac_pJ lists only int8 loaded, then crashed pricing the arrays' 16-bit MACs with a
    KeyError traceback (no entry for fp16 or a wider dtype). It is refused in one line, naming the key and what it
    found; int8 beside fp16 still loads."""
    data, _ = read_device_yaml("npu-only")
    data["energy"]["mac_pJ"] = {"int8": 0.23}
    where, message = one_line_error(lambda: load_device(_write(tmp_path, data)))
    assert where.startswith(str(tmp_path))
    assert message.startswith("energy: mac_pJ: found dtypes int8, allowed: fp16 or bf16")
    data["energy"]["mac_pJ"] = {"int8": 0.23, "fp16": 1.5}
    assert load_device(_write(tmp_path, data)).spec.mac_J("bf16") == pytest.approx(1.5e-12)


def test_gpt3_presets_match_brown_et_al():
    from workloads.model_config import load_model_config

    # Brown et al. 2020 Table 2.1: 6.7B (32 layers, d_model 4096, 32 heads) and 13B (40 layers, 40 heads of 128).
    for name, layers, hidden, heads, params in (("gpt3-7b", 32, 4096, 32, 6.7e9), ("gpt3-13b", 40, 5120, 40, 13e9)):
        cfg = load_model_config(name)
        assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.intermediate_size) == (layers, hidden, heads,
                                                                                           4 * hidden)
        assert cfg.param_count() == pytest.approx(params, rel=0.02)
