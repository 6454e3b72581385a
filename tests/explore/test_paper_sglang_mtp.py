"""DeepSeek-V3's multi-token prediction as a speculative draft at a second and third setting, against SGLang's
published speed-ups: "SGLang implements DeepSeek V3 Multi-Token Prediction (MTP) based on EAGLE speculative decoding.
With this optimization, the decoding speed can be improved by 1.8x for batch size 1 and 1.5x for batch size 32
respectively on H200 TP8 setting" (sgl-project/sglang, docs/basic_usage/deepseek.md, "Multi-token Prediction", at
0a9fc02a; its example drafts one token a step: --speculative-num-steps 1 --speculative-eagle-topk 1
--speculative-num-draft-tokens 2).

tests/explore/test_paper_deepseek_mtp.py checks the technical report's 1.8x, whose hardware and batch are not given, at
one setting (64 sequences). Here the checkpoint's block fp8 W8A8 (SETTING) on eight H200s, tensor parallelism 8, the
engine's custom all-reduce, 1,024 + 1,024 tokens, k = 1, at SGLang's two batches. SGLang gives no acceptance rate; the
report's second-token range, 85-90%, is taken for it. Ours, decode tokens/s against plain decoding's, measured at
f23db58 (a worktree of it and this file alone): 1.63x and 1.68x at batch 1 (plain TPOT 9.20 ms, 5.64 and 5.49 ms with
MTP), within 20% of SGLang's 1.8x; 1.75x and 1.80x at batch 32 (plain TPOT 31.6 ms, 17.9 and 17.4 ms), +16.8% and
+20.05% over SGLang's 1.5x. The trend is the miss, and both batch-32 cases are strict xfails for it: SGLang's speed-up
falls from batch 1 to 32, ours rises (a step with MTP costs 1.13 plain steps at batch 1 and 1.06 at 32, from E = 1.85 at
0.85).

The passes priced are the ones SGLang runs (sgl-project/sglang python/sglang/srt/speculative/eagle_worker.py at
00559eac, forward_batch_generation): with --speculative-num-steps 1, draft() runs no pass of the module ("we get 1 token
from draft prefill": draft_forward breaks before its forward), verify() runs the target over 2 tokens a sequence
(TARGET_VERIFY, in the target's CUDA graphs), and forward_draft_extend_after_decode runs the module over num_steps + 1 =
2 tokens a sequence in a CUDA graph of its own (EAGLEDraftExtendCudaGraphRunner): our verification and draft_first
(sim/speculative.py). The cause lies in the routing model. Each pass priced alone at 1,536 keys, in ms (graphs, this
file's SETTING, at a7c7a0d): batch 1, plain step 9.21 (routed experts 2.51), verification 10.11 (experts 3.18: +0.67 of
its +0.90), the module's pass 0.30; batch 32, plain step 31.59 (experts 23.28), verification 32.48 (experts 23.60:
+0.33; all-reduce +0.26, norms and elementwise +0.12, the dense GEMMs, router and shared expert +0.14), the module's
pass 0.70: an MTP step of 1.13 and 1.05 plain steps. Attention, the LM head and the module's own layer move little
between the batches; the routed experts are 74% of the batch-32 step. The traced MoE layers route by
balanced_expert_load (kernels/moe.py), which touches min(256, tokens x 8) experts: all 256 at 32 tokens, so the
verification's 64 tokens read no expert weights the plain step does not, while at batch 1 they read 16 experts to its 8.
Routing each token's 8 experts independently and uniformly touches 256 x (1 - (248/256)^tokens) (kernels/moe.py's
formula): 163 experts at 32 tokens, 222 at 64, 15.75 at 2. With the MoE rows' touched experts (and their weight bytes)
set so, all else as traced: batch 32's plain step 23.95 ms (experts 15.63), verification 29.72 (experts 20.84), an MTP
step of 1.27 plain steps, speed-ups E / ratio 1.46x and 1.50x (as traced E / ratio gives 1.76x and 1.81x, the whole
run's within 1%), within 3% of SGLang's 1.5x and below batch 1's 1.64x and 1.68x (8 and 15.75 experts, balanced
routing's 8 and 16). So the miss follows from balanced routing, the upper bound of expert traffic, at 32
tokens, not from the speculation's pricing; the default routing model prices every MoE figure and is not changed for
this check: both xfails stay under it.

The same checks run under moe_routing uniform (workloads/model_config.py uniform_expert_load: each token's 8 experts
picked independently and uniformly, 256 (1 - (248/256)^t) touched, rounded). It is the fairer model of SGLang's
benchmark: SGLang's speed-ups were measured with DeepSeek-V3's own router on its prompts, where a batch's 32 tokens
pick their experts token by token, each from its own hidden state, and nothing fills the experts evenly (balanced
routing is the fill aiconfigurator's collector forces on its measured kernels, by constructing the routing, not a
router's outcome); tokens that pick alike collide on experts, so 32 of them touch fewer than 256. Real routers are
skewed toward frequently chosen experts, which touches fewer still, so uniform routing remains an upper bound of the
weights read, below balanced's. Nothing is tuned: the routing has no parameter beyond the config's E and k. Ours under
it, measured at this file's commit: batch 1 unchanged (1 and 2 tokens touch 8 and 16 experts under both models),
plain TPOT 9.20 ms, 1.632x and 1.676x; batch 32, plain TPOT 23.92 ms (163 experts touched of 256), 16.35 and 15.93 ms
with MTP (the verification's 64 tokens touch 222), 1.451x and 1.491x: within 3.3% of SGLang's 1.5x and below batch
1's, so both bounds and the falling trend hold.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint

# SGLang docs/basic_usage/deepseek.md (module docstring): decoding speed-up with MTP by batch size, H200 TP8.
SGLANG_SPEEDUP = {1: 1.8, 32: 1.5}
TOLERANCE = 0.20  # the project's bound on a whole run against a published measurement
# The checkpoint's format, as examples/mtp.yaml serves it: e4m3 weights with a float32 scale per 128 x 128 block,
# activations with float32 scales per token and 128 channels, the embedding and LM head in bf16.
SETTING = {"act_type": "fp8_e4m3", "weight_type": "fp8_e4m3", "scale_type": "fp32", "scale_granularity": "block",
           "head_bits": 16, "allreduce": "custom"}


def _point(batch: int, **knobs) -> DesignPoint:
    return DesignPoint(model="deepseek-v3", device="h200", batch=batch, prompt=1024, output=1024, execution="engine",
                       tp=8, weight_bits=8, act_bits=8, knobs=tuple(sorted({**SETTING, **knobs}.items())))


def _speedup(evaluator, batch: int, acceptance: float, **knobs) -> float:
    """Decode tokens/s with one MTP token drafted a step, over plain decoding's (both with `knobs`)."""
    plain = evaluator.evaluate(_point(batch, **knobs)).metrics
    drafted = evaluator.evaluate(_point(batch, spec_draft="mtp", spec_tokens=1, acceptance=acceptance,
                                        **knobs)).metrics
    assert plain["fits_in_memory"] is True and drafted["fits_in_memory"] is True
    return drafted["decode_tokens_per_s"] / plain["decode_tokens_per_s"]


# SGLang's conclusion is the fall from batch 1 to 32 as much as its figures: a batch-32 speed-up inside the tolerance
# that rises over batch 1's keeps neither, so both batch-32 cases are one miss, whatever the margin (+16.8% at 0.85).
TREND_MISS = pytest.mark.xfail(strict=True, reason=(
    "paper miss: the model's MTP speed-up rises from batch 1 to 32 (1.63x -> 1.75x at 0.85, 1.68x -> 1.80x at 0.90) "
    "where SGLang's falls (1.8x -> 1.5x): balanced routing touches all 256 experts at 32 tokens, so the 2-token "
    "verification reads no more expert weights there (module docstring)"))


@pytest.mark.slow  # DeepSeek-V3 at full size: a minute or two of CPU (its traces and kernel tables)
@pytest.mark.parametrize(("batch", "acceptance"), [
    (1, 0.85), (1, 0.90),  # the technical report's range for the second token
    pytest.param(32, 0.85, marks=TREND_MISS), pytest.param(32, 0.90, marks=TREND_MISS),
])
def test_mtp_speeds_up_deepseek_v3_decoding_as_sglang_reports(evaluator, batch, acceptance):
    speedup = _speedup(evaluator, batch, acceptance)
    assert abs(speedup / SGLANG_SPEEDUP[batch] - 1) <= TOLERANCE, speedup
    if batch > 1:  # and falls from batch 1's, as SGLang's does
        assert speedup < _speedup(evaluator, 1, acceptance), speedup


@pytest.mark.slow  # DeepSeek-V3 at full size under uniform routing: its own traces, a few minutes of CPU
@pytest.mark.parametrize(("batch", "acceptance"), [(1, 0.85), (1, 0.90), (32, 0.85), (32, 0.90)])
def test_mtp_speeds_up_deepseek_v3_decoding_as_sglang_reports_under_uniform_routing(evaluator, batch, acceptance):
    """SGLang's speed-ups and their fall from batch 1 to 32 with the experts routed uniformly (module docstring)."""
    speedup = _speedup(evaluator, batch, acceptance, moe_routing="uniform")
    assert abs(speedup / SGLANG_SPEEDUP[batch] - 1) <= TOLERANCE, speedup
    if batch > 1:
        assert speedup < _speedup(evaluator, 1, acceptance, moe_routing="uniform"), speedup
