"""Memory tiers (sim/offload.py): what an offloaded batch keeps in host memory, the bytes each pass moves over the host
link, and how a pass waits on them, against hand calculations."""

from __future__ import annotations

import numpy as np
import pytest

from hw_models.registry import load_device
from kernels.lowering import lower_trace
from kernels.moe import device_routing
from kernels.table import KernelTable
from sim.analytic import evaluate
from sim.engine import simulate
from sim.memory import MemoryFootprint, batch_footprint
from sim.offload import (
    HostLink,
    OffloadPlan,
    RoutedExperts,
    device_footprint,
    link_wait_s,
    offload_traffic,
    offloaded_reached,
    pass_wait_s,
    plan_offload,
    reach_at_count,
    resident_share,
    transfer_s,
)
from sim.step_costs import price_passes
from sim.workload import BatchWorkload, PassTables
from workloads.expert_skew import power_law_popularity, reach_chances
from workloads.model_config import POWER_LAW

GB = 1e9


def _footprint(weights_GB: float, kv_GB: float, activations_GB: float) -> MemoryFootprint:
    return MemoryFootprint(weights_B=weights_GB * GB, kv_cache_B=kv_GB * GB, activations_B=activations_GB * GB)


# ---- placement ------------------------------------------------------------------------------------------------

def test_a_footprint_that_fits_offloads_nothing():
    footprint = _footprint(10, 5, 1)
    for mode in ("none", "weights", "kv", "auto"):
        assert plan_offload(footprint, 80 * GB, 10, mode) == OffloadPlan()
        assert device_footprint(footprint, OffloadPlan()) is footprint


def test_weights_offload_the_excess_plus_two_layers_of_buffers():
    # 100 GB of weights, 10 of KV, 5 of activations on 80 GB, 10 layers: 35 GB too many. Offloading w GB frees w but
    # buffers 2 of 10 layers' share of it, 0.2 w: w = 35 / 0.8 = 43.75 GB, with 8.75 GB of buffers.
    plan = plan_offload(_footprint(100, 10, 5), 80 * GB, 10, "weights")
    assert plan.weights_B == pytest.approx(43.75 * GB) and plan.kv_B == 0
    assert plan.weights_share == pytest.approx(0.4375) and plan.weights_buffer_B == pytest.approx(8.75 * GB)
    held = device_footprint(_footprint(100, 10, 5), plan)
    assert held.total_B == pytest.approx(80 * GB)  # exactly full: the least that must leave does
    assert held.offloaded_B == pytest.approx(43.75 * GB)


def test_auto_offloads_every_weight_before_any_kv():
    # 20 GB of weights, 100 of KV, 5 of activations on 80 GB, 10 layers: 45 GB too many; all weights free 16 GB
    # (20 less 4 of buffers), the KV cache the other 29 at 0.8 per byte: 36.25 GB of it, a share of 0.3625.
    plan = plan_offload(_footprint(20, 100, 5), 80 * GB, 10, "auto")
    assert plan.weights_share == 1.0 and plan.weights_B == pytest.approx(20 * GB)
    assert plan.kv_share == pytest.approx(0.3625) and plan.kv_B == pytest.approx(36.25 * GB)
    assert device_footprint(_footprint(20, 100, 5), plan).total_B == pytest.approx(80 * GB)
    # Where weights alone suffice, auto is the weights policy.
    assert plan_offload(_footprint(100, 10, 5), 80 * GB, 10, "auto") == plan_offload(
        _footprint(100, 10, 5), 80 * GB, 10, "weights")


def test_an_offload_that_still_cannot_fit_says_why():
    # The KV cache alone (10 GB, 8 after its buffers) cannot free 35 GB.
    reason = plan_offload(_footprint(100, 10, 5), 80 * GB, 10, "kv")
    assert isinstance(reason, str) and reason.startswith("offload kv: needs ") and "80.0 GB" in reason
    # Activations (and the buffers) stay on the device whatever moves.
    assert isinstance(plan_offload(_footprint(100, 10, 90), 80 * GB, 10, "auto"), str)
    # Two layers double-buffered are the whole model: offloading frees nothing.
    assert isinstance(plan_offload(_footprint(100, 10, 5), 80 * GB, 2, "weights"), str)
    with pytest.raises(ValueError, match="offload: found 'disk'"):
        plan_offload(_footprint(100, 10, 5), 80 * GB, 10, "disk")



@pytest.mark.parametrize("excess_B", [45432390400.0, *np.linspace(1e9, 80e9, 40).round()])
def test_weights_that_suffice_leave_nothing_to_a_kv_cache_they_may_not_touch(excess_B):
    """Mixtral-8x7B at batch 1 on an L40S (32 layers, 93.4 GB of weights, 45.4 GB too many) crashed with a division
    by zero: the weights' share times their room came out a few bytes short of the excess (floating-point rounding),
    and that remainder was handed to a KV cache the 'weights' policy may not offload. The weights alone free it."""
    footprint = MemoryFootprint(weights_B=93405585408.0, kv_cache_B=0.0, activations_B=0.0)
    for mode in ("weights", "auto"):
        plan = plan_offload(footprint, footprint.total_B - excess_B, 32, mode)
        assert isinstance(plan, OffloadPlan) and plan.kv_B == 0, plan
        assert device_footprint(footprint, plan).total_B == pytest.approx(footprint.total_B - excess_B)

# ---- link time ------------------------------------------------------------------------------------------------

LINK = HostLink(bandwidth_Bps=10 * GB, latency_s=1e-6)


def test_transfer_time_is_the_larger_direction_plus_a_latency_per_layer():
    # 20 GB in and 5 GB out at 10 GB/s, 4 layers: the directions run at once, 2 s + 4 us.
    assert transfer_s(20 * GB, 5 * GB, LINK, 4) == pytest.approx(2 + 4e-6)
    assert transfer_s(0.0, 0.0, LINK, 4) == 0.0


def test_prefetch_takes_the_longer_of_compute_and_transfer_else_their_sum():
    assert link_wait_s(0.5, 2.0, True) == pytest.approx(1.5)  # the pass takes 2 s
    assert link_wait_s(3.0, 2.0, True) == 0.0  # compute covers the transfer
    assert link_wait_s(3.0, 2.0, False) == pytest.approx(2.0)  # the pass takes 5 s


def test_traffic_streams_weights_every_pass_and_the_offloaded_kv_share_each_step():
    plan = OffloadPlan(weights_share=1.0, kv_share=0.5, weights_B=10 * GB, kv_B=3 * GB)
    traffic = offload_traffic(plan, LINK, layers=4, prompt_kv_B=4 * GB, step_kv_B=np.array([4, 5]) * GB,
                              token_kv_B=0.1 * GB)
    assert traffic.prefill_B == (10 * GB, 2 * GB)  # every weight in, half the prompt's KV out
    assert traffic.decode_to_device_B.tolist() == [12 * GB, 12.5 * GB]  # weights + half the cache read
    assert traffic.decode_to_host_B.tolist() == [0.05 * GB, 0.05 * GB]  # half the new token's KV
    # With nothing to overlap, a step waits its whole transfer.
    assert traffic.decode_wait_s(np.zeros(2)) == pytest.approx([1.2 + 4e-6, 1.25 + 4e-6])
    assert traffic.decode_routed_B == traffic.decode_unreached_B == 0.0  # a dense model


# ---- routed experts -------------------------------------------------------------------------------------------

# 10 GB of offloaded weights, 8 GB of them routed experts; the prefill reaches every expert, a decode step 2 of 8.
MOE_PLAN = OffloadPlan(weights_share=0.5, weights_B=10 * GB)
MOE = RoutedExperts(weights_share=0.8, prefill_reached=1.0, decode_reached=0.25)


def _moe_traffic(link: HostLink = LINK, experts: RoutedExperts = MOE):
    return offload_traffic(MOE_PLAN, link, layers=4, prompt_kv_B=0.0, step_kv_B=np.zeros(2), token_kv_B=0.0,
                           experts=experts)


def test_an_moe_decode_step_moves_the_experts_it_reaches():
    traffic = _moe_traffic()
    # The 2 GB that are not experts, and 2 of 8 experts' 8 GB: 4 GB, not 10.
    assert traffic.decode_to_device_B.tolist() == pytest.approx([4 * GB, 4 * GB])
    assert traffic.decode_routed_B == pytest.approx(2 * GB) and traffic.decode_unreached_B == pytest.approx(6 * GB)
    # The prefill reaches every expert: every offloaded weight, as a dense model's.
    assert traffic.prefill_B[0] == pytest.approx(10 * GB) and traffic.prefill_unreached_B == pytest.approx(0.0)


def test_routed_experts_wait_in_full_the_rest_overlaps():
    traffic = _moe_traffic()
    # 0.1 s of compute: the 2 GB of other weights (0.2 s) are prefetched, 0.1 s of them uncovered; the 2 GB of
    # routed experts (0.2 s) come once the router has run, waited in full; a latency per layer for each transfer.
    assert traffic.decode_wait_s(np.full(2, 0.1)) == pytest.approx([0.3 + 8e-6] * 2)
    # 2 s of compute covers prefetching every expert of the next layer (1 s): no wait, as today.
    assert traffic.decode_wait_s(np.full(2, 2.0)) == pytest.approx([0.0, 0.0])
    # The prefill reaches every expert: it prefetches whole layers (1 s) as a dense model does.
    assert traffic.prefill_wait_s(0.1) == pytest.approx(0.9 + 4e-6)
    # Without prefetch, the step waits for the 4 GB it moves, two transfers a layer.
    serial = _moe_traffic(HostLink(bandwidth_Bps=LINK.bandwidth_Bps, latency_s=1e-6, prefetch=False))
    assert serial.decode_wait_s(np.full(2, 0.1)) == pytest.approx([0.4 + 8e-6] * 2)


@pytest.mark.parametrize("prefetch", [True, False])
def test_a_dense_pass_waits_as_its_whole_transfer_says(prefetch):
    link = HostLink(bandwidth_Bps=LINK.bandwidth_Bps, latency_s=1e-6, prefetch=prefetch)
    device_s = np.array([0.0, 0.3, 0.9, 1.5])
    to_device_B, to_host_B = np.array([12, 12.5, 3, 0.5]) * GB, np.full(4, 0.05 * GB)
    expected = link_wait_s(device_s, transfer_s(to_device_B, to_host_B, link, 4), prefetch)
    assert pass_wait_s(device_s, to_device_B, to_host_B, 0.0, 0.0, link, 4).tolist() == expected.tolist()


def test_a_faster_link_never_makes_an_offloaded_pass_wait_longer():
    rng = np.random.default_rng(0)
    for _ in range(200):
        experts = RoutedExperts(weights_share=rng.uniform(0, 1), prefill_reached=1.0,
                                decode_reached=rng.integers(1, 9) / 8)
        device_s, latency_s = rng.uniform(0, 2, size=2), rng.choice([0.0, 1e-6])
        waits = []
        for prefetch in (False, True):
            for bandwidth_GBps in (1, 4, 10, 31.5, 63):
                link = HostLink(bandwidth_Bps=bandwidth_GBps * GB, latency_s=latency_s, prefetch=prefetch)
                waits.append(_moe_traffic(link, experts).decode_wait_s(device_s))
        serial, overlapped = np.array(waits[:5]), np.array(waits[5:])
        assert (np.diff(serial, axis=0) <= 1e-12).all() and (np.diff(overlapped, axis=0) <= 1e-12).all()
        assert (overlapped <= serial + 1e-12).all()  # prefetch never makes a pass slower


# ---- priced passes --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama(trace_of):
    """Llama-2-7B on an H100 SXM, batch 1, prompt 64, 4 output tokens (3 decode steps)."""
    def table(trace):
        return KernelTable.from_kernels(lower_trace(trace))

    prefill = trace_of("llama-2-7b", "prefill", 1, 64)
    tables = PassTables(prefill=table(prefill), decode=table(trace_of("llama-2-7b", "decode", 1, 1, 64)))
    workload = BatchWorkload(batch=1, prompt_len=64, output_len=4)
    memory = batch_footprint(weight_bytes=prefill.param_bytes, kv_bytes_per_token=1.0, batch=1,
                             tokens_per_sequence=68, activation_bytes=prefill.peak_activation_bytes)
    return load_device("h100-sxm"), tables, workload, memory


def _traffic(weights_B: float, prefetch: bool = True):
    plan = OffloadPlan(weights_share=1.0, weights_B=weights_B)
    link = HostLink(bandwidth_Bps=LINK.bandwidth_Bps, latency_s=0.0, prefetch=prefetch)
    return offload_traffic(plan, link, layers=32, prompt_kv_B=0.0, step_kv_B=np.zeros(3), token_kv_B=0.0)


def test_each_step_takes_the_longer_of_its_own_time_and_its_transfer(llama):
    device, tables, workload, memory = llama
    # Replayed from CUDA graphs, a pass has no host dispatch to overlap: its time is the device's.
    plain = price_passes(device, tables, workload, "graphs")
    step_s = plain.decode[0].total("time_s") / 3
    # Weights streamed at 10 GB/s taking 3x a plain step: each step takes the transfer; without prefetch, both.
    weights_B = 3 * step_s * LINK.bandwidth_Bps
    slow = price_passes(device, tables, workload, "graphs", _traffic(weights_B))
    assert slow.decode[0].total("time_s") == pytest.approx(3 * 3 * step_s)
    serial = price_passes(device, tables, workload, "graphs", _traffic(weights_B, prefetch=False))
    assert serial.decode[0].total("time_s") == pytest.approx(3 * 4 * step_s)
    prefill_s = float(plain.prefill.time_s.sum())
    assert float(serial.prefill.time_s.sum()) == pytest.approx(prefill_s + 3 * step_s)
    # A transfer the compute covers costs nothing with prefetch.
    hidden = price_passes(device, tables, workload, "graphs", _traffic(0.5 * step_s * LINK.bandwidth_Bps))
    assert hidden.decode[0].total("time_s") == pytest.approx(plain.decode[0].total("time_s"))


def test_host_dispatch_overlaps_the_step_and_its_transfer(llama):
    device, tables, workload, memory = llama
    eager = price_passes(device, tables, workload, "eager").decode[0]
    device_s = eager._device_step_s  # each step's kernels back to back, before any wait
    host_s = eager.host_step_s
    assert host_s > device_s.max()  # batch 1 in eager mode: the host's dispatch is the longer
    link_s = 2 * host_s
    serial = price_passes(device, tables, workload, "eager", _traffic(link_s * LINK.bandwidth_Bps, prefetch=False))
    # Without prefetch a step takes max(host, device + link): the link now sets it, with the device's time on top.
    assert serial.decode[0].total("time_s") == pytest.approx(float(np.maximum(host_s, device_s + link_s).sum()))
    overlapped = price_passes(device, tables, workload, "eager", _traffic(0.5 * host_s * LINK.bandwidth_Bps))
    # With prefetch and a transfer shorter than the host's dispatch, the host still sets the step.
    assert overlapped.decode[0].total("time_s") == pytest.approx(3 * host_s)


def test_the_event_simulation_waits_on_the_link_as_the_analytic_path_does(llama):
    device, tables, workload, memory = llama
    traffic = _traffic(20 * GB)  # 2 s per pass
    analytic = evaluate(device, tables, workload, memory, traffic=traffic)
    event = simulate(device, tables, workload, memory, record_timeline=False, traffic=traffic)
    assert event.makespan_s == pytest.approx(analytic.makespan_s, rel=1e-9)
    assert analytic.makespan_s == pytest.approx(4 * 2.0, rel=1e-6)  # the prefill and 3 steps, each 2 s of transfer
    assert evaluate(device, tables, workload, memory).makespan_s < analytic.makespan_s


# ---- a sliding window (TPI-LLM) ------------------------------------------------------------------------------------

def test_a_window_holds_its_layers_weights_and_offloads_every_weight():
    """100 GB of weights over 10 layers, a window of 3: the device holds 3 layers' weights, 30 GB, whatever its
    capacity; all 100 GB live in host memory and stream each pass; the KV cache and activations stay."""
    from sim.offload import plan_window

    footprint = _footprint(100, 10, 5)
    plan = plan_window(footprint, 10, 3)
    assert plan.weights_share == 1.0 and plan.weights_B == pytest.approx(100 * GB) and plan.kv_B == 0
    held = device_footprint(footprint, plan)
    assert held.weights_B == pytest.approx(30 * GB) and held.kv_cache_B == 10 * GB and held.activations_B == 5 * GB
    assert held.offloaded_B == pytest.approx(100 * GB)
    assert plan_window(footprint, 10, 10) == OffloadPlan() == plan_window(footprint, 10, 12)  # every layer: none
    with pytest.raises(ValueError, match=r"offload_window: found 0, allowed: a whole number of layers >= 1"):
        plan_window(footprint, 10, 0)


# ---- offloading routed experts alone ('experts') -----------------------------------------------------------------

def test_experts_offload_only_experts_and_the_device_keeps_what_fits():
    """100 GB of weights, 80 of them routed experts, 10 of KV and 5 of activations on 80 GB, 10 layers: 35 GB too many.
    Offloading e GB of experts frees 0.8 e (two of ten layers' share buffered): e = 43.75 GB, a share of 43.75 / 80 of
    each layer's experts; the other 20 GB of weights and the KV cache stay. A dense model's 'experts' frees nothing."""
    plan = plan_offload(_footprint(100, 10, 5), 80 * GB, 10, "experts", experts_share=0.8)
    assert plan.experts_only and plan.kv_B == 0
    assert plan.weights_B == pytest.approx(43.75 * GB) and plan.weights_share == pytest.approx(43.75 / 80)
    assert device_footprint(_footprint(100, 10, 5), plan).total_B == pytest.approx(80 * GB)
    reason = plan_offload(_footprint(100, 10, 5), 80 * GB, 10, "experts", experts_share=0.3)
    assert isinstance(reason, str) and "every routed expert in host memory" in reason


def test_an_experts_decode_step_moves_only_the_offloaded_experts_it_reaches():
    """The plan's 43.75 GB of experts offloaded; a decode step reaching 2 of 8 experts moves a quarter of them and no
    other weight, where offloading the same bytes of every weight moves its dense share every step too."""
    experts = RoutedExperts(weights_share=0.8, prefill_reached=1.0, decode_reached=0.25)
    only = plan_offload(_footprint(100, 10, 5), 80 * GB, 10, "experts", experts_share=0.8)
    traffic = offload_traffic(only, LINK, layers=10, prompt_kv_B=0.0, step_kv_B=np.zeros(1), token_kv_B=0.0,
                              experts=experts)
    assert traffic.decode_to_device_B.tolist() == pytest.approx([43.75 * GB * 0.25])
    assert traffic.decode_routed_B == pytest.approx(43.75 * GB * 0.25)
    every = offload_traffic(OffloadPlan(weights_share=0.4375, weights_B=43.75 * GB), LINK, layers=10, prompt_kv_B=0.0,
                            step_kv_B=np.zeros(1), token_kv_B=0.0, experts=experts)
    # 0.4375 of the 20 dense GB (8.75) and of the 80 expert GB reached a quarter (8.75): 17.5 GB against 10.9.
    assert every.decode_to_device_B[0] == pytest.approx(17.5 * GB)
    assert traffic.decode_to_device_B[0] < every.decode_to_device_B[0]


# ---- the most popular experts kept on the device under power_law routing (Fiddler's popularity placement) -------

# A hand popularity: 8 experts of weights 0.4, 0.2, 0.1, 0.1, 0.05 x 4, a token's top-2 drawn without replacement by
# weight. Expert i is picked first with chance w_i, or second after j with chance w_j w_i / (1 - w_j):
#   w 0.4:  0.4 + 0.2(0.4)/0.8 + 2(0.1)(0.4)/0.9 + 4(0.05)(0.4)/0.95                  = 0.673099
#   w 0.2:  0.2 + 0.4(0.2)/0.6 + 2(0.1)(0.2)/0.9 + 4(0.05)(0.2)/0.95                  = 0.419883
#   w 0.1:  0.1 + 0.4(0.1)/0.6 + 0.2(0.1)/0.8 + 0.1(0.1)/0.9 + 4(0.05)(0.1)/0.95      = 0.223830
#   w 0.05: 0.05 + 0.4(0.05)/0.6 + 0.2(0.05)/0.8 + 2(0.1)(0.05)/0.9 + 3(0.05)(0.05)/0.95 = 0.114839
# (they sum to 2.000000, the two picks of a token).
HAND_POPULARITY = (0.673099, 0.419883, 0.223830, 0.223830, 0.114839, 0.114839, 0.114839, 0.114839)


def test_a_device_holding_the_two_most_popular_experts_finds_their_share_of_a_steps_rows():
    """Room for 2 of the 8: a one-token step's rows are on the 2 held experts with their chances' mass over the 2
    picks, (0.673099 + 0.419883) / 2 = 0.546491 (against 2/8 with none preferred); half an expert's room more holds
    half the third's, + 0.223830 / 4."""
    assert resident_share(HAND_POPULARITY, 2) == pytest.approx(0.546491, abs=1e-6)
    assert resident_share(HAND_POPULARITY, 2.5) == pytest.approx(0.546491 + 0.223830 / 4, abs=1e-6)
    assert resident_share(HAND_POPULARITY, 0) == 0.0 and resident_share(HAND_POPULARITY, 8) == pytest.approx(1.0)


def test_an_experts_decode_step_fetches_the_offloaded_experts_its_tokens_pick():
    """6 of the 8 experts offloaded (share 0.75), the 2 most popular held: a one-token step picks an offloaded expert
    with the chances left, 2 - 1.092982 = 0.907018 of them, 0.907018 / 6 of the offloaded bytes (none preferred: its
    2 of 8, 0.25); a step of 2 tokens reaches an expert of chance p with 1 - (1 - p)^2 (0.893136, 0.663464, 0.397561,
    0.216490), the offloaded ones 2 x 0.397561 + 4 x 0.216490 = 1.661082 of 6 (none preferred: its share of the 8's
    reach, 3.217682 / 8). Offloading a share of
    every weight ('weights') holds a share of each expert: the popularity changes nothing there."""
    for tokens, cold, spread in ((1, 0.907018, 2 / 8), (2, 1.661082, 3.217682 / 8)):
        reached = reach_chances(HAND_POPULARITY, tokens)
        assert sum(reached) == pytest.approx(spread * 8, abs=1e-5)
        ranked = RoutedExperts(weights_share=1.0, decode_reached=spread, decode_ranked=reached)
        even = RoutedExperts(weights_share=1.0, decode_reached=spread)
        plan = OffloadPlan(weights_share=0.75, weights_B=0.75 * 80 * GB, experts_only=True)
        hot, flat = (offload_traffic(plan, LINK, layers=10, prompt_kv_B=0.0, step_kv_B=np.zeros(1), token_kv_B=0.0,
                                     experts=experts) for experts in (ranked, even))
        assert hot.decode_routed_B == pytest.approx(0.75 * 80 * GB * cold / 6, rel=1e-5)
        assert flat.decode_routed_B == pytest.approx(0.75 * 80 * GB * spread)
        assert hot.decode_unreached_B == pytest.approx(0.75 * 80 * GB * (1 - cold / 6), rel=1e-5)
        every = OffloadPlan(weights_share=0.75, weights_B=0.75 * 80 * GB)
        hot, flat = (offload_traffic(every, LINK, layers=10, prompt_kv_B=0.0, step_kv_B=np.zeros(1), token_kv_B=0.0,
                                     experts=experts) for experts in (ranked, even))
        assert hot.decode_routed_B == flat.decode_routed_B


@pytest.mark.parametrize("tokens", [1, 3, 4, 8, 32, 1024])
@pytest.mark.parametrize("topk, experts", [(2, 8), (1, 16), (4, 64), (8, 256)])
def test_holding_the_most_popular_experts_never_finds_fewer_resident_and_more_room_never_fewer(tokens, topk, experts):
    """Invariants of the placement on the power-law popularity: at every room the most popular experts hold at least
    the share of a token's picks and of a step's reached experts that as many experts hold with none preferred
    (room / E), more room never holds less, and a pass never fetches more of the offloaded experts than it would with
    none preferred."""
    popularity = power_law_popularity(topk, experts)
    reached = reach_chances(popularity, tokens)
    rooms = np.linspace(0, experts, 4 * experts + 1)
    for by_rank in (popularity, reached):
        held = np.array([resident_share(by_rank, room) for room in rooms])
        assert (held >= rooms / experts - 1e-12).all()
        assert (np.diff(held) >= -1e-12).all()
    spread = sum(reached) / experts
    for share in rooms[:-1] / experts:
        assert offloaded_reached(spread, reached, 1 - share) <= spread + 1e-12


def test_a_pass_reaching_more_experts_than_the_popularity_alone_fetches_them_at_the_tokens_that_reach_as_many():
    """Chances of being reached 0.5, 0.5, 0.25, 0.25 (1.5 of the 4 experts in expectation) where the kernel tables'
    draws reach 2.375: the tokens that reach 2.375 are twice as many, 1 - (1 - r)^2 = 0.75, 0.75, 0.4375, 0.4375 (sum
    2.375). The 2 most popular held, the pass fetches 2 x 0.4375 = 0.875 of the 2 offloaded, 0.4375 of them (the
    chances at face value: 0.5 / 2 = 0.25, and at every offloaded expert 1.5 of the 2.375 computed). With every expert
    offloaded it fetches the 2.375 it computes; where the draws reach all 4, every offloaded expert at any room."""
    ranked = (0.5, 0.5, 0.25, 0.25)
    assert reach_at_count(ranked, 2.375) == pytest.approx([0.75, 0.75, 0.4375, 0.4375], rel=1e-9)
    assert offloaded_reached(2.375 / 4, ranked, 0.5) == pytest.approx(0.4375, rel=1e-9)
    assert offloaded_reached(2.375 / 4, ranked, 1.0) == pytest.approx(2.375 / 4, rel=1e-12)
    for share in (0.25, 0.5, 0.75, 1.0):
        assert offloaded_reached(1.0, ranked, share) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("tokens", [1, 3, 4, 8, 16, 32, 1024])
@pytest.mark.parametrize("topk, experts", [(2, 8), (1, 16), (4, 64), (8, 256)])
def test_the_offloaded_experts_a_pass_fetches_fit_the_experts_its_kernels_compute(tokens, topk, experts):
    """On the power-law popularity, with the count the kernel tables route by (kernels/moe.py device_routing, whose
    draws spread a step's rows over more experts than fixed identities reach): every expert offloaded, a pass fetches
    every expert it computes; at any room it fetches at most that share of the offloaded ones and at most all of them,
    finds resident at most the experts held, and more room never fetches more of the experts it reaches."""
    reached = device_routing(tokens, topk, experts, experts, POWER_LAW)[0] / experts
    ranked = reach_chances(power_law_popularity(topk, experts), tokens)
    assert offloaded_reached(reached, ranked, 1.0) == pytest.approx(reached, rel=1e-12)
    shares = np.linspace(1, 0, 4 * experts + 1)[:-1]
    fetched = np.array([offloaded_reached(reached, ranked, share) * share * experts for share in shares])
    assert (fetched <= shares * experts * np.minimum(reached, 1.0) + 1e-9).all()
    assert (reached * experts - fetched <= (1 - shares) * experts + 1e-9).all()
    assert (np.diff(fetched) <= 1e-9).all()
