"""A static batch under a serving engine runs each decode step padded to a captured size (sim/cuda_graphs.py), as the
serving core runs the same batch: vLLM pads a decode of 3 sequences to its captured size of 4 tokens, 12 to 16 and
100 to 104 (its sizes: 1, 2, 4, then every multiple of 8 below 256)."""

from __future__ import annotations

import numpy as np
import pytest

from explore.design_point import DesignPoint
from kernels.formats import NumericFormat
from kernels.kernel import KernelKind
from kernels.table import KIND_CODE
from sim.analytic import evaluate as evaluate_analytic
from sim.workload import BatchWorkload
from tests.explore.tiny_sweep import TINY_CONFIG, write_tiny_model
from tests.sim.test_serving import STATIC_METRICS, _serve, _together

FMT = NumericFormat()
MOE = KIND_CODE[KernelKind.MOE]


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory) -> str:
    """The tiny Llama with 16 experts, 2 a token."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny-moe"),
                            {**TINY_CONFIG, "model_type": "mixtral", "num_local_experts": 16, "num_experts_per_tok": 2})


def _point(model: str, batch: int, execution: str = "engine") -> DesignPoint:
    # Prompts of 32 tokens: prefills of 96 and 384 tokens are captured sizes, one of 3,200 runs past them unpadded,
    # so only the decode steps pad.
    return DesignPoint(model=model, device="h100-sxm", batch=batch, prompt=32, output=4, execution=execution)


def _assert_serves_alike(evaluator, point: DesignPoint) -> None:
    """The point's batch served as that many requests at 0 on the static scheduler, through the iteration cost model
    a serving point of the same model, device and execution gets, costs what the static batch costs."""
    want = evaluator.evaluate(point).metrics
    costs = evaluator.cost_model(point, FMT)
    got = _serve(costs, _together(point.batch, point.prompt, point.output), "static", max_seqs=point.batch).metrics()
    for name in STATIC_METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-9), (point.batch, name)


@pytest.mark.parametrize("batch", [3, 12, 100])
def test_a_static_batch_pads_as_the_serving_core_does(tiny_config, tiny_evaluator, batch):
    _assert_serves_alike(tiny_evaluator, _point(tiny_config, batch))


def test_a_padded_moe_batch_routes_its_padding_to_experts(tiny_moe, tiny_evaluator):
    """Batch 3 decodes as 4 tokens: each fused MoE layer routes 4 tokens (vLLM routes padding as real tokens), as the
    serving core's iteration does."""
    point = _point(tiny_moe, 3)
    tables = tiny_evaluator.point_tables(point, tiny_evaluator.point_device(point))
    moe = tables.decode.kind == MOE
    assert moe.sum() == 2 and (tables.decode.tokens[moe] == 4).all()
    assert (tables.prefill.tokens[tables.prefill.kind == MOE] == 96).all()  # a captured size: not padded
    _assert_serves_alike(tiny_evaluator, point)


def test_padding_never_makes_a_step_faster(tiny_config, tiny_evaluator):
    """Batch 3 decodes padded to 4: no faster than its own 3 tokens unpadded, no slower than a batch of 4 (which
    attends 4 sequences to its 3)."""
    three, four = _point(tiny_config, 3), _point(tiny_config, 4)
    device = tiny_evaluator.point_device(three)
    padded = tiny_evaluator.point_tables(three, device)
    unpadded = tiny_evaluator.tables(tiny_config, 3, 32, FMT, fusion=tiny_evaluator.fusion(three))
    assert len(padded.decode) == len(unpadded.decode)
    workload = BatchWorkload(batch=3, prompt_len=32, output_len=4)
    memory = tiny_evaluator.evaluate(three).result.memory
    tpot = {name: evaluate_analytic(device, tables, workload, memory, execution="engine").metrics()["tpot_s"]
            for name, tables in (("padded", padded), ("unpadded", unpadded))}
    assert tpot["padded"] >= tpot["unpadded"]
    assert tpot["padded"] <= tiny_evaluator.evaluate(four).metrics["tpot_s"]
    # Attention and the LM head run the 3 real sequences; every GEMM in the layers runs 4 tokens.
    layers = np.array([k.layer is not None for k in padded.decode.kernels])
    gemm = padded.decode.kind == KIND_CODE[KernelKind.GEMM]
    assert (padded.decode.m[gemm & layers] == 4).all()
    np.testing.assert_allclose(padded.decode.m[gemm & ~layers], 3, rtol=1e-12)


@pytest.mark.parametrize(("batch", "execution"), [(3, "eager"), (4, "engine")])
def test_eager_and_captured_batches_keep_their_traced_tables(tiny_config, tiny_evaluator, batch, execution):
    """An eager pass is never padded, nor an engine's at a captured size: its decode is the batch's own trace."""
    point = _point(tiny_config, batch, execution)
    own = tiny_evaluator.tables(point.model, batch, 32, FMT, fusion=tiny_evaluator.fusion(point))
    assert tiny_evaluator.point_tables(point, tiny_evaluator.point_device(point)).decode is own.decode


def check_and_run(tmp_path, monkeypatch, capsys, workload: str, model: str | None = None) -> tuple[str, int]:
    """(what explore check prints of a static engine sweep of the tiny model (or `model`) at `workload` on an empty
    trace cache, the traces its run then captures)."""
    from explore.cli import main
    from explore.runner import run_sweep
    from explore.sweep import load_sweep
    from tests.explore.test_check_estimate import _captured
    from tests.explore.tiny_sweep import write_sweep

    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))  # empty: nothing traced yet
    model = model or write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: pad\nmodel: {model}\ndevice: h100-sxm\nexecution: engine\n"
                                 f"workload: {{{workload}}}\n")
    assert main(["check", path]) == 0
    out = capsys.readouterr().out
    run_sweep(load_sweep(path), tmp_path / "out")
    return out, len(_captured(tmp_path / "cache"))


@pytest.mark.parametrize(("prompt", "traces"), [(16, 7), (33, 8)])
def test_check_counts_the_traces_padded_passes_take(tmp_path, monkeypatch, capsys, prompt, traces):
    """A static engine sweep at batch 3 traces its prefill and decode, the decode at the padded 4 sequences, and the
    step template the padded passes' rows outside the layers come from (4 traces: kernels/shapes.py
    template_passes): 7 (check counted 2); of 33-token prompts also the prefill's 99 tokens padded to 104, as one
    prompt of 104: 8 (check counted 7). Check counts as many as the run then captures."""
    out, captured = check_and_run(tmp_path, monkeypatch, capsys, f"batch: 3, prompt: {prompt}, output: 2")
    assert f"up to {traces} traces to capture" in out, out
    assert captured == traces
