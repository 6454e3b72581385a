"""Quantized formats against published measurements and papers (kernels/formats.py, hw_models/gpu_quant.py), and
format mistakes as one-line errors.

- gpt-fast (PyTorch, github.com/pytorch-labs/gpt-fast README "Benchmarks"; the same figures in the PyTorch blog
  "Accelerating Generative AI with PyTorch II: GPT, Fast", 2023-11-30): Llama-2-7B on an A100-80GB (power-limited
  to 330 W), batch 1, a 5-token prompt, torch.compile with CUDA graphs: bf16 104.9 tokens/s, int8 weight-only
  (per-channel) 155.58, int4 weight-only with groups of 32 (tinygemm) 196.80. We run it as an engine (fused
  kernels replayed from CUDA graphs, as torch.compile's output is).
- QServe (Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving", MLSys 2025;
  github.com/mit-han-lab/qserve README.md@172741f, "Efficiency Benchmarks", the paper's Table 4): maximum
  throughput of Llama-3-8B with 1,024 input and 512 output tokens, in tokens/s. L40S: TensorRT-LLM FP16 1,326,
  W4A16 1,431, W8A8 2,634, QServe W4A8KV4 3,656 at batch 128 (1.39x the best baseline, W8A8); A100: FP16 2,503,
  W4A16 2,370, W8A8 2,396, QServe 3,005 at batch 256 (1.20x the best, FP16). QServe runs per-channel weights on
  the A100 and groups of 128 (two-level scales) on the L40S, as the README recommends for each; TensorRT-LLM's W8A8
  is SmoothQuant, whose KV cache is 8-bit (the README's accuracy footnote: "evaluated with per-tensor static KV cache
  quantization").
- SqueezeLLM (Kim et al., "SqueezeLLM: Dense-and-Sparse Quantization", ICML 2024, abstract and Section 5.4): 3-bit
  non-uniform (per-channel lookup table) kernels "up to 2.3x" faster than the fp16 baseline on an A6000 generating
  128 tokens at batch 1 (LLaMA 7B-30B).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from tests.explore.tiny_sweep import write_sweep

GPT_FAST_SPEEDUP_W4 = 196.80 / 104.9
GPT_FAST_SPEEDUP_W8 = 155.58 / 104.9
TOLERANCE = 0.20


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator()


def _tpot(evaluator: Evaluator, point: DesignPoint) -> float:
    return evaluator.evaluate(point).metrics["tpot_s"]


GPT_FAST = DesignPoint(model="llama-2-7b", device="a100-sxm-80gb", batch=1, prompt=8, output=128, execution="engine")


def test_w4a16_over_w16_on_a100_matches_gpt_fast(evaluator):
    """Batch-1 decode speed-up of int4 weight-only (groups of 32) over bf16: ours about 2.0x against 1.88x."""
    w4 = replace(GPT_FAST, weight_bits=4, knobs=(("group_size", 32),))
    speedup = _tpot(evaluator, GPT_FAST) / _tpot(evaluator, w4)
    assert abs(speedup / GPT_FAST_SPEEDUP_W4 - 1) <= TOLERANCE, speedup


def test_w8a16_over_w16_on_a100_matches_gpt_fast(evaluator):
    """int8 weight-only with per-channel scales: ours about 1.6x against 1.48x."""
    w8 = replace(GPT_FAST, weight_bits=8, knobs=(("scale_granularity", "channel"),))
    speedup = _tpot(evaluator, GPT_FAST) / _tpot(evaluator, w8)
    assert abs(speedup / GPT_FAST_SPEEDUP_W8 - 1) <= TOLERANCE, speedup


QSERVE_BATCH = {"l40s": 128, "a100-sxm-80gb": 256}
QSERVE_FORMAT = {"l40s": dict(weight_bits=4, act_bits=8, kv_bits=4, knobs=(("scale_type", "two_level"),)),
                 "a100-sxm-80gb": dict(weight_bits=4, act_bits=8, kv_bits=4, knobs=(("scale_granularity", "channel"),))}
TENSORRT_LLM_FORMATS = {
    "fp16": dict(weight_bits=16),
    "w4a16": dict(weight_bits=4, knobs=(("group_size", 128),)),  # AWQ, groups of 128
    "w8a8": dict(weight_bits=8, act_bits=8, kv_bits=8, knobs=(("scale_granularity", "channel"),)),  # SmoothQuant
}


def _serving(device: str, batch: int, **fmt) -> DesignPoint:
    return DesignPoint(model="llama-3-8b", device=device, batch=batch, prompt=1024, output=512, execution="engine",
                       **fmt)


def _largest_batch_rate(evaluator: Evaluator, device: str, fmt: dict) -> float:
    """tokens/s at the largest batch, in steps of 32 up to the table's largest (256), whose weights, KV cache and
    activations fit the device (steps, not every batch: each batch size is a trace of its own)."""
    for batch in range(256, 0, -32):
        metrics = evaluator.evaluate(_serving(device, batch, **fmt)).metrics
        if metrics["fits_in_memory"]:
            return metrics["tokens_per_s"]
    raise AssertionError(f"no batch of {fmt} fits {device}")


def _qserve_speedup(evaluator: Evaluator, device: str) -> float:
    """QServe at its published batch over the fastest TensorRT-LLM format, each at the largest batch it fits."""
    qserve = evaluator.evaluate(_serving(device, QSERVE_BATCH[device], **QSERVE_FORMAT[device]))
    best = max(_largest_batch_rate(evaluator, device, fmt) for fmt in TENSORRT_LLM_FORMATS.values())
    return qserve.metrics["tokens_per_s"] / best


# Ours: L40S 1.25x (QServe 4,520 tokens/s at batch 128 against W8A8's 3,630 at batch 192: +24% and +38% over the
# table), A100 1.05x (6,130 against W8A8's 5,850, both at batch 256). The table's A100 W8A8 (2,396) is no faster
# than its FP16 (2,503), where ours is 1.9x faster (FP16: 3,120 at batch 192, +24%): the paper's A100 gain is over
# FP16, ours over W8A8, and against W8A8 the table gives 1.25x. Within 30% of the paper on either side, and above 1.
@pytest.mark.slow  # eight batch sizes of an 8B model traced, about 15 s
@pytest.mark.parametrize("device, paper", [("a100-sxm-80gb", 3005 / 2503), ("l40s", 3656 / 2634)])
def test_qserve_w4a8kv4_over_tensorrt_llm_direction(evaluator, device, paper):
    speedup = _qserve_speedup(evaluator, device)
    assert 1.0 < speedup and abs(speedup / paper - 1) <= 0.30, speedup


@pytest.mark.xfail(strict=True, reason=(
    "ours 3.5x (engine) against at most 2.3x, and the LUT kernel is not what caps the paper. SqueezeLLM's 3-bit GEMV "
    "is priced as the CUDA-core kernel it is (hw_models/gpu_quant.py: 6 lane instructions a weight and token, from "
    "squeezellm/quant_cuda_kernel.cu VecQuant3MatMulKernelNUQPerChannel): 2.0 ms for Llama-2-7B's 6.6e9 GEMM "
    "weights at the A6000's 19.35e12 lane instructions/s, under the 3.2 ms its 3-bit weights take at 768 GB/s, so "
    "it stays about memory-bound at batch 1. The paper's figure is end to end in an eager HF loop where each LUT "
    "linear launches four kernels (squeezellm/quant.py QuantLinearLUT.forward: a zeros output, x.float(), the GEMV, "
    "the cast back), 672 a token more than fp16: host-side work per token, not the kernel, is where the model "
    "misses it. Engine mode has none of it; our eager mode adds no kernels for the format and is host-bound at "
    "28 ms on gpt-fast's dispatch cost, 1.0x"))
def test_squeezellm_3bit_over_fp16_on_a6000(evaluator):
    """SqueezeLLM's 3-bit LUT kernel at batch 1: faster than fp16 and not beyond the paper's best 2.3x (+15%)."""
    fp16 = DesignPoint(model="llama-2-7b", device="rtx-a6000", batch=1, prompt=8, output=128, execution="engine")
    lut3 = replace(fp16, weight_bits=3, knobs=(("scale_granularity", "channel"), ("weight_type", "lut")))
    speedup = _tpot(evaluator, fp16) / _tpot(evaluator, lut3)
    assert 1.5 <= speedup <= 2.3 * 1.15, speedup


@pytest.mark.parametrize("flags, message", [
    (["--weight-bits", "8", "--weight-type", "fp4_e2m1"],
     "--weight-type: found 'fp4_e2m1' with weight_bits 8, allowed: weight_bits 4"),
    (["--weight-bits", "4", "--group-size", "256", "--tp", "2"],
     "--group-size: found 256, which does not divide llama-2-7b's MLP down k=5504"),
    (["--weight-bits", "4", "--act-bits", "8", "--weight-type", "nf4"],
     "--weight-type: found 'nf4' with integer 8-bit activations"),
])
def test_bad_format_flags_are_one_line(capsys, flags, message):
    assert main(["run", "--model", "llama-2-7b", "--device", "a100-sxm-80gb", *flags]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert message in line


def test_bad_format_in_a_sweep_is_one_line(tmp_path, capsys):
    path = write_sweep(tmp_path, "name: bad\nmodel: llama-2-7b\ndevice: a100-sxm-80gb\n"
                                 "format: {weight_bits: [4, 8], weight_type: [int, fp4_e2m1]}\n")
    assert main(["check", path]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "sweep.yaml:4: format.weight_type: found 'fp4_e2m1' with weight_bits 8, allowed: weight_bits 4" in line
    path = write_sweep(tmp_path, "name: bad\nmodel: llama-2-7b\ndevice: a100-sxm-80gb\n"
                                 "format: {weight_bits: 4, weight_type: fp5}\n")
    assert main(["check", path]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "format.weight_type" in line and "fp5" in line


def test_fp4_on_a100_says_it_is_emulated(capsys):
    flags = ["--weight-bits", "4", "--act-bits", "4", "--weight-type", "fp4_e2m1", "--act-type", "fp4_e2m1",
             "--scale-type", "e4m3", "--group-size", "16", "--prompt", "16", "--output", "4"]
    assert main(["run", "--model", "llama-2-7b", "--device", "a100-sxm-80gb", *flags]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "fp4 GEMMs emulated on a100-sxm-80gb" in first
    assert main(["run", "--model", "llama-2-7b", "--device", "b200", *flags]) == 0
    assert "emulated" not in capsys.readouterr().out.splitlines()[0]
