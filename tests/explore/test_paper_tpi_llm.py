"""Tensor parallelism over edge devices with a sliding window over the weights (allreduce: star, offload_window) against
TPI-LLM (Li, Feng, Guizani, Yu, "TPI-LLM: Serving 70B-scale LLMs Efficiently on Low-resource Edge Devices", arXiv
2410.00531v1).

What is readable here: the abstract (arXiv 2410.00531v1): link latency, not bandwidth, is the main issue, hence a star
all-reduce; over 80% less TTFT and token latency than Accelerate, over 90% than Transformers and Galaxy; Llama 2-70B's
peak memory cut by 90%, to 3.1 GB. And the results table of the authors' README (github.com/Lizonghang/TPI-LLM
README.md): full precision on CPUs only; the baselines on "a Mac M1 laptop with 8 cores and 8GB memory"; TPI-LLM on
"the home testbed (4 laptops connected via local Wi-Fi)" and "the Klonet testbed (8 devices connected via a wire edge
network)"; Llama 2-7B at 26 s/token with Accelerate, 5 s/token with TPI-LLM at home, 3 s/token on Klonet. The paper's
Section 4 (its testbeds' bandwidth and latency, its Klonet devices, its tables and figures) is not readable here (the
search tool holds the page's opening only), so no link preset is made from it: the link is ethernet-100g, whose
2.7 us hop its source calls a lower bound for sockets, so the edge network's latency is at least it.

Setting: Llama 2-7B (the README's row) and Llama 2-70B (the abstract's memory claim) at batch 1, a 16-token prompt
(the paper's prompt lengths are not readable), 16-bit weights (the tool's widest format; the paper runs fp32, which
doubles every byte, not a ratio). The device is the nearest preset, m2-ultra-tmac (Apple silicon, performance cores
only), cut to an M1 by what-ifs, each sourced at M1 below; disks are the nvme-pcie4-x4 preset (a Mac M1's own SSD rate
is not sourced here). Accelerate is the tool's offload on one device: only what does not fit in 8 GB offloaded, each
module's weights loaded when it is called (offload_prefetch 0: Accelerate's offload hook loads in its pre-forward).
TPI-LLM is tp devices over the link with the star all-reduce and a window of one layer (its default memory_window of 2
blocks: a layer's attention and MLP), every weight streamed from each device's disk each token.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint

# Apple M1: 4 performance (Firestorm) cores, up to 3.204 GHz, 128-bit LPDDR4X-4266 (4266e6 x 16 B = 68.26 GB/s)
# (askgeek.io 'Apple M1 (8-core GPU)': max frequency 3.204 GHz, LPDDR4X-4266; Wikipedia 'Apple M1': four Firestorm and
# four Icestorm cores, 128-bit LPDDR4X); 8 GB as the README's Mac M1 laptop. The preset models performance cores only.
M1 = (("compute.cores", 4), ("compute.frequency_GHz", 3.204), ("memory.bandwidth_GBps", 68.26),
      ("memory.capacity_GB", 8))
ACCELERATE_7B_S = 26.0  # s/token, Llama 2-7B, Accelerate on a Mac M1 (README table)
TPI_HOME_7B_S = 5.0  # s/token, Llama 2-7B, TPI-LLM on 4 laptops over Wi-Fi (README table)
TPI_KLONET_7B_S = 3.0  # s/token, Llama 2-7B, TPI-LLM on 8 Klonet devices (README table)
LESS_THAN_ACCELERATE = 0.80  # "over 80% less ... token latency compared to Accelerate" (abstract)
PEAK_70B_B = 3.1e9  # "requiring only 3.1 GB of memory for 70B-scale models" (abstract)
MEMORY_CUT = 0.90  # "cutting the peak memory footprint of Llama 2-70B by 90%" (abstract)
LINK = "ethernet-100g"


def point(model: str = "llama-2-7b", tp: int = 1, link_what_ifs: tuple = (), **knobs) -> DesignPoint:
    return DesignPoint(model=model, device="m2-ultra-tmac", batch=1, prompt=16, output=8, tp=tp, overrides=M1,
                       link=LINK if tp > 1 else "", link_overrides=link_what_ifs,
                       knobs=tuple(sorted(knobs.items())))


def tpi(model: str = "llama-2-7b", tp: int = 4, **knobs) -> DesignPoint:
    return point(model, tp, allreduce="star", offload="weights", offload_window=1, host_link="nvme-pcie4-x4", **knobs)


def accelerate(evaluator) -> dict:
    metrics = evaluator.evaluate(point(offload="weights", offload_prefetch=0, host_link="nvme-pcie4-x4")).metrics
    assert metrics["infeasible_reason"] == "" and metrics["offloaded_B"] > 0
    return metrics


@pytest.mark.slow  # a whole run of seconds: run with the slow checks
def test_memory_per_device_falls_to_a_few_gb(evaluator):
    """Llama 2-70B on 8 devices under a window of one layer: each device holds one of 80 layers' share of the weights
    (138 GB / 8 / 80 = 0.22 GB) plus its activations and KV cache, under the paper's 3.1 GB (which also holds its
    runtime, not priced), and at least 90% under what the 8 devices need without the window."""
    whole = evaluator.evaluate(point("llama-2-70b", 8, allreduce="star"), price_infeasible=True).metrics
    windowed = evaluator.evaluate(tpi("llama-2-70b", 8)).metrics
    assert windowed["infeasible_reason"] == ""
    per_device_B = windowed["peak_memory_B"] / 8
    window_weights_B = windowed["offloaded_B"] / 8 / 80
    assert 0.2e9 < window_weights_B < per_device_B <= PEAK_70B_B
    assert 1 - windowed["peak_memory_B"] / whole["peak_memory_B"] >= MEMORY_CUT


def test_decode_over_a_network_is_latency_bound(evaluator):
    """Latency, not bandwidth: on the link's lower-bound hop a decode token's all-reduces (8 KiB on 4 devices) are
    mostly hops, so halving the latency shortens the token more than doubling the bandwidth does (Llama 2-7B fits 4
    x 8 GB whole: no disk here)."""
    def tpot(*what_ifs) -> float:
        return evaluator.evaluate(point(tp=4, allreduce="nccl", link_what_ifs=what_ifs)).metrics["tpot_s"]

    base = tpot()
    half_latency = tpot(("latency_us", 2.7 / 2))
    double_bandwidth = tpot(("bandwidth_GBps", 25.0))
    assert base - half_latency > 3 * (base - double_bandwidth) > 0


@pytest.mark.parametrize("latency_us", [2.7, 27.0, 270.0])
def test_star_beats_the_ring_over_a_network_and_more_so_the_slower_its_hops(evaluator, latency_us):
    """A decode token's 64 all-reduces on 4 devices: the ring waits 6 hops each, the star 2. From the lower-bound hop
    up the star decodes faster, its lead 4 hops per all-reduce less the extra bytes its master moves."""
    def tpot(allreduce: str) -> float:
        return evaluator.evaluate(point(tp=4, allreduce=allreduce,
                                        link_what_ifs=(("latency_us", latency_us),))).metrics["tpot_s"]

    lead_s = tpot("nccl") - tpot("star")
    bytes_s = 64 * (6 - 1.5) * 4096 * 2 / 12.5e9  # star's 2(n-1) S/B less the ring's 2(n-1)/n S/B, per token
    assert lead_s == pytest.approx(64 * 4 * latency_us * 1e-6 - bytes_s, rel=1e-6)


@pytest.mark.xfail(strict=True, reason="the tool's reduction is about 54%, under the paper's 80%: its Accelerate "
                   "offloads only what does not fit in 8 GB (5.9 of 13.5 GB) and reads it at the NVMe datasheet's 7.45 "
                   "GB/s, 1.0 s/token against the README's measured 26 (Accelerate's safetensors loads, fp32 and the "
                   "Mac's own SSD are not priced), while TPI-LLM's window reads every weight each token (0.45 s/token "
                   "on 4 devices, under the README's 5)")
def test_tpi_llm_token_latency_is_over_80_percent_under_accelerate(evaluator):
    """Llama 2-7B: the README's rows give 1 - 5/26 = 81% at home (4 laptops) and 1 - 3/26 = 88% on Klonet (8 devices);
    the tool's 4-device reduction should fall between the abstract's 80% and Klonet's 88%."""
    baseline = accelerate(evaluator)["tpot_s"]
    ours = evaluator.evaluate(tpi()).metrics["tpot_s"]
    assert LESS_THAN_ACCELERATE <= 1 - ours / baseline <= 1 - TPI_KLONET_7B_S / ACCELERATE_7B_S


@pytest.mark.xfail(strict=True, reason="the tool's token latencies are 4-26x under the README's measured ones: "
                   "Accelerate 1.0 s/token against 26, TPI-LLM on 4 devices 0.45 against 5; what makes them slower "
                   "(fp32 weights, twice the bytes; the devices' own SSDs; Python sockets and pickling per all-reduce; "
                   "Wi-Fi's real latency, not readable here) is not priced")
def test_token_latencies_within_2x_of_the_readme(evaluator):
    assert ACCELERATE_7B_S / 2 <= accelerate(evaluator)["tpot_s"] <= ACCELERATE_7B_S * 2
    assert TPI_HOME_7B_S / 2 <= evaluator.evaluate(tpi()).metrics["tpot_s"] <= TPI_HOME_7B_S * 2
