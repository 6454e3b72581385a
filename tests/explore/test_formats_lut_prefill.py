"""SqueezeLLM's codebook (lut) weights through a whole point: a 256-token prompt's GEMMs are not run as one lookup
GEMV per token (hw_models/gpu_quant.py), so a lut point costs about what an int W4A16 one does."""

from __future__ import annotations

from dataclasses import replace

import pytest

from explore.design_point import DesignPoint
from explore.evaluate import Evaluator

INT4 = DesignPoint(model="llama-2-7b", device="a100-sxm-80gb", batch=1, prompt=256, output=16, execution="engine",
                   weight_bits=4, knobs=(("scale_granularity", "channel"),))
LUT4 = replace(INT4, knobs=(("scale_granularity", "channel"), ("weight_type", "lut")))


@pytest.fixture(scope="module")
def metrics() -> dict[str, dict]:
    evaluator = Evaluator()
    return {name: evaluator.evaluate(point).metrics for name, point in (("int", INT4), ("lut", LUT4))}


def test_lut_energy_per_token_is_within_a_small_factor_of_int_w4(metrics):
    """Both store 4 bits a weight; lut's batch-1 decode runs the CUDA-core GEMV (6 lane instructions a weight, slower
    than int4's tensor-core kernel), its prefill dequantizes apart: about 1.9x int4's energy a token, not 22x."""
    assert metrics["lut"]["energy_per_token_J"] <= 2.5 * metrics["int"]["energy_per_token_J"]


def test_lut_ttft_is_within_a_small_factor_of_int_w4(metrics):
    """Llama-2-7B's 6.5e9 GEMM weights: per-token lookups at 256 tokens would be 256 x 6 x 6.5e9 / 9.75e12 = 1.0 s on
    the A100's CUDA cores; written at 16 bits apart ((0.5 + 2) B a weight at 2,039 GB/s, 8 ms) and multiplied at the
    bf16 rate, the prefill stays within twice int4's."""
    assert metrics["lut"]["ttft_s"] <= 2.0 * metrics["int"]["ttft_s"]
