"""Hybrid attention placement at a design point (serving attention_placement: hybrid, sim/attention_pool.py): where the
KV blocks lie, a GPU that holds every sequence prices as it does alone, and the one-line errors."""

from __future__ import annotations

import math

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from sim.serving_spec import ServingSpec
from workloads.requests import Fixed

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

# Llama-2-7B (Hugging Face meta-llama/Llama-2-7b-hf config.json): 32 layers of 32 KV heads of 128 dims at 16 bits:
# K and V take 2 x 32 x 32 x 128 x 2 B = 524,288 B a token, 8,388,608 B a block of 16 tokens.
LLAMA_2_7B_KV_BLOCK_B = 2 * 32 * 32 * 128 * 2 * 16
ALTRA_B = 256e9  # the ampere-altra preset's memory.capacity_GB


def _point(device: str = "t4", *, output: int = 64, requests: int = 24, **serving) -> DesignPoint:
    spec = ServingSpec(requests=requests, rate_per_s=50.0, prompt=Fixed(tokens=256), output=Fixed(tokens=output),
                       **serving)
    return DesignPoint(model="llama-2-7b", device=device, batch=spec.max_seqs, prompt=0, output=0, serving=spec)


HYBRID = dict(attention_device="ampere-altra", attention_link="pcie3-x16", attention_placement="hybrid")


def test_hybrid_blocks_are_the_gpu_s_free_blocks_plus_the_host_s(evaluator):
    """The T4's blocks (what is left after weights and activations, as GPU-only) plus floor(256 GB / 8.39 MB) on the
    host; never fewer than the GPU alone holds."""
    alone = evaluator.evaluate(_point()).result.memory
    hybrid = evaluator.evaluate(_point(**HYBRID)).result.memory
    assert alone.kv_block_B == hybrid.kv_block_B == LLAMA_2_7B_KV_BLOCK_B
    assert hybrid.device_kv_blocks == alone.kv_blocks
    assert hybrid.kv_blocks == alone.kv_blocks + math.floor(ALTRA_B / LLAMA_2_7B_KV_BLOCK_B)


def test_a_gpu_that_holds_every_sequence_serves_as_it_does_alone(evaluator):
    """Invariant: on an A40 (48 GB) a few short requests all fit in the GPU's blocks, so a hybrid pool runs every
    iteration on the GPU alone: the same times, to the last digit (its energy adds the idle host's static power)."""
    alone = evaluator.evaluate(_point("a40")).metrics
    hybrid = evaluator.evaluate(_point("a40", **HYBRID)).metrics
    for name in ("ttft_s", "tpot_s", "e2e_s", "tokens_per_s", "mean_batch_size"):
        assert hybrid[name] == alone[name], name


def test_a_hybrid_row_shows_no_micro_batches():
    """A hybrid iteration runs as one batch: its row leaves attention_micro_batches empty (a report label then does
    not show the 2 an apart point splits in), as a row whose model's devices attend leaves every attention setting."""
    assert ServingSpec(**HYBRID).columns()["attention_micro_batches"] is None
    assert ServingSpec(attention_device="ampere-altra").columns()["attention_micro_batches"] == 2
    assert ServingSpec(**HYBRID).columns()["attention_placement"] == "hybrid"


def test_hybrid_never_serves_fewer_sequences_at_once(evaluator):
    """Invariant: with the T4's KV space binding (long outputs), hybrid holds at least as many sequences in a batch
    as the GPU alone, and is not slower in throughput here."""
    alone = evaluator.evaluate(_point(output=512, requests=48)).metrics
    hybrid = evaluator.evaluate(_point(output=512, requests=48, **HYBRID)).metrics
    assert hybrid["mean_batch_size"] >= alone["mean_batch_size"]
    assert hybrid["tokens_per_s"] > alone["tokens_per_s"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--attention-device", "h20", "--attention-placement", "hybrid"],
     "--attention-placement: found 'hybrid' with --attention-device 'h20' (a gpu device), allowed: a CPU"),
    (["--attention-device", "ampere-altra", "--attention-placement", "hybrid", "--tp", "2",
      "--link", "pcie3-x16"],
     "--attention-placement: found 'hybrid' with --tp 2, allowed: 1"),
    (["--attention-placement", "hybrid"], "--attention-placement"),
    (["--attention-device", "ampere-altra", "--attention-placement", "hybrid"],
     "--attention-placement: found 'hybrid' with no attention_link, allowed: the link between the GPU and its host "
     "CPU"),
])
def test_hybrid_mistakes_get_one_line(capsys, flags, message):
    """A hybrid placement without a CPU attention device, or on tensor-parallel GPUs: one line naming the key, what
    was found and what is allowed; exit code 2."""
    code = main(["run", "--model", "llama-2-7b", "--device", "t4", "--serving", "--requests", "4", "--rate", "1",
                 "--prompt", "64", "--output", "8", *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
