"""A serving engine's share of each device's memory (serving memory_utilization, vLLM's gpu_memory_utilization):
weights, the activation reserve and KV blocks fit in that share; unset, every byte, as before the setting."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.results import read_results
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import write_sweep, write_tiny_model
from workloads.requests import Fixed

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

# Llama-2-7B (Hugging Face meta-llama/Llama-2-7b-hf): 6,738,415,616 parameters, FP16; 32 layers of 32 KV heads of
# 128 dims: K and V take 2 x 32 x 32 x 128 x 2 B = 524,288 B a token, 8 MiB a block of 16 tokens.
LLAMA_2_7B_WEIGHTS_B = 6_738_415_616 * 2
LLAMA_2_7B_KV_BLOCK_B = 2 * 32 * 32 * 128 * 2 * 16
# What a CUDA program can allocate on an H100 SXM (80 GB of HBM3): PyTorch's 'total capacity of 79.11 GiB' on an
# NVIDIA H100 80GB HBM3 (github.com/vllm-project/vllm/issues/27508), 84.94e9 B; vLLM multiplies this total by its share.
H100_SXM_B = 79.11 * 2**30


def _point(share: float | None, *, device: str = "h100-sxm", scheduler: str = "continuous", requests: int = 20,
           output: int = 64) -> DesignPoint:
    spec = ServingSpec(scheduler=scheduler, requests=requests, rate_per_s=1000.0, prompt=Fixed(tokens=512),
                       output=Fixed(tokens=output), memory_utilization=share)
    return DesignPoint(model="llama-2-7b", device=device, batch=spec.max_seqs, prompt=0, output=0, serving=spec,
                       execution="engine")


def test_kv_blocks_at_vllms_default_share_are_what_is_left_of_it(evaluator):
    """At 0.9 of an H100's 84.94 GB (76.45 GB), Llama-2-7B's KV blocks are what its FP16 weights (13.48 GB) and the
    activation reserve of an 8,192-token iteration leave, in 8 MiB blocks."""
    memory = evaluator.evaluate(_point(0.9)).result.memory
    assert memory.weights_B == LLAMA_2_7B_WEIGHTS_B and memory.kv_block_B == LLAMA_2_7B_KV_BLOCK_B
    assert 0 < memory.activations_B < 1e9  # the reserve is the evaluator's (the share is what is checked here)
    assert memory.kv_blocks == math.floor((0.9 * H100_SXM_B - LLAMA_2_7B_WEIGHTS_B - memory.activations_B)
                                          / LLAMA_2_7B_KV_BLOCK_B)
    whole = evaluator.evaluate(_point(None)).result.memory
    # a tenth of 84.94 GB is 1,012.6 blocks of 8 MiB fewer
    assert whole.kv_blocks - memory.kv_blocks in (1012, 1013)


def test_a_share_of_1_is_the_run_without_the_setting(evaluator):
    """1.0 is every byte, as a point built without the setting (whose key is the one stored before it existed)."""
    unset, whole = (evaluator.evaluate(_point(share)).metrics for share in (None, 1.0))
    assert unset.keys() == whole.keys()
    assert all(unset[k] == whole[k] or unset[k] != unset[k] and whole[k] != whole[k] for k in unset)
    assert "memory_utilization" not in ServingSpec().key_text("h100-sxm")
    assert "memory_utilization" not in ServingSpec().columns()


def test_a_smaller_share_never_holds_more_kv_nor_serves_faster(evaluator):
    """Invariant: a smaller share never gives more KV blocks, and at a saturating rate (every request queued at once,
    as vLLM's offline benchmark) never more output tokens a second. Llama-2-7B on an A100 40GB, whose KV cache bounds
    the batch. Throughput is compared in steps of 0.1: at finer steps the last requests' tail and recompute
    preemptions can move it a few percent either way (a discrete schedule), where a tenth of the memory takes ten
    sequences of 768 tokens from the batch."""
    shares = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
    runs = [evaluator.evaluate(_point(share, device="a100-sxm-40gb", scheduler="chunked", requests=300,
                                      output=256)) for share in shares]
    blocks = [run.result.memory.kv_blocks for run in runs]
    tokens_per_s = [run.metrics["tokens_per_s"] for run in runs]
    assert all(more > fewer for more, fewer in itertools.pairwise(blocks)), blocks
    assert all(more >= fewer for more, fewer in itertools.pairwise(tokens_per_s)), tokens_per_s
    assert tokens_per_s[0] > tokens_per_s[-1]


def test_a_share_too_small_for_the_weights_names_it(evaluator):
    metrics = evaluator.evaluate(_point(0.15)).metrics
    assert not metrics["fits_in_memory"]
    assert metrics["infeasible_reason"].endswith("but 0.15 of the device's 84.9 GB is 12.7 GB")


def test_a_share_of_several_devices_names_them(evaluator):
    """A tp 2 replica's share is of both devices' memory: 0.1 of two A100 40GB (39.56 GiB, 42.48 GB each, as PyTorch
    reports an A100-SXM4-40GB: github.com/threestudio-project/threestudio/issues/402) is 8.5 GB, too little for
    13.5 GB."""
    point = _point(0.1, device="a100-sxm-40gb")
    metrics = evaluator.evaluate(dataclasses.replace(point, tp=2)).metrics
    assert metrics["infeasible_reason"].endswith("but 0.1 of the 2 devices' 85.0 GB (42.5 each) is 8.5 GB")


def test_a_static_batch_takes_no_share(tmp_path, capsys):
    assert main(["run", "--model", write_tiny_model(tmp_path), "--device", "h100-sxm",
                 "--memory-utilization", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "--memory-utilization: found 0.9 without --serving" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("value", "found"), [("0", "found 0,"), ("1.5", "found 1.5"), ("most", "'most'")])
def test_a_share_outside_0_to_1_is_one_line(tmp_path, capsys, value, found):
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "5", "--requests", "4",
                 "--prompt", "64", "--output", "4", "--memory-utilization", value]) == 2
    err = capsys.readouterr().err
    assert "--memory-utilization" in err and found in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


@pytest.mark.parametrize(("value", "found"), [("0", "found 0,"), ("1.5", "found 1.5,"), ("most", "found 'most',"),
                                              ("[0.9, 0]", "found 0,")])
def test_a_sweep_share_outside_0_to_1_is_one_line(tmp_path, capsys, value, found):
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: share\nmodel: {model}\ndevice: h100-sxm\nserving:\n  requests: 4\n"
                                 f"  rate: 5\n  prompt: 64\n  output: 4\n  memory_utilization: {value}\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err
    assert "serving.memory_utilization" in err and found in err and len(err.strip().splitlines()) == 1


def test_a_sweep_compares_shares(tmp_path, capsys):
    """A list sweeps the share: each row shows its own (1.0 included), and the 1.0 row's numbers are an unset run's."""
    model = write_tiny_model(tmp_path)
    body = "execution: engine\nserving:\n  requests: 8\n  rate: 100\n  prompt: 96\n  output: 8\n"
    base = f"name: share\nmodel: {model}\ndevice: h100-sxm\n{body}"
    assert main([write_sweep(tmp_path, base + "  memory_utilization: [0.5, 1.0]\n"), "--out",
                 str(tmp_path / "out"), "--quiet"]) == 0
    rows = {row["memory_utilization"]: row for row in read_results(tmp_path / "out")}
    assert sorted(rows) == [0.5, 1.0]
    assert rows[0.5]["peak_memory_B"] == rows[1.0]["peak_memory_B"]  # a tiny model holds the same in either share
    assert main([write_sweep(tmp_path, base), "--out", str(tmp_path / "unset"), "--quiet"]) == 0
    (unset,) = read_results(tmp_path / "unset")
    assert "memory_utilization" not in unset and unset["tokens_per_s"] == rows[1.0]["tokens_per_s"]
    capsys.readouterr()
