"""Hybrid attention placement (sim/attention_pool.py, APEX): the model's devices attend to the sequences whose KV
they hold, the attention devices to the rest; the schedule of one iteration, its invariants, where the blocks lie."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hw_models.link import load_link_model
from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.kv_eviction import H2O, Eviction
from kernels.kv_policy import KVPolicy
from kernels.shapes import StepTemplate, step_shape
from sim.attention_pool import AttentionPool, hybrid_time_s
from sim.costs import IterationCostModel
from sim.kv_cache import PagedKVCache
from sim.serving import serving_memory


@pytest.fixture(scope="module")
def template(tiny_llama, trace_of) -> StepTemplate:
    def trace(phase: str, batch: int, prompt: int):
        if phase == "decode":
            return trace_of(tiny_llama, "decode", batch, 1, prompt)
        return trace_of(tiny_llama, "prefill", batch, prompt)

    return StepTemplate.from_model(tiny_llama, NumericFormat(), trace)


def _costs(template, *, host=None, link="pcie3-x16", device="h100-sxm", bucket=0) -> IterationCostModel:
    pool = AttentionPool(device=host or load_device("ampere-altra"), devices=1, template=template,
                         links=(load_link_model(link),), ports=1, micro_batches=1, out_B_per_token=1536.0,
                         back_B_per_token=512.0, placement="hybrid")
    return IterationCostModel(load_device(device), template, execution="graphs", attention=pool,
                              kv_bucket_tokens=bucket)


def _hybrid(decode_kv: list[int], apart: int, chunks=(), window=None) -> object:
    """A shape whose last `apart` decoding sequences lie on the attention devices (as sim/replica.py places them)."""
    shape = step_shape(chunks=list(chunks), decode_kv=decode_kv, sampled=len(decode_kv) + len(chunks), window=window)
    placed = step_shape(decode_kv=decode_kv[len(decode_kv) - apart:], sampled=apart, window=window)
    return replace(shape, apart_seqs=placed.decode_seqs, apart_kv=placed.decode_kv, apart_work=placed.decode_work)


def test_the_hybrid_bound_by_hand():
    """The model's devices take 5 (1 of it their own attention); the host's attention 2 and 10 layers of sends of
    0.1 + 0.05 wait beside that 1: 5 + (2 + 1.5 - 1) = 7.5. A host faster than the GPU's own attention hides whole."""
    assert hybrid_time_s(5.0, 1.0, 2.0, 0.1, 0.05, layers=10) == pytest.approx(7.5)
    assert hybrid_time_s(5.0, 3.0, 1.0, 0.05, 0.05, layers=10) == pytest.approx(5.0)


@pytest.mark.parametrize("chunks", [(), ((64, 0),)], ids=["decode", "mixed"])
def test_no_sequence_apart_is_the_model_s_devices_alone(template, chunks):
    """Invariant: a hybrid pool with every sequence's KV on the model's devices prices exactly the iteration without
    attention devices (time, energy, time by class)."""
    plain = IterationCostModel(load_device("h100-sxm"), template, execution="graphs")
    shape = _hybrid([300] * 6, 0, chunks)
    a, b = plain.price(shape), _costs(template).price(shape)
    assert b.time_s == a.time_s
    assert (b.compute_J, b.memory_J) == (a.compute_J, a.memory_J)
    np.testing.assert_array_equal(b.class_time_s, a.class_time_s)


def test_time_is_never_below_either_side_s_work(template):
    """Invariant: a hybrid iteration takes at least the model's devices' work (every sequence's layers and their own
    sequences' attention) and at least the host's attention of its sequences."""
    costs = _costs(template)
    host = costs.attention
    for apart in (1, 4, 12, 16):
        shape = _hybrid([2000] * 16, apart)
        time_s = costs.price(shape).time_s
        own = replace(shape, decode_seqs=16 - apart, decode_kv=shape.decode_kv - shape.apart_kv, apart_seqs=0,
                      apart_kv=0)
        gpu_s = IterationCostModel(costs.device, template, execution="graphs")
        table, counts = template.stage_table(own, 1)
        model_s = float((costs.device.cost_table(table, "graphs").time_s * counts[0]).sum())
        if apart == 16:  # the model's devices attend to none: their rows but attention
            model_s = float((costs.device.cost_table(table, "graphs").time_s * counts[0])[~table.attention_mask].sum())
        heads, head_counts = template.stage_table(step_shape(decode_kv=[2000] * apart, sampled=apart), 1)
        host_s = float((host.device.cost_table(heads, "graphs").time_s * head_counts[0])[heads.attention_mask].sum())
        assert time_s >= model_s * (1 - 1e-12)
        assert time_s >= host_s * (1 - 1e-12)
        assert time_s >= gpu_s.price(replace(own, apart_seqs=0)).time_s * (1 - 1e-12) or apart == 16


def test_a_faster_link_or_host_memory_is_never_slower(template):
    """Invariants: a PCIe 4 link instead of PCIe 3, or host DRAM of twice the bandwidth, never makes an iteration
    slower; more sequences apart never make the host's attention cheaper."""
    slow = _costs(template)
    fast_link = _costs(template, link="pcie4-x16")
    fast_host = _costs(template, host=load_device("ampere-altra", {"memory.bandwidth_GBps": 409.6}))
    for apart in (1, 8, 32):
        shape = _hybrid([1500] * 32, apart)
        base = slow.price(shape).time_s
        assert fast_link.price(shape).time_s <= base * (1 + 1e-12)
        assert fast_host.price(shape).time_s <= base * (1 + 1e-12)


def test_energy_is_the_gpu_part_plus_the_host_s(template):
    """The iteration's dynamic energy is the model's devices' (their sequences' attention and everyone's layers)
    plus the host's attention of its sequences, each priced on its own device."""
    costs = _costs(template)
    shape = _hybrid([800] * 10, 4)
    gpu_J = 0.0
    for part, rows in ((step_shape(decode_kv=[800] * 10, sampled=10), "layers"),
                       (step_shape(decode_kv=[800] * 6, sampled=6), "attention")):
        table, counts = template.stage_table(part, 1)
        gpu = costs.device.cost_table(table, "graphs")
        mask = table.attention_mask if rows == "attention" else ~table.attention_mask
        gpu_J += float((gpu.compute_J + gpu.memory_J)[mask] @ counts[0][mask])
    heads, head_counts = template.stage_table(step_shape(decode_kv=[800] * 4, sampled=4), 1)
    cpu = costs.attention.device.cost_table(heads, "graphs")
    mask = heads.attention_mask
    cpu_J = float((cpu.compute_J + cpu.memory_J)[mask] @ head_counts[0][mask])
    cost = costs.price(shape)
    assert cost.compute_J + cost.memory_J == pytest.approx(gpu_J + cpu_J, rel=1e-9)


# An eviction of made-up round ratios for a hand calculation (not a method's): per key kept, a quarter more bytes and
# half more FLOPs every step, and a half more of each on a step that evicts (one whose cache outgrows the budget).
_EVICTION = Eviction(method=H2O, overhead_bytes=0.25, overhead_flops=0.5, evict_bytes=0.5, evict_flops=0.5,
                     held_share=0.0, prefill_score_B=0.0)


@pytest.mark.parametrize("bucket", [0, 16])
def test_an_eviction_s_work_is_split_by_each_side_s_own_sequences(template, bucket):
    """Two sequences under an eviction to 128 tokens, the one of 300 apart: the one of 128 evicts nothing, reading
    128 x 1.25 = 160 keys' worth and working 128 x 1.5 = 192; the one of 300 keeps 128 and evicts every step,
    reading 128 x 1.75 = 224 and working 128 x 2 = 256. Each side's attention is its own sequence's (its work per
    key 1.2 and 1.14, where the step's 448 / 384 = 1.17 would move FLOPs between them): the iteration's energy is the
    model's devices' (both sequences' layers, the first one's attention) plus the host's attention of the second,
    each priced alone. Every figure is a multiple of the 16-token bucket, so bucketing keeps them exact."""
    policy = KVPolicy(window=128, eviction=_EVICTION)
    own, apart = step_shape(decode_kv=[128], sampled=1, window=policy), step_shape(decode_kv=[300], sampled=1,
                                                                                 window=policy)
    assert (own.decode_kv, own.decode_work, apart.decode_kv, apart.decode_work) == (160, 192.0, 224, 256.0)
    costs = _costs(template, bucket=bucket)
    shape = _hybrid([128, 300], 1, window=policy)
    assert costs._representative(costs._bucket(shape)) == shape
    table, counts = template.stage_table(shape, 1)
    gpu = costs.device.cost_table(table, "graphs")
    gpu_J = float((gpu.compute_J + gpu.memory_J)[~table.attention_mask] @ counts[0][~table.attention_mask])
    table, counts = template.stage_table(own, 1)
    gpu = costs.device.cost_table(table, "graphs")
    gpu_J += float((gpu.compute_J + gpu.memory_J)[table.attention_mask] @ counts[0][table.attention_mask])
    heads, head_counts = template.stage_table(apart, 1)
    cpu = costs.attention.device.cost_table(heads, "graphs")
    cpu_J = float((cpu.compute_J + cpu.memory_J)[heads.attention_mask] @ head_counts[0][heads.attention_mask])
    cost = costs.price(shape)
    assert cost.compute_J + cost.memory_J == pytest.approx(gpu_J + cpu_J, rel=1e-9)


def test_a_sequence_is_placed_at_admission_for_its_whole_run():
    """Ten device blocks of 16 tokens, the shared prefix taking one: requests whose whole KV takes 4, 5, 3 and 2 blocks
    (3, 4, 2 and 1 past the shared prefix) are placed in turn: the first three on the devices (1 + 3 + 4 + 2 = 10),
    the fourth on the attention devices. When the second finishes, its 4 blocks go to the next admitted, not to the
    fourth, which stays where it was placed (no sequence moves for free)."""
    kv = PagedKVCache(capacity_blocks=40, block_tokens=16, prefix_tokens=16, device_blocks=10)
    for seq, final in ((0, 16 * 4), (1, 16 * 5), (2, 16 * 3), (3, 16 * 2)):
        kv.hold(seq, 17)  # its first tokens: it shares the prefix's block
        kv.place(seq, final)
    assert kv.apart([0, 1, 2, 3]) == {3}
    kv.release(1)
    kv.hold(4, 17)
    kv.place(4, 16 * 4)  # 3 blocks past the prefix: in the 4 the second left
    assert kv.apart([0, 2, 3, 4]) == {3}
    assert PagedKVCache(capacity_blocks=4, block_tokens=16).apart([0, 1]) == set()
    with pytest.raises(ValueError, match="device_blocks"):
        PagedKVCache(capacity_blocks=4, block_tokens=16, device_blocks=5)


def test_hybrid_memory_holds_the_gpu_s_blocks_and_the_host_s():
    """An 16 GB GPU with 13.5 GB of weights and 0.5 GB of activations leaves 2 GB: 1,000 blocks of 2 MB; a host of
    100 GB adds 50,000. Never fewer blocks than the GPU alone holds; apart, the host's only."""
    common = dict(capacity_B=16e9, weights_B=13.5e9, activations_B=0.5e9, kv_bytes_per_token=2e6 / 16,
                  block_tokens=16)
    alone = serving_memory(**common)
    hybrid = serving_memory(**common, kv_devices=1, kv_capacity_B=100e9, hybrid=True)
    apart = serving_memory(**common, kv_devices=1, kv_capacity_B=100e9)
    assert (alone.kv_blocks, alone.device_kv_blocks) == (1000, None)
    assert (hybrid.kv_blocks, hybrid.device_kv_blocks) == (51000, 1000)
    assert (apart.kv_blocks, apart.device_kv_blocks) == (50000, None)
    assert hybrid.kv_blocks >= alone.kv_blocks
