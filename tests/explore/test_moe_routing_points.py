"""The moe_routing knob (explore/knobs.py) on design points: a sweep's points at the default keep their ids, a
uniform point's passes, step template and drafts route uniformly (workloads/model_config.py expert_load), a power-law
point prices its busiest device's share, and a model without routed experts does not read it (Knob.only_for), as a
knob whose switches are off is not read.

The model is a tiny Mixtral of 16 experts, 2 a token: a decode step of 3 sequences routes 6 rows, which balanced
routing spreads over 6 experts and uniform routing over 16 (1 - (14/16)^3) = 5.28 -> 5.
"""

from __future__ import annotations

import json

import pytest

from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from explore.sweep import load_sweep
from kernels.kernel import KernelKind
from kernels.moe import device_routing
from kernels.table import KIND_CODE
from sim.speculative import MTP
from tests.explore.tiny_sweep import TINY_CONFIG, write_sweep, write_tiny_model
from workloads.model_config import POWER_LAW, UNIFORM

TINY_MOE = {**TINY_CONFIG, "model_type": "mixtral", "num_local_experts": 16, "num_experts_per_tok": 2}
MOE = KIND_CODE[KernelKind.MOE]


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory) -> str:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-moe"), TINY_MOE)


@pytest.fixture(scope="module")
def tiny_dense(tmp_path_factory) -> str:
    """The tiny Llama the tiny Mixtral is built on: the same layers with one MLP and no experts."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny-dense"))


def _point(model: str, routing: str = "balanced", **kw) -> DesignPoint:
    knobs = (("moe_routing", routing),) if routing != "balanced" else ()
    return DesignPoint(model=model, device="h100-sxm", batch=3, prompt=16, output=4, execution="engine",
                       knobs=knobs, **kw)


def test_a_sweep_at_the_default_keeps_its_point_ids(tmp_path, tiny_moe):
    text = f"name: routing\nmodel: {tiny_moe}\ndevice: h100-sxm\nworkload: {{batch: [1, 3], prompt: 16, output: 4"
    plain = {p.point_id for p in load_sweep(write_sweep(tmp_path, text + "}\n")).points()}
    both = load_sweep(write_sweep(tmp_path, text + ", moe_routing: [balanced, uniform]}\n")).points()
    assert plain == {p.point_id for p in both if p.knob("moe_routing") == "balanced"}
    assert len({p.point_id for p in both}) == 4


def test_a_uniform_static_point_reads_the_experts_its_decode_touches(tiny_moe):
    """The fused MoE rows of a decode step of 3 sequences, which the engine pads to its captured size of 4 tokens
    (sim/cuda_graphs.py), the padding routed as real tokens are: 8 rows over 8 experts (balanced) or 7 (uniform:
    16 x (1 - (14/16)^4) = 6.6), the same FLOPs, seven eighths of the expert weights, and no slower a step."""
    evaluator = Evaluator()
    tables = {routing: evaluator.point_tables(point := _point(tiny_moe, routing), evaluator.point_device(point))
              for routing in ("balanced", UNIFORM)}
    moe = {routing: t.decode.select(t.decode.kind == MOE) for routing, t in tables.items()}
    assert moe["balanced"].batch.tolist() == [8, 8] and moe[UNIFORM].batch.tolist() == [7, 7]  # 2 layers
    assert (moe[UNIFORM].m * moe[UNIFORM].batch).tolist() == [8, 8]
    assert moe[UNIFORM].flops.sum() == pytest.approx(moe["balanced"].flops.sum(), rel=1e-12)
    assert moe[UNIFORM].weight_bytes.sum() == pytest.approx(moe["balanced"].weight_bytes.sum() * 7 / 8, rel=1e-12)
    tpot = {r: evaluator.evaluate(_point(tiny_moe, r)).metrics["tpot_s"] for r in ("balanced", UNIFORM)}
    assert tpot[UNIFORM] < tpot["balanced"]


@pytest.mark.parametrize("ep", [1, 2])
def test_a_power_law_point_prices_its_busiest_devices_share(tiny_moe, ep):
    """A power-law point's traced decode step (3 sequences padded to the engine's 4 tokens, 8 rows), sharded over 2
    devices with its experts split or spread, prices the experts and rows kernels/moe.py device_routing gives the
    busiest device, as a step template prices them; all 8 rows on the experts the routing reaches without expert
    parallelism."""
    evaluator = Evaluator()
    point = _point(tiny_moe, POWER_LAW, tp=2, ep=ep)
    moe = evaluator.point_tables(point, evaluator.point_device(point)).decode
    moe = moe.select(moe.kind == MOE)
    touched, rows = device_routing(4, 2, 16, 16 // ep, POWER_LAW)
    assert moe.batch.tolist() == [touched] * 2 and (moe.m * moe.batch).round(9).tolist() == [rows] * 2
    assert (rows == 8) == (ep == 1)


def test_a_uniform_point_routes_its_template_and_its_drafts_uniformly(tiny_moe):
    evaluator = Evaluator()
    point = _point(tiny_moe, UNIFORM)
    assert evaluator.point_model(_point(tiny_moe)) == tiny_moe  # the default keeps the model's name (memo keys)
    routed = evaluator.point_model(point)
    assert routed.moe_routing == UNIFORM and routed.num_experts == 16
    template = evaluator.template(routed, point.numeric_format, fusion=evaluator.fusion(point))
    assert template.moe_routing == UNIFORM
    assert evaluator.draft_of(routed, MTP).moe_routing == UNIFORM  # the MTP module routes as its model
    assert evaluator.config(evaluator.draft_of(routed, tiny_moe)).moe_routing == UNIFORM  # a draft model too


def test_an_unknown_routing_is_one_line_exit_2(tmp_path, tiny_moe, capsys):
    from explore.cli import main

    sweep = write_sweep(tmp_path, f"name: routing\nmodel: {tiny_moe}\ndevice: h100-sxm\n"
                                  f"workload: {{batch: 1, prompt: 16, output: 4, moe_routing: zipf}}\n")
    code = main(["check", sweep])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "workload.moe_routing" in err[0] and "balanced" in err[0], err


def _sweep(folder, models: list[str], routing: str) -> str:
    return write_sweep(folder, f"name: routing\nmodel: [{', '.join(models)}]\ndevice: h100-sxm\n"
                               f"workload: {{batch: 3, prompt: 16, output: 4, moe_routing: {routing}}}\n")


def test_a_dense_models_points_are_run_once_in_a_grid_crossing_routings(tmp_path, tiny_moe, tiny_dense, capsys):
    """A grid of a dense and an MoE model by two routings is 4 points and 3 designs: the dense model's uniform point is
    its balanced one (the point without the knob, whose id a sweep without moe_routing gives), and `explore check`
    says so; the MoE model's two stay apart, and a row shows the routing only where its model reads it."""
    from explore.cli import main

    points = load_sweep(_sweep(tmp_path, [tiny_dense, tiny_moe], "[balanced, uniform]")).points()
    ids = {(p.model, p.knob("moe_routing")) for p in points}
    assert ids == {(tiny_dense, "balanced"), (tiny_moe, "balanced"), (tiny_moe, UNIFORM)}
    assert len({p.point_id for p in points}) == 3
    plain = load_sweep(write_sweep(tmp_path, f"name: routing\nmodel: {tiny_dense}\ndevice: h100-sxm\n"
                                             f"workload: {{batch: 3, prompt: 16, output: 4}}\n")).points()
    assert {p.point_id for p in points if p.model == tiny_dense} == {p.point_id for p in plain}
    assert {p.model: p.row()["moe_routing"] for p in points if p.knob("moe_routing") == "balanced"} == {
        tiny_dense: None, tiny_moe: "balanced"}
    assert main(["check", _sweep(tmp_path, [tiny_dense, tiny_moe], "[balanced, uniform]")]) == 0
    assert ("1 of 4 points are another point's design, run once: moe_routing changes nothing where the model has no "
            "routed experts") in " ".join(capsys.readouterr().out.split())


def test_a_sweep_of_dense_models_alone_refuses_moe_routing_in_one_line(tmp_path, tiny_dense, capsys):
    from explore.cli import main

    code = main(["check", _sweep(tmp_path, [tiny_dense], "[balanced, uniform]")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "workload.moe_routing: found balanced, uniform with model" in err[0] and "no routed experts" in err[0], err
    assert main(["check", _sweep(tmp_path, [tiny_dense], "balanced")]) == 0  # the default: nothing to refuse


def test_explore_run_refuses_moe_routing_on_a_dense_model_in_one_line(tiny_dense, capsys):
    from explore.cli import main

    code = main(["run", "--model", tiny_dense, "--device", "h100-sxm", "--batch", "3", "--prompt", "16", "--output",
                 "4", "--moe-routing", "uniform"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"--moe-routing: found 'uniform' with --model {tiny_dense}, which has no routed experts" in err[0], err


def test_an_moe_model_whose_every_step_touches_all_experts_reads_it(tmp_path, capsys):
    """Two experts, both picked by every token: every step touches all of them under either routing, and the model
    still reads the knob: its points keep their two ids, and explore run takes the flag."""
    from explore.cli import main

    every = tmp_path / "every" / "config.json"
    every.parent.mkdir()
    every.write_text(json.dumps({**TINY_MOE, "num_local_experts": 2, "num_experts_per_tok": 2}))
    points = load_sweep(_sweep(tmp_path, [str(every)], "[balanced, uniform]")).points()
    assert len({p.point_id for p in points}) == 2
    assert main(["run", "--model", str(every), "--device", "h100-sxm", "--batch", "3", "--prompt", "16", "--output",
                 "4", "--moe-routing", "uniform"]) == 0, capsys.readouterr().err
