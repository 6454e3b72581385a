"""NeuPIMs (Heo et al., ASPLOS 2024) against its baselines for batched GPT-3 decoding.

Paper (abstract, arXiv 2403.00579): NeuPIMs reaches 3x the throughput of GPU-only (NVIDIA A100), 2.4x of NPU-only
and 1.6x of a naive NPU+PIM (blocked mode: a single row buffer lets either the NPU or PIM use memory at a time; no
sub-batch interleaving) on GPT-3 7B/13B/30B/175B. Only the abstract was reachable from here, not the evaluation
section's tables; the setup below is read from the artifact that produced the paper's numbers, casys-kaist/NeuPIMs
(paths relative to it).

What the paper simulates:
- Workload: steady-state iterations of continuous batching. trace-generator/get_distributions.py draws (input,
  output) lengths from ShareGPT or Alpaca (trace-generator/{share-gpt2,alpaca}/stats.tsv), keeps `batch` requests
  running (max_seq_len 2048) and snapshots their context lengths; the simulator then times one decode step
  (src/client/Client.cc: output_size 1) of one decoder layer (src/StageProgram.cc builds LAYER(0)). The shipped
  ShareGPT trace of GPT-3 7B at batch 512 (request-traces/clb/share-gpt2-bs512-ms7B-tp4-clb-0.csv) has contexts
  of mean 300 tokens, median 216, max 2048. Batches: the traces are named bs512 and get_distributions.py makes 256;
  sub-batch interleaving is on only at batch >= 256 (README). GPT-3 7B runs with tensor parallelism 4
  (configs/model_configs/gpt3-7B.json n_tp 4).
- NPU: 8 systolic arrays of 128 x 128 at 1 GHz, 1 MB scratchpad, 1 MB accumulator
  (configs/systolic_ws_128x128_dev.json), beside 32 channels of HBM2-PIM at 1024 GB/s through which it also reads
  its weights (configs/memory_configs/*.json).
- Sub-batch interleaving (src/StageProgram.cc stage table A-F; src/scheduler/Scheduler.cc group_sub_batches): each
  channel's requests are halved; while one half runs QKV generation, projection and FFNs on the arrays, the other
  runs attention on PIM. Each half's stage builds its own MatMul ops on the model's weight tensors and every L2 tile
  loads its weight tile from DRAM (src/operations/MatMul.cc MOVIN): weights are read once per sub-batch, twice per
  step, as in our model; nothing keeps them on chip between the halves (1 MB of scratchpad could not).
- The NPU's GEMM rate: the artifact computes every MatMul transposed (MatMul.cc: _is_transposed = true), so a
  128 x 128 tile of activations stays in the arrays while the weights stream; each new stationary tile costs a
  128-cycle preload (src/NeuPIMSystolicWS.cc issue_ex_inst: GEMM_PRELOAD, offset core_height) and each further
  128 x 128 x 128 step 16 cycles (MatMul.cc: loop_size / 8, the 8 arrays). L2 tiles are halved until their three
  operands fit half the scratchpad (MatMul::calculate_loops): the QKV GEMM of 128 tokens (4096 x 3072 per device at
  TP 4) gets tiles of 384 features x 256 k x 128 tokens, i.e. per (token block, k block) 128 + 2 x 16 = 160 cycles
  for 3 steps the arrays could do in 48: about 0.3 of peak at any batch (ARTIFACT_NPU_EFFICIENCY). Its decode GEMMs
  are compute-bound even for a sub-batch of 128 (ridge 0.3 x 256 = 77 tokens per weight), so the second weight read
  hides under compute. Our arrays double-buffer weight tiles and stream up to 256 tokens per tile (hw_models/npu.py):
  they reach the roofline, and below 256 tokens a decode GEMM is bound by its weight reads.
- PIM: one GEMV over a 1 KB row of all 32 banks of a channel takes 184 cycles (Scheduler.cc _gemv_latency), 64 of
  them compute commands: the presets' row_switch_cycles 120 (derived in hw_models/presets/neupims.yaml). The query
  is written into each channel's buffer, 100 cycles per 512 elements (_gwrite_latency), V rows hold 512 tokens of
  one dimension, so short contexts pad them (Scheduler.cc estimate_mha_latency), and a request's KV cache lives in
  one channel, placed by greedy min-load packing: on the shipped trace the busiest channel carries 1.12x the mean
  load (1.50x on the round-robin trace, request-traces/rr/). These three are not modelled; by the artifact's
  latency estimator its attention costs 1.7x ours per channel on average, 1.9x on the busiest, at the trace's contexts.

Our setup:
- One device, no TP: TP splits every GEMM and the attention heads alike on every system, so throughput ratios carry
  over, but one 32 GB NeuPIMs device cannot hold GPT-3 7B with a batch of 256, so each system gets the capacity of
  the paper's 4 devices (memory.capacity_GB: 4 x 32 GB for the NPU presets, 4 x 80 GB for the A100), a what-if on
  capacity only; no timing depends on it.
- Throughput is decode throughput, batch / tpot_s (the paper times decode steps; our static batch also prefills).
- Prompt 256, output 32: mean context 272 over the decode, 9% under the ShareGPT trace's 300, without its tail.
  At prompt 284 (mean 300) batch 512 gives 2.46x / 3.44x / 1.38x: NPU-only then lies 43% above the paper's 2.4x,
  its attention at 1024 GB/s growing with the context.
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
# The artifact's decode-GEMM rate as a fraction of the arrays' peak: 48 of 160 cycles (module docstring).
ARTIFACT_NPU_EFFICIENCY = 48 / 160


def throughput(evaluator: Evaluator, model: str, device: str, batch: int, overrides: tuple = ()) -> float:
    """Decode tokens per second of one design point with the paper's 4-device capacity."""
    point = DesignPoint(model=model, device=device, batch=batch, prompt=PROMPT, output=OUTPUT,
                        overrides=(("memory.capacity_GB", CAPACITY_GB[device]), *overrides))
    metrics = evaluator.evaluate(point).metrics
    assert metrics["fits_in_memory"], (device, metrics["infeasible_reason"])
    return batch / metrics["tpot_s"]


def speedups(evaluator: Evaluator, model: str, batch: int) -> dict[str, float]:
    """NeuPIMs decode throughput over each baseline's, at one design point that fits every system."""
    neupims = throughput(evaluator, model, "neupims", batch)
    return {device: neupims / throughput(evaluator, model, device, batch) for device in PAPER}


def test_gpt3_7b_batch_512_direction_and_size(evaluator):
    # Ours: 2.34x GPU, 3.2x NPU-only, 1.34x naive NPU+PIM; paper 3x, 2.4x, 1.6x: all within 35%.
    # At batch 512 a sub-batch of 256 sits at the NPU's ridge point (262 TFLOP/s over 1024 GB/s = 256
    # FLOP/B, i.e. 256 tokens per weight), so halving the batch for interleaving costs the GEMMs little,
    # while the other half's attention (KV reads of 512 x 288 tokens per step) hides behind them on PIM.
    ours = speedups(evaluator, "gpt3-7b", 512)
    for device, paper in PAPER.items():
        assert ours[device] > 1.0, (device, ours)
        assert ours[device] == pytest.approx(paper, rel=TOLERANCE), (device, ours)


@pytest.mark.parametrize("model", ["gpt3-7b", "gpt3-13b"])
def test_batch_256_beats_npu_only(evaluator, model):
    # Ours at batch 256: GPT-3 7B 2.32x, 13B 2.16x NPU-only (paper 2.4x). NeuPIMs keeps the batch whole here (see
    # the last tests), so its gain over NPU-only is PIM attention alone: the KV cache read in the banks at 32 x 32
    # x 16 multipliers per 2 cycles, derated to 64 of every 184 cycles by row switches, instead of at 1024 GB/s.
    ours = speedups(evaluator, model, 256)
    assert ours["npu-only"] == pytest.approx(PAPER["npu-only"], rel=TOLERANCE), ours


@pytest.mark.xfail(strict=True, reason="ours 1.83x (GPT-3 7B) and 1.72x (13B) against the paper's 3x over an A100 at "
                                        "batch 256: NeuPIMs' arrays already run at their roofline, so 3x needs an "
                                        "A100 step 1.6x slower than our calibrated one (see the comment); the artifact "
                                        "ships no GPU baseline to compare setups")
@pytest.mark.parametrize("model", ["gpt3-7b", "gpt3-13b"])
def test_batch_256_speedup_over_a100_near_paper(evaluator, model):
    # GPT-3 7B decode step at batch 256: the A100 takes 40.7 ms (20.5 ms of GEMMs at its calibrated efficiency,
    # 18.1 ms streaming 36.5 GB of KV cache, 256 x 272 tokens x 512 KB, at 2039 GB/s, 2.1 ms of the rest);
    # NeuPIMs 22.2 ms (14.2 ms of GEMMs at the arrays' roofline, 6.6 ms of PIM attention, 1.5 ms of vector work).
    # 3x would need an A100 step of 67 ms. Longer contexts widen the lead (README: 3.2x at 1,024-token prompts).
    # A model that gets there passes.
    ours = speedups(evaluator, model, 256)
    paper = PAPER["a100-sxm-80gb"]
    assert paper * (1 - TOLERANCE) <= ours["a100-sxm-80gb"] <= paper * (1 + TOLERANCE), ours


def test_batch_256_never_below_naive_npu_pim(evaluator):
    """Direction only: NeuPIMs adds dual row buffers and interleaving to the naive design, and interleaves only
    when that finishes sooner (sim/step_costs.price_passes), so it is never slower."""
    ours = speedups(evaluator, "gpt3-7b", 256)
    assert ours["npu-pim-naive"] >= 1.0 - 1e-9, ours


def test_batch_256_interleaving_pays_with_the_artifacts_npu_rate(evaluator):
    """The mechanism behind the miss below: at the artifact's decode-GEMM rate (0.3 of peak, module docstring) a
    sub-batch of 128 is compute-bound, the second weight read hides, and NeuPIMs splits the batch of 256 (the
    scheduler splits only when that finishes sooner, so a speedup above 1 means it split). Ours: 1.14x. Two units
    overlapping can at most halve the step."""
    rate = ARTIFACT_NPU_EFFICIENCY
    slower_arrays = (("npu.macs_per_pe_per_cycle.fp16", rate), ("npu.macs_per_pe_per_cycle.bf16", rate))
    speedup = (throughput(evaluator, "gpt3-7b", "neupims", 256, slower_arrays)
               / throughput(evaluator, "gpt3-7b", "npu-pim-naive", 256, slower_arrays))
    assert 1.0 < speedup < 2.0, speedup


@pytest.mark.xfail(strict=True, reason="ours 1.0x against the paper's 1.6x over naive NPU+PIM at GPT-3 7B batch 256: "
                                        "our NPU runs decode GEMMs at the roofline, so two sub-batches of 128 re-read "
                                        "every weight at a cost the overlap does not repay and NeuPIMs keeps the batch "
                                        "whole; at the artifact's NPU rate it splits but attention is then too small a "
                                        "share for 1.6x (see the comment)")
def test_batch_256_speedup_over_naive_npu_pim_near_paper(evaluator):
    # Paper: 1.6x over the naive NPU+PIM. Ours at GPT-3 7B, batch 256: 1.0x, a miss. A naive step is 14.2 ms of
    # GEMMs + 6.6 ms of PIM attention + 1.5 ms of vector work in series (22.2 ms); even free splitting would give at
    # most 22.2 / 15.6 = 1.42x. Split into two sub-batches of 128, each sub-batch's GEMMs re-read all 13.4 GB of
    # weights (13.1 ms at 1024 GB/s; their compute is half that, below the 256-token ridge): 26 ms of GEMMs per
    # step, so the scheduler keeps the batch whole and NeuPIMs matches the naive design. The artifact reads the
    # weights twice too, but its NPU computes decode GEMMs at 0.3 of peak (module docstring), so a sub-batch of 128
    # is compute-bound and splitting costs nothing; at that rate ours splits (test above) yet gets 1.14x, because
    # 6.6 ms of attention is small next to 47 ms of GEMMs. The paper's 1.6x needs attention worth about 60% of the
    # GEMM time; the artifact's attention is heavier than ours (query writes, 512-token V rows, channel imbalance:
    # 1.7x-1.9x ours by its estimator) but not enough for that at these contexts, so part of the gap stays
    # unexplained without the paper's evaluation tables. A model that gets there passes.
    ours = speedups(evaluator, "gpt3-7b", 256)
    paper = PAPER["npu-pim-naive"]
    assert paper * (1 - TOLERANCE) <= ours["npu-pim-naive"] <= paper * (1 + TOLERANCE), ours


def test_continuous_batching_gains_over_naive_npu_pim_as_its_static_step(evaluator):
    """The paper's own setting is continuous batching's steady state, timed on decode steps (module docstring):
    served so, 2,048 requests of 256 + 32 tokens arriving at once, prefilled by a pool of 16 replicas so that the
    decode replica's iterations decode only, 512 sequences at a time, NeuPIMs' decode throughput over the naive
    NPU+PIM's lies within 35% of the paper's 1.6x and within 10% of our static batch-512 step's ratio (1.34x): each
    serving iteration interleaves its two sub-batches where that finishes sooner (sim/costs.py), as the static
    decode does (measured at the time of writing: 1.30x; 1.0x before serving iterations interleaved). In one pool
    mixing prefill chunks into every iteration the ratio falls to 1.04x: the chunks' GEMMs, which PIM does not take,
    fill the NPU."""
    from sim.serving_spec import ServingSpec
    from workloads.requests import Fixed

    def decode_rate(device: str) -> float:
        spec = ServingSpec(requests=2048, rate_per_s=1e6, prompt=Fixed(tokens=PROMPT), output=Fixed(tokens=OUTPUT),
                           max_seqs=512, prefill_replicas=16)
        point = DesignPoint(model="gpt3-7b", device=device, batch=512, prompt=0, output=0, serving=spec,
                            overrides=(("memory.capacity_GB", CAPACITY_GB[device]),))
        return evaluator.evaluate(point).metrics["decode_tokens_per_s"]

    served = decode_rate("neupims") / decode_rate("npu-pim-naive")
    static = speedups(evaluator, "gpt3-7b", 512)["npu-pim-naive"]
    assert served == pytest.approx(PAPER["npu-pim-naive"], rel=TOLERANCE), served
    assert served == pytest.approx(static, rel=0.10), (served, static)
