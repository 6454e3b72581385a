"""A8W4 with INT4 weights under INT8 group scales (weight_bits 4, act_bits 8, scale_type two_level) against DGQ
(L. Zhang et al., "Dual Grained Quantization: Efficient Fine-Grained Quantization for LLM", arXiv:2310.04836,
abstract).

The claim: DGQ dequantizes group-wise INT4 weights to INT8 (integer group scales under an FP16 scale per output
channel, the layout of scale_type two_level) and multiplies them with INT8 activations in one INT8 GEMM (its CUTLASS
kernel), 3.24x the speed of an A16W4 implementation. Only the abstract is readable here (the search tool holds no
more of the paper): the GPU, the shapes and what "speed" times are not known. The gain of an INT8 GEMM over a 16-bit
one is a compute-bound gain, so the check times the one phase that is compute-bound, the prefill: Llama-2-7B (the
LLaMA-7B shapes the paper quantizes), 16 prompts of 1,024 tokens on an A100 (the GPU of the paper's time with INT8
tensor cores), as a serving engine; A16W4 is weight_bits 4 in groups of 128 with 16-bit activations. Tolerance: 25% on
either side of 3.24x, the paper's direction beside it (A8W4 prefills faster than A16W4).
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint

PAPER_SPEEDUP = 3.24
TOLERANCE = 0.25
A16W4 = dict(weight_bits=4)
DGQ_A8W4 = dict(weight_bits=4, act_bits=8, knobs=(("scale_type", "two_level"),))


def _ttft_s(evaluator, fmt: dict) -> float:
    point = DesignPoint(model="llama-2-7b", device="a100-sxm-80gb", batch=16, prompt=1024, output=8,
                        execution="engine", **fmt)
    return evaluator.evaluate(point).metrics["ttft_s"]


def test_a8w4_prefills_faster_than_a16w4(evaluator):
    assert _ttft_s(evaluator, DGQ_A8W4) < _ttft_s(evaluator, A16W4)


@pytest.mark.xfail(strict=True, reason=(
    "ours 1.67x (1.33 s against 0.80 s for 16 prompts of 1,024 tokens), not 3.24x: the A100's INT8 tensor rate is "
    "twice its FP16 rate, and ours prices A16W4 at 0.79x the FP16 prefill's speed (1.05 s at FP16), the "
    "dequantization's CUDA-core work added to the math. An A16W4 kernel of 2023 at large token counts (GPTQ-style "
    "dequantize-in-loop kernels, built for GEMV) ran well below the FP16 rate, which would explain the rest; the "
    "paper's baseline kernel and shapes are not known here, and the project's measured A100 W4A16 rows are batch-1 "
    "decodes only (data/published/gpt-fast-a100.csv)"))
def test_a8w4_is_3_24_times_the_speed_of_a16w4(evaluator):
    speedup = _ttft_s(evaluator, A16W4) / _ttft_s(evaluator, DGQ_A8W4)
    assert PAPER_SPEEDUP * (1 - TOLERANCE) <= speedup <= PAPER_SPEEDUP * (1 + TOLERANCE), speedup
