"""SpQR design points against the paper's measured decode speed (Dettmers et al., "SpQR", ICLR 2024,
arXiv:2306.03078, Table 4: tokens/s at batch 1 on one A100, LLaMA-7B, 100 tokens generated from scratch or after a
1,024-token prefix): fp16 47 +- 2.3 and 46 +- 2.4, SpQR with its optimized kernel 57 +- 2.4 and 55 +- 2.1, so SpQR
decodes 1.21x and 1.20x as fast as fp16 ("about 20-30%", Section 5). The SpQR point is Table 1's 7B row at ~3.9 bits
(3-bit weights, groups of 8, second-level groups of 64, 0.2% outliers; the paper does not say which configuration
Table 4 ran). Llama-2-7B's preset stands in for LLaMA-7B: the same shapes (hidden 4,096, 32 layers of 32 heads, MLP
11,008). Bounds: faster than fp16 (the paper's conclusion) and under 1.25 x 1.21.

Where the model stands (A100 SXM 80 GB, scratch): eager fp16 28.0 ms a token (the paper measured 21.3), SpQR 28.0 ms
(1.00x: a miss, the strict xfail below); replayed from CUDA graphs 12.1 against 9.6 ms (1.26x); a serving engine's
kernels 9.2 against 6.6 ms (1.39x). SpQR's outliers are multiplied inside its quantized GEMM, as its fused kernel
does (kernels/format_kernels.py), so the format launches no kernel more than fp16.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint

SPQR_7B = (("group_size", 8), ("outlier_fraction", 0.002), ("scale_group_size", 64), ("scale_type", "spqr3"))
PAPER_SPEEDUP = {1: 57 / 47, 1024: 55 / 46}


def _tpot_s(evaluator, prompt: int, **fields) -> float:
    point = DesignPoint(model="llama-2-7b", device="a100-sxm-80gb", batch=1, prompt=prompt, output=100, **fields)
    return evaluator.evaluate(point).metrics["tpot_s"]


@pytest.mark.xfail(strict=True, reason=(
    "eager decode of a 7B model at batch 1 is host-bound in the model (fp16 28.0 ms a token against the paper's "
    "21.3 ms: the paper's host dispatched each kernel faster than gpt-fast's 21.6 us), so fewer bytes buy nothing: "
    "SpQR launches the same kernels as fp16 and comes out 1.00x instead of 1.2x; replayed from CUDA graphs, where "
    "the device's time counts, it is 1.26x"))
@pytest.mark.parametrize("prompt", [1, 1024])
def test_spqr_decodes_faster_than_fp16_as_table_4_measures(tiny_evaluator, prompt):
    speedup = _tpot_s(tiny_evaluator, prompt) / _tpot_s(tiny_evaluator, prompt, weight_bits=3, knobs=SPQR_7B)
    assert 1.0 < speedup < 1.25 * PAPER_SPEEDUP[prompt]
