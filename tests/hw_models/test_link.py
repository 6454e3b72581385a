"""Links and collectives: the datasheet alpha-beta model by hand, invariants that hold for every link and fit,
the shipped NCCL fits against rows they were not fitted on, and one-line errors for bad links."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from hw_models import link as link_module
from hw_models.link import (
    COLLECTIVES,
    DEVICE_LINKS,
    SYSTEMS,
    CollectiveFit,
    ProtocolFit,
    as_timed_s,
    calibrated_links,
    collective_time_s,
    custom_all_reduce_time_s,
    default_link,
    fit_collective,
    fit_collectives,
    held_out,
    link_names,
    load_link,
    load_link_model,
    load_system_fit,
    read_system_rows,
    system_fit_names,
)
from workloads.errors import InputError

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "vidur").is_dir() or not (DATA / "aiconfigurator").is_dir(),
                                reason="../shared/data is not beside the checkout")
MiB = 2**20
FIT = CollectiveFit(small=ProtocolFit(base_latency_s=5e-6, bandwidth_fraction=0.2),
                    large=ProtocolFit(base_latency_s=20e-6, bandwidth_fraction=0.7),
                    step_latency_s=1e-6, devices_exponent=0.25, max_devices=8)


def test_ring_all_reduce_by_hand():
    # NVLink 4: 450 GB/s per direction, 0.6 us per step. 8 GPUs, 64 MiB per rank:
    # 2*7/8 * 67,108,864 B = 117,440,512 B over 450e9 B/s = 260.979 us, plus 2*7 steps * 0.6 us = 8.4 us.
    assert collective_time_s("all_reduce", 64 * MiB, 8, load_link("nvlink4")) == pytest.approx(269.379e-6, rel=1e-5)


def test_other_collectives_by_hand():
    pcie = load_link("pcie4-x16")  # 31.5 GB/s, 1.0 us
    # all_gather of a 4 MB gathered tensor on 4 GPUs: 3/4 * 4e6 / 31.5e9 = 95.238 us + 3 * 1 us.
    assert collective_time_s("all_gather", 4e6, 4, pcie) == pytest.approx(98.238e-6, rel=1e-5)
    # send_recv of 1 MB: 1e6 / 31.5e9 = 31.746 us + 1 us, whatever the group size.
    assert collective_time_s("send_recv", 1e6, 2, pcie) == pytest.approx(32.746e-6, rel=1e-5)
    assert collective_time_s("send_recv", 1e6, 8, pcie) == collective_time_s("send_recv", 1e6, 2, pcie)


def test_custom_all_reduce_by_hand():
    nvlink3 = load_link("nvlink3")  # 300 GB/s per direction, 0.6 us a hop
    kernels = 5e-6  # the copy and the reduction kernel, as a device prices them (hw_models/system.py)
    # 8 GPUs, 8 KB per rank (batch-1 Llama-2-7B): one-shot, a barrier hop and a read's round trip (3 x 0.6 us)
    # plus 7 x 8,192 B / 300e9 B/s = 0.191 us: 6.991 us. Two-shot: 6 hops and 2 x 7/8 x 8,192 B / 300e9 B/s.
    assert custom_all_reduce_time_s(8192, 8, nvlink3, kernels) == pytest.approx(6.99115e-6, rel=1e-5)
    # 8 GPUs, 8 MiB: one-shot 7 x 8 MiB / 300e9 = 195.7 us; two-shot 2 x 7/8 x 8 MiB / 300e9 = 48.9 us + 3.6 us.
    two_shot = kernels + 6 * 0.6e-6 + 2 * 7 / 8 * 8 * MiB / 300e9
    assert custom_all_reduce_time_s(8 * MiB, 8, nvlink3, kernels) == pytest.approx(two_shot, rel=1e-9)
    assert custom_all_reduce_time_s(8192, 1, nvlink3, kernels) == 0.0


def test_peer_devices_of_the_presets():
    """How many GPUs on a link reach each other's memory (where an engine's custom all-reduce runs): an NVSwitch
    board's eight, a DGX-1 quad on NVLink 2, vLLM's pair on PCIe, none across nodes; each with its source."""
    expected = {"nvlink2": 4, "nvlink3": 8, "nvlink4": 8, "nvlink5": 8, "pcie3-x16": 2, "pcie4-x16": 2,
                "pcie5-x16": 2, "infiniband-ndr": 1, "infiniband-hdr": 1, "ethernet-100g": 1, "nvme-pcie4-x4": 1,
                "roce-400g": 1}
    assert set(expected) == set(link_names())
    for name, count in expected.items():
        link = load_link(name)
        assert link.peer_devices == count and "peer_devices" in link.source, name


def test_a_storage_tier_streams_to_a_host_but_joins_no_devices():
    """An NVMe SSD is a tier offloaded weights stream from (load_link, a host link), not a link between GPUs: a
    collective over it (tensor-parallel devices, nodes, a KV hand-over) is refused in one line naming the links that
    join devices. Each link that does join devices says so with its source."""
    assert load_link("nvme-pcie4-x4").bandwidth_GBps == pytest.approx(7.45)
    with pytest.raises(InputError, match=r"^link: found 'nvme-pcie4-x4', a storage tier that joins no devices, "
                                         r"allowed: a link between devices: ethernet-100g, .*nvlink4.*roce-400g$"):
        load_link_model("nvme-pcie4-x4")
    for name in set(link_names()) - {"nvme-pcie4-x4"}:
        assert load_link_model(name).spec.joins_devices, name
    with pytest.raises(InputError, match=r"link\.joins_devices: no such field to override"):  # what it is, no what-if
        load_link_model("nvlink4", {"joins_devices": False})
    with pytest.raises(InputError, match=r"found none for device 'l4-copy'") as refused:  # a file names no link
        default_link("l4-copy")
    assert "nvme-pcie4-x4" not in str(refused.value) and "pcie4-x16" in str(refused.value)


def test_custom_all_reduce_is_never_slower_with_more_bandwidth_or_fewer_bytes():
    sizes, devices = np.meshgrid(np.geomspace(256, 2**30, 23), np.arange(2, 9))
    slow, fast = load_link("nvlink3"), load_link("nvlink3", {"bandwidth_GBps": 600})
    time = custom_all_reduce_time_s(sizes, devices, slow, 3e-6)
    assert np.all(custom_all_reduce_time_s(sizes, devices, fast, 3e-6) <= time)
    assert np.all(np.diff(time, axis=1) >= 0)
    # Its floor: the kernels and one-shot's three hops, whatever the message.
    assert np.all(time >= 3e-6 + 3 * slow.latency_s)


def test_datasheet_bandwidths():
    # Per direction per device: PCIe 4.0 16 GT/s x 16 lanes x 128/130 / 8; 5.0 twice that; NVLink totals halved;
    # NDR 400 Gb/s / 8; 100 GbE / 8.
    expected = {"pcie4-x16": 16 * 16 * 128 / 130 / 8, "pcie5-x16": 32 * 16 * 128 / 130 / 8, "nvlink3": 600 / 2,
                "nvlink4": 900 / 2, "nvlink5": 1800 / 2, "infiniband-ndr": 400 / 8, "ethernet-100g": 100 / 8}
    assert set(expected) <= set(link_names())
    for name, gbps in expected.items():
        link = load_link(name)
        assert link.bandwidth_GBps == pytest.approx(gbps, rel=0.002), name
        assert link.latency_us >= 0 and "latency_us" in link.source and "bandwidth_GBps" in link.source


@pytest.mark.parametrize("kind", COLLECTIVES)
@pytest.mark.parametrize("fit", [None, FIT], ids=["datasheet", "fitted"])
def test_one_device_is_free(kind, fit):
    assert collective_time_s(kind, 1e9, 1, load_link("pcie4-x16"), fit) == 0.0


@pytest.mark.parametrize("kind", COLLECTIVES)
@pytest.mark.parametrize("fit", [None, FIT], ids=["datasheet", "fitted"])
def test_more_bandwidth_or_fewer_bytes_is_never_slower(kind, fit):
    sizes, devices = np.meshgrid(np.geomspace(256, 2**30, 23), np.arange(1, 17))
    slow, fast = load_link("nvlink4"), load_link("nvlink4", {"bandwidth_GBps": 900})
    time = collective_time_s(kind, sizes, devices, slow, fit)
    assert np.all(collective_time_s(kind, sizes, devices, fast, fit) <= time)
    assert np.all(np.diff(time, axis=1) >= 0)  # along message size


@pytest.mark.parametrize("kind", ["all_reduce", "all_gather", "reduce_scatter", "all_to_all"])
def test_more_devices_never_cheaper_under_the_datasheet_model(kind):
    # Each device sends a growing share of the per-rank buffer, (n-1)/n, over more steps. Measured NCCL times do not
    # always obey this (H200 all_reduce of 512 MiB: 2.31 ms on 4 GPUs, 2.04 ms on 8), so fits are not held to it.
    sizes, devices = np.meshgrid(np.geomspace(256, 2**30, 23), np.arange(1, 65))
    time = collective_time_s(kind, sizes, devices, load_link("infiniband-ndr"))
    assert np.all(np.diff(time, axis=0) > 0)


def test_vectorized_equals_scalar():
    link, sizes, devices = load_link("nvlink5"), np.array([512.0, 3e6, 7e8]), np.array([2, 4, 8])
    batch = collective_time_s("reduce_scatter", sizes, devices, link, FIT)
    assert batch == pytest.approx([collective_time_s("reduce_scatter", s, d, link, FIT)
                                   for s, d in zip(sizes, devices, strict=True)])


def test_fitted_bandwidth_scale_stops_at_the_largest_fitted_count():
    link, big = load_link("nvlink4"), 2**30
    unclamped = CollectiveFit(small=FIT.small, large=FIT.large, step_latency_s=0, devices_exponent=0.25)
    clamped = CollectiveFit(small=FIT.small, large=FIT.large, step_latency_s=0, devices_exponent=0.25, max_devices=8)
    # Beyond 8 devices the clamped fit prices the bandwidth term as 8 devices do: 2(n-1)/n S / (0.7 B 4^0.25).
    expected = 2 * 15 / 16 * big / (0.7 * link.bandwidth_Bps * 4**0.25) + 20e-6
    assert collective_time_s("all_reduce", big, 16, link, clamped) == pytest.approx(expected)
    assert collective_time_s("all_reduce", big, 16, link, unclamped) < expected


# ----- The shipped fits on the measured NCCL data -----

def _held_out_errors(system: str, kind: str) -> np.ndarray:
    fit = load_system_fit(system)
    rows = read_system_rows(system, DATA)
    rows_held = (rows.kind == kind) & held_out(rows.devices, rows.message_bytes)
    predicted = as_timed_s(kind, rows.message_bytes[rows_held], rows.devices[rows_held], load_link(fit.link),
                           fit.collectives[kind], rows.time_s[rows_held])
    return np.abs(predicted / rows.time_s[rows_held] - 1)


# Held-out medians above 15%, each a property of the data the model cannot express: A100 send_recv drops from
# ~255 to ~225 GB/s above 32 MiB; L40S all_to_all on 8 GPUs does not scale as a power of n.
KNOWN_MISSES = {("a100-dgx", "send_recv"), ("l40s-pcie", "all_to_all")}


@needs_data
def test_shipped_fits_cover_every_measured_collective():
    assert system_fit_names() == list(SYSTEMS)
    expected = {"vidur": {"all_reduce", "send_recv"},
                "aiconfigurator": {"all_reduce", "all_gather", "reduce_scatter", "all_to_all"}}
    for system, spec in SYSTEMS.items():
        assert set(load_system_fit(system).collectives) == expected[spec.source], system


@needs_data
@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_held_out_error_of_shipped_fits(system):
    # Held out (never fitted): every row on 4 GPUs, and every message of more than 8 and up to 32 MiB.
    for kind in load_system_fit(system).collectives:
        err = _held_out_errors(system, kind)
        assert len(err) >= 20
        limit = 0.20 if (system, kind) in KNOWN_MISSES else 0.15
        assert np.median(err) <= limit, (system, kind, np.median(err))


@needs_data
@pytest.mark.parametrize("source", ["vidur", "aiconfigurator"])
def test_pooled_held_out_error_per_source(source):
    err = np.concatenate([_held_out_errors(s, k) for s, spec in SYSTEMS.items() if spec.source == source
                          for k in load_system_fit(s).collectives])
    assert np.median(err) <= 0.15


@needs_data
def test_shipped_errors_and_refit_reproduce():
    # The errors written in the shipped file are those of its fit, and refitting gives the same predictions.
    shipped = load_system_fit("h200-hgx")
    for kind, summary in shipped.errors.items():
        assert summary["held_out"]["median_abs_err"] == pytest.approx(np.median(_held_out_errors("h200-hgx", kind)))
    refit = fit_collectives(DATA, ["h200-hgx"])[0]
    rows, link = read_system_rows("h200-hgx", DATA), load_link("nvlink4")
    for kind, fit in refit.collectives.items():
        m = rows.kind == kind
        assert collective_time_s(kind, rows.message_bytes[m], rows.devices[m], link, fit) == pytest.approx(
            collective_time_s(kind, rows.message_bytes[m], rows.devices[m], link, shipped.collectives[kind]), rel=1e-3)


@needs_data
def test_message_size_conventions_of_the_sources():
    # aiconfigurator's collector runs nccl-tests from -b 512 bytes to 512 MiB and stores elements (bytes / 2 for
    # half); Vidur's profiler records bytes of fp16 buffers from 2 KiB up to 4096*8192 elements (64 MiB).
    rows = read_system_rows("h200-hgx", DATA)
    assert rows.message_bytes.min() == 512 and rows.message_bytes.max() == 512 * MiB
    vidur = read_system_rows("h100-dgx", DATA)
    assert vidur.message_bytes.min() == 2048 and vidur.message_bytes.max() == 4096 * 8192 * 2
    assert set(vidur.devices) == {2, 4, 8}  # within one DGX node


def test_eager_call_readings_by_hand():
    """A row timed as an eager call reads the device time (its rank called last) or the host's interval (a peer called
    later, and the kernel waited for it), whichever is nearer the measured time; a row timed on the device reads the
    device time."""
    link = load_link("nvlink4")
    device = collective_time_s("all_reduce", 16384, 8, link, FIT)  # 5 us + 14 steps x 1 us + a sliver of bytes
    assert 19e-6 < device < 20e-6
    eager = CollectiveFit(small=FIT.small, large=FIT.large, step_latency_s=1e-6, devices_exponent=0.25, max_devices=8,
                          eager_interval_s=40e-6)
    measured = np.array([18e-6, 25e-6, 38e-6, 60e-6])
    # 25 us: log(25/19.x) < log(40/25), the device time; 38 and 60 us are nearer the interval.
    assert as_timed_s("all_reduce", 16384, 8, link, eager, measured) == pytest.approx([device, device, 40e-6, 40e-6])
    assert as_timed_s("all_reduce", 16384, 8, link, FIT, measured) == pytest.approx([device] * 4)
    # A message whose device time exceeds the interval reads its device time either way.
    big = collective_time_s("all_reduce", 64 * MiB, 8, link, FIT)
    assert as_timed_s("all_reduce", 64 * MiB, 8, link, eager, [big]) == pytest.approx([big])


def test_fit_recovers_device_time_and_host_interval_from_eager_calls():
    """Rows made from a known fit, each read at random as the device time or as the host's 50 us interval (the longer
    of the two), with 3% noise: the fit recovers the interval and the device time at small and large messages."""
    link, rng = load_link("nvlink3"), np.random.default_rng(7)
    devices = np.repeat([2, 4, 8], 60)
    sizes = np.tile(np.geomspace(2048, 64 * MiB, 60), 3)
    truth = CollectiveFit(small=ProtocolFit(base_latency_s=8e-6, bandwidth_fraction=0.3),
                          large=ProtocolFit(base_latency_s=25e-6, bandwidth_fraction=0.7), step_latency_s=1e-6,
                          devices_exponent=0.1, max_devices=8, eager_interval_s=50e-6)
    device = collective_time_s("all_reduce", sizes, devices, link, truth)
    waited = rng.random(len(sizes)) < 0.7  # most ranks call before the last one
    measured = np.where(waited, np.maximum(device, 50e-6), device) * rng.normal(1, 0.03, len(sizes))
    fit = fit_collective("all_reduce", devices, sizes, measured, link, eager_calls=True)
    assert fit.eager_interval_s == pytest.approx(50e-6, rel=0.05)
    for size in (16384, 2**20, 32 * MiB):
        for n in (2, 8):
            assert collective_time_s("all_reduce", size, n, link, fit) == pytest.approx(
                collective_time_s("all_reduce", size, n, link, truth), rel=0.10), (size, n)
    # Read as device times, the same rows make the small messages' latency the host's.
    naive = fit_collective("all_reduce", devices, sizes, measured, link)
    assert naive.eager_interval_s == 0 and collective_time_s("all_reduce", 16384, 2, link, naive) > 30e-6


@needs_data
def test_nvlink4_all_reduce_across_sources():
    """NVLink 4's all-reduce device time as priced (fitted on HGX H200's nccl-tests, back to back) against every DGX
    H100 all-reduce row of Vidur, another GPU on the same link timed as eager calls and read as such (the host's
    interval between calls is the DGX H100 fit's, 40.5 us): the README's cross-source figure (median 5.8%, p90 17.7%).
    Read as device times instead, messages under 64 KB came out 63% too fast."""
    rows = read_system_rows("h100-dgx", DATA)
    reduce = rows.kind == "all_reduce"
    size, time_s = rows.message_bytes[reduce], rows.time_s[reduce]
    priced = load_link_model("nvlink4")
    assert priced.fitted_on["all_reduce"] == "h200-hgx"
    interval = load_system_fit("h100-dgx").collectives["all_reduce"].eager_interval_s
    assert 35e-6 < interval < 45e-6  # the plateau of Vidur's 2-8 GPU rows up to 4 MB
    as_timed = replace(priced.fits["all_reduce"], eager_interval_s=interval)
    error = as_timed_s("all_reduce", size, rows.devices[reduce], priced.spec, as_timed, time_s) / time_s - 1
    assert len(error) == 2982
    assert np.median(abs(error)) <= 0.08 and np.percentile(abs(error), 90) <= 0.25
    small = size < 64 * 1024
    assert small.sum() >= 20 and abs(np.median(error[small])) <= 0.15


@needs_data
def test_device_time_read_from_eager_calls_matches_nccl_tests():
    """The other way: DGX H100's device time, fitted on Vidur's eager calls read as device time or the host's interval,
    against HGX H200's nccl-tests all-reduce rows within Vidur's sizes (2 KB-64 MB, 2-8 GPUs), which its fit never
    saw: median 17% (p90 34%), where the same rows read as device times gave 39% (p90 192%)."""
    rows = read_system_rows("h200-hgx", DATA)
    chosen = (rows.kind == "all_reduce") & (rows.message_bytes >= 2048) & (rows.message_bytes <= 64 * MiB)
    fit = load_system_fit("h100-dgx").collectives["all_reduce"]
    error = collective_time_s("all_reduce", rows.message_bytes[chosen], rows.devices[chosen], load_link("nvlink4"),
                              fit) / rows.time_s[chosen] - 1
    assert chosen.sum() >= 40
    assert np.median(abs(error)) <= 0.20 and np.percentile(abs(error), 90) <= 0.40


def test_link_model_uses_fits_where_measured():
    # nvlink4: send_recv measured on DGX H100 (Vidur) only, the rest on HGX H200 (aiconfigurator) first.
    model = load_link_model("nvlink4")
    assert model.fitted_on == {"all_reduce": "h200-hgx", "send_recv": "h100-dgx", "all_gather": "h200-hgx",
                               "reduce_scatter": "h200-hgx", "all_to_all": "h200-hgx"}
    fit = load_system_fit("h200-hgx").collectives["all_reduce"]
    assert model.collective_time_s("all_reduce", 1e6, 8) == collective_time_s("all_reduce", 1e6, 8, model.spec, fit)
    datasheet = load_link_model("nvlink4", calibrated=False)
    assert datasheet.fits == {} and datasheet.collective_time_s("all_reduce", 1e6, 8) == collective_time_s(
        "all_reduce", 1e6, 8, load_link("nvlink4"))
    # No NCCL data for these: the datasheet model, marked by having no fits.
    for name in ("pcie3-x16", "pcie5-x16", "nvlink2", "infiniband-ndr", "ethernet-100g"):
        assert name not in calibrated_links() and load_link_model(name).fits == {}


def test_every_gpu_preset_has_a_default_link(one_line_error):
    from hw_models.registry import preset_names

    assert set(DEVICE_LINKS) == set(preset_names("gpu"))
    assert set(DEVICE_LINKS.values()) <= set(link_names())
    assert default_link("h100-sxm") == "nvlink4" and default_link("l40s") == "pcie4-x16"
    where, message = one_line_error(lambda: default_link("neupims"))
    assert where == "link" and "'neupims'" in message and "nvlink4" in message


def test_fit_by_device_preset_name():
    assert load_system_fit("h200").name == "h200-hgx"
    assert load_system_fit("h100-sxm").link == "nvlink4"


# ----- Bad input: one line naming what was found and what is allowed -----

def test_unknown_link_lists_names(one_line_error):
    where, message = one_line_error(lambda: load_link("nvlink"))
    assert where == "link" and "'nvlink'" in message and "did you mean" in message
    for name in link_names():
        assert name in message


def test_zero_bandwidth_override(one_line_error):
    where, message = one_line_error(lambda: load_link("nvlink4", {"bandwidth_GBps": 0}))
    assert where.endswith("nvlink4.yaml") and "bandwidth_GBps: found 0, allowed: greater than 0" in message


def test_zero_bandwidth_in_a_file_names_its_line(tmp_path, one_line_error):
    data = yaml.safe_load((Path(link_module.__file__).parent / "presets" / "links" / "nvlink4.yaml").read_text())
    data["bandwidth_GBps"] = 0
    path = tmp_path / "link.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=10_000))
    where, message = one_line_error(lambda: load_link(str(path)))
    assert where == f"{path}:3" and "bandwidth_GBps: found 0, allowed: greater than 0" in message


def test_unknown_override_and_key(tmp_path, one_line_error):
    _, message = one_line_error(lambda: load_link("nvlink4", {"bandwith_GBps": 10}))
    assert "link.bandwith_GBps" in message and "did you mean 'bandwidth_GBps'" in message
    path = tmp_path / "link.yaml"
    path.write_text("name: x\ndescription: y\nbandwidth_GBps: 10\nlatency_us: 1\nsource: a datasheet\ntopolgy: ring\n")
    where, message = one_line_error(lambda: load_link(str(path)))
    assert where == f"{path}:6" and "topolgy: unknown key" in message


def test_bad_collective_arguments(one_line_error):
    link = load_link("nvlink4")
    _, message = one_line_error(lambda: collective_time_s("allreduce", 1e6, 8, link))
    assert "found 'allreduce'" in message and "did you mean 'all_reduce'" in message
    _, message = one_line_error(lambda: collective_time_s("all_reduce", 1e6, 0, link))
    assert "devices: found 0, allowed: a whole number >= 1" in message
    _, message = one_line_error(lambda: collective_time_s("all_reduce", [1e6, -5], 2, link))
    assert "message_bytes: found -5, allowed: >= 0" in message


def test_unknown_fit_system(one_line_error):
    where, message = one_line_error(lambda: load_system_fit("h100-pcie"))
    assert where == "collective fit" and "h200-hgx" in message
