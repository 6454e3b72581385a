"""Design points with hot experts (kernels/formats.py NumericFormat.hot_experts): the knobs in sweeps and
`explore run`, one-line errors for bad values and dense models, the weights a point holds, a static and a serving
sweep of a tiny Mixtral, and quality_delta left null (no published figure of a hot-experts allocation)."""

from __future__ import annotations

import json

import pytest

from explore.cli import main
from explore.results import read_results
from tests.explore.tiny_sweep import TINY_CONFIG, write_sweep

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

# The tiny Llama with 4 experts, 2 per token (HF Mixtral config keys).
TINY_MIXTRAL = {**TINY_CONFIG, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2}


def _tiny_mixtral(folder) -> str:
    path = folder / "tiny-mixtral" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(TINY_MIXTRAL))
    return str(path)


@pytest.mark.parametrize("flags, needle", [
    (["--model", "llama-2-7b", "--hot-experts", "0.25", "--hot-expert-bits", "8"],
     "--hot-experts: found 0.25 on llama-2-7b, a dense model"),
    (["--model", "mixtral-8x7b", "--hot-experts", "0.25"],
     "--hot-expert-bits: found 0 with --hot-experts 0.25 and the experts at 4 bits"),
    (["--model", "mixtral-8x7b", "--hot-experts", "1.5", "--hot-expert-bits", "8"], "--hot-experts: found 1.5"),
    (["--model", "mixtral-8x7b", "--hot-experts", "0.5", "--hot-expert-bits", "7"], "--hot-expert-bits"),
])
def test_bad_run_flags_are_one_line_exit_2(flags, needle, capsys):
    code = main(["run", "--device", "h100-sxm", "--weight-bits", "4", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


@pytest.mark.parametrize("fmt, needle", [
    ("{weight_bits: 4, hot_experts: [0, 0.25], hot_expert_bits: 8}", "format.hot_experts: found 0.25 on tiny"),
    ("{weight_bits: 4, hot_experts: 2, hot_expert_bits: 8}", "format.hot_experts: found 2"),
    ("{weight_bits: [4, 8], hot_experts: 0.5, hot_expert_bits: 6}", "format.hot_expert_bits: found 6 with the experts "
                                                                    "at 8 bits"),
])
def test_bad_sweep_values_are_one_line_exit_2(tmp_path, capsys, tiny_config, fmt, needle):
    model = tiny_config if "tiny" in needle else _tiny_mixtral(tmp_path)
    sweep = write_sweep(tmp_path, f"name: bad-hot\nmodel: {model}\ndevice: h100-sxm\n"
                                  f"workload: {{batch: 1, prompt: 16, output: 4}}\nformat: {fmt}\n")
    code = main(["check", sweep])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


def test_a_sweep_over_hot_experts_runs(tmp_path):
    """A static sweep of the tiny Mixtral in W4 with none and a quarter of the experts at 8 bits, eager and fused:
    the weights held grow by a quarter of the experts' parameters at 4 more bits (2 layers x 4 experts x 24,576
    weights), and no published quality figure names such an allocation."""
    model = _tiny_mixtral(tmp_path)
    sweep = write_sweep(tmp_path, f"name: hot\nmodel: {model}\ndevice: h100-sxm\nexecution: [eager, engine]\n"
                                  f"workload: {{batch: 2, prompt: 16, output: 4}}\n"
                                  f"format: {{weight_bits: 4, hot_experts: [0, 0.25], hot_expert_bits: 8}}\n")
    out = tmp_path / "out"
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    rows = read_results(out)
    assert len(rows) == 4
    memory = {(row["execution"], float(row["hot_experts"])): row["peak_memory_B"] for row in rows}
    experts = 2 * 4 * 3 * 64 * 128
    for execution in ("eager", "engine"):
        assert memory[execution, 0.25] - memory[execution, 0.0] == pytest.approx(experts * 0.25 * 4 / 8, rel=1e-6)
    hot = [row for row in rows if float(row["hot_experts"]) > 0]
    assert all(row["quality_delta"] is None or row["quality_delta"] != row["quality_delta"] for row in hot)


def test_a_serving_sweep_with_hot_experts_runs(tmp_path):
    model = _tiny_mixtral(tmp_path)
    sweep = write_sweep(tmp_path, f"name: hot-serving\nmodel: {model}\ndevice: h100-sxm\nexecution: engine\n"
                                  f"format: {{weight_bits: 4, hot_experts: [0, 0.5], hot_expert_bits: 8}}\n"
                                  f"serving:\n  prompt: {{dist: fixed, tokens: 32}}\n"
                                  f"  output: {{dist: fixed, tokens: 8}}\n  requests: 20\n  rate: 50\n")
    out = tmp_path / "out"
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    rows = read_results(out)
    tpot = {float(row["hot_experts"]): row["tpot_s"] for row in rows}
    assert set(tpot) == {0.0, 0.5} and all(value > 0 for value in tpot.values())
