"""Whole decode steps and prefills in a measured table: `explore validate` compares each with the step `explore run`
simulates, the harness writes them from `explore measure --model`, and calibration leaves them out of every fit."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
from tiny_sweep import write_tiny_model

from explore.cli import main
from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from kernels.measured import MeasuredKernel, read_table, write_table

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

DEVICE = "h100-sxm"


def _step(model: str, time_s: float, batch: int = 2, kv_len: int = 65, dtype: str = "bf16") -> MeasuredKernel:
    return MeasuredKernel(device=DEVICE, kernel="decode_step", dtype=dtype, time_s=time_s, source="test", batch=batch,
                          kv_len=kv_len, model=model)


def _validate_json(table, tmp_path, capsys) -> dict:
    assert main(["validate", str(table), "--json", "--out", str(tmp_path / "v")]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_step_is_scored_against_the_step_explore_run_simulates(tmp_path, capsys):
    model = write_tiny_model(tmp_path)
    # The step after 64 cached tokens attends to 65 keys: a point with a 64-token prompt and one decode step.
    point = DesignPoint(model=model, device=DEVICE, batch=2, prompt=64, output=2)
    simulated_s = Evaluator().evaluate(point).metrics["tpot_s"]
    table = tmp_path / "steps.csv"
    write_table(table, [_step(model, simulated_s), _step(model, 2 * simulated_s)])
    summary = _validate_json(table, tmp_path, capsys)[DEVICE]["decode_step"]
    # Errors 0 and -50%: median |err| 25%, bias -25%.
    assert summary["n"] == 2
    assert summary["median_abs_err"] == pytest.approx(0.25, abs=1e-9)
    assert summary["median_bias"] == pytest.approx(-0.25, abs=1e-9)


def test_a_batch_run_is_scored_against_the_makespan_explore_run_simulates(tmp_path, capsys):
    """A published serving run (data/published/): batch 2 prompts of 64 tokens decoded to 80 tokens each, W4A8 with
    two-level scales and an int4 KV cache on a serving engine, is the static point of those fields; its makespan is
    the point's e2e_s, and the run is reported in a group of its format and how it ran."""
    model = write_tiny_model(tmp_path)
    point = DesignPoint(model=model, device=DEVICE, batch=2, prompt=64, output=16, weight_bits=4, act_bits=8,
                        kv_bits=4, execution="engine", knobs=(("scale_type", "two_level"),))
    simulated_s = Evaluator().evaluate(point).metrics["e2e_s"]
    run = MeasuredKernel(device=DEVICE, kernel="batch_run", dtype="w4a8", time_s=simulated_s, source="test", batch=2,
                         seq_len=64, kv_len=80, model=model, kv_dtype="int4", variant="two_level", timing="engine")
    table = tmp_path / "runs.csv"
    write_table(table, [run, replace(run, time_s=simulated_s * 2)])
    assert read_table(table) == [run, replace(run, time_s=simulated_s * 2)]
    summary = _validate_json(table, tmp_path, capsys)[DEVICE]["batch_run w4a8 kv int4 engine"]
    # Errors 0 and -50%: median |err| 25%, bias -25%.
    assert summary["n"] == 2
    assert summary["median_abs_err"] == pytest.approx(0.25, abs=1e-9)
    assert summary["median_bias"] == pytest.approx(-0.25, abs=1e-9)


def test_runs_of_several_tables_are_grouped_per_table(tmp_path, capsys):
    """Two tables of whole steps (two published sources, say) are scored in a group each, named by its file; one
    table keeps its groups' plain names."""
    model = write_tiny_model(tmp_path)
    point = DesignPoint(model=model, device=DEVICE, batch=2, prompt=64, output=2)
    simulated_s = Evaluator().evaluate(point).metrics["tpot_s"]
    first, second = tmp_path / "engine-a.csv", tmp_path / "engine-b.csv.gz"
    write_table(first, [_step(model, simulated_s)])
    write_table(second, [_step(model, 2 * simulated_s)])
    assert main(["validate", str(first), str(second), "--json", "--out", str(tmp_path / "v")]) == 0
    summary = json.loads(capsys.readouterr().out)[DEVICE]
    assert summary["decode_step (engine-a)"]["median_bias"] == pytest.approx(0.0, abs=1e-9)
    assert summary["decode_step (engine-b)"]["median_bias"] == pytest.approx(-0.5, abs=1e-9)
    assert set(_validate_json(first, tmp_path, capsys)[DEVICE]) == {"decode_step"}


def test_a_batch_run_on_devices_that_cannot_shard_the_model_is_one_line(tmp_path, capsys):
    model = write_tiny_model(tmp_path)
    run = MeasuredKernel(device=DEVICE, kernel="batch_run", dtype="bf16", time_s=1.0, source="test", batch=2,
                         seq_len=64, kv_len=80, model=model, timing="engine", tp=3)
    table = tmp_path / "runs.csv"
    write_table(table, [run])
    assert main(["validate", str(table), "--out", str(tmp_path / "v")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "batch_run of" in line and "tp: found 3, allowed: a divisor of" in line, line


def test_a_prefill_is_scored_against_the_ttft_explore_run_simulates(tmp_path, capsys):
    model = write_tiny_model(tmp_path)
    # batch 2 prompts of 64 tokens into an empty cache: a static point's time to its first token.
    simulated_s = Evaluator().evaluate(DesignPoint(model=model, device=DEVICE, batch=2, prompt=64,
                                                   output=1)).metrics["ttft_s"]
    prefill = MeasuredKernel(device=DEVICE, kernel="prefill_step", dtype="bf16", time_s=simulated_s, source="test",
                             batch=2, seq_len=64, kv_len=64, model=model)
    table = tmp_path / "prefill.csv"
    write_table(table, [prefill, replace(prefill, time_s=simulated_s / 2)])
    summary = _validate_json(table, tmp_path, capsys)[DEVICE]["prefill_step"]
    # Errors 0 and +100%: median |err| 50%, bias +50%.
    assert summary["n"] == 2
    assert summary["median_abs_err"] == pytest.approx(0.5, abs=1e-9)
    assert summary["median_bias"] == pytest.approx(0.5, abs=1e-9)


def test_a_prefill_without_its_prompt_length_is_refused(tmp_path, capsys):
    table = tmp_path / "prefill.csv"
    table.write_text("device,kernel,batch,dtype,time_s,source,model\n"
                     f"{DEVICE},prefill_step,2,bf16,0.01,test,llama-3-8b\n")
    assert main(["validate", str(table), "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert "prefill_step: model, batch and seq_len" in err and len(err.strip().splitlines()) == 1


def test_a_graph_timed_step_is_scored_against_the_graph_replayed_step(tmp_path, capsys):
    model = write_tiny_model(tmp_path)
    evaluator = Evaluator()
    eager_s, graphs_s = (evaluator.evaluate(DesignPoint(model=model, device=DEVICE, batch=2, prompt=64, output=2,
                                                        execution=mode)).metrics["tpot_s"]
                         for mode in ("eager", "graphs"))
    assert graphs_s < eager_s  # the tiny model's step is host-bound when launched eagerly
    table = tmp_path / "steps.csv"
    write_table(table, [_step(model, eager_s), replace(_step(model, graphs_s), timing="graph")])
    summary = _validate_json(table, tmp_path, capsys)[DEVICE]
    # Each row meets the step launched as it was timed, in its own group: both errors are zero.
    for group in ("decode_step", "decode_step graph"):
        assert summary[group]["n"] == 1 and summary[group]["median_abs_err"] == pytest.approx(0.0, abs=1e-9)


def test_a_step_at_another_dtype_than_its_model_is_refused(tmp_path, capsys):
    table = tmp_path / "steps.csv"
    write_table(table, [_step(write_tiny_model(tmp_path), 1e-3, dtype="fp32")])
    assert main(["validate", str(table), "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert "dtype: found 'fp32'" in err and "'bf16'" in err and len(err.strip().splitlines()) == 1


def test_measure_writes_steps_that_validate_reads(tmp_path, capsys):
    model = write_tiny_model(tmp_path)
    table = tmp_path / "m.csv"
    assert main(["measure", "--device-name", DEVICE, "--model", model, "--kinds", "decode_step,prefill_step",
                 "--quick", "--repeats", "3", "--threads", "1", "-o", str(table)]) == 0
    rows = read_table(table)
    assert [(r.kernel, r.model, r.batch, r.seq_len, r.kv_len, r.dtype) for r in rows] == [
        ("decode_step", model, 1, 0, 129, "bf16"), ("prefill_step", model, 1, 64, 64, "bf16")]
    capsys.readouterr()
    summary = _validate_json(table, tmp_path, capsys)[DEVICE]
    assert summary["decode_step"]["n"] == 1 and summary["prefill_step"]["n"] == 1


def test_measure_refuses_a_model_too_large_for_this_machine(capsys):
    memory_GB = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    if memory_GB > 170:
        pytest.skip(f"{memory_GB:.0f} GB of memory holds Llama-2-70B's 138 GB")
    assert main(["measure", "--device-name", "cpu-local", "--model", "llama-2-70b", "-o", "t.csv"]) == 2
    assert "--model: llama-2-70b needs 138" in capsys.readouterr().err


def test_measure_refuses_the_steps_of_a_model_with_latent_attention(tmp_path, capsys):
    """DeepSeek-V2-Lite's steps would run MLA through SDPA with zero-padded values (workloads/decoder.py
    latent_attention), not the fused kernel its simulated step prices (and under int4 linears its absorbed decode
    reads kv_b_proj's weight, which tinygemm's linear does not hold): refused in one line before any timing, at either
    dtype; the harness refuses too."""
    from kernels import harness
    from tests.kernels.test_mla import _tiny

    for dtype in ("bf16", "w4a16"):
        assert main(["measure", "--device-name", DEVICE, "--model", "deepseek-v2-lite", "--kinds", "decode_step",
                     "--dtype", dtype, "-o", str(tmp_path / "m.csv")]) == 2
        err = capsys.readouterr().err
        assert "--model: found deepseek-v2-lite: its multi-head latent attention runs here through SDPA" in err
        assert "\n" not in err.strip() and not (tmp_path / "m.csv").exists()
    with pytest.raises(ValueError, match="multi-head latent attention"):
        harness.measure_decode_step(_tiny(), batch=1, context_len=4, device="cpu", dtype="fp32", repeats=1)


def test_calibration_fits_kernels_and_skips_steps(tmp_path):
    from hw_models.calibration import fit_calibration
    from hw_models.registry import load_device

    base = load_device(DEVICE, calibrated=False)
    kernels = [MeasuredKernel(device=DEVICE, kernel="norm", dtype="bf16", time_s=1e-5 * (i + 1), source=f"s{i % 2}",
                              bytes=2e6 * (i + 1)) for i in range(8)]
    table = tmp_path / "t.csv"
    write_table(table, kernels + [_step("llama-3-8b", 0.01, kv_len=513)])
    cal = fit_calibration(base, read_table(table), table_path=str(table), train_fraction=0.5, command="test")
    assert cal.provenance["rows_for_device"] == 8 and set(cal.streams) == {"norm"}


def _int4_model(folder) -> str:
    """The tiny model widened to linears tinygemm's int4 kernel takes (inputs a multiple of its group of 128)."""
    path = write_tiny_model(folder)
    config = json.loads(open(path).read()) | {"hidden_size": 128, "intermediate_size": 256}
    with open(path, "w") as f:
        json.dump(config, f)
    return path


def test_a_w4a16_step_is_scored_against_the_int4_point_in_a_group_of_its_own(tmp_path, capsys):
    model = _int4_model(tmp_path)
    evaluator = Evaluator()
    # Replayed from CUDA graphs: launched eagerly the tiny step is host-bound, at one time for either format.
    point = DesignPoint(model=model, device=DEVICE, batch=2, prompt=64, output=2, execution="graphs")
    w16_s, w4_s = (evaluator.evaluate(replace(point, weight_bits=bits)).metrics["tpot_s"] for bits in (16, 4))
    assert w4_s < w16_s
    table = tmp_path / "steps.csv"
    write_table(table, [replace(_step(model, t, dtype=dtype), timing="graph")
                        for t, dtype in ((w16_s, "bf16"), (w4_s, "w4a16"))])
    summary = _validate_json(table, tmp_path, capsys)[DEVICE]
    for group in ("decode_step graph", "decode_step w4a16 graph"):
        assert summary[group]["n"] == 1 and summary[group]["median_abs_err"] == pytest.approx(0.0, abs=1e-9)


def test_measure_writes_w4a16_steps_and_refuses_a_model_tinygemm_cannot_run(tmp_path, capsys):
    table = tmp_path / "m.csv"
    assert main(["measure", "--device-name", DEVICE, "--model", _int4_model(tmp_path), "--kinds", "decode_step",
                 "--dtype", "w4a16", "--quick", "--repeats", "3", "--threads", "1", "-o", str(table)]) == 0
    assert [(r.kernel, r.dtype) for r in read_table(table)] == [("decode_step", "w4a16")]
    capsys.readouterr()
    assert main(["measure", "--device-name", DEVICE, "--model", write_tiny_model(tmp_path / "small"), "--kinds",
                 "decode_step", "--dtype", "w4a16", "-o", str(table)]) == 2
    assert "hidden_size 64 is not a multiple of tinygemm's group of 128" in capsys.readouterr().err
    assert main(["measure", "--device-name", DEVICE, "--kinds", "attention", "--dtype", "fp8", "-o", str(table)]) == 2
    assert "--dtype: found 'fp8' with --kinds attention" in capsys.readouterr().err


def test_host_bound_eager_steps_say_what_the_host_dispatches_per_kernel(tmp_path, capsys):
    """A tiny model's eager step is priced at its host's dispatch (21.6 us a kernel, more than its device time): a
    step measured at twice that puts the host at twice the dispatch a kernel, and validate says so beside the
    field that sets it. Graph-replayed steps say nothing of the host."""
    from hw_models.gpu_spec import FRAMEWORK_DISPATCH_US
    from kernels.lowering import lower_trace

    model = write_tiny_model(tmp_path)
    evaluator = Evaluator()
    kernels = len(lower_trace(evaluator.trace(model, "decode", 2, 64)))
    point = DesignPoint(model=model, device=DEVICE, batch=2, prompt=64, output=2)
    eager_s = evaluator.evaluate(point).metrics["tpot_s"]
    assert eager_s == pytest.approx(kernels * FRAMEWORK_DISPATCH_US * 1e-6, rel=1e-9)  # host-bound as priced
    table = tmp_path / "steps.csv"
    write_table(table, [_step(model, 2 * eager_s), replace(_step(model, eager_s / 10), timing="graph")])
    assert main(["validate", str(table), "--out", str(tmp_path / "v")]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "per kernel" in line]
    assert "1 eager steps are host-bound as priced" in line
    assert f"median {2 * FRAMEWORK_DISPATCH_US:.1f} us per kernel" in line and "overhead.framework_dispatch_us" in line
