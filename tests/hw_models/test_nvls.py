"""The NVLink SHARP all-reduce (allreduce: nvls): its bytes by hand, the shipped fit against published rows it did
not see, where a system runs it, and NCCL's fitted all-reduce scored on the same published table (cross-source)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hw_models.link import load_link, load_link_model
from hw_models.nvls import PUBLISHED, fit_nvls, load_nvls_fit, nvls_all_reduce_time_s, read_nvls_rows
from hw_models.registry import load_device
from hw_models.system import SystemModel
from kernels.kernel import KernelKind
from kernels.table import KIND_CODE, KernelTable

ROOT = Path(__file__).resolve().parents[2]
ROWS = ROOT / PUBLISHED
MiB = 2**20


def test_datasheet_model_by_hand():
    """8 GPUs on NVLink 4 (450 GB/s a direction, 0.6 us a hop): each link carries (1 + 1/8) of a 1 GB buffer each way,
    2.5 ms, plus a hop for the reducing loads and one for the multicast stores."""
    link = load_link("nvlink4")
    assert nvls_all_reduce_time_s(1e9, 8, link) == pytest.approx(1.125e9 / 450e9 + 2 * 0.6e-6)
    assert nvls_all_reduce_time_s(1e9, 1, link) == 0.0


@pytest.mark.parametrize("devices", [4, 8])
def test_nvls_moves_fewer_bytes_than_a_ring(devices):
    """(1 + 1/n) of the buffer each way against a ring's 2 (n - 1) / n: on 4 GPUs 1.25 against 1.5, on 8 1.125
    against 1.75. On the datasheet models, a large message runs in that ratio."""
    from hw_models.link import collective_time_s

    link = load_link("nvlink4")
    size = 4e9  # bandwidth-bound: the ring's 14 hops are under a thousandth of it
    ratio = nvls_all_reduce_time_s(size, devices, link) / collective_time_s("all_reduce", size, devices, link)
    assert ratio == pytest.approx((1 + 1 / devices) / (2 * (devices - 1) / devices), rel=1e-3)


def test_shipped_fit_is_the_fit_of_the_published_rows():
    """The shipped YAML holds what fit_nvls makes of the published table (refit: the same line)."""
    shipped, refit = load_nvls_fit(), fit_nvls(ROWS)
    assert shipped.link == "nvlink4"
    assert refit.all_reduce.base_latency_s == pytest.approx(shipped.all_reduce.base_latency_s, rel=1e-3)
    assert refit.all_reduce.bandwidth_fraction == pytest.approx(shipped.all_reduce.bandwidth_fraction, rel=1e-3)


def test_held_out_rows_within_five_percent():
    """The 16 and 32 MiB messages (held out as in the NCCL fits) against the line fitted on the other eight sizes
    (1-512 MiB): the multimem kernel's time is a latency plus its bytes at a fixed share of the link."""
    rows, fit = read_nvls_rows(ROWS), load_nvls_fit()
    held = (rows.message_bytes > 8 * MiB) & (rows.message_bytes <= 32 * MiB)
    assert held.sum() == 2
    predicted = nvls_all_reduce_time_s(rows.message_bytes, rows.devices, load_link("nvlink4"), fit.all_reduce)
    assert np.all(np.abs(predicted[held] / rows.time_s[held] - 1) <= 0.05)
    # The fitted fraction is a share of the datasheet link, and the latency a few microseconds of kernel and barrier.
    assert 0.3 < fit.all_reduce.bandwidth_fraction <= 1.0 and 1e-6 < fit.all_reduce.base_latency_s < 50e-6


def test_published_multimem_beats_nccl_at_every_size():
    """The published table's own conclusion (TokenWeave Fig. 6): on 8 H100s the multimem all-reduce takes less time
    than torch.distributed's NCCL call at every size from 1 to 512 MiB."""
    nvls, nccl = read_nvls_rows(ROWS), read_nvls_rows(ROWS, backend="nccl")
    assert np.array_equal(nvls.message_bytes, nccl.message_bytes) and np.all(nvls.time_s < nccl.time_s)


def _system(allreduce: str, link: str = "nvlink4", tp: int = 8, calibrated: bool = True) -> SystemModel:
    return SystemModel(load_device("h100-sxm"), tp, load_link_model(link, calibrated=calibrated),
                       allreduce=allreduce)


def _all_reduces(sizes) -> KernelTable:
    from kernels.kernel import Kernel

    return KernelTable.from_kernels([Kernel(kind=KernelKind.ALL_REDUCE, op="all_reduce", flops=0.0, weight_bytes=0.0,
                                            act_bytes=float(s), kv_bytes=0.0, dtype="bf16", tensor_core=False)
                                     for s in sizes])


def test_system_prices_its_all_reduces_through_the_switch():
    """On nvlink4 with nvls the all-reduce rows take the fitted NVLS time; on nvlink3 (no reduction in its switch) and
    on more GPUs than the board joins, NCCL's; priced on the datasheet, the NVLS datasheet model."""
    sizes = [16 * MiB, 256 * MiB]
    table = _all_reduces(sizes)
    assert np.all(table.kind == KIND_CODE[KernelKind.ALL_REDUCE])
    fit, link = load_nvls_fit(), load_link("nvlink4")
    nvls = _system("nvls").cost_table(table, "engine").time_s
    assert nvls == pytest.approx(nvls_all_reduce_time_s(np.array(sizes, float), 8, link, fit.all_reduce))
    nccl = _system("nccl").cost_table(table, "engine").time_s
    assert np.all(nvls < nccl)
    for fallback, ring in ((_system("nvls", link="nvlink3"), _system("nccl", link="nvlink3")),
                           (_system("nvls", tp=16), _system("nccl", tp=16))):
        assert not fallback.nvls_all_reduce
        assert np.array_equal(fallback.cost_table(table, "engine").time_s, ring.cost_table(table, "engine").time_s)
    datasheet = _system("nvls", calibrated=False).cost_table(table, "engine").time_s
    assert datasheet == pytest.approx(nvls_all_reduce_time_s(np.array(sizes, float), 8, link))


def test_more_link_bandwidth_is_never_slower():
    fast = SystemModel(load_device("h100-sxm"), 8, load_link_model("nvlink4", {"bandwidth_GBps": 900}),
                       allreduce="nvls")
    table = _all_reduces([MiB, 64 * MiB])
    assert np.all(fast.cost_table(table).time_s < _system("nvls").cost_table(table).time_s)


# ----- NCCL's fitted all-reduce (HGX H200's nccl-tests) on the published DGX H100 calls: cross-source -----

def _nccl_errors() -> tuple[np.ndarray, np.ndarray]:
    rows = read_nvls_rows(ROWS, backend="nccl")
    predicted = load_link_model("nvlink4").collective_time_s("all_reduce", rows.message_bytes, rows.devices)
    return rows.message_bytes, predicted / rows.time_s - 1


def test_nccl_fit_on_bandwidth_bound_published_calls():
    """From 64 MiB on the time is the bytes over NVLink: H200's NCCL fit (nccl-tests on HGX H200, the same NVLink 4
    and NVSwitch) comes within 15% of the H100 calls timed one by one, the published ones 10-14% longer."""
    size, err = _nccl_errors()
    assert np.all(np.abs(err[size >= 64 * MiB]) <= 0.15), err


@pytest.mark.xfail(strict=True, reason="NCCL calls timed one at a time (CUDA events around one call after an L2 "
                   "flush, TokenWeave's harness) take 8-54 us longer at 1-32 MiB than HGX H200's nccl-tests "
                   "back-to-back average that the nvlink4 fit is made on: -22% to -31% there, median -27%; the "
                   "fit has no per-call term that a call alone pays")
def test_nccl_fit_on_latency_bound_published_calls():
    size, err = _nccl_errors()
    assert np.median(np.abs(err[size < 64 * MiB])) <= 0.15, err


def test_custom_all_reduce_hands_messages_beyond_its_buffer_to_nccl():
    """An engine's custom all-reduce takes messages up to its buffer (vLLM's 8 MiB): a 4 MiB message runs as its
    kernels where they beat NCCL, a 16 MiB one as NCCL's collective exactly."""
    from hw_models.link import CUSTOM_ALL_REDUCE_MAX_B

    assert CUSTOM_ALL_REDUCE_MAX_B == 8 * MiB
    table = _all_reduces([4 * MiB, 16 * MiB])
    custom = _system("custom").cost_table(table, "engine").time_s
    nccl = _system("nccl").cost_table(table, "engine").time_s
    assert custom[0] < nccl[0] and custom[1] == nccl[1]


def test_nvls_runs_where_it_beats_the_ring():
    """On two GPUs the switch carries (1 + 1/2) of the buffer each way against a ring's 1: on the datasheet models
    the ring runs (NCCL's tuner picks per size), so nvls prices as nccl; on eight it carries 1.125 against 1.75."""
    table = _all_reduces([256 * MiB])
    for tp, nvls_wins in ((2, False), (8, True)):
        nvls = _system("nvls", tp=tp, calibrated=False).cost_table(table, "engine").time_s
        nccl = _system("nccl", tp=tp, calibrated=False).cost_table(table, "engine").time_s
        assert (nvls < nccl).all() if nvls_wins else np.array_equal(nvls, nccl)


def test_in_network_reduction_is_a_link_what_if(evaluator):
    """link.multimem 1 on NVLink 3 (an A100 board's switch does not reduce): the what-if's NVLS all-reduce, priced at
    the fitted latency and share of NVLink 3's bandwidth, makes a prefill's all-reduces faster than NCCL's ring; 0
    leaves the point as it is. 0 and 1 stand for no and yes, as in a sweep's overrides."""
    from explore.design_point import DesignPoint, with_knobs

    def ttft(what_if: tuple) -> float:
        point = DesignPoint(**with_knobs(dict(model="llama-2-7b", device="a100-sxm-80gb", batch=1, prompt=2048,
                                              output=2, tp=8, allreduce="nvls", execution="engine",
                                              link_overrides=what_if)))
        return evaluator.evaluate(point).metrics["ttft_s"]

    plain = ttft(())
    assert ttft((("multimem", 0),)) == plain
    assert ttft((("multimem", 1),)) < plain
