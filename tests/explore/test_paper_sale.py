"""Paper check: SALE's ">= 3.36x" attention speed-up on Llama-3.1-8B beyond 64K (prefill_kept, kernels/block_sparse.py).

SALE (Zhang et al., "SALE: Low-bit Estimation for Efficient Sparse Attention in Long-context LLM Prefilling", arXiv
2505.24179; code BirdChristopher/SALE) claims at least a 3.36x speed-up of the prefill's attention over dense
FlashAttention for Llama-3.1-8B beyond 64K tokens, and an estimation overhead of about 11% of full attention
(abstract). What it measured (experiments/128k_niah_latency.py): the per-layer attention timers summed over a
prefill (max_new_tokens=1) of needle-in-a-haystack inputs cut to 8K-128K, on four RTX 4090s in pipeline; blocks of 64
queries x 32 keys, a 128-token local window, start_layer 0 (every layer sparse).

Setting here: llama-3-8b (Llama-3.1-8B's shapes; write_long_context gives it the context) on an A100. The RTX 4090
has no preset; the L40S is the same AD102 chip but its preset lists no int4 rate (it could not be verified from the
datasheet), so it would price the estimate at its int8 rate. The A100 lists int4 at 4x its 16-bit rate (1,248 against
312 TOPS), the ratio the first-principles overhead rests on. Attention time is the prefill's attention rows (the
estimate's Q.K among them) plus the estimate's quantization pass, the kernels inside SALE's timed call, on the device
alone (no launch gaps).

The paper publishes no kept share (its per-head thresholds set it), so the speed-up at the share its 3.36x implies
would be circular. What the tool can say is bounded instead:
- the estimate's overhead, (2 / 4) x (312 / 1,248) = 12.5% of dense attention plus its O(n) quantization pass, is
  within 5 points of the paper's 11% at 64K and 128K;
- at a fixed kept share the speed-up grows with context (the local window is a smaller share of longer prompts);
- 3.36x is reachable: at some kept share >= 0.05 it is exceeded at 64K and at 128K. The ceiling is 1 / 12.5% = 8x.
Not modeled: SALE's sparse pass runs on SageAttention (INT8 Q.K), which is faster per pair than the dense baseline's
16-bit FlashAttention; here both are 16-bit attention, so the same kept share gives a smaller speed-up than SALE's
kernels would (the test bounds the claim's form, not its number).
"""

from __future__ import annotations

import numpy as np
import pytest

from explore.design_point import DesignPoint
from kernels.block_estimate import ESTIMATE_OP, QUANTIZE_OP
from tests.explore.tiny_sweep import write_long_context

CONTEXTS = (65_536, 131_072)
PAPER_SPEEDUP = 3.36
PAPER_OVERHEAD = 0.11
DEVICE = "a100-sxm-80gb"


def attention_s(evaluator, model: str, prompt: int, kept: float) -> tuple[float, float]:
    """(attention time, of which the estimate's) of a one-prompt prefill at `kept`."""
    point = DesignPoint(model=model, device=DEVICE, batch=1, prompt=prompt, output=1, execution="engine",
                        knobs=(("prefill_kept", kept),) if kept != 1.0 else ())
    device = evaluator.point_device(point)
    prefill = evaluator.point_tables(point, device).prefill
    time_s = device.cost_table(prefill, "device").time_s
    ops = np.array([k.op for k in prefill.kernels])
    estimate = np.isin(ops, (ESTIMATE_OP, QUANTIZE_OP))
    return float(time_s[prefill.attention_mask | estimate].sum()), float(time_s[estimate].sum())


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return write_long_context(tmp_path_factory.mktemp("sale"), "llama-3-8b", CONTEXTS[-1] + 1)


@pytest.mark.parametrize("context", CONTEXTS)
def test_the_estimate_costs_about_the_papers_11_percent(evaluator, model, context):
    dense, _ = attention_s(evaluator, model, context, 1.0)
    _, estimate = attention_s(evaluator, model, context, 0.1)
    assert abs(estimate / dense - PAPER_OVERHEAD) <= 0.05


def test_the_speedup_grows_with_context_and_3_36x_is_reachable(evaluator, model):
    shares = (0.05, 0.1, 0.2)
    speedup = {(context, kept): attention_s(evaluator, model, context, 1.0)[0]
               / attention_s(evaluator, model, context, kept)[0] for context in CONTEXTS for kept in shares}
    for kept in shares:
        assert speedup[(CONTEXTS[1], kept)] > speedup[(CONTEXTS[0], kept)]
    for context in CONTEXTS:
        assert max(speedup[(context, kept)] for kept in shares) > PAPER_SPEEDUP
        assert all(s < 8.0 for s in speedup.values())  # never past the estimate's ceiling
