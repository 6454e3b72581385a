"""A fleet of mixed devices as a user runs it: `explore run --mixed-device D --mixed-replicas N` says what serves,
prices every replica, takes an overloaded H100's overflow onto L4s, and refuses what a fleet does not model in one
line."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from hw_models.registry import load_device
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import write_tiny_serving_sweep
from workloads.requests import Fixed

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

RUN = ["run", "--model", "llama-3-8b", "--device", "h100-sxm", "--execution", "engine", "--serving", "--requests",
       "600", "--prompt", "1024", "--output", "256", "--slo-ttft", "2", "--slo-tpot", "0.1"]
FLEET = ["--mixed-device", "l4", "--mixed-replicas", "2"]


def _run(capsys, *flags: str) -> dict:
    assert main([*RUN, *flags, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_fleet_is_priced_whole_and_takes_an_overloaded_replica_s_overflow(capsys):
    """At 26 req/s one H100 falls behind (under 60% of the requests meet the SLO); two L4s beside it, routed by KV-cache
    usage, take some of its requests and serve more requests within the SLO, the pools' goodputs adding up to the
    fleet's. The fleet's hourly price is the H100's and two L4s' (their presets)."""
    alone = _run(capsys, "--rate", "26")
    fleet = _run(capsys, "--rate", "26", *FLEET, "--router", "least_kv_usage")
    assert alone["slo_attainment"] < 0.6
    assert fleet["goodput_rps"] > alone["goodput_rps"]
    assert "pools" not in alone  # one pool: its figures are the run's
    h100, l4 = fleet["pools"]
    assert (h100["pool"], h100["device"], h100["replicas"]) == ("serve", "h100-sxm", 1)
    assert (l4["pool"], l4["device"], l4["replicas"]) == ("mixed", "l4", 2)
    assert 0 < l4["requests"] < h100["requests"] and h100["requests"] + l4["requests"] == 600
    assert l4["goodput_rps"] > 0 and h100["goodput_rps"] + l4["goodput_rps"] == pytest.approx(fleet["goodput_rps"])
    hourly = [load_device(name).price.usd_per_hour for name in ("h100-sxm", "l4")]
    assert fleet["usd_per_hour"] == pytest.approx(hourly[0] + 2 * hourly[1])
    assert alone["usd_per_hour"] == pytest.approx(hourly[0])
    # A what-if on the mixed device alone (mixed_device.<field>): twice the L4s' bandwidth serves more.
    faster = _run(capsys, "--rate", "26", *FLEET, "--router", "least_kv_usage", "--set",
                  "mixed_device.memory.bandwidth_GBps=600")
    assert faster["mixed_device.memory.bandwidth_GBps"] == 600 and faster["goodput_rps"] > fleet["goodput_rps"]
    assert main([*RUN, "--rate", "4", *FLEET]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "1 replica and 2 of l4 (fits of sibling l40s), one router over them all" in lines[0], lines[0]
    # After the metrics, the pools: a header, then each pool's kind, device and replicas first.
    assert lines[-3].split()[:4] == ["pool", "device", "replicas", "requests"], lines[-3:]
    assert [line.split()[:3] for line in lines[-2:]] == [["serve", "h100-sxm", "1"], ["mixed", "l4", "2"]], lines[-2:]
    assert main([*RUN, "--rate", "4", *FLEET, "--tp", "2", "--requests", "20"]) == 0  # each mixed replica is tp 2 too
    header = capsys.readouterr().out.splitlines()[0]
    # Each pair of L4s is joined by the L4's own PCIe 4, not the H100s' NVLink 4 the header names first.
    assert "and 2 of l4 (fits of sibling l40s, 2 devices each over pcie4-x16), one router" in header, header


def test_a_router_reading_each_replica_s_predicted_latency_keeps_the_fleet_within_the_slo(capsys):
    """At 12 req/s, which one H100 serves within the SLO, counting tokens sends each L4 as many requests as the H100,
    and an L4's decode under that load misses the 100 ms TPOT. Weighing each replica's SLO headroom, as its own costs
    predict it, towards the most (llm-d's 'most' strategy) keeps the requests on the H100 but for what the L4s serve in
    time; towards the least (llm-d's default, packing) fills the L4s to their limit, and more requests miss it."""
    runs = {router: _run(capsys, "--rate", "12", "--requests", "300", *FLEET, "--router", router)
            for router in ("least_tokens", "predicted_latency", "predicted_latency_most")}
    attained = {router: run["slo_attainment"] for router, run in runs.items()}
    assert attained["predicted_latency_most"] >= 0.99 and attained["least_tokens"] < 0.9, attained
    assert attained["predicted_latency"] < attained["predicted_latency_most"], attained


def test_a_fleet_of_the_point_s_own_device_is_two_pools_priced_apart(capsys):
    """A fleet whose mixed replicas are the point's own device (which mixed_device.<field> what-ifs make another
    design: capped H100s beside full ones) is two pools: one H100 held throughout beside H100s scaling from one up to
    four holds at least both pools' least, two replicas, on average, rents each replica it held at the H100's price,
    and the header tells the scaling pool from the fixed one."""
    flags = ["--rate", "10", "--rate-profile", "20:1,20:4", "--requests", "300", "--mixed-device", "h100-sxm",
             "--mixed-replicas", "1", "--mixed-max-replicas", "4", "--autoscale-target", "2", "--autoscale-metric",
             "running", "--cold-start-s", "5"]
    scaled = _run(capsys, *flags)
    assert 2.0 <= scaled["mean_replicas"] <= 5.0 and scaled["max_replicas_held"] > 2
    hourly = load_device("h100-sxm").price.usd_per_hour
    assert scaled["usd_per_hour"] == pytest.approx(hourly * scaled["mean_replicas"])
    assert main([*RUN, *flags, "--requests", "20"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "scaling the mixed h100-sxm replicas up to 4 as the HPA does" in header, header


def test_a_fleet_beside_a_prefill_pool_scales_each_decode_pool_by_its_own_hpa(capsys):
    """One prefill H100, one decode H100 and one decode L4 at 12 req/s for 20 s, then 48: fixed, the decode side falls
    behind (its p99 TPOT past 100 ms); the L4 pool scaling up to four on 2 running requests a replica (a 5 s cold
    start) serves more requests within the SLO. Only the L4 pool scales, so the fleet is priced as the two H100s
    throughout and the L4s' replica-hours held: 2 x $3.78 + $0.7992 x (mean replicas - 2) an hour (the presets).
    The header names each pool's HPA, the prefill pool's too where it scales."""
    flags = ["--rate", "12", "--rate-profile", "20:1,20:4", "--prefill-replicas", "1", "--mixed-device", "l4",
             "--mixed-replicas", "1"]
    scaling = ["--mixed-max-replicas", "4", "--autoscale-target", "2", "--autoscale-metric", "running",
               "--cold-start-s", "5"]
    fixed, scaled = _run(capsys, *flags), _run(capsys, *flags, *scaling)
    assert "mean_replicas" not in fixed and fixed["tpot_p99_s"] > 0.1
    assert 3.0 < scaled["mean_replicas"] < 6.0 and scaled["max_replicas_held"] > 3
    # The gain is the scaling L4 pool's: holding more replicas on average, it serves more requests within the SLO.
    assert scaled["goodput_rps"] > fixed["goodput_rps"]
    fixed_l4, scaled_l4 = fixed["pools"][2], scaled["pools"][2]
    assert (fixed_l4["pool"], fixed_l4["device"], fixed_l4["replicas"]) == ("mixed", "l4", 1)
    assert scaled_l4["replicas"] == pytest.approx(scaled["mean_replicas"] - 2)
    assert scaled_l4["goodput_rps"] > fixed_l4["goodput_rps"] and scaled_l4["requests"] > fixed_l4["requests"]
    hourly = [load_device(name).price.usd_per_hour for name in ("h100-sxm", "l4")]
    assert fixed["usd_per_hour"] == pytest.approx(2 * hourly[0] + hourly[1])
    assert scaled["usd_per_hour"] == pytest.approx(2 * hourly[0] + hourly[1] * (scaled["mean_replicas"] - 2))
    assert main([*RUN, *flags, *scaling, "--requests", "20", "--prefill-max-replicas", "2", "--max-replicas",
                 "2"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert ("scaling the prefill replicas up to 2 and the decode replicas up to 2 and the mixed l4 replicas up to 4 "
            "as the HPA does") in header, header


@pytest.mark.parametrize(("flags", "words"), [
    (["--mixed-replicas", "2"], "--mixed-device: found '' with --mixed-replicas 2, allowed: a device"),
    # Beside a prefill pool, Dynamo's planners (which size one prefill and one decode pool) and scale-to-zero (a
    # decode pool keeps a replica to hand requests to) are not modeled; the HPA of each pool is.
    ([*FLEET, "--prefill-replicas", "1", "--max-replicas", "3", "--autoscaler", "sla_planner"],
     "--mixed-replicas: found 2 with --max-replicas 3, allowed: 0 (Dynamo's planners scale one kind of worker, or one "
     "prefill and one decode pool; a fleet's pools scale by an HPA each)"),
    ([*FLEET, "--prefill-replicas", "1", "--mixed-max-replicas", "3", "--autoscaler", "load_planner"],
     "--mixed-replicas: found 2 with --mixed-max-replicas 3, allowed: 0 (Dynamo's planners scale one kind of worker"),
    ([*FLEET, "--prefill-replicas", "1", "--replicas", "0", "--max-replicas", "3", "--autoscale-target", "4"],
     "--prefill-replicas: found 1 with --replicas 0, allowed: 0 (a decode pool keeps a replica to hand requests to)"),
    ([*FLEET, "--attention-device", "h20"],
     "--attention-device: found 'h20' with --mixed-replicas 2, allowed: none (a fleet of mixed devices attends "
     "itself)"),
    (["--mixed-replicas", "2", "--mixed-device", "l44"], "--mixed-device: found 'l44' (did you mean 'l4'?)"),
    (["--mixed-replicas", "-1", "--mixed-device", "l4"], "--mixed-replicas: found -1, allowed: an integer >= 0"),
    # The mixed L4 pairs run over their own link (PCIe 4, fitted on measured NCCL calls), which TPI-LLM's star
    # all-reduce the point's network takes is not priced on: the message names whose link it is.
    ([*FLEET, "--tp", "2", "--link", "ethernet-100g", "--allreduce", "star"],
     "found 'star' on link pcie4-x16, whose collectives are fitted on measured NCCL calls (joining l4 devices)"),
])
def test_what_a_fleet_does_not_model_is_one_line(capsys, flags, words):
    assert main([*RUN, "--rate", "4", *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err, err


def test_a_grid_crossing_a_fleet_with_a_prefill_pool_runs_every_point(tmp_path, capsys):
    """mixed_replicas [0, 2] x prefill_replicas [0, 1]: a fleet beside a prefill pool decodes on the point's replica and
    the mixed L4s, so all 4 points run, that one priced as the prefill H100, the decode H100 and two L4s (their
    presets); a fleet beside a prefill pool scales too: a grid crossing max_replicas [2, 3] there runs both points,
    the one whose decode pool may not grow once (its max_replicas is its replicas: no autoscale columns)."""
    fleet = "  rate: 2\n  mixed_device: l4\n"
    path = write_tiny_serving_sweep(tmp_path, f"{fleet}  mixed_replicas: [0, 2]\n  prefill_replicas: [0, 1]\n")
    assert main(["check", path]) == 0
    said = capsys.readouterr().out
    assert "4 design points (all evaluated)" in said, said
    out = tmp_path / "out"
    assert main(["--quiet", path, "--out", str(out)]) == 0
    with open(out / "results.csv", newline="") as file:
        rows = {(row["mixed_replicas"], row["prefill_replicas"]): row for row in csv.DictReader(file)}
    assert len(rows) == 4
    for ran in (("", "0"), ("2", "0"), ("", "1"), ("2", "1")):
        assert not rows[ran]["infeasible_reason"] and float(rows[ran]["ttft_s"]) > 0, ran
        assert float(rows[ran]["requests_per_s"]) > 0, ran
    hourly = [load_device(name).price.usd_per_hour for name in ("h100-sxm", "l4")]
    assert float(rows["2", "1"]["usd_per_hour"]) == pytest.approx(2 * hourly[0] + 2 * hourly[1])
    capsys.readouterr()
    path = write_tiny_serving_sweep(tmp_path, f"{fleet}  mixed_replicas: 2\n  prefill_replicas: 1\n"
                                              f"  replicas: 2\n  max_replicas: [2, 3]\n  autoscale_target: 4\n")
    assert main(["check", path]) == 0
    said = capsys.readouterr().out
    assert "2 design points (all evaluated)" in said, said
    assert main(["--quiet", path, "--out", str(tmp_path / "scaled")]) == 0
    with open(tmp_path / "scaled" / "results.csv", newline="") as file:
        rows = {row["max_replicas"]: row for row in csv.DictReader(file)}
    assert not rows["3"]["infeasible_reason"] and float(rows["3"]["mean_replicas"]) >= 1 + 2 + 2, rows["3"]
    # The report re-runs a design for per-request detail, a fleet here: a table gives each pool's requests, the
    # prefill pool's none (each request has more than one output token, so its decode pool finishes it).
    report = (tmp_path / "scaled" / "report.md").read_text()
    table = report.split("## Requests by pool", 1)[1].split("\n## ", 1)[0]
    pools = [line.split(" | ")[1:5] for line in table.splitlines() if line.startswith("| A |")]
    assert [pool[:2] for pool in pools] == [["prefill", "h100-sxm"], ["decode", "h100-sxm"], ["mixed", "l4"]], pools
    assert pools[0][3] == "0" and sum(int(pool[3]) for pool in pools) == int(rows["3"]["requests"])


def test_a_fleet_beside_a_prefill_pool_hands_each_request_s_kv_over_its_decode_device_s_link(tiny_evaluator):
    """A prefill H100 hands KV to the decode H100 over its node link, InfiniBand NDR (50 GB/s a port, under the
    H100's PCIe 5 x16), and to the mixed L4s over the same fabric capped by the L4's PCIe 4 x16 (16 GT/s x 16 x 128/130
    / 8, 31.5 GB/s as its preset rounds it): a further GB takes 20 ms to the H100, 31.7 ms to an L4. With
    mixed_node_link roce-400g the L4s' KV crosses from NDR onto RoCE, at the slower (45.7 GB/s a port), the decode
    H100's still over NDR."""
    from explore.evaluate import pool_kind, pool_point, serving_pools

    serving = ServingSpec(requests=1, rate_per_s=1.0, prompt=Fixed(tokens=32), output=Fixed(tokens=4),
                          prefill_replicas=1, mixed_device="l4", mixed_replicas=2)
    point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=1, prompt=0, output=0, serving=serving,
                        execution="graphs")
    assert [(role, replicas, name) for role, replicas, name, _, _ in serving_pools(point)] == [
        ("prefill", 1, ""), ("decode", 1, ""), ("decode", 2, "l4")]
    on_pools = [(pool_point(point, name, own, link), pool_kind(role, name))
                for role, _, name, own, link in serving_pools(point)]
    assert [kind for _, kind in on_pools] == ["prefill", "decode", "mixed"]
    further_s = [send(2e9) - send(1e9) for send in (
        tiny_evaluator._handoff_s(point, on_pools[0][0], on_decode, kind, 1) for on_decode, kind in on_pools[1:])]
    assert further_s == pytest.approx([1e9 / 50e9, 1e9 / 31.5e9], rel=1e-9)
    roce = replace(serving, mixed_node_link="roce-400g")
    assert roce.handoff_links("h100-sxm", "", "mixed") == ("roce-400g",)
    assert roce.handoff_links("h100-sxm") == ("infiniband-ndr",)
