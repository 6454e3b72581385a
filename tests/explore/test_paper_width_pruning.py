"""GLU width pruning (a model config with a smaller intermediate_size) against P. Martra, "Fragile Knowledge, Robust
Instruction-Following: The Width Pruning Dichotomy in Llama-3.2", arXiv:2512.22671 (abstract: pruned configurations
cut energy by up to 23% a token, J/token, with a latency penalty for single requests, while batch workloads benefit).

Its measurements: github.com/peremartra/llama-glu-expansion-pruning,
results/llama_1b_carbon_complete_results_latest.json (notebook 03_Evaluate_1B_CARBON): Llama-3.2-1B and its MAW-
pruned versions (the MLP's intermediate size cut by 10-60%) generating with Hugging Face transformers (PyTorch
eager, torch 2.8) on an NVIDIA L4, 100 MMLU prompts at batch 1 with up to 50 new tokens ("mmlu_latency_b1"). Energy
is the board's energy less its measured idle power (31.55 W) over the run, per generated token: 0.2681 J at 0%
pruning, 0.2061 J at 60% (-23%, the abstract's "up to"); the decode rate does not move, 51.42 against 51.37
tokens/s. The 60% model keeps 3,277 of 8,192 MLP channels (1.24B -> 753M parameters, the
oopere/pruned60-llama-3.2-1B model card).

Here: the same model and its 60%-pruned config on the l4 preset, eager execution, batch 1, 256 prompt tokens (the
prompts' lengths are not in the results) and 50 output tokens; energy less the preset's idle power (energy_per_token_J
x (1 - idle_W / avg_power_W)), as the paper counts it. Tolerance: the decode rate within 5% (the paper's runs agree
within 0.1%), the energy reduction within 25% of the paper's 23%.

Not checked: the "latency penalty" of single requests. In the same file the pruned models' time to the last token
grows (824 ms -> 970 ms) because they generate more of the 50 allowed tokens before stopping (4,087 -> 4,750 over the
100 prompts, 20.2 ms against 20.4 ms a token); a static batch here generates every token it is asked for.

Llama-3.2-1B (Hugging Face meta-llama/Llama-3.2-1B config.json): 16 layers, hidden 2048, 32 heads of 64 with 8 KV
heads, MLP 8192, vocabulary 128,256, tied embeddings, RoPE theta 500,000.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explore.design_point import DesignPoint
from hw_models.registry import load_device

PRESETS = Path(__file__).resolve().parents[2] / "workloads" / "presets"
PAPER_ENERGY_CUT = 1 - 0.2061 / 0.2681  # mmlu_latency_b1, 0% against 60% pruning
PAPER_DECODE_RATIO = 51.37 / 51.42
TOLERANCE = 0.25


@pytest.fixture(scope="module")
def llama_3_2_1b(tmp_path_factory) -> dict[str, str]:
    """config.json paths of Llama-3.2-1B and of its 60% width-pruned version, by MLP channels kept."""
    base = json.loads((PRESETS / "llama-3-8b.json").read_text()) | {
        "_source": "Hugging Face meta-llama/Llama-3.2-1B config.json", "hidden_size": 2048, "num_hidden_layers": 16,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 131072,
        "tie_word_embeddings": True}
    folder = tmp_path_factory.mktemp("llama-3.2-1b")
    paths = {}
    for name, channels in (("dense", 8192), ("pruned60", 3277)):
        paths[name] = str(folder / f"{name}.json")
        Path(paths[name]).write_text(json.dumps(base | {"intermediate_size": channels}))
    return paths


@pytest.fixture(scope="module")
def metrics(evaluator, llama_3_2_1b) -> dict[str, dict]:
    return {name: evaluator.evaluate(DesignPoint(model=path, device="l4", batch=1, prompt=256, output=50)).metrics
            for name, path in llama_3_2_1b.items()}


def _net_energy_per_token_J(m: dict) -> float:
    """Energy a token above the device's idle power, as the paper subtracts its measured idle."""
    return m["energy_per_token_J"] * (1 - load_device("l4").spec.power.idle_W / m["avg_power_W"])


def test_width_pruning_leaves_the_batch_1_decode_rate(metrics):
    ratio = metrics["dense"]["tpot_s"] / metrics["pruned60"]["tpot_s"]
    assert abs(ratio / PAPER_DECODE_RATIO - 1) <= 0.05, ratio


def test_width_pruning_cuts_energy_and_memory(metrics):
    """The paper's direction: the pruned model spends less energy a token and holds fewer bytes."""
    dense, pruned = metrics["dense"], metrics["pruned60"]
    assert _net_energy_per_token_J(pruned) < _net_energy_per_token_J(dense)
    assert pruned["energy_per_token_J"] < dense["energy_per_token_J"]
    assert pruned["peak_memory_B"] < dense["peak_memory_B"]


@pytest.mark.xfail(strict=True, reason=(
    "ours -39% (0.153 -> 0.094 J a token above idle), not -23%: the GPU's energy above idle is priced per action, "
    "nearly all of it the weights' DRAM traffic, which falls with the weights (2.5 -> 1.5 GB). The measured board "
    "power above idle falls far less (11.3 W -> 10.0 W, the two runs' raw energy over their duration less 31.55 W): "
    "a host-bound eager decode keeps the chip clocked and active whatever it reads, a power no term of the model "
    "holds. Counted whole, idle included, ours falls 9%"))
def test_width_pruning_cuts_energy_a_token_by_23_percent(metrics):
    cut = 1 - _net_energy_per_token_J(metrics["pruned60"]) / _net_energy_per_token_J(metrics["dense"])
    assert PAPER_ENERGY_CUT * (1 - TOLERANCE) <= cut <= PAPER_ENERGY_CUT * (1 + TOLERANCE), cut
