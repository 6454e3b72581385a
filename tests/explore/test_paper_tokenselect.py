"""Full-key token selection (topk_method: token_select, kernels/token_select.py) against TokenSelect's attention
speed-up.

TokenSelect (Wu et al., "TokenSelect: Efficient Long-Context Inference and Length Extrapolation for LLMs via Dynamic
Token-Level KV Cache Selection", arXiv 2411.02886, abstract: "up to 23.84x speedup in attention computation and up to
2.28x acceleration in end-to-end latency"). Setting (pzs19/TokenSelect README, scripts/serve.sh,
config/qwen-token-retrieval.yaml, patcher/token_retrieval.py): Qwen2-7B-Instruct in bf16 on one A100-80G, SGLang with
FlashInfer, one request at a time, contexts up to 1,048,576 tokens; each step keeps 128 initial and 512 local tokens
and selects 2,048 more (2,688 in all), against FlashInfer's full attention; the released code ships the Selection
Cache off (QUERY_CACHE = False). The paper's efficiency figure could not be read here, so the context behind "up to" is
not known: a selection saves the most at the longest context, so the check takes the repository's 1,048,576 tokens.
Qwen2.5-7B's preset stands in for Qwen2-7B (the same attention: 28 layers, 28 query and 4 KV heads of 128). Tolerance:
within 25% of the paper's figure, both sides. The end-to-end 2.28x is not checked: its output length is not known
here, and the released code also selects in its chunked prefill, which the tool runs dense.
"""

from __future__ import annotations

import numpy as np
import pytest

from explore.design_point import DesignPoint
from kernels.kv_policy import KVPolicy
from kernels.token_select import TOKEN_SELECT, token_selection

CONTEXT = 1_048_576
KEPT = 128 + 2048 + 512  # n_init + top_k + n_local
PAPER_SPEEDUP = 23.84
KEY_CEILING = 2.0  # scoring reads every key: half the cache each step, so at most 2x when bandwidth-bound


def attention_speedup(evaluator, reuse: float = 0.0) -> float:
    """Full over selected decode-attention time of one step of Qwen2-7B's shapes on an A100 at CONTEXT tokens."""
    point = DesignPoint(model="qwen2.5-7b", device="a100-sxm-80gb", batch=1, prompt=2048, output=2)
    device = evaluator.point_device(point)
    decode = evaluator.point_tables(point, device).decode
    sel = token_selection(TOKEN_SELECT, KEPT / CONTEXT, layers=28, heads=28, kv_heads=4, head_dim=128,
                          kv_element_B=2.0, reuse=reuse)
    times = [float(device.cost_table(decode.at_kv_lengths(np.array([float(CONTEXT)]), window), "eager").time_s.sum())
             for window in (None, KVPolicy(selection=sel))]
    return times[0] / times[1]


def test_tokenselect_decodes_faster_within_the_key_read_ceiling(tiny_evaluator):
    """The paper's conclusion (selection speeds attention up, the Selection Cache more), bounded above by reading
    every key each step."""
    got = attention_speedup(tiny_evaluator)
    assert 1.0 < got <= KEY_CEILING
    assert attention_speedup(tiny_evaluator, reuse=0.5) > got


@pytest.mark.xfail(strict=True, reason="every decode step scores each cached token with its full key, reading half "
                   "the cache, which caps a bandwidth-bound step near 2x (the model gives 1.6x at 1M tokens); the "
                   "paper's 23.84x needs the Selection Cache to skip the scoring in about 94% of the steps (a hit "
                   "rate not read here; topk_reuse 0.94 gives it), or it is the chunked prefill's attention, which "
                   "TokenSelect's code also selects in and the tool runs dense")
def test_tokenselect_attention_speedup(tiny_evaluator):
    got = attention_speedup(tiny_evaluator)
    assert PAPER_SPEEDUP * 0.75 <= got <= PAPER_SPEEDUP * 1.25
