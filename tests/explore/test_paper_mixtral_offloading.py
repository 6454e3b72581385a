"""Expert-aware weight offloading (offload: weights, sim/offload.py: a decode step streams only the offloaded experts
its tokens reach) against Mixtral-offloading (Eliseev & Mazur, "Fast Inference of Mixture-of-Experts Language Models
with Offloading", arXiv:2312.17238).

The paper runs Mixtral-8x7B at batch 1 with HQQ mixed quantization (4-bit attention, 2- or 3-bit experts), experts
offloaded to host memory, on an A100, an RTX 3080 Mobile, an RTX 3060 and a free Colab T4; its full method adds an
LRU expert cache and speculative expert loading, and its ablation removes them. Its tables are not readable here
(the search tool holds the abstract, which gives no figure, and summaries of it): the readable figures are 2-4
tokens per second for the full method across its GPUs (sciencestack.ai's summary of 2312.17238), 2-3 on low-tier
GPUs and 2 on the Colab T4, against 0.6 with naive offloading (app.daily.dev's summary). The ablation without cache
and pre-loading, the row the tool should match (it models neither), is not readable, so only the direction is
bounded: without cache or prefetch the tool must be slower than the full method's best figure (4 tokens/s) and, as
it fetches only the experts that run, faster than naive offloading (0.6 tokens/s).

Setting: of the paper's GPUs only the A100 has a preset (no T4, RTX 3060 or RTX 3080 Mobile preset ships); its memory
is cut by a what-if (memory.capacity_GB 7.5) so that about half the expert bytes (5.6 GB at 2-bit experts) live in
host memory, as the paper keeps only part of each layer's experts on the GPU; PCIe 4.0 x16 (the preset's host link).
A 128-token prompt (the paper's prompt lengths are not readable); execution eager (HuggingFace transformers).
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint

SETTING = dict(model="mixtral-8x7b", device="a100-sxm-80gb", batch=1, prompt=128, output=32, execution="eager",
               overrides=(("memory.capacity_GB", 7.5),))
FULL_METHOD_BEST_TOKENS_PER_S = 4.0  # the full method's upper end across the paper's GPUs (module docstring)
NAIVE_TOKENS_PER_S = 0.6  # naive offloading (module docstring)


def decode_tokens_per_s(evaluator, expert_bits: int) -> tuple[float, float]:
    """(decode tokens per second, bytes offloaded) at 4-bit attention and `expert_bits` experts."""
    point = DesignPoint(weight_bits=expert_bits, knobs=(("attn_weight_bits", 4), ("offload", "weights")), **SETTING)
    metrics = evaluator.evaluate(point).metrics
    assert metrics["infeasible_reason"] == ""
    return 1.0 / metrics["tpot_s"], metrics["offloaded_B"]


@pytest.mark.xfail(strict=True, reason="the direction is reversed: without an expert cache or speculative loading the "
                   "tool decodes about 18 tokens/s at 2-bit experts and 10 at 3-bit, above the full method's 2-4: a "
                   "step streams the offloaded share of the 2 routed experts of each layer (1.4 GB at 2-bit, 45 ms "
                   "over PCIe 4.0) and the A100 computes the rest in about 10 ms; what makes the paper's steps slower "
                   "(HQQ dequantization kernels, a host-driven fetch and launch per expert, pageable copies) is not "
                   "priced")
@pytest.mark.parametrize("expert_bits", [2, 3])
def test_offloading_without_cache_or_prefetch_is_between_naive_and_the_full_method(evaluator, expert_bits):
    tokens_per_s, offloaded_B = decode_tokens_per_s(evaluator, expert_bits)
    assert offloaded_B > 0
    assert NAIVE_TOKENS_PER_S < tokens_per_s < FULL_METHOD_BEST_TOKENS_PER_S


def test_fewer_expert_bits_offload_less_and_decode_faster(evaluator):
    """The invariant the paper's quantization relies on: 2-bit experts leave fewer bytes in host memory than 3-bit
    ones, so fewer cross the link each step and decoding is faster."""
    two, three = decode_tokens_per_s(evaluator, 2), decode_tokens_per_s(evaluator, 3)
    assert 0 < two[1] < three[1]
    assert two[0] > three[0]
