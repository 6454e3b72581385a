"""The per-op table (explore/ops_table.py): every kernel counted once, sums equal to the passes'."""

from __future__ import annotations

import json

import pytest

from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from explore.ops_table import format_op_table, op_rows
from sim.workload import BatchWorkload
from tests.explore.tiny_sweep import TINY_CONFIG, write_tiny_model

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    evaluator = Evaluator()
    point = DesignPoint(model=write_tiny_model(tmp_path_factory.mktemp("ops")), device="h100-sxm", batch=1,
                        prompt=32, output=2)
    return evaluator.evaluate(point), evaluator.point_device(point)


def test_rows_account_for_every_kernel_once(evaluation):
    result, device = evaluation
    rows = op_rows(result.tables, device, "eager")
    for phase, table in (("prefill", result.tables.prefill), ("decode", result.tables.decode)):
        part = [r for r in rows if r.phase == phase]
        assert sum(r.count for r in part) == len(table)
        assert sum(r.flops for r in part) == pytest.approx(float(table.flops.sum()), rel=1e-12)
        assert sum(r.bytes for r in part) == pytest.approx(float(table.bytes.sum()), rel=1e-12)
        assert sum(r.time_s for r in part) == pytest.approx(float(device.cost_table(table).time_s.sum()), rel=1e-12)
        assert sum(r.share for r in part) == pytest.approx(1.0)
        assert [r.time_s for r in part] == sorted((r.time_s for r in part), reverse=True)


def test_an_op_counts_the_bytes_the_device_reads(tmp_path):
    """The per-op table and the kernel timeline count the bytes the device moves. NVFP4 on an H100 runs weight-only
    (no fp4 tensor cores: vLLM's Marlin W4A16), its GEMMs reading 16-bit inputs: a decode down projection of the tiny
    model (k = 128 inputs, n = 64 outputs, two layers) reads 128 x 64 weights of 4 + 8/16 bits (an e4m3 scale per
    16), 128 inputs of 2 bytes and writes 64 outputs of 2 bytes a layer."""
    from sim.chrome_trace import _kernel_args

    nvfp4 = (("act_type", "fp4_e2m1"), ("group_size", 16), ("scale_type", "e4m3"), ("weight_type", "fp4_e2m1"))
    point = DesignPoint(model=write_tiny_model(tmp_path), device="h100-sxm", batch=1, prompt=32, output=2,
                        weight_bits=4, act_bits=4, knobs=nvfp4)
    evaluator = Evaluator()
    tables, device = evaluator.evaluate(point).tables, evaluator.point_device(point)
    layer_B = 128 * 64 * 4.5 / 8 + 128 * 2 + 64 * 2
    (down,) = [r for r in op_rows(tables, device, "eager")
               if r.phase == "decode" and r.module == "layers.*.mlp.down_proj"]
    assert down.bytes == pytest.approx(2 * layer_B)
    # The kernel timeline (--chrome-trace) says the same of each layer's kernel.
    traced = [a["bytes"] for a in _kernel_args(tables.decode, device, "eager") if a["module"].endswith("mlp.down_proj")]
    assert traced == pytest.approx([layer_B, layer_B])


def test_attention_is_named_as_the_priced_device_runs_it(evaluation):
    """The trace ran on this machine's CPU, whose flash attention is aten's '..._for_cpu' op; the table prices a GPU."""
    result, device = evaluation
    ops = {r.op for r in op_rows(result.tables, device, "eager") if r.kind.startswith("attention")}
    traced = {k.op for k in result.tables.prefill.kernels if k.kind.value.startswith("attention")}
    assert ops and not any(op.endswith("_for_cpu") for op in ops)
    assert {op.removesuffix("_for_cpu") for op in traced} <= ops


def test_layers_fold_into_one_row_and_a_decode_gemv_is_memory_bound(evaluation):
    """The tiny model has two layers: a layer's op is one row of two kernels. A batch-1 decode projection reads
    each 16-bit weight once for 2 FLOPs of it: about 1 FLOP per byte, far below the H100's ridge point."""
    result, device = evaluation
    rows = op_rows(result.tables, device, "eager")
    down = [r for r in rows if r.phase == "decode" and r.module == "layers.*.mlp.down_proj"]
    assert len(down) == 1 and down[0].count == TINY_CONFIG["num_hidden_layers"]
    hidden, inter = TINY_CONFIG["hidden_size"], TINY_CONFIG["intermediate_size"]
    weight_B = 2 * 2 * hidden * inter  # two layers, 2 bytes per weight
    assert down[0].flops == pytest.approx(2 * 2 * hidden * inter)
    assert weight_B <= down[0].bytes <= 1.1 * weight_B
    ridge_flop_per_byte = device.peak_flops("bf16") / device.bandwidth_Bps  # the H100 preset's: about 295
    assert down[0].intensity_flop_per_byte < ridge_flop_per_byte / 100
    assert down[0].bound in ("memory", "overhead")  # a tiny GEMV: its launch may take longer than its bytes
    text = format_op_table(rows, limit=3)
    assert "first decode step:" in text and "more ops" in text


def test_explore_run_ops_prints_the_same_rows(tmp_path, capsys, evaluation):
    from explore.cli import main

    result, device = evaluation
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--prompt", "32", "--output", "2", "--ops",
                 "--json"]) == 0
    ops = json.loads(capsys.readouterr().out)["ops"]
    expected = op_rows(result.tables, device, "eager")
    assert [(r["phase"], r["module"], r["count"]) for r in ops] == [(r.phase, r.module, r.count) for r in expected]
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--ops"]) == 2
    assert "--ops: found with --serving" in capsys.readouterr().err


def test_a_host_bound_pass_says_how_long_it_waits_on_the_host(evaluation):
    """A tiny model's eager passes run in microseconds a kernel, under the host's 21.6 us dispatch: each pass's title
    states the host's time (kernels x dispatch) and the wait (that less the device time), by hand; a host that
    dispatches for free adds nothing."""
    result, device = evaluation
    rows = op_rows(result.tables, device, "eager")
    text = format_op_table(rows, dispatch_s=20e-6)
    for phase, title in (("prefill", "prefill"), ("decode", "first decode step")):
        part = [r for r in rows if r.phase == phase]
        kernels, device_s = sum(r.count for r in part), sum(r.time_s for r in part)
        assert kernels * 20e-6 > device_s
        line = next(line for line in text.splitlines() if line.startswith(f"{title}:"))
        assert (f"the host dispatches them in {kernels * 20e-3:,.3f} ms (20.0 us a kernel), so the pass waits "
                f"{(kernels * 20e-6 - device_s) * 1e3:,.3f} ms on it") in line
    assert "host" not in format_op_table(rows)


def test_a_collective_is_bound_by_its_link(tmp_path):
    """A tensor-parallel pass's all-reduces take their link's time (kept as overhead beside no math or traffic of the
    device): the table and the Chrome trace say 'link', and every other kernel one of the device's three bounds."""
    from sim.chrome_trace import _kernel_args

    evaluator = Evaluator()
    point = DesignPoint(model=write_tiny_model(tmp_path), device="h100-sxm", batch=1, prompt=32, output=2, tp=2)
    result, system = evaluator.evaluate(point), evaluator.point_device(point)
    rows = op_rows(result.tables, system, "engine", workload=BatchWorkload(batch=1, prompt_len=32, output_len=2))
    assert {r.bound for r in rows if r.kind == "all_reduce"} == {"link"}
    assert {r.bound for r in rows if r.kind != "all_reduce"} <= {"compute", "memory", "overhead"}
    args = _kernel_args(result.tables.decode, system, "engine")
    assert {a["bound"] for a in args if a["kind"] == "all_reduce"} == {"link"}


def test_a_speculative_point_shows_the_passes_it_runs(tmp_path, capsys):
    """A speculative point runs no plain decode step: each step is a verification pass over k + 1 query tokens a
    sequence (the Medusa heads inside it), after a draft model's own steps. --ops showed the plain decode step, 1 query
    token a sequence, which the point never runs; it now shows the verification pass, whose projections do k + 1 = 5
    times a plain step's FLOPs (by hand: 2 x hidden x intermediate a row and layer for down_proj), and with a draft
    model, the draft's prefill and one of its decode steps."""
    from explore.cli import main

    model = write_tiny_model(tmp_path / "target")
    hidden, inter, layers = (TINY_CONFIG[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers"))
    run = ["run", "--model", model, "--device", "h100-sxm", "--prompt", "32", "--output", "4", "--ops", "--json",
           "--spec-draft", "medusa", "--spec-tokens", "4"]
    assert main(run) == 0
    ops = json.loads(capsys.readouterr().out)["ops"]
    assert {r["phase"] for r in ops} == {"prefill", "verify"}
    down = [r for r in ops if r["phase"] == "verify" and r["module"] == "layers.*.mlp.down_proj"]
    assert len(down) == 1 and down[0]["flops"] == pytest.approx(5 * layers * 2 * hidden * inter)
    draft = tmp_path / "draft" / "config.json"
    draft.parent.mkdir()
    draft.write_text(json.dumps(TINY_CONFIG | {"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64}))
    assert main([arg for arg in run[:-4] if arg != "--json"] + ["--spec-draft", str(draft)]) == 0
    text = capsys.readouterr().out
    assert "first verification pass:" in text and "the draft's prefill:" in text and "a draft decode step" in text
    assert "first decode step:" not in text


def test_a_draft_of_one_token_shows_no_one_token_draft_step(tmp_path, capsys):
    """At k = 1 each speculative step's draft runs its first step only (over the verified tokens and the sampled
    one), none of the k - 1 = 0 one-token steps (sim/speculative.py evaluate_speculative prices none): --ops lists the
    passes that run. Before, it listed the draft's one-token decode step at every k."""
    from explore.cli import main

    model = write_tiny_model(tmp_path / "target")
    draft = tmp_path / "draft" / "config.json"
    draft.parent.mkdir()
    draft.write_text(json.dumps(TINY_CONFIG | {"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64}))
    run = ["run", "--model", model, "--device", "h100-sxm", "--prompt", "32", "--output", "4", "--ops", "--json",
           "--spec-draft", str(draft), "--spec-tokens"]
    phases = {}
    for k in (1, 2):
        assert main(run + [str(k)]) == 0
        phases[k] = {r["phase"] for r in json.loads(capsys.readouterr().out)["ops"]}
    assert phases[1] == {"prefill", "draft_prefill", "verify", "draft_first"}
    assert phases[2] == phases[1] | {"draft_decode"}
