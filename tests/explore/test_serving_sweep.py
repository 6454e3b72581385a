"""Serving in the explorer: a sweep's serving: section, explore run --serving, and their one-line errors."""

from __future__ import annotations

import json
import math

import pytest

from explore.cli import main
from explore.results import read_results
from explore.sweep import load_sweep
from tests.explore.tiny_sweep import write_sweep, write_tiny_model

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")


def _serving_sweep(tmp_path, serving: str, extra: str = "") -> str:
    model = write_tiny_model(tmp_path)
    return write_sweep(tmp_path, f"name: serve\nmodel: {model}\ndevice: h100-sxm\nserving:\n{serving}{extra}")


SERVING = """  requests: 30
  prompt: {dist: uniform, low: 8, high: 64}
  output: {dist: uniform, low: 2, high: 32}
  rate: [50, 400]
  scheduler: [static, continuous, chunked]
  max_seqs: 8
  chunk_tokens: 32
  slo: {ttft_s: 0.05, tpot_s: 0.01}
"""
# SERVING for schedulers that prefill whole, which read no chunk_tokens (a sweep setting it beside them is refused).
WHOLE = SERVING.replace("  chunk_tokens: 32\n", "")


def test_sweep_runs_serving_points_and_resumes(tmp_path, capsys):
    path = _serving_sweep(tmp_path, SERVING, "constraints: ['ttft_p99_s <= 1.0']\n")
    sweep = load_sweep(path)
    points = sweep.points()
    assert len(points) == 6 and {p.serving.scheduler for p in points} == {"static", "continuous", "chunked"}
    out = tmp_path / "out"
    assert main([path, "--out", str(out), "--quiet"]) == 0
    rows = read_results(out)
    assert len(rows) == 6
    for row in rows:
        assert row["scheduler"] in ("static", "continuous", "chunked") and row["fits_in_memory"] in (True, "True")
        # Every request finishes: completed requests over the run's makespan is the throughput column.
        assert float(row["requests_per_s"]) > 0 and float(row["ttft_p99_s"]) >= float(row["ttft_p50_s"])
        assert 0 <= float(row["slo_attainment"]) <= 1
    capsys.readouterr()
    # A second run on the folder evaluates nothing new and keeps the same rows.
    assert main([path, "--out", str(out), "--quiet"]) == 0
    again = read_results(out)
    assert [r["point_id"] for r in again] == [r["point_id"] for r in rows]
    assert [r["e2e_p99_s"] for r in again] == [r["e2e_p99_s"] for r in rows]


def test_higher_rate_never_lowers_queueing(tmp_path):
    """Same seed and lengths, 8x the arrival rate: requests wait at least as long (continuous batching)."""
    path = _serving_sweep(tmp_path, WHOLE.replace("[static, continuous, chunked]", "continuous"))
    out = tmp_path / "out"
    assert main([path, "--out", str(out), "--quiet"]) == 0
    by_rate = {float(r["rate_per_s"]): r for r in read_results(out)}
    assert float(by_rate[400]["queue_mean_s"]) >= float(by_rate[50]["queue_mean_s"])
    assert float(by_rate[400]["e2e_mean_s"]) >= float(by_rate[50]["e2e_mean_s"])


def test_run_serving_json_has_the_sweep_metric_names(tmp_path, capsys):
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "100", "--requests", "20",
                 "--prompt", "32", "--output", "8", "--scheduler", "chunked", "--chunk-tokens", "16",
                 "--max-seqs", "16", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for name in ("ttft_s", "tpot_s", "tokens_per_s", "ttft_p99_s", "tbt_p99_s", "goodput_rps", "kv_utilization_max"):
        assert name in metrics
    # Fixed lengths: every request produces 8 tokens, so output tokens/s = 8 x requests/s.
    assert math.isclose(metrics["output_tokens_per_s"], 8 * metrics["requests_per_s"], rel_tol=1e-12)


def test_capacity_search_reports_a_rate_meeting_the_slo(tmp_path, capsys):
    model = write_tiny_model(tmp_path)
    # 200 requests: a capacity search judges a rate only with 50 past the warm-up (sim/stability.py).
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--requests", "200", "--prompt", "32",
                 "--output", "8", "--slo-ttft", "0.01", "--capacity", "1", "10000", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 1 <= metrics["capacity_rps"] <= 10000
    assert metrics["slo_attainment"] >= 0.9  # the reported run is the one at the capacity rate


BAD = [
    ("rate: 0", "rate"),
    ("rate: [1, 1]", "listed twice"),
    ("block_tokens: 0", "block_tokens"),
    ("block_tokens: 4096", "context"),
    ("slo: {ttfts: 1}", "ttfts"),
    ("capacity: [1, 10]", "slo"),
    ("scheduler: fifo", "scheduler"),
    ("arrival: trace", "trace"),
    ("prompt: abc", "allowed: a count of tokens (512) or a length distribution ({dist: fixed, tokens: 512}"),
    ("prompt: 0", "serving.prompt.tokens: found 0"),
]


@pytest.mark.parametrize("line, named", BAD)
def test_bad_serving_sections_are_one_line_errors(tmp_path, capsys, line, named):
    base = {"rate": "  rate: 2\n", "prompt": "  prompt: {dist: fixed, tokens: 16}\n",
            "output": "  output: {dist: fixed, tokens: 4}\n"}
    key = line.split(":")[0]
    base.pop(key, None)
    if key == "capacity":
        base.pop("rate")
    path = _serving_sweep(tmp_path, "".join(base.values()) + f"  {line}\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and named in err, err


def test_a_count_of_tokens_is_a_fixed_length(tmp_path):
    text = "  rate: 2\n  prompt: {dist: fixed, tokens: 16}\n  output: {dist: fixed, tokens: 4}\n"
    by_count = load_sweep(_serving_sweep(tmp_path, text.replace("{dist: fixed, tokens: 16}", "16")))
    assert by_count.points()[0].serving == load_sweep(_serving_sweep(tmp_path, text)).points()[0].serving


def test_trace_with_missing_columns_is_a_one_line_error(tmp_path, capsys):
    trace = tmp_path / "mine.csv"
    trace.write_text("arrival_s,prompt_tokens\n0.0,12\n")
    path = _serving_sweep(tmp_path, f"  trace: {trace}\n  rate: 2\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err.strip()
    assert "output_tokens" in err and err.count("\n") == 0


def test_serving_metric_in_a_static_sweep_is_refused(tmp_path, capsys):
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: s\nmodel: {model}\ndevice: h100-sxm\nconstraints: ['ttft_p99_s <= 1']\n")
    assert main(["check", path]) == 2
    assert "serving" in capsys.readouterr().err


def test_run_serving_flag_errors(tmp_path, capsys):
    model = write_tiny_model(tmp_path)
    for flags, named in ((["--rate", "0"], "--rate"), (["--rate", "1", "--block-tokens", "0"], "--block-tokens"),
                         (["--arrival", "trace"], "--arrival"), (["--rate", "1", "--trace", "nope"], "--trace")):
        assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and named in err, err


def test_replicas_and_disaggregated_pools_sweep(tmp_path):
    """Replicas and a prefill pool are knobs: more replicas never queue longer at the same rate, and a
    disaggregated point counts every GPU of both pools in its area."""
    serving = WHOLE.replace("[static, continuous, chunked]", "continuous").replace("rate: [50, 400]", "rate: 400")
    path = _serving_sweep(tmp_path, serving + "  replicas: [1, 2]\n  prefill_replicas: [0, 1]\n")
    out = tmp_path / "out"
    assert main([path, "--out", str(out), "--quiet"]) == 0
    rows = {(int(r["replicas"]), int(r["prefill_replicas"])): r for r in read_results(out)}
    assert set(rows) == {(1, 0), (2, 0), (1, 1), (2, 1)}
    assert float(rows[2, 0]["queue_mean_s"]) <= float(rows[1, 0]["queue_mean_s"])
    one = float(rows[1, 0]["area_mm2"])
    assert float(rows[2, 1]["area_mm2"]) == pytest.approx(3 * one)
    assert float(rows[1, 1]["area_mm2"]) == pytest.approx(2 * one)


def test_unknown_prefill_device_is_one_line(tmp_path, capsys):
    path = _serving_sweep(tmp_path, "  rate: 2\n  prompt: {dist: fixed, tokens: 16}\n"
                                    "  output: {dist: fixed, tokens: 4}\n  prefill_replicas: 1\n"
                                    "  prefill_device: h100-sx\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "prefill_device" in err and "h100-sxm" in err


def test_serving_points_stored_before_prompt_batch_tokens_keep_their_keys():
    """The key a serving point had before ServingSpec gained prompt_batch_tokens (computed by that code: results
    stored then must resume), and a point that sets it gets a key of its own."""
    from dataclasses import replace

    from explore.design_point import DesignPoint
    from sim.serving_spec import ServingSpec

    spec = ServingSpec(scheduler="chunked", requests=200, rate_per_s=4.0)
    point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=256, prompt=0, output=0, serving=spec)
    assert point.point_id == "1975a0ffdaf012dc"
    assert replace(point, serving=replace(spec, prompt_batch_tokens=2048)).point_id != point.point_id


def test_prompt_batch_tokens_is_a_serving_knob_with_a_column_only_where_set(tmp_path, capsys):
    """A sweep that lists it gets its column and its values in each point's spec; a serving sweep that leaves it out
    has no such column (folders written before it keep their columns and resume); a bad value is one line, exit 2."""
    serving = WHOLE.replace("[static, continuous, chunked]", "continuous").replace("rate: [50, 400]", "rate: 400")
    path = _serving_sweep(tmp_path, serving + "  prompt_batch_tokens: [16, 128]\n")
    assert sorted(p.serving.prompt_batch_tokens for p in load_sweep(path).points()) == [16, 128]
    out = tmp_path / "out"
    assert main([path, "--out", str(out), "--quiet"]) == 0
    assert sorted(int(r["prompt_batch_tokens"]) for r in read_results(out)) == [16, 128]
    plain = _serving_sweep(tmp_path, serving)
    assert main([plain, "--out", str(tmp_path / "plain"), "--quiet"]) == 0
    assert all("prompt_batch_tokens" not in r for r in read_results(tmp_path / "plain"))
    capsys.readouterr()
    bad = _serving_sweep(tmp_path, serving + "  prompt_batch_tokens: 0\n")
    assert main(["check", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "serving.prompt_batch_tokens: found 0" in err, err
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "1",
                 "--prompt-batch-tokens", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--prompt-batch-tokens: found 0" in err, err


def test_swap_preemption_defaults_to_the_devices_host_link(tmp_path):
    """Swap preemption moves KV over the host link: the device preset's (an H100 SXM's PCIe 5.0 x16, 63 GB/s) where
    no swap_GBps is given, the given bandwidth where one is; recompute preemption moves nothing over it."""
    from explore.design_point import DesignPoint
    from explore.evaluate import Evaluator
    from hw_models.link import load_link
    from sim.serving_spec import ServingSpec
    from workloads.requests import Fixed

    model, evaluator = write_tiny_model(tmp_path), Evaluator()

    def pool(tp: int = 1, pp: int = 1, **fields):
        spec = ServingSpec(requests=4, rate_per_s=4.0, prompt=Fixed(tokens=16), output=Fixed(tokens=4), **fields)
        point = DesignPoint(model=model, device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0, serving=spec,
                            tp=tp, pp=pp)
        return evaluator._pool(point, point.numeric_format, "serve", 1)

    assert pool(preemption="swap").host_link_Bps == load_link("pcie5-x16").bandwidth_Bps
    assert pool(preemption="swap", swap_GBps=10.0).host_link_Bps == 10e9
    assert pool().host_link_Bps is None
    # A system's devices each swap their shard over their own link, all at once: two tp x two pp move 4x as fast.
    assert pool(2, 2, preemption="swap").host_link_Bps == 4 * load_link("pcie5-x16").bandwidth_Bps
    assert pool(2, 1, preemption="swap", swap_GBps=10.0).host_link_Bps == 2 * 10e9


def test_swap_preemption_on_a_device_without_a_host_link_names_swap_GBps(tmp_path, capsys):
    """NeuPIMs' preset names no host link: swap preemption there is refused up front, by `explore check` and by `explore
    run`, in one line naming swap_GBps (host_link only steers offloading, which a serving run refuses); with swap_GBps
    it swaps at that bandwidth. The host_link knob, which needs offload, does not move an H100's swaps off its preset's
    PCIe 5.0 x16."""
    from explore.design_point import DesignPoint
    from explore.evaluate import Evaluator
    from hw_models.link import load_link
    from sim.serving_spec import ServingSpec
    from workloads.requests import Fixed

    model = write_tiny_model(tmp_path)
    sweep = write_sweep(tmp_path, f"name: serve\nmodel: {model}\ndevice: [h100-sxm, neupims]\nserving:\n"
                                  "  requests: 4\n  rate: 4\n  prompt: 16\n  output: 4\n  preemption: swap\n")
    assert main(["check", sweep]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "preemption: found 'swap' on device 'neupims'" in err and "swap_GBps" in err, err
    assert main(["run", "--model", model, "--device", "neupims", "--serving", "--rate", "4", "--requests", "4",
                 "--prompt", "16", "--output", "4", "--preemption", "swap"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--swap-GBps" in err, err

    evaluator = Evaluator()

    def pool(device: str, knobs: tuple = (), **fields):
        spec = ServingSpec(requests=4, rate_per_s=4.0, prompt=Fixed(tokens=16), output=Fixed(tokens=4),
                           preemption="swap", **fields)
        point = DesignPoint(model=model, device=device, batch=spec.max_seqs, prompt=0, output=0, serving=spec,
                            knobs=knobs)
        return evaluator._pool(point, point.numeric_format, "serve", 1)

    assert pool("neupims", swap_GBps=25.0).host_link_Bps == 25e9
    assert pool("h100-sxm", (("host_link", "pcie3-x16"),)).host_link_Bps == load_link("pcie5-x16").bandwidth_Bps


def test_a_point_stopped_by_its_schedulers_budget_still_fits_in_memory(tiny_evaluator, tiny_config):
    """A static scheduler prefills a prompt whole: a 256-token prompt under a 128-token budget cannot run, though the
    tiny model's memory holds it; the same point with room in the budget runs."""
    from dataclasses import replace

    from explore.design_point import DesignPoint
    from sim.serving_spec import ServingSpec
    from workloads.requests import Fixed

    spec = ServingSpec(scheduler="static", requests=4, rate_per_s=1.0, prompt=Fixed(tokens=256),
                       output=Fixed(tokens=4), max_batched_tokens=128)
    point = DesignPoint(model=tiny_config, device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0, serving=spec)
    stopped = tiny_evaluator.evaluate(point).metrics
    assert "exceeds max_batched_tokens (128)" in stopped["infeasible_reason"] and stopped["fits_in_memory"]
    # What runs it: a budget of the prompt (the static scheduler reserves whole requests, so no recompute), or chunks.
    assert stopped["infeasible_reason"].endswith("allowed: max_batched_tokens of at least 256, or the chunked "
                                                 "scheduler"), stopped["infeasible_reason"]
    assert math.isnan(stopped["tokens_per_s"])
    runs = tiny_evaluator.evaluate(replace(point, serving=replace(spec, max_batched_tokens=512))).metrics
    assert runs["infeasible_reason"] == "" and runs["fits_in_memory"]
