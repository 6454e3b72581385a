"""int4 weights (weight_bits 4) against EfficientLLM (Z. Yuan et al., "EfficientLLM: Efficiency in Large Language
Models", arXiv:2505.13840, abstract): post-training int4 quantization lowers memory/energy by up to 3.9x at a 3-5%
drop in average task score, measured on GH200 and H200 GPUs over models of 0.5B-72B parameters.

Only the abstract (and summaries of it) is readable here: which models, lengths and batch give the 3.9x, and whether
it is memory's figure or energy's, are not known. Checked: peak memory of 7-8B models (Llama-3-8B, Qwen2.5-7B, both
in the size range the benchmark quantizes) on an H200, one sequence of 512 prompt and 128 output tokens in a serving
engine, 16-bit against 4-bit weights in groups of 128; within 25% of 3.9x on either side. Energy a token is checked
only in direction (it falls): a batch-1 decode spends most of its energy as the chip's static power over its time,
which int4 cuts by about 2.2x, so ours falls 1.7x, below 3.9x but within "up to". The accuracy drop is not checked:
quality_delta is a perplexity increase from published tables (explore/quality.py), not a task score.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint

PAPER_MEMORY_CUT = 3.9
TOLERANCE = 0.25


def _metrics(evaluator, model: str, weight_bits: int) -> dict:
    point = DesignPoint(model=model, device="h200", batch=1, prompt=512, output=128, execution="engine",
                        weight_bits=weight_bits)
    return evaluator.evaluate(point).metrics


# Ours: 3.79x (Llama-3-8B, 16.2 GB -> 4.3 GB), 3.81x (Qwen2.5-7B, 15.3 GB -> 4.0 GB): a 16-bit scale per group of
# 128 weights, the KV cache and the activations keep it under 4x.
@pytest.mark.parametrize("model", ["llama-3-8b", "qwen2.5-7b"])
def test_int4_cuts_memory_3_9_times(evaluator, model):
    fp16, int4 = _metrics(evaluator, model, 16), _metrics(evaluator, model, 4)
    cut = fp16["peak_memory_B"] / int4["peak_memory_B"]
    assert PAPER_MEMORY_CUT * (1 - TOLERANCE) <= cut <= PAPER_MEMORY_CUT * (1 + TOLERANCE), cut
    assert int4["energy_per_token_J"] < fp16["energy_per_token_J"]
