"""Training-free activation sparsity (act_kept, predictor none: kernels/sparsity.py) against WINA (Chen et al., "WINA:
Weight Informed Neuron Activation for Accelerating Large Language Model Inference", arXiv:2505.19427).

WINA keeps, per token, the activations with the largest |hidden state| x column l2-norm of the weight they multiply,
in every linear layer (sparsity allocated per matrix by TEAL's greedy search: microsoft/wina README), on Qwen-2.5-7B,
Llama-2-7B, Llama-3-8B and Phi-4-14B. Its efficiency claim, as the readable summary of the paper gives it
(sciencestack.ai's summary of 2505.19427; the paper's GFLOPs table itself is not readable here): at 65% sparsity the
GFLOPs fall by up to about 60-63%, less than the sparsity because the attention scores and the LM head stay dense.
The paper names no GPU for it; FLOPs do not depend on one, so an A100 (whose preset exploits activation sparsity)
runs the three models with presets here, one decode token at batch 1 (a 128-token prompt), with act_kept 0.35.

Tolerance: the FLOPs kept (1 - reduction: 37-40% in the paper) within 25% of the paper's range on either side, as the
other paper checks of a ratio between two runs; beside it the direction the paper's speed-up rests on: FLOPs, weight
bytes and time per token all fall.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint

SPARSITY = 0.65
KEPT_FLOPS_LOW, KEPT_FLOPS_HIGH = 1 - 0.63, 1 - 0.60  # GFLOPs reduction of 60-63% at 65% sparsity
TOLERANCE = 0.25
MODELS = ["llama-2-7b", "llama-3-8b", "qwen2.5-7b"]


def decode_step(evaluator, model: str, act_kept: float) -> tuple[float, float, float]:
    """(FLOPs, weight bytes, TPOT) of the first decode step as the A100 runs it."""
    knobs = (("act_kept", act_kept),) if act_kept < 1.0 else ()
    point = DesignPoint(model=model, device="a100-sxm-80gb", batch=1, prompt=128, output=2, execution="graphs",
                        knobs=knobs)
    evaluation = evaluator.evaluate(point)
    run = evaluation.tables.decode.run_on(evaluator.point_device(point).sparsity_patterns)
    return float(run.flops.sum()), float(run.weight_bytes.sum()), evaluation.metrics["tpot_s"]


MLP_ONLY = ("act_kept thins only the MLP's GEMMs, where WINA sparsifies the inputs of every linear layer, attention "
            "projections included: at 65% sparsity the tool keeps {kept} of a decode token's FLOPs (the MLP is {mlp} "
            "of them), WINA 37-40%")


@pytest.mark.parametrize("model", [
    pytest.param("llama-2-7b", marks=pytest.mark.xfail(strict=True, reason=MLP_ONLY.format(kept="58%", mlp="65%"))),
    pytest.param("llama-3-8b", marks=pytest.mark.xfail(strict=True, reason=MLP_ONLY.format(kept="51%", mlp="75%"))),
    "qwen2.5-7b",  # 48%: its MLP (intermediate 18,944, 4 KV heads) is 80% of a token's FLOPs
])
def test_65_percent_sparsity_cuts_gflops_by_60_to_63_percent(evaluator, model):
    dense, sparse = decode_step(evaluator, model, 1.0), decode_step(evaluator, model, 1 - SPARSITY)
    kept = sparse[0] / dense[0]
    assert KEPT_FLOPS_LOW * (1 - TOLERANCE) <= kept <= KEPT_FLOPS_HIGH * (1 + TOLERANCE), kept


@pytest.mark.parametrize("model", MODELS)
def test_sparse_activations_cut_flops_bytes_and_time(evaluator, model):
    """The direction: fewer FLOPs and weight bytes a token, never more than the sparsity removes, and a faster token."""
    dense, sparse = decode_step(evaluator, model, 1.0), decode_step(evaluator, model, 1 - SPARSITY)
    assert 1 - SPARSITY < sparse[0] / dense[0] < 1.0
    assert 1 - SPARSITY < sparse[1] / dense[1] < 1.0
    assert sparse[2] < dense[2]
