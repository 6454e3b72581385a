"""Quantized formats against published measurements and papers (kernels/formats.py, hw_models/gpu_quant.py), and
format mistakes as one-line errors. QServe's serving throughput is checked in test_paper_qserve.py.

- gpt-fast (PyTorch, github.com/pytorch-labs/gpt-fast README "Benchmarks"; the same figures in the PyTorch blog
  "Accelerating Generative AI with PyTorch II: GPT, Fast", 2023-11-30): Llama-2-7B on an A100-80GB (power-limited
  to 330 W), batch 1, a 5-token prompt, torch.compile with CUDA graphs: bf16 104.9 tokens/s, int8 weight-only
  (per-channel) 155.58, int4 weight-only with groups of 32 (tinygemm) 196.80 (the rows of
  data/published/gpt-fast-a100.csv; their absolute throughputs are checked in test_paper_gpt_fast.py). We run it as
  an engine (fused kernels replayed from CUDA graphs, as torch.compile's output is).
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
from tests.explore.published_runs import published_runs
from tests.explore.tiny_sweep import write_sweep

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

GPT_FAST_RUNS = {(run.model, run.dtype, run.tp): run for run in published_runs("gpt-fast-a100.csv")}


def _gpt_fast_tokens_per_s(dtype: str) -> float:
    run = GPT_FAST_RUNS[("llama-2-7b", dtype, 0)]
    return (run.kv_len - run.seq_len) / run.time_s


GPT_FAST_SPEEDUP_W4 = _gpt_fast_tokens_per_s("w4a16") / _gpt_fast_tokens_per_s("bf16")
GPT_FAST_SPEEDUP_W8 = _gpt_fast_tokens_per_s("w8a16") / _gpt_fast_tokens_per_s("bf16")
TOLERANCE = 0.20


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
     "--weight-type: found 'fp4_e2m1' with --weight-bits 8, allowed: weight_bits 4"),
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


def test_fp4_on_a100_says_it_runs_weight_only(capsys):
    flags = ["--weight-bits", "4", "--act-bits", "4", "--weight-type", "fp4_e2m1", "--act-type", "fp4_e2m1",
             "--scale-type", "e4m3", "--group-size", "16", "--prompt", "16", "--output", "4"]
    assert main(["run", "--model", "llama-2-7b", "--device", "a100-sxm-80gb", *flags]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "fp4 GEMMs run weight-only on a100-sxm-80gb" in first
    assert main(["run", "--model", "llama-2-7b", "--device", "b200", *flags]) == 0
    assert "weight-only" not in capsys.readouterr().out.splitlines()[0]
