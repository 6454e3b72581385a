"""Systems of tensor-parallel devices end to end: feasibility of a 70B model, one device unchanged, the serving
core on a system, and where all-reduce time goes (Megatron-style TP over NVLink and over PCIe)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from kernels.formats import NumericFormat
from kernels.kernel import KernelKind
from kernels.table import KIND_CODE
from sim.costs import IterationCostModel
from sim.kv_cache import PagedKVCache
from sim.schedulers import SchedulerLimits, make_scheduler
from sim.serving import Pool, serve, serve_pools, serving_memory
from workloads.requests import Fixed, RequestSet

FMT = NumericFormat(weight_bits=16, act_bits=16, kv_bits=16)
# The report tests check that a figure file is written and what report.md names, not what a figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")


def test_a_70b_model_fits_on_four_h100s_but_not_one(evaluator):
    """Llama-2-70B at 16 bits holds 138 GB of weights: infeasible on one 80 GB H100 (of which a CUDA program gets
    79.11 GiB = 84.9 GB, PyTorch's 'total capacity', github.com/vllm-project/vllm/issues/27508), feasible on four."""
    # Prompt 1,024: the traces examples/tensor-parallel.yaml's first point captures too (one session evaluator).
    one = evaluator.evaluate(DesignPoint(model="llama-2-70b", device="h100-sxm", batch=1, prompt=1024, output=8))
    four = evaluator.evaluate(DesignPoint(model="llama-2-70b", device="h100-sxm", batch=1, prompt=1024, output=8,
                                          tp=4))
    assert not one.metrics["fits_in_memory"] and "84.9 GB" in one.metrics["infeasible_reason"]
    assert four.metrics["fits_in_memory"] and four.metrics["tpot_s"] > 0
    assert four.metrics["time_communication_s"] > 0
    # The system's area and idle power are four devices'.
    assert four.metrics["area_mm2"] == 4 * one.metrics["area_mm2"]


def test_a_system_that_does_not_fit_names_its_devices(evaluator):
    """Llama-2-70B's 138 GB of 16-bit weights on two 80 GB H100s (79.11 GiB = 84.9 GB each to a CUDA program, PyTorch's
    'total capacity', github.com/vllm-project/vllm/issues/27508): the reason gives the two devices' 169.9 GB and each
    one's 84.9 GB, not 'the device has 169.9 GB'."""
    two = evaluator.evaluate(DesignPoint(model="llama-2-70b", device="h100-sxm", batch=64, prompt=1024, output=8,
                                         tp=2)).metrics
    assert not two["fits_in_memory"]
    assert "the 2 devices have 169.9 GB (84.9 each)" in two["infeasible_reason"], two["infeasible_reason"]


def test_one_device_keeps_its_point_and_numbers(evaluator):
    plain = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=2, prompt=64, output=4)
    explicit = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=2, prompt=64, output=4, tp=1)
    assert plain.point_id == explicit.point_id
    assert evaluator.evaluate(plain).metrics["tpot_s"] == evaluator.evaluate(explicit).metrics["tpot_s"]


def test_more_link_bandwidth_is_never_slower(evaluator):
    """The same system over a faster link (both datasheet models): no slower, and the all-reduce share smaller."""
    def decode_share(link: str) -> tuple[float, float]:
        point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=8, prompt=256, output=4, tp=4, link=link,
                            use_calibration=False)
        metrics = evaluator.evaluate(point).metrics
        return metrics["e2e_s"], metrics["time_communication_s"]

    (slow_e2e, slow_comm), (fast_e2e, fast_comm) = decode_share("pcie4-x16"), decode_share("nvlink4")
    assert fast_e2e <= slow_e2e and fast_comm < slow_comm


def _decode_share(evaluator, link: str, batch: int) -> float:
    """Share of a Llama-2-70B decode step (8-way TP, H100, 1,024 cached tokens) spent in all-reduces, on the
    datasheet rooflines of the devices and the link (like for like: no fitted model on either side)."""
    device = evaluator.device("h100-sxm", (), False, 8, link)
    tables = evaluator.tables("llama-2-70b", batch, 1024, FMT, 1, 8)
    costs = device.cost_table(tables.decode)
    reduces = tables.decode.kind == KIND_CODE[KernelKind.ALL_REDUCE]
    return float(costs.time_s[reduces].sum() / costs.time_s.sum())


def test_all_reduce_share_of_a_70b_decode_step_over_nvlink_and_pcie(evaluator):
    """TokenWeave (PAPERS.md): tensor-parallel communication takes up to 20% of inference latency even over
    NVLink; over PCIe the same all-reduces take a large share. 8 x H100 decoding Llama-2-70B at batch 64:
    NVLink 4 within (3%, 25%], PCIe 5 x16 at least twice NVLink's share and over a quarter of the step."""
    nvlink, pcie = _decode_share(evaluator, "nvlink4", 64), _decode_share(evaluator, "pcie5-x16", 64)
    assert 0.03 < nvlink <= 0.25, nvlink
    assert pcie >= 2 * nvlink and pcie > 0.25, (nvlink, pcie)


def test_static_batch_on_a_system_through_the_serving_core(evaluator):
    """The serving core prices a tensor-parallel system's iterations from a sharded step template: a static batch
    through it equals the static path on the same system."""
    point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=4, prompt=32, output=4, tp=2)
    want = evaluator.evaluate(point).metrics
    device = evaluator.point_device(point)
    costs = IterationCostModel(device, evaluator.template(point.model, FMT, tp=2))
    requests = RequestSet(arrival_s=np.zeros(4), prompt_tokens=np.full(4, 32), output_tokens=np.full(4, 4))
    memory = serving_memory(capacity_B=1e12, weights_B=0.0, activations_B=0.0, kv_bytes_per_token=1.0,
                            block_tokens=16)
    kv = PagedKVCache(capacity_blocks=memory.kv_blocks, block_tokens=16)
    got = serve(costs, requests, make_scheduler("static", SchedulerLimits(max_seqs=4)), kv, memory,
                device.idle_power_W).metrics()
    for name in ("ttft_s", "tpot_s", "e2e_s", "energy_per_token_J"):
        assert got[name] == pytest.approx(want[name], rel=1e-9), name


def test_tp_that_does_not_split_the_heads_is_one_line(capsys):
    assert main(["run", "--model", "llama-2-70b", "--device", "h100-sxm", "--tp", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--tp: found 3" in err and "64 attention heads" in err


def test_a_link_with_zero_bandwidth_is_one_line(tmp_path, capsys):
    link = tmp_path / "slow.yaml"
    link.write_text("name: slow\nbandwidth_GBps: 0\nlatency_us: 1\nsource: a test\n")
    assert main(["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--tp", "2", "--link", str(link)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bandwidth_GBps" in err and "found 0" in err


def test_energy_of_a_system_is_its_devices(evaluator):
    """Static power is tp devices' idle power over the run: it grows with tp at the same run time."""
    point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=2, prompt=64, output=4, tp=2)
    device = evaluator.point_device(point)
    assert math.isclose(device.idle_power_W, 2 * evaluator.device("h100-sxm").idle_power_W)


def test_link_bandwidth_sweeps_as_an_override(tmp_path, capsys):
    """overrides: {link.bandwidth_GBps: [...]} sweeps the interconnect of a system: a results column each,
    and more bandwidth is never slower (an invariant of any alpha-beta link)."""
    from explore.results import read_results
    from tests.explore.tiny_sweep import write_sweep, write_tiny_model

    model = write_tiny_model(tmp_path)
    # Replayed from graphs: a tiny model in eager waits on its host dispatch whatever the link.
    path = write_sweep(tmp_path, f"name: links\nmodel: {model}\ndevice: h100-sxm\nparallel: {{tp: 2}}\n"
                                 "workload: {batch: 8, prompt: 64, output: 8}\nexecution: graphs\n"
                                 "overrides: {link.bandwidth_GBps: [1, 10, 100]}\n")
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = sorted(read_results(tmp_path / "out"), key=lambda r: float(r["link.bandwidth_GBps"]))
    comm = [float(r["time_communication_s"]) for r in rows]
    e2e = [float(r["e2e_s"]) for r in rows]
    assert comm[0] > comm[1] > comm[2] > 0 and e2e[0] >= e2e[1] >= e2e[2]
    capsys.readouterr()
    for text, named in (("overrides: {link.bandwidth_GBps: 0}\nparallel: {tp: 2}\n", "found 0"),
                        ("overrides: {link.bandwidth_GBps: 10}\n", "parallel")):
        bad = write_sweep(tmp_path, f"name: links\nmodel: {model}\ndevice: h100-sxm\n{text}")
        assert main(["check", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and named in err, err


def test_link_what_ifs_cross_one_device_as_the_design_without_a_link(tmp_path, capsys):
    """A sweep crossing tp 1 with link what-ifs: a point on one device has no link to change, so it keeps the key of
    the point without them and the sweep notes the repeats (2 of the 6 points); a sweep whose every point runs on
    one device is refused in one line, as `explore run --set link.*` without --tp is."""
    from explore.results import read_results
    from tests.explore.tiny_sweep import write_sweep, write_tiny_model

    model = write_tiny_model(tmp_path)
    head = f"name: links\nmodel: {model}\ndevice: h100-sxm\nworkload: {{batch: 8, prompt: 64, output: 8}}\n"
    assert main([write_sweep(tmp_path, head), "--out", str(tmp_path / "plain"), "--quiet"]) == 0
    (plain,) = read_results(tmp_path / "plain")
    path = write_sweep(tmp_path, head + "parallel: {tp: [1, 2]}\noverrides: {link.bandwidth_GBps: [100, 450, 900]}\n")
    capsys.readouterr()
    assert main(["check", path]) == 0
    said = capsys.readouterr()
    assert "2 of 6 points are another point's design, run once: link.bandwidth_GBps changes nothing where tp and " \
           "pp are 1" in said.out + said.err
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = read_results(tmp_path / "out")
    assert [row["point_id"] for row in rows if row["tp"] == 1] == [plain["point_id"]]
    assert {row["link.bandwidth_GBps"] for row in rows if row["tp"] == 2} == {100, 450, 900}
    capsys.readouterr()
    alone = write_sweep(tmp_path, head + "parallel: {tp: 1}\noverrides: {link.bandwidth_GBps: [100, 900]}\n")
    assert main(["check", alone]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "overrides.link.bandwidth_GBps: found where every point runs on one device" in err


def test_a_static_link_what_if_is_against_the_link_as_shipped(tmp_path, evaluator):
    """A static sweep's link what-ifs get the what-if figure too: at NVLink 4's own 450 GB/s every gain is exactly
    1 (the same point), at 900 never below 1, at 100 never above."""
    from explore.report_detail import DetailSource
    from explore.report_whatif import gains
    from explore.results import read_results
    from tests.explore.tiny_sweep import write_sweep, write_tiny_model

    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: links\nmodel: {model}\ndevice: h100-sxm\nparallel: {{tp: 2}}\n"
                                 "workload: {batch: 8, prompt: 64, output: 8}\nexecution: graphs\n"
                                 "overrides: {link.bandwidth_GBps: [100, 450, 900]}\n")
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert (tmp_path / "out" / "figures" / "whatif.png").is_file()
    rows = read_results(tmp_path / "out")
    by_value = {row["link.bandwidth_GBps"]: gain for row, gain in gains(rows, DetailSource(evaluator, rows, None))}
    assert by_value[450] == {"tpot_s": 1.0, "ttft_s": 1.0, "energy_per_token_J": 1.0, "shipped_fits": 1.0}
    assert all(g >= 1.0 for g in by_value[900].values()) and all(g <= 1.0 for g in by_value[100].values())


def test_a_tp_sweep_report_draws_scaling(tmp_path, capsys):
    """A sweep over tp gets the scaling figure and names each system in its labels; one without tp does not."""
    from tests.explore.tiny_sweep import write_sweep, write_tiny_model

    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: scaling\nmodel: {model}\ndevice: h100-sxm\nparallel: {{tp: [1, 2, 4]}}\n"
                                 "workload: {batch: [1, 8], prompt: 32, output: 4}\n")
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    figures = tmp_path / "out" / "figures"
    assert (figures / "scaling.png").is_file()
    assert "h100-sxm x4" in (tmp_path / "out" / "report.md").read_text()
    plain = write_sweep(tmp_path, f"name: plain\nmodel: {model}\ndevice: h100-sxm\n"
                                  "workload: {batch: [1, 8], prompt: 32, output: 4}\n")
    assert main([plain, "--out", str(tmp_path / "plain"), "--quiet"]) == 0
    assert not (tmp_path / "plain" / "figures" / "scaling.png").exists()
    capsys.readouterr()


def test_pipeline_stages_add_their_sends_to_one_device_time(evaluator):
    """Two pipeline stages run one batch stage after stage: the same kernels as one device (same dynamic
    energy) plus one send of the hidden state per pass, timed on the link by hand."""
    from hw_models.link import load_link_model

    # Replayed from graphs: in eager the host's dispatch, longer than the kernels here, would hide the sends.
    base = dict(model="llama-2-7b", device="h100-sxm", batch=4, prompt=64, output=3, execution="graphs")
    one = evaluator.evaluate(DesignPoint(**base)).result
    two = evaluator.evaluate(DesignPoint(**base, pp=2)).result
    link = load_link_model("nvlink4")
    hidden = evaluator.config("llama-2-7b").hidden_size
    prefill_send = float(link.collective_time_s("send_recv", 4 * 64 * hidden * 2, 2))
    decode_send = float(link.collective_time_s("send_recv", 4 * 1 * hidden * 2, 2))
    assert two.makespan_s == pytest.approx(one.makespan_s + prefill_send + 2 * decode_send, rel=1e-9)
    for part in ("compute_J", "memory_J"):
        assert two.energy_parts_J[part] == pytest.approx(one.energy_parts_J[part], rel=1e-9)
    assert two.energy_parts_J["static_J"] == pytest.approx(2 * one.energy_parts_J["static_J"] * two.makespan_s
                                                          / one.makespan_s, rel=1e-9)


def test_a_system_rents_for_its_devices(evaluator):
    """usd_per_hour (what a sweep minimizes to find the cheapest system meeting its constraints) is the
    devices' published hourly prices summed: 4 x H100's $3.78/h (its preset's source)."""
    point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=2, prompt=64, output=4, tp=4)
    assert evaluator.evaluate(point).metrics["usd_per_hour"] == pytest.approx(4 * 3.78)


def _all_reduce_s(evaluator, allreduce: str, execution: str) -> np.ndarray:
    """Each all-reduce of batch-1 Llama-2-7B's decode step on 8 A100s, all-reducing with `allreduce`."""
    device = evaluator.device("a100-sxm-80gb", (), True, 8, "", (), 1, allreduce)
    table = evaluator.tables("llama-2-7b", 1, 64, FMT, 1, 8).decode
    reduces = table.kind == KIND_CODE[KernelKind.ALL_REDUCE]
    return device.cost_table(table, execution).time_s[reduces]


def test_custom_all_reduce_is_never_slower_than_nccl_and_pays_its_kernels_and_hops(evaluator):
    """An engine's custom all-reduce falls back to NCCL where NCCL is faster, so it is never slower; and it costs at
    least its two kernels' launches in a graph plus one-shot's three link hops (hw_models/link.py)."""
    a100 = evaluator.device("a100-sxm-80gb")
    custom, nccl = _all_reduce_s(evaluator, "custom", "graphs"), _all_reduce_s(evaluator, "nccl", "graphs")
    assert len(custom) == 2 * 32 and np.all(custom <= nccl)
    floor = 2 * a100.host_s("graphs") + 3 * 0.6e-6
    assert np.all(custom >= floor) and np.all(custom < nccl)  # 8 KB messages: the P2P kernels win
    # Launched from the host the kernels pay its launch instead of a graph node's.
    assert np.all(_all_reduce_s(evaluator, "custom", "eager") > custom)


def test_nccl_all_reduce_keeps_its_points_and_numbers(evaluator):
    """A point at the default all-reduce keeps its key, and prices as the point without the knob."""
    from explore.design_point import with_knobs

    plain = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=2, prompt=64, output=4, tp=2)
    named = DesignPoint(**with_knobs(dict(model="llama-2-7b", device="h100-sxm", batch=2, prompt=64, output=4, tp=2,
                                          allreduce="nccl")))
    custom = DesignPoint(**with_knobs(dict(model="llama-2-7b", device="h100-sxm", batch=2, prompt=64, output=4, tp=2,
                                           allreduce="custom")))
    assert plain.point_id == named.point_id != custom.point_id
    assert evaluator.evaluate(named).metrics["e2e_s"] == evaluator.evaluate(plain).metrics["e2e_s"]
    assert evaluator.evaluate(custom).metrics["e2e_s"] <= evaluator.evaluate(plain).metrics["e2e_s"]


def test_allreduce_sweeps_in_the_parallel_section(tmp_path, capsys):
    """parallel: {allreduce: [nccl, custom]} is a results column; custom all-reduces take less communication time
    on a small-message decode; an unknown implementation is the one-line error."""
    from explore.results import read_results
    from tests.explore.tiny_sweep import write_sweep, write_tiny_model

    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: allreduce\nmodel: {model}\ndevice: a100-sxm-80gb\n"
                                 "parallel: {tp: 2, allreduce: [nccl, custom]}\n"
                                 "workload: {batch: 1, prompt: 16, output: 8}\nexecution: graphs\n")
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = {r["allreduce"]: r for r in read_results(tmp_path / "out")}
    assert set(rows) == {"nccl", "custom"}
    assert 0 < float(rows["custom"]["time_communication_s"]) < float(rows["nccl"]["time_communication_s"])
    capsys.readouterr()
    bad = write_sweep(tmp_path, f"name: allreduce\nmodel: {model}\ndevice: a100-sxm-80gb\n"
                                "parallel: {tp: 2, allreduce: mpi}\n")
    assert main(["check", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "allreduce" in err and "mpi" in err and "custom" in err, err


def test_custom_all_reduce_runs_only_where_the_devices_reach_each_other(evaluator):
    """Over PCIe, engines run their own all-reduce on two GPUs at most (vLLM): four L40S all-reduce with NCCL whatever
    the knob says; the link's peer_devices, overridden as a what-if, lifts that."""
    table = evaluator.tables("llama-2-7b", 1, 64, FMT, 1, 4).decode
    reduces = table.kind == KIND_CODE[KernelKind.ALL_REDUCE]

    def times(allreduce: str, link_overrides: tuple = ()) -> np.ndarray:
        device = evaluator.device("l40s", (), True, 4, "", link_overrides, 1, allreduce)
        return device.cost_table(table, "graphs").time_s[reduces]

    assert np.array_equal(times("custom"), times("nccl"))
    assert np.all(times("custom", (("peer_devices", 4),)) < times("nccl"))


@pytest.mark.slow  # traces Mixtral-8x7B's two layouts (7 s): in the slow run, as the unit run's budget asks
def test_split_and_spread_experts_sweep_side_by_side(tmp_path, evaluator):
    """parallel: {ep: [split, spread]} runs both layouts of an MoE model's experts in one sweep, each point as the
    same point built by hand (ep 1 and ep = tp)."""
    from explore.results import read_results
    from tests.explore.tiny_sweep import write_sweep

    path = write_sweep(tmp_path, "name: ep\nmodel: mixtral-8x7b\ndevice: h100-sxm\nexecution: engine\n"
                                 "parallel: {tp: 2, ep: [split, spread]}\n"
                                 "workload: {batch: 1, prompt: 16, output: 4}\n")
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = {int(r["ep"]): float(r["tpot_s"]) for r in read_results(tmp_path / "out")}
    for ep in (1, 2):
        point = DesignPoint(model="mixtral-8x7b", device="h100-sxm", execution="engine", tp=2, ep=ep, batch=1,
                            prompt=16, output=4)
        assert rows[ep] == evaluator.evaluate(point).metrics["tpot_s"]


def test_a_sweep_over_links_priced_by_different_models_says_so(tmp_path, capsys):
    """NVLink 4 and PCIe 4 have fits on measured NCCL collectives (HGX H200, an L40S host), PCIe 5 none (its datasheet
    formula): a sweep ranking them is told, before it runs; one over fitted links alone is not."""
    from tests.explore.tiny_sweep import write_sweep

    def notes(links: str) -> str:
        path = write_sweep(tmp_path, "name: links\nmodel: llama-2-70b\ndevice: h100-sxm\nexecution: engine\n"
                                     "workload: {batch: 8, prompt: 128, output: 4}\n"
                                     f"parallel: {{tp: 4, link: {links}}}\n")
        assert main(["check", path]) == 0
        return capsys.readouterr().out

    assert "links priced by different models: nvlink4 by fits" in notes("[default, pcie5-x16]")
    assert "pcie5-x16 by the datasheet formula" in notes("[default, pcie5-x16]")
    assert "links priced by different models" not in notes("[default, pcie4-x16]")


def test_a_report_over_links_priced_by_different_models_says_so():
    """The report says it too, from its rows alone (`explore report` has no sweep to read): a reader of report.md
    sees PCIe 5 (datasheet formula) decode faster than NVLink 4 (fitted on measured NCCL), so the summary says the
    two are priced unlike; not for fitted links alone, one device (no link) or devices on their datasheets."""
    from explore.report import _summary, link_models_note

    def row(link: str, tp: int = 4, calibrated: str = "fitted") -> dict:
        return {"device": "h100-sxm", "tp": tp, "pp": 1, "link": link, "calibrated": calibrated}

    note = link_models_note([row("default"), row("pcie5-x16")])
    assert "links priced by different models: nvlink4 by fits" in note and "pcie5-x16 by the datasheet" in note
    assert link_models_note([row("default"), row("pcie4-x16")]) == ""
    assert link_models_note([row("default"), row("pcie5-x16", tp=1)]) == ""
    assert link_models_note([row("default", calibrated="none"), row("pcie5-x16", calibrated="none")]) == ""
    # As read back from results.csv: numbers as text, the default link as an empty cell.
    assert link_models_note([row(""), {**row("pcie5-x16"), "tp": "4", "pp": "1"}]) == note
    assert link_models_note([{"device": "h100-sxm", "link": "pcie5-x16", "calibrated": "fitted"}]) == ""  # no tp
    assert f"Note: {note}." in _summary([row("default"), row("pcie5-x16")], None)


def test_one_request_on_pipeline_stages_through_the_serving_core(evaluator):
    """A request alone on two pipeline stages, served by the serving core (each stage's share of the step template
    and its send, sim/costs.py), takes what the static path prices for a batch of one on the same stages (the
    traced pass with its sends, kernels/parallel.py pipeline_sends)."""
    point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=1, prompt=32, output=4, pp=2, execution="graphs")
    want = evaluator.evaluate(point).metrics
    device = evaluator.point_device(point)
    costs = IterationCostModel(device, evaluator.template(point.model, FMT), execution="graphs", stages=2,
                               send_B_per_token=evaluator.config(point.model).hidden_size * 2.0)
    memory = serving_memory(capacity_B=1e12, weights_B=0.0, activations_B=0.0, kv_bytes_per_token=1.0,
                            block_tokens=16)
    pool = Pool(name="serve", role="serve", replicas=1, costs=costs, scheduler="static",
                limits=SchedulerLimits(max_seqs=1), memory=memory, idle_power_W=device.idle_power_W, stages=2)
    requests = RequestSet(arrival_s=np.zeros(1), prompt_tokens=np.full(1, 32), output_tokens=np.full(1, 4))
    got = serve_pools([pool], requests).metrics()
    for name in ("ttft_s", "tpot_s", "e2e_s", "energy_per_token_J"):
        assert got[name] == pytest.approx(want[name], rel=1e-9), name


def test_a_serving_sweep_runs_on_pipeline_stages(tmp_path, capsys):
    """A serving sweep crosses pipeline stages like any other parallel knob: both points run, and on two stages a
    request waits no less for its first token than on one (one prompt crosses both stages and a send)."""
    from explore.results import read_results
    from tests.explore.tiny_sweep import write_sweep, write_tiny_model

    model = write_tiny_model(tmp_path)
    sweep = write_sweep(tmp_path, f"name: pp-serving\nmodel: {model}\ndevice: h100-sxm\nexecution: graphs\n"
                                  "serving: {requests: 6, rate: 1, prompt: 64, output: 8}\nparallel: {pp: [1, 2]}\n")
    assert main([sweep, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = sorted(read_results(tmp_path / "out"), key=lambda row: int(row["pp"]))
    assert [int(row["pp"]) for row in rows] == [1, 2]
    assert all(not row["infeasible_reason"] for row in rows)
    assert float(rows[1]["ttft_p50_s"]) > float(rows[0]["ttft_p50_s"])
    capsys.readouterr()


def test_prefilled_kv_leaves_every_stage_at_once(evaluator):
    """Disaggregated on pipeline stages, each stage's devices hold their layers' KV and send it over their own
    ports at once: a request alone reaches the decode pool one send of its prompt's KV over tp x pp ports after
    its first token (Llama-2-7B: 32 layers x 32 KV heads x 128 x K and V x 2 B = 512 KiB a token)."""
    from hw_models.link import load_link_model
    from sim.serving_spec import ServingSpec

    prompt, kv_per_token_B = 64, 32 * 32 * 128 * 2 * 2
    link = load_link_model("infiniband-ndr")
    for tp, pp in ((1, 2), (2, 2)):
        serving = ServingSpec(requests=1, rate_per_s=1.0, prompt=Fixed(tokens=prompt), output=Fixed(tokens=4),
                              prefill_replicas=1, kv_link="infiniband-ndr")
        point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=1, prompt=0, output=0, serving=serving,
                            tp=tp, pp=pp, execution="graphs")
        records = evaluator.evaluate(point).result.records
        send_s = float(link.collective_time_s("send_recv", prompt * kv_per_token_B / (tp * pp), 2))
        assert records.decode_admitted_s[0] - records.first_token_s[0] == pytest.approx(send_s, rel=1e-9), (tp, pp)


def test_a_serving_sweep_crosses_token_splitting(tmp_path, capsys):
    """parallel: {overlap: [none, token_split]} is a results column of a serving sweep; an iteration splits only where
    that is faster, so a split point's requests wait no longer for their first token; a static sweep, or pipeline
    stages, refuse it in one line."""
    from explore.results import read_results
    from tests.explore.tiny_sweep import write_sweep, write_tiny_model

    model = write_tiny_model(tmp_path)
    head = f"name: overlap\nmodel: {model}\ndevice: h100-sxm\nexecution: graphs\n"
    sweep = write_sweep(tmp_path, head + "serving: {requests: 6, rate: 1, prompt: 512, output: 4}\n"
                                         "parallel: {tp: 2, overlap: [none, token_split]}\n")
    assert main([sweep, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = {row["overlap"]: row for row in read_results(tmp_path / "out")}
    assert set(rows) == {"none", "token_split"}
    assert float(rows["token_split"]["ttft_p50_s"]) <= float(rows["none"]["ttft_p50_s"])
    capsys.readouterr()
    for section in ("workload: {batch: 1, prompt: 64, output: 4}\nparallel: {tp: 2, overlap: token_split}\n",
                    "serving: {requests: 2, rate: 1, prompt: 64, output: 4}\n"
                    "parallel: {tp: 2, pp: 2, overlap: token_split}\n"):
        assert main(["check", write_sweep(tmp_path, head + section)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "overlap" in err and "token_split" in err, err


def test_a_sweep_told_where_its_all_reduce_runs_nccl(tmp_path, capsys):
    """nvls over NVLink 3 (its switch does not reduce) and custom or nvls on 16 GPUs (a board joins 8) run NCCL, as the
    engines do: check says which points price NCCL's all-reduce again; a sweep where each runs as asked is not told.
    A link.latency_us what-if on links with fitted collectives is said to reach only what the datasheet prices."""
    from tests.explore.tiny_sweep import write_sweep

    def notes(devices: str, tps: str, what_if: str = "") -> str:
        path = write_sweep(tmp_path, f"name: allreduce\nmodel: llama-2-7b\ndevice: {devices}\nexecution: engine\n"
                                     "workload: {batch: 1, prompt: 64, output: 4}\n"
                                     f"parallel: {{tp: {tps}, allreduce: [nccl, nvls, custom]}}\n{what_if}")
        assert main(["check", path]) == 0
        return capsys.readouterr().out

    told = notes("[h100-sxm, a100-sxm-80gb]", "[2, 16]")
    assert "nvls on a100-sxm-80gb (nvlink3's switch does not reduce)" in told
    assert "custom at tp 16 on h100-sxm (nvlink4 joins at most 8" in told and "the nccl points' design again" in told
    assert "allreduce runs NCCL" not in notes("h100-sxm", "[2, 8]")
    latency = notes("h100-sxm", "8", "overrides: {link.latency_us: [0.6, 50]}\n")
    assert "link.latency_us: nvlink4 prices its collectives by fits" in latency
    assert "link.latency_us" not in notes("h100-sxm", "8", "overrides: {link.bandwidth_GBps: [450, 900]}\n")


def test_a_star_all_reduce_is_never_said_to_run_nccl(tmp_path, capsys):
    """The star all-reduce (TPI-LLM's) runs on any number of devices: a sweep with it on more devices than the link
    joins is not told that it runs NCCL. On a link whose collectives are fitted on measured NCCL calls it is refused in
    one line: the star is priced on the datasheet hop, and would win by what each prices, not by its algorithm."""
    from tests.explore.tiny_sweep import write_sweep

    base = ("name: star\nmodel: llama-2-7b\ndevice: h100-sxm\nexecution: engine\n"
            "workload: {batch: 1, prompt: 64, output: 4}\n")
    path = write_sweep(tmp_path, base + "parallel: {tp: 16, link: ethernet-100g, allreduce: star}\n")
    assert main(["check", path]) == 0
    assert "allreduce runs NCCL" not in capsys.readouterr().out
    path = write_sweep(tmp_path, base + "parallel: {tp: 8, allreduce: [nccl, star]}\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "found 'star' on link nvlink4, whose collectives are fitted" in err


def test_an_engine_sends_the_residual_apart_only_where_it_fuses_the_norm(evaluator):
    """A pipeline stage sends its hidden state to the next, and the residual stream too where the engine keeps it apart
    for its fused add + RMSNorm (vLLM's Llama). A GPU serving engine does; llama.cpp on a CPU runs the eager kernels
    (hw_models/device.py UNFUSED_ENGINE_KINDS), so it sends the hidden state alone: 4,096 x 2 B a token for
    Llama-2-7B, against twice that on an H100."""
    from sim.serving_spec import ServingSpec

    def send_B(device: str) -> float:
        point = DesignPoint(model="llama-2-7b", device=device, batch=4, prompt=0, output=0, pp=2,
                            link="ethernet-100g", execution="engine", serving=ServingSpec(requests=2))
        return evaluator.cost_model(point, FMT).send_B_per_token

    assert send_B("ampere-altra") == 4096 * 2.0 and send_B("h100-sxm") == 2 * 4096 * 2.0
