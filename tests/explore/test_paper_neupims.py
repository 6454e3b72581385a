"""NeuPIMs (Heo et al., ASPLOS 2024) against its baselines for batched GPT-3 decoding.

Paper (abstract and Section 7): NeuPIMs reaches about 3x the throughput of GPU-only (NVIDIA A100), 2.4x of
NPU-only and 1.6x of a naive NPU+PIM (single row buffer, no sub-batch interleaving) on GPT-3 7B/13B/30B/175B
with batch sizes up to 512. We check the direction at every point and the size where we can.

Setup, and why it differs from the paper's:
- The paper runs each model with tensor parallelism over 4 devices (n_tp 4 in casys-kaist/NeuPIMs
  configs/model_configs/gpt3-7B.json and gpt3-13B.json); our simulator has one device and no TP. TP splits
  every GEMM and the attention heads alike on every system, so throughput ratios between systems carry
  over, but memory does not: one 32 GB NeuPIMs device cannot hold GPT-3 7B with a batch of 256. Each system
  therefore gets the capacity of the paper's 4 devices (memory.capacity_GB: 4 x 32 GB for the NPU presets,
  4 x 80 GB for the A100), a what-if on capacity only; no timing depends on it.
- Throughput is decode throughput, batch / tpot_s: the paper's figure is generation throughput of batched
  decoding; our static batch also runs a prefill, which the three NPU systems share.
- Prompt 256, output 32 keep the test fast; the paper's Alpaca/ShareGPT requests are longer. Short contexts
  shrink the attention share of a decode step, which is all that PIM accelerates.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from explore.evaluate import Evaluator

PROMPT, OUTPUT = 256, 32
# Capacity of the paper's 4-device tensor-parallel system (see the module docstring).
CAPACITY_GB = {"a100-sxm-80gb": 4 * 80, "npu-only": 4 * 32, "npu-pim-naive": 4 * 32, "neupims": 4 * 32}
PAPER = {"a100-sxm-80gb": 3.0, "npu-only": 2.4, "npu-pim-naive": 1.6}  # NeuPIMs speedup over each (abstract)
TOLERANCE = 0.35  # on the size of each speedup, both sides


def speedups(evaluator: Evaluator, model: str, batch: int) -> dict[str, float]:
    """NeuPIMs decode throughput over each baseline's, at one design point that fits every system."""
    throughput = {}
    for device, capacity in CAPACITY_GB.items():
        point = DesignPoint(model=model, device=device, batch=batch, prompt=PROMPT, output=OUTPUT,
                            overrides=(("memory.capacity_GB", capacity),))
        metrics = evaluator.evaluate(point).metrics
        assert metrics["fits_in_memory"], (device, metrics["infeasible_reason"])
        throughput[device] = batch / metrics["tpot_s"]
    return {device: throughput["neupims"] / throughput[device] for device in PAPER}


def test_gpt3_7b_batch_512_direction_and_size(evaluator):
    # Ours: 2.3x GPU, 3.2x NPU-only, 1.14x naive NPU+PIM; paper 3x, 2.4x, 1.6x: all within 35%.
    # At batch 512 a sub-batch of 256 sits at the NPU's ridge point (262 TFLOP/s over 1024 GB/s = 256
    # FLOP/B, i.e. 256 tokens per weight), so halving the batch for interleaving costs the GEMMs little,
    # while the other half's attention (KV reads of 512 x 288 tokens per step) hides behind them on PIM.
    ours = speedups(evaluator, "gpt3-7b", 512)
    for device, paper in PAPER.items():
        assert ours[device] > 1.0, (device, ours)
        assert ours[device] == pytest.approx(paper, rel=TOLERANCE), (device, ours)


@pytest.mark.parametrize("model", ["gpt3-7b", "gpt3-13b"])
def test_batch_256_beats_gpu_and_npu_only(evaluator, model):
    # Ours at batch 256: GPT-3 7B 2.14x GPU, 2.71x NPU-only; 13B 1.97x GPU, 2.47x NPU-only (paper 3x, 2.4x).
    # Against the GPU, 13B comes within 1% of the 35% bound below the paper's 3x: our A100 baseline is the
    # calibrated roofline at 2039 GB/s, twice the NeuPIMs device's external bandwidth, a stronger baseline than
    # the measured GPU runs of the paper; and prompt 256 keeps the attention share (what PIM speeds up) small.
    # NeuPIMs keeps the batch whole here (see the next tests), so its gain over NPU-only is PIM attention alone.
    ours = speedups(evaluator, model, 256)
    for device in ("a100-sxm-80gb", "npu-only"):
        assert ours[device] == pytest.approx(PAPER[device], rel=TOLERANCE), (device, ours)


def test_batch_256_never_below_naive_npu_pim(evaluator):
    """Direction only: NeuPIMs adds dual row buffers and interleaving to the naive design, and interleaves only
    when that finishes sooner (sim/step_costs.price_passes), so it is never slower."""
    ours = speedups(evaluator, "gpt3-7b", 256)
    assert ours["npu-pim-naive"] >= 1.0 - 1e-9, ours


@pytest.mark.xfail(strict=True, reason="ours 1.0x against the paper's 1.6x over naive NPU+PIM at GPT-3 7B batch 256: "
                                        "split in two sub-batches every weight is read twice per step, so NeuPIMs "
                                        "keeps the batch whole (see the comment)")
def test_batch_256_speedup_over_naive_npu_pim_near_paper(evaluator):
    # Paper: 1.6x over the naive NPU+PIM. Ours at GPT-3 7B, batch 256: 1.0x, a miss. Split in two sub-batches
    # of 128 tokens, every weight is read twice per step (13.4 GB at 1024 GB/s: ~13 ms each, memory bound below
    # the NPU's ridge point of 256 tokens), ~26 ms of GEMMs against the naive design's 13 ms of GEMMs plus ~5 ms
    # of PIM attention in series: splitting would give 0.66x, so the scheduler keeps the batch whole and NeuPIMs
    # matches the naive design. Interleaving pays at batch 512 (test above) and at the paper's longer contexts,
    # where the hidden attention is worth more than the extra weight reads. A model that gets there passes.
    ours = speedups(evaluator, "gpt3-7b", 256)
    paper = PAPER["npu-pim-naive"]
    assert paper * (1 - TOLERANCE) <= ours["npu-pim-naive"] <= paper * (1 + TOLERANCE), ours
