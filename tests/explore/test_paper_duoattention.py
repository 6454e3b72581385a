"""Per-head KV budgets (retrieval_heads, kernels/kv_policy.py) against DuoAttention, and the invariant that a
smaller KV budget never reads more bytes.

DuoAttention (Xiao et al., "DuoAttention: Efficient Long-Context LLM Inference with Retrieval and Streaming
Heads", ICLR 2025; abstract and its efficiency figures): on an A100, memory falls by up to 2.55x and decoding speeds
up by up to 2.18x for MHA models (Llama-2-7B-32K with 25% retrieval heads: mit-han-lab/duo-attention,
scripts/run_efficiency.sh, sparsity 0.75), and by 1.67x and 1.50x for GQA models (Llama-3-8B-1048K, 50% retrieval
heads, sparsity 0.5). "Up to": at the longest context full attention still fits, 100K tokens for Llama-2-7B (its
52 GB of 16-bit KV and 13 GB of weights in 80 GB) and 400K for Llama-3-8B (its efficiency runs step 100K). Its
memory is weights and KV: the benchmark prefills in 32K-token chunks (scripts/efficiency.sh), so activations
stay small; the model's activation reserve of an unchunked prefill is left out here. Streaming heads keep 64 sinks
and 256 recent tokens (kernels/kv_policy.py). Decode is priced in engine execution (graph replay), as the paper's
long-context decode is device-bound. Tolerance: each ratio within 25% of the paper's, which bounds both sides.
"""

from __future__ import annotations

import numpy as np
import pytest

from explore.design_point import DesignPoint
from sim.workload import BatchWorkload
from tests.explore.tiny_sweep import write_long_context


def ratios(evaluator, model: str, context: int, retrieval: float) -> tuple[float, float]:
    """(decode speed-up, memory reduction) of DuoAttention at `retrieval` heads against full attention."""
    out = []
    for knobs in ((), (("retrieval_heads", retrieval),)):
        point = DesignPoint(model=model, device="a100-sxm-80gb", batch=1, prompt=context, output=8,
                            execution="engine", knobs=knobs)
        evaluation = evaluator.evaluate(point, price_infeasible=True)
        memory = evaluator.batch_memory(point, evaluator.point_device(point),
                                        BatchWorkload(batch=1, prompt_len=context, output_len=8),
                                        evaluator.kv_window(point))
        out.append((evaluation.result.metrics()["tpot_s"], memory.weights_B + memory.kv_cache_B))
    (full_tpot, full_B), (duo_tpot, duo_B) = out
    return full_tpot / duo_tpot, full_B / duo_B


@pytest.mark.parametrize(("model", "context", "retrieval", "speedup", "memory"), [
    ("llama-2-7b", 100_000, 0.25, 2.18, 2.55),  # MHA
    ("llama-3-8b", 400_000, 0.5, 1.50, 1.67),  # GQA
])
def test_duoattention_decode_speedup_and_memory(tiny_evaluator, tmp_path, model, context, retrieval, speedup, memory):
    long_model = write_long_context(tmp_path, model, context + 8)
    got_speedup, got_memory = ratios(tiny_evaluator, long_model, context, retrieval)
    assert speedup * 0.75 <= got_speedup <= speedup * 1.25
    assert memory * 0.75 <= got_memory <= memory * 1.25
    assert got_speedup > 1.0 and got_memory > 1.0  # the paper's conclusion: both fall


def decode_kv_bytes(evaluator, model: str, **knobs) -> float:
    """KV bytes every decode step of a static point reads, summed."""
    point = DesignPoint(model=model, device="h100-sxm", batch=2, prompt=300, output=40,
                        knobs=tuple(sorted((k, v) for k, v in knobs.items() if v)))
    tables = evaluator.point_tables(point, evaluator.point_device(point))
    steps = BatchWorkload(batch=2, prompt_len=300, output_len=40).decode_kv_lengths()
    return float(tables.decode.at_kv_lengths(steps, tables.attention_window).kv_bytes.sum())


@pytest.mark.parametrize("retrieval", [0.0, 0.25, 0.5, 1.0])
def test_a_smaller_kv_budget_never_reads_more_bytes(tiny_config, tiny_evaluator, retrieval):
    budgets = [8, 32, 100, 250, 320, 1000]
    reads = [decode_kv_bytes(tiny_evaluator, tiny_config, kv_budget=b, retrieval_heads=retrieval) for b in budgets]
    assert np.all(np.diff(reads) >= 0)
    whole = decode_kv_bytes(tiny_evaluator, tiny_config)
    assert reads[-1] <= whole
    if retrieval < 1.0:
        assert reads[0] < whole


def test_blocks_agree_with_the_reference(tiny_config, tiny_evaluator):
    from tests.explore.test_blocks import assert_blocks_agree

    points = [DesignPoint(model=tiny_config, device="h100-sxm", batch=4, prompt=400, output=9, execution="engine",
                          overrides=(("memory.bandwidth_GBps", bandwidth),),
                          knobs=(("kv_budget", 64), ("retrieval_heads", 0.25)))
              for bandwidth in (1000.0, 3000.0)]
    assert_blocks_agree(tiny_evaluator, points)
    full = tiny_evaluator.evaluate(DesignPoint(model=tiny_config, device="h100-sxm", batch=4, prompt=400, output=9,
                                               execution="engine")).metrics
    duo = tiny_evaluator.evaluate(points[0]).metrics
    assert duo["time_attention_s"] < full["time_attention_s"] and duo["peak_memory_B"] < full["peak_memory_B"]


def test_a_serving_prefill_with_retrieval_heads_is_faster_as_a_static_one(tiny_config, tiny_evaluator):
    """Static batches and serving runs agree on the direction: streaming heads attend to their window in the
    prefill, so the first token comes sooner with retrieval heads than without, served alone or in a static batch."""
    from sim.serving_spec import ServingSpec
    from workloads.requests import Fixed

    spec = ServingSpec(requests=4, rate_per_s=0.01, prompt=Fixed(tokens=1500), output=Fixed(tokens=4))
    knobs = [(), (("retrieval_heads", 0.25),)]
    static = [tiny_evaluator.evaluate(DesignPoint(model=tiny_config, device="h100-sxm", batch=1, prompt=1500,
                                                  output=4, execution="engine", knobs=k)).metrics["ttft_s"]
              for k in knobs]
    served = [tiny_evaluator.evaluate(DesignPoint(model=tiny_config, device="h100-sxm", batch=spec.max_seqs,
                                                  prompt=0, output=0, execution="engine", serving=spec,
                                                  knobs=k)).metrics["ttft_s"] for k in knobs]
    assert static[1] < static[0]
    assert served[1] < served[0]
