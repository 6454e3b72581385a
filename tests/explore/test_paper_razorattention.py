"""Per-head full and truncated caches (retrieval_heads with kv_budget, kernels/kv_policy.py) against RazorAttention's
KV-cache reduction.

RazorAttention (Tang et al., "RazorAttention: Efficient KV Cache Compression Through Retrieval Heads", ICLR 2025,
arXiv 2407.15891 abstract): "a reduction in KV cache size by over 70%". Its Algorithm 1 keeps every token in the
retrieval heads and, in the others, N0 attention sinks, a recent buffer and one compensation token. The authors'
own implementation (Huawei MindSpore Golden Stick, mindspore_gs/long_context_compress/razor_attention/ra_config.py,
RAConfig defaults) protects 1% echo heads and 14% induction heads (15% retrieval heads) and keeps 4 sinks and a local
capacity of 256 tokens: 261 tokens a truncated head. Model and context: Llama2-13B-64K, the model of its accuracy
tables (its shapes are Llama-2-13B's; the context is raised to 64K), at a 64K-token prompt, on an H200 (its 26 GB of
weights and 54 GB of full cache outgrow an 80 GB card; the reduction itself does not depend on the device).

Both sides are bounded by independent figures: below by the paper's 70%; above by the retrieval heads' own share,
since the 15% of heads that keep everything can never be compressed (at most 85%).
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from sim.workload import BatchWorkload
from tests.explore.tiny_sweep import write_long_context

CONTEXT = 65_536
OUTPUT = 64
RETRIEVAL_HEADS = 0.01 + 0.14  # echo + induction heads (RAConfig)
TRUNCATED_TOKENS = 4 + 256 + 1  # sinks + local capacity + the compensation token
PAPER_REDUCTION = 0.70


@pytest.fixture(scope="module")
def llama_2_13b_64k(tmp_path_factory) -> str:
    return write_long_context(tmp_path_factory.mktemp("llama-2-13b-64k"), "llama-2-13b", CONTEXT + OUTPUT)


def kv_bytes_and_ttft(evaluator, model: str, knobs: tuple) -> tuple[float, float]:
    point = DesignPoint(model=model, device="h200", batch=1, prompt=CONTEXT, output=OUTPUT,
                        execution="engine", knobs=knobs)
    memory = evaluator.batch_memory(point, evaluator.point_device(point),
                                    BatchWorkload(batch=1, prompt_len=CONTEXT, output_len=OUTPUT),
                                    evaluator.kv_window(point))
    return memory.kv_cache_B, evaluator.evaluate(point).metrics["ttft_s"]


def test_razorattention_kv_reduction(tiny_evaluator, llama_2_13b_64k):
    full_B, full_ttft = kv_bytes_and_ttft(tiny_evaluator, llama_2_13b_64k, ())
    razor_B, razor_ttft = kv_bytes_and_ttft(tiny_evaluator, llama_2_13b_64k,
                                            (("kv_budget", TRUNCATED_TOKENS), ("retrieval_heads", RETRIEVAL_HEADS)))
    reduction = 1 - razor_B / full_B
    assert PAPER_REDUCTION <= reduction <= 1 - RETRIEVAL_HEADS
    # "compatible with FlashAttention ... without overhead": the prefill is never slower
    assert razor_ttft <= full_ttft
