"""The per-point detail the report draws from: roofline kernels priced as the run prices them."""

from __future__ import annotations

import math

from explore.design_point import DesignPoint
from explore.ops_table import op_rows
from explore.report_detail import DetailSource
from sim.workload import BatchWorkload


def _batch(point: DesignPoint) -> BatchWorkload:
    """The static batch a point's tables were traced for (an engine launches each pass by its tokens)."""
    return BatchWorkload(batch=point.batch, prompt_len=point.prompt, output_len=point.output)


def test_roofline_decode_kernels_run_at_the_runs_launch_cost(evaluator) -> None:
    """An engine replays its decode steps from CUDA graphs (1.3 us a kernel on the H100 preset, 2.1 us launched from
    the host): each decode kernel of the roofline sits where the run's first decode step puts it, the per-op table
    whose decode rows sum to the run's step (not at the host-launched rate, 0.8 us a kernel slower)."""
    point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=1, prompt=128, output=8, execution="engine")
    evaluation = evaluator.evaluate(point)
    rows = [r for r in op_rows(evaluation.tables, evaluator.device(point.device), point.execution,
                               workload=_batch(point)) if r.phase == "decode"]
    step_s = sum(r.time_s for r in rows)
    assert math.isclose(step_s, evaluation.metrics["tpot_s"], rel_tol=0.01)  # the table is the run's step
    expected = [math.log10(r.flops / r.time_s) for r in rows if r.flops > 0]
    detail = DetailSource(evaluator, [point.row() | evaluation.metrics], None)
    drawn = [math.log10(f) for f in detail._kernels(point)["phases"]["decode"]["achieved_flops"]]

    def near(x: float, values: list[float]) -> bool:  # within 0.02% (the host-launched rates are 1-30% lower)
        return min(abs(x - v) for v in values) < 1e-4

    assert all(near(x, expected) for x in drawn) and all(near(x, drawn) for x in expected)


def test_roofline_shares_are_of_the_systems_pass(evaluator) -> None:
    """On two tensor-parallel GPUs the roofline's kernels are sized by their share of the pass the run times, its
    all-reduces over the link included: the drawn decode kernels' shares add up to the step less the ops without
    FLOPs (the all-reduces, copies), as the per-op table of the same point gives them."""
    point = DesignPoint(model="llama-2-7b", device="a100-sxm-80gb", batch=8, prompt=128, output=8, execution="engine",
                        tp=2)
    evaluation = evaluator.evaluate(point)
    rows = [r for r in op_rows(evaluation.tables, evaluator.point_device(point), point.execution,
                               workload=_batch(point)) if r.phase == "decode"]
    assert any(r.kind == "all_reduce" and r.share > 0.02 for r in rows)  # a share the roofline must not spread
    drawn = DetailSource(evaluator, [point.row() | evaluation.metrics], None)._kernels(point)["phases"]["decode"]
    assert math.isclose(sum(drawn["time_share"]), sum(r.share for r in rows if r.flops > 0), rel_tol=1e-6)


def test_a_scaled_fleet_s_timeline_counts_each_replica_one_engine(evaluator) -> None:
    """One H100 fixed beside L4s scaling from one up to three: every replica of either pool is one engine (no pipeline
    stages, no data-parallel ranks), so the timeline's per-engine means divide by the replicas held, not by a multiple
    of them (the L4 pool's replicas are made too, four replicas of four engines in all)."""
    from sim.serving_spec import ServingSpec
    from workloads.requests import Fixed

    spec = ServingSpec(requests=40, rate_per_s=20.0, prompt=Fixed(tokens=256), output=Fixed(tokens=16),
                       mixed_device="l4", mixed_replicas=1, mixed_max_replicas=3, autoscale_target=1.0,
                       cold_start_s=1.0)
    point = DesignPoint(model="llama-3-8b", device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0, serving=spec,
                        execution="engine")
    detail = DetailSource(evaluator, [point.row() | evaluator.evaluate(point).metrics], None)._serving(point)
    assert detail["engines"] == 1 + 3
    assert detail["replica_engines"] == 1


def test_a_speculative_points_roofline_draws_its_verification_pass(evaluator) -> None:
    """A speculative point's decode steps are verification passes over k + 1 query tokens a sequence: at batch 1 and
    k = 4, a 16-bit projection does 2 x 5 FLOPs per 2-byte weight it reads, an intensity near 5 FLOP/B, where a plain
    decode step's does near 1 (by hand). The roofline drew the plain step, which the point never runs."""
    def largest_gemm_intensity(**knobs) -> float:
        point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=1, prompt=128, output=8, execution="engine",
                            knobs=tuple(sorted(knobs.items())))
        detail = DetailSource(evaluator, [point.row() | evaluator.evaluate(point).metrics], None)
        decode = detail._kernels(point)["phases"]["decode"]
        return max(x for x, c in zip(decode["intensity"], decode["kernel_class"], strict=True) if c == "gemm")

    assert 0.9 <= largest_gemm_intensity() <= 1.1
    assert 4.5 <= largest_gemm_intensity(spec_draft="medusa", spec_tokens=4, acceptance=0.6) <= 5.5
