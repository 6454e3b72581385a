"""FlightLLM (S. Zeng et al., 'FlightLLM: Efficient Large Language Model Inference with a Complete Mapping
Flow on FPGAs', FPGA 2024, arXiv:2401.03868) reproduced in direction on the alveo-u280 / versal-vhk158 presets.

Paper figures used (batch 1, LLaMA2-7B):
- Abstract / Sec. 1: on the Alveo U280, 6.0x the energy efficiency (tokens per joule) of an NVIDIA V100S (vLLM +
  SmoothQuant); on the Versal VHK158, 1.2x the throughput of an NVIDIA A100.
- Fig. 1 (as the authors' artifact README states, github.com/FlightLLM/flightllm_test_demo): 55 token/s decode
  on the U280; measured board power 45 W (quoted from FlightLLM in AccLLM, Liang et al., IEEE TVLSI 2026, Table VII).
- The artifact's VHK158 model, case (prefill 128, decode 512): prefill 289.9 ms, decode throughput 103.5 token/s.

Settings: prompt 128 / output 512 (the artifact's first Fig. 12 case; not scaled down, the decode steps are
priced vectorized). Quantization: W8A8 for every device. The artifact's LLaMA2-7B IR stores weights and
activations as int8 (with q/k projections at density 0.7, which no N:M pattern here expresses), and the GPU
baselines use SmoothQuant (W8A8); the paper's lower-bit mixed precision is not modelled (formats allow
16/8/4/3/2 bits per tensor, not a per-layer mix), so the FPGA side is, if anything, pessimistic.
Throughput is decode throughput (1 / tpot_s), as the artifact reports it. The V100S has no calibration:
it runs on the datasheet roofline (fp16 tensor rate for its int8 GEMMs, Volta has no int8 tensor cores). Both
GPUs run as the paper's baselines did, in a serving engine (execution "engine": fused kernels, decode replayed
from CUDA graphs). The A100 is a100-sxm-80gb with its fitted calibration; the paper's text available here does
not name its A100 variant.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint

TOLERANCE = 0.35
GPUS = ("v100s-pcie", "a100-sxm-80gb")
PROMPT, OUTPUT = 128, 512

PAPER_U280_DECODE_TOKENS_PER_S = 55.0
PAPER_U280_BOARD_POWER_W = 45.0
PAPER_U280_VS_V100S_TOKENS_PER_J = 6.0
PAPER_VHK158_VS_A100_THROUGHPUT = 1.2
ARTIFACT_VHK158_DECODE_TOKENS_PER_S = 103.5
ARTIFACT_VHK158_PREFILL_S = 0.2899


@pytest.fixture(scope="module")
def metrics(evaluator) -> dict[str, dict]:
    # The GPU baselines ran vLLM (a serving engine's fused kernels); the FPGAs run their own instruction streams.
    return {device: evaluator.evaluate(DesignPoint(model="llama-2-7b", device=device, batch=1, prompt=PROMPT,
                                                   output=OUTPUT, weight_bits=8, act_bits=8,
                                                   execution="engine" if device in GPUS else "eager")).metrics
            for device in ("alveo-u280", "v100s-pcie", "versal-vhk158", "a100-sxm-80gb")}


def _near(ours: float, paper: float) -> bool:
    return abs(ours / paper - 1) <= TOLERANCE


def _decode_tokens_per_s(m: dict) -> float:
    return 1.0 / m["tpot_s"]


def _tokens_per_J(m: dict) -> float:
    return 1.0 / m["energy_per_token_J"]


def test_u280_decode_throughput_near_paper(metrics):
    # Ours ~43 token/s: W8A8 weights (6.8 GB per token) at 65.9% of 460 GB/s; the paper's mixed precision
    # streams fewer bytes (55 token/s at that efficiency means ~5.5 GB per token).
    ours = _decode_tokens_per_s(metrics["alveo-u280"])
    assert _near(ours, PAPER_U280_DECODE_TOKENS_PER_S), ours


def test_u280_board_power_and_energy_near_measured(metrics):
    # Ours ~49 W (static proxy 39.2 W + ~9.6 W of HBM traffic) and ~0.86 token/J against 45 W and
    # 55 / 45 = 1.22 token/J measured.
    m = metrics["alveo-u280"]
    assert _near(m["avg_power_W"], PAPER_U280_BOARD_POWER_W), m["avg_power_W"]
    assert _near(_tokens_per_J(m), PAPER_U280_DECODE_TOKENS_PER_S / PAPER_U280_BOARD_POWER_W), _tokens_per_J(m)


# Misses the paper by far more than 35%, and in direction. Our numbers (prompt 128, output 512, W8A8):
# U280 ~0.86 token/J (~43 token/s decode at ~49 W); V100S ~2.2 token/J (~160 token/s decode at ~71 W);
# ratio ~0.38 against the paper's 6.0. The FPGA side agrees with the paper's own measurements (tests above);
# the miss is on the GPU side. (1) The uncalibrated V100S roofline decodes ~160 token/s, near its 1134 GB/s
# bound; vLLM + SmoothQuant on a V100S in 2023 ran far slower (Volta has no int8 tensor cores and the
# artifact's measured vLLM decode on its GPU was ~88 token/s even at fp16). (2) The GPU energy model charges
# idle power (32.3 W) + DRAM traffic + FLOP energy, ~60 W in batch-1 decode, while a V100S board under load
# draws well above its idle power; the paper's ratio implies ~0.2 token/J for the V100S (e.g. 40 token/s at
# ~200 W). Both are properties of the GPU model, not tuned here.
@pytest.mark.xfail(strict=True, reason="V100S roofline and GPU power model: see the comment above")
def test_u280_vs_v100s_energy_efficiency(metrics):
    ratio = _tokens_per_J(metrics["alveo-u280"]) / _tokens_per_J(metrics["v100s-pcie"])
    assert _near(ratio, PAPER_U280_VS_V100S_TOKENS_PER_J), ratio


@pytest.mark.xfail(strict=True, reason="ours ~0.42: the A100 engine decodes W8A8 at ~182 token/s, int8 weights "
                                        "at its fitted bandwidth; the paper's vLLM + SmoothQuant A100 ran near "
                                        "64 token/s (77 / 1.2)")
def test_vhk158_vs_a100_throughput(metrics):
    # Ours ~0.42 (VHK158 ~77 token/s decode, A100 ~182 token/s) against the paper's 1.2, bounded both sides.
    # At fp16 the same A100 engine decodes ~100 token/s, near the ~88 token/s the artifact measured with vLLM
    # for its Fig. 12 reproduction; at W8A8 ours halves the weight bytes, which the paper's 2023 baseline did
    # not turn into speed. Our VHK158 is below the artifact's 103.5 token/s (no mixed precision, see the module
    # docstring).
    ratio = _decode_tokens_per_s(metrics["versal-vhk158"]) / _decode_tokens_per_s(metrics["a100-sxm-80gb"])
    assert _near(ratio, PAPER_VHK158_VS_A100_THROUGHPUT), ratio


def test_vhk158_decode_and_prefill_near_artifact(metrics):
    m = metrics["versal-vhk158"]
    assert _near(_decode_tokens_per_s(m), ARTIFACT_VHK158_DECODE_TOKENS_PER_S), _decode_tokens_per_s(m)
    # Prefill of 128 tokens is compute-bound on the DSP array (ours ~0.25 s).
    assert _near(m["ttft_s"], ARTIFACT_VHK158_PREFILL_S), m["ttft_s"]


def test_fpga_prefill_slower_than_gpu(metrics):
    """The FPGA loses prefill by an order of magnitude (a few TMAC/s against hundreds of TFLOP/s). Its decode
    against the A100 is the paper's 1.2x, checked (and missed) in test_vhk158_vs_a100_throughput: a one-sided
    bound here (decode within the bandwidth ratio, 2.5x) passed at 0.42x, against the paper's conclusion."""
    fpga, gpu = metrics["versal-vhk158"], metrics["a100-sxm-80gb"]
    assert fpga["ttft_s"] > 5 * gpu["ttft_s"]
