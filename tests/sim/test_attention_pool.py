"""Model-attention disaggregation (sim/attention_pool.py): the schedule bound of micro-batches taking turns, the
shares an iteration splits in, and an iteration priced with its attention on devices of its own."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hw_models.link import load_link_model
from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.parallel import shard_tensor_parallel
from kernels.shapes import StepShape, StepTemplate, step_shape
from sim.attention_pool import AttentionPool, disaggregated_time_s, sent_bytes_per_token
from sim.costs import IterationCostModel
from workloads.model_config import load_model_config


class _FreeLink:
    """A link whose sends take no time: an iteration then costs its two devices' work alone."""

    def collective_time_s(self, kind: str, message_bytes, devices):
        return 0.0


@pytest.fixture(scope="module")
def template_of(tiny_llama, trace_of):
    """The tiny Llama's template sharded over `tp` devices (the model's, or the attention devices' heads)."""
    def trace(phase: str, batch: int, prompt: int):
        if phase == "decode":
            return trace_of(tiny_llama, "decode", batch, 1, prompt)
        return trace_of(tiny_llama, "prefill", batch, prompt)

    made = {}

    def get(tp: int) -> StepTemplate:
        if tp not in made:
            made[tp] = StepTemplate.from_model(tiny_llama, NumericFormat(), trace,
                                               shard=lambda table: shard_tensor_parallel(table, tp, tiny_llama, 1))
        return made[tp]

    return get


def _pool(template, *, device="h100-sxm", devices=1, link=None, micro_batches=1, ports=1) -> AttentionPool:
    return AttentionPool(device=load_device(device), devices=devices, template=template,
                         links=(link or _FreeLink(),), ports=ports, micro_batches=micro_batches,
                         out_B_per_token=1.0, back_B_per_token=1.0)


def test_the_schedule_bound_by_hand():
    """One micro-batch runs its model part, attention and every layer's sends in turn: 3 + 1 + 10 x (0.1 + 0.05).
    Two take turns: the model's devices serve both (2 x 3), more than one micro-batch's chain (3 + 1 + 1.5) or the
    attention devices' or the link's share (2 x 1, 2 x 10 x 0.1). Attention-bound: 2 x 4 when attention takes 4.
    Unequal shares (a prefill chunk in one): the larger's chain 5 + 1 + 1.5 against the model's 5 + 2."""
    assert disaggregated_time_s([3.0], [1.0], [0.1], [0.05], layers=10) == pytest.approx(5.5)
    assert disaggregated_time_s([3.0] * 2, [1.0] * 2, [0.1] * 2, [0.05] * 2, layers=10) == pytest.approx(6.0)
    assert disaggregated_time_s([1.0] * 2, [4.0] * 2, [0.1] * 2, [0.05] * 2, layers=10) == pytest.approx(8.0)
    assert disaggregated_time_s([1.0] * 2, [1.0] * 2, [0.5] * 2, [0.05] * 2, layers=10) == pytest.approx(10.0)
    assert disaggregated_time_s([5.0, 2.0], [1.0, 1.0], [0.1] * 2, [0.05] * 2, layers=10) == pytest.approx(7.5)


def test_a_shape_splits_its_sequences_whole_and_evenly():
    """Five decoding sequences over 5,000 keys in two parts: the larger part has three of them and 3,000 keys; a
    prefill of two chunks (100 + 60 tokens) splits into one chunk of the mean size; one part is the shape itself."""
    shape = step_shape(chunks=[(100, 0), (60, 40)], decode_kv=[1000] * 5, sampled=7)
    part = shape.shares(2)[0]
    assert (part.decode_seqs, part.decode_kv, part.sampled) == (3, 3000, 4)
    assert (part.prefill_seqs, part.prefill_tokens, part.prefill_cached) == (1, 80, 20)
    assert shape.shares(1) == (shape,)
    assert shape.shares(8)[0].decode_seqs == 1 and shape.shares(8)[0].prefill_seqs == 1
    with pytest.raises(ValueError):
        shape.shares(0)


def test_sent_bytes_are_lamina_s_per_token_and_layer():
    """Lamina (arXiv:2405.01814v2, section 3.1): (2 + 2/G) e d bytes a token and layer, the query and the attention
    output (d each) and the key and value (d/G each). Llama-3-70B: d 8,192, G 8, e 2 bytes: 36,864 B."""
    out_B, back_B = sent_bytes_per_token(load_model_config("llama-3-70b"))
    assert out_B + back_B == (2 + 2 / 8) * 2 * 8192 == 36_864
    assert back_B == 2 * 8192


@pytest.mark.parametrize("shape", [step_shape(decode_kv=[200] * 6, sampled=6),
                                   step_shape(chunks=[(64, 0)], decode_kv=[150, 90], sampled=3)],
                         ids=["decode", "mixed"])
def test_attention_on_the_same_device_over_a_free_link_is_the_plain_iteration(template_of, shape):
    """Invariant: the model's attention moved to a device like its own, over a link that takes no time, in one
    micro-batch, runs the same kernels back to back: the same time, energy and time by class as attending in place."""
    plain = IterationCostModel(load_device("h100-sxm"), template_of(1), execution="graphs")
    apart = IterationCostModel(load_device("h100-sxm"), template_of(1), execution="graphs",
                               attention=_pool(template_of(1)))
    a, b = plain.price(shape), apart.price(shape)
    assert b.time_s == pytest.approx(a.time_s, rel=1e-12)
    assert (b.compute_J, b.memory_J) == pytest.approx((a.compute_J, a.memory_J), rel=1e-12)
    np.testing.assert_allclose(b.class_time_s, a.class_time_s, rtol=1e-12)


def test_more_attention_devices_a_faster_link_and_more_micro_batches_are_never_slower(template_of):
    """Invariants over decode iterations of the tiny Llama on an H100 with an H20 attending: two attention devices
    (each half the heads) are never slower than one; a faster link never slower; allowing two micro-batches never
    slower than one (an iteration takes as many as make it fastest)."""
    device = load_device("h100-sxm")
    link = load_link_model("roce-400g")
    fast = load_link_model("roce-400g", {"bandwidth_GBps": 400.0, "latency_us": 2.0})
    def time_s(shape: StepShape, **kw) -> float:
        pool = _pool(template_of(kw.pop("devices", 1)), device="h20", link=kw.pop("link", link), **kw)
        return IterationCostModel(device, template_of(1), execution="graphs", attention=pool).price(shape).time_s

    for batch in (1, 8, 64, 256):
        shape = step_shape(decode_kv=[1024] * batch, sampled=batch)
        base = time_s(shape)
        assert time_s(shape, devices=2) <= base * (1 + 1e-12)
        assert time_s(shape, link=fast) <= base * (1 + 1e-12)
        assert time_s(shape, micro_batches=2) <= base * (1 + 1e-12)


def test_a_send_over_two_links_takes_the_longer_of_its_times_on_each(template_of):
    """InfiniBand HDR (25 GB/s, 2.7 us a hop) and Lamina's RoCE (45.7 GB/s, 16.5 us), neither slower in both: 1,000 B
    a port take 0.04 + 2.7 us on HDR and 0.022 + 16.5 on RoCE, so 16.522 us; 10 MB take 400 + 2.7 on HDR, 218.8 + 16.5
    on RoCE, so 402.7 us."""
    hdr, roce = load_link_model("infiniband-hdr"), load_link_model("roce-400g")
    pool = replace(_pool(template_of(1)), links=(hdr, roce))
    for tokens, want_s in ((1_000, 1_000 / 45.7e9 + 16.5e-6), (10_000_000, 10_000_000 / 25e9 + 2.7e-6)):
        assert pool.send_s(tokens) == pytest.approx((want_s, want_s))


def test_energy_is_the_model_part_plus_every_attention_device(template_of):
    """The iteration's dynamic energy is its model part's plus each attention device's (each its heads): the
    attention devices' share doubles from one to two devices only by what a device runs on its half of the heads."""
    shape = step_shape(decode_kv=[512] * 16, sampled=16)
    device = load_device("h100-sxm")
    plain = IterationCostModel(device, template_of(1), execution="graphs")
    one = IterationCostModel(device, template_of(1), execution="graphs", attention=_pool(template_of(1)))
    two = IterationCostModel(device, template_of(1), execution="graphs", attention=_pool(template_of(2), devices=2))
    table, counts = template_of(1).stage_table(shape, 1)
    costs = device.cost_table(table, "graphs")
    attention_J = float(costs.memory_J[table.attention_mask] @ counts[0][table.attention_mask])
    assert one.price(shape).memory_J == pytest.approx(plain.price(shape).memory_J, rel=1e-12)
    halves = template_of(2).stage_table(shape, 1)
    half_J = float(device.cost_table(halves[0], "graphs").memory_J[halves[0].attention_mask]
                   @ halves[1][0][halves[0].attention_mask])
    assert two.price(shape).memory_J == pytest.approx(plain.price(shape).memory_J - attention_J + 2 * half_J,
                                                      rel=1e-12)


def test_a_pool_refuses_stages_and_empty_counts(template_of):
    with pytest.raises(ValueError, match="one stage"):
        IterationCostModel(load_device("h100-sxm"), template_of(1), stages=2, send_B_per_token=1.0,
                           attention=_pool(template_of(1)))
    with pytest.raises(ValueError, match="devices"):
        _pool(template_of(1), devices=0)
    with pytest.raises(ValueError, match="cascade"):
        replace(StepShape(decode_seqs=4, decode_kv=40, decode_shared_kv=8, decode_shared_seqs=4,
                          decode_shared_groups=1), sampled=4).shares(2)
