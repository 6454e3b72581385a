"""An offloaded KV cache with top-k token selection (offload kv, topk_fraction) against ShadowKV's throughput gain: the
tool misses it (strict xfail).

ShadowKV (Sun et al., "ShadowKV: KV Cache in Shadows for High-Throughput Long-Context LLM Inference", ICML 2025,
arXiv 2410.21465, Table 4 "Generation throughput (tokens/s) on an A100", as transcribed by deep-diver/ai-paper-reviewer
content/paper-reviews/2410.21465/index.md): Llama-3.1-8B at 122K tokens generates 80.78 tokens/s with full attention
at batch 4 (the most that fits) and 245.90 tokens/s with ShadowKV at batch 24, a gain of 3.04x (the abstract's "up
to 3.04x"). ShadowKV keeps a low-rank pre-RoPE key cache, chunk landmarks (8-token chunks) and outlier chunks on the
GPU, moves the value cache to host memory, and each step attends to a 1.56% sparse budget, fetching only those
values over PCIe and rebuilding their keys from the low-rank factors.
Setting here: Llama-3-8B's shapes (Llama-3.1-8B has the same layers, heads and widths) with a 128K context, an
A100-SXM 80 GB, 122 x 1,024 prompt tokens, engine execution (fused kernels, decode from CUDA graphs), decode
throughput (decode_tokens_per_s: ShadowKV's table times generation). ShadowKV is priced as the nearest knobs: offload
kv (the KV cache that does not fit goes to host memory over the A100's PCIe 4 link) and topk_fraction 0.0156 with
Quest's page summaries, ShadowKV's landmarks being per-chunk key summaries too. Tolerance: 25% of the paper's
gain, both sides; both points must fit (the paper ran both).
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from tests.explore.tiny_sweep import write_long_context

pytestmark = pytest.mark.slow  # full-size paper check at 122K tokens: seconds a test

CONTEXT = 122 * 1024
OUTPUT = 16
PAPER_GAIN = 245.90 / 80.78  # 3.04x
SPARSE_BUDGET = 0.0156


@pytest.mark.xfail(strict=True, reason=(
    "the static batch holds the activations of an unchunked prefill of the whole batch (47 GB at 4 x 122K tokens, "
    "283 GB at 24), so neither the paper's full-attention batch nor ShadowKV's fits an 80 GB A100 and offload kv "
    "cannot place ShadowKV's (the full batch's weights and cache alone, 81.6 GB, also exceed the preset's 80.0e9 B, "
    "where the card holds 80 GiB); and offload kv moves the same share of keys, values and the key summary to "
    "host memory and streams the summary back each step, where ShadowKV keeps low-rank keys and landmarks on the "
    "GPU and fetches only the selected values (no knob holds keys and values apart or prices a low-rank key "
    "cache)"))
def test_shadowkv_throughput_gain_at_122k(tiny_evaluator, tmp_path):
    model = write_long_context(tmp_path, "llama-3-8b", 131_072)
    full = tiny_evaluator.evaluate(DesignPoint(model=model, device="a100-sxm-80gb", batch=4, prompt=CONTEXT,
                                               output=OUTPUT, execution="engine")).metrics
    shadow = tiny_evaluator.evaluate(DesignPoint(
        model=model, device="a100-sxm-80gb", batch=24, prompt=CONTEXT, output=OUTPUT, execution="engine",
        knobs=(("offload", "kv"), ("topk_fraction", SPARSE_BUDGET)))).metrics
    assert full["fits_in_memory"] and shadow["fits_in_memory"]
    got = shadow["decode_tokens_per_s"] / full["decode_tokens_per_s"]
    assert PAPER_GAIN * 0.75 <= got <= PAPER_GAIN * 1.25
    assert got > 1.0  # the paper's conclusion: six times the batch outweighs fetching values from host memory
