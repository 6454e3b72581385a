"""The star all-reduce (allreduce: star, hw_models/star.py): its time by hand, where it beats the ring and where it
loses, its monotonicity in the link, and a system that prices its all-reduces so (the ring untouched for nccl)."""

from __future__ import annotations

import numpy as np
import pytest

from hw_models.link import collective_time_s, load_link, load_link_model
from hw_models.registry import load_device
from hw_models.star import star_all_reduce_time_s
from hw_models.system import SystemModel
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable

MiB = 2**20
# One decode token's all-reduce of Llama 2-70B in fp32 (TPI-LLM computes in full precision): hidden 8192 x 4 bytes.
TOKEN_B = 8192 * 4


def _slow_ethernet(latency_us: float = 1000.0):
    """100 Gb Ethernet's 12.5 GB/s with a what-if hop of `latency_us` (an edge network's, not a datacenter's)."""
    return load_link("ethernet-100g", {"latency_us": latency_us})


def test_star_by_hand():
    """8 devices, 12.5 GB/s, 1 ms a hop: the master takes in 7 x 32 KiB and sends out 7 x 32 KiB, 2 x 7 x 32768 /
    12.5e9 = 36.7 us, behind 2 hops of 1 ms."""
    link = _slow_ethernet()
    assert star_all_reduce_time_s(TOKEN_B, 8, link) == pytest.approx(2 * 7 * 32768 / 12.5e9 + 2e-3)
    assert star_all_reduce_time_s(TOKEN_B, 1, link) == 0.0
    assert star_all_reduce_time_s(np.array([0.0, TOKEN_B]), 2, link) == pytest.approx(
        [2e-3, 2 * 32768 / 12.5e9 + 2e-3])


def test_star_beats_the_ring_where_hops_are_slow():
    """At 1 ms a hop the ring waits 14 hops (14 ms) where the star waits 2 (2 ms): the star is about 7x faster though
    its master moves 8x the ring's bytes per port (both well under a hop here)."""
    link = _slow_ethernet()
    star = star_all_reduce_time_s(TOKEN_B, 8, link)
    ring = collective_time_s("all_reduce", TOKEN_B, 8, link)
    assert ring == pytest.approx(2 * 7 / 8 * 32768 / 12.5e9 + 14e-3)
    assert 6.5 < ring / star < 7.0


def test_the_ring_beats_the_star_where_bytes_cost_more_than_hops():
    """NVLink 4 (450 GB/s, 0.6 us a hop), 64 MiB on 8 GPUs: the star's master moves 14 x 64 MiB (2.09 ms), each ring
    port 1.75 x 64 MiB (0.26 ms): the ring is about 8x faster."""
    link = load_link("nvlink4")
    star = star_all_reduce_time_s(64 * MiB, 8, link)
    ring = collective_time_s("all_reduce", 64 * MiB, 8, link)
    assert star == pytest.approx(14 * 64 * MiB / 450e9 + 1.2e-6)
    assert 7.5 < star / ring < 8.5


@pytest.mark.parametrize("devices", [2, 4, 8])
def test_more_bandwidth_or_less_latency_is_never_slower(devices):
    sizes = np.array([0.0, 1e3, TOKEN_B, 64 * MiB])
    base = star_all_reduce_time_s(sizes, devices, _slow_ethernet())
    faster_link = load_link("ethernet-100g", {"latency_us": 1000.0, "bandwidth_GBps": 25.0})
    assert np.all(star_all_reduce_time_s(sizes, devices, faster_link) <= base)
    assert np.all(star_all_reduce_time_s(sizes, devices, _slow_ethernet(100.0)) < base)


def _all_reduces(sizes) -> KernelTable:
    return KernelTable.from_kernels([Kernel(kind=KernelKind.ALL_REDUCE, op="all_reduce", flops=0.0, weight_bytes=0.0,
                                            act_bytes=float(s), kv_bytes=0.0, dtype="fp32", tensor_core=False)
                                     for s in sizes])


def test_a_system_prices_its_all_reduces_as_a_star_and_nccl_as_the_ring():
    """Eight CPUs over the slow Ethernet: with star every all-reduce row takes the star's time, whatever the size (the
    engine has no other all-reduce); with nccl the ring's, as before."""
    sizes = [TOKEN_B, 64 * MiB]
    table = _all_reduces(sizes)
    link = load_link_model("ethernet-100g", {"latency_us": 1000.0})
    device = load_device("ampere-altra")
    star = SystemModel(device, 8, link, allreduce="star").cost_table(table).time_s
    ring = SystemModel(device, 8, link, allreduce="nccl").cost_table(table).time_s
    assert star == pytest.approx(star_all_reduce_time_s(np.array(sizes, float), 8, link.spec))
    assert ring == pytest.approx(collective_time_s("all_reduce", np.array(sizes, float), 8, link.spec))
    assert star[0] < ring[0] and star[1] > ring[1]  # latency-bound token: star; bandwidth-bound 64 MiB: ring
