"""Paper check: Lamina, model-attention disaggregation (S. Chen et al., 'Efficient Heterogeneous Large Language Model
Decoding with Model-Attention Disaggregation', arXiv:2405.01814v2).

Setting (section 6.1, Tables 3-5): decoding only, in FP16 (prefill runs elsewhere: the paper's vLLM baseline had its
prefill phase removed). LLaMA3-70B: Lamina at DOP (2, 4), two H100s running the model and four H20s the attention,
holding the KV cache ($40.64/h in the paper's prices), against vLLM on four H100s with tensor parallelism ($44.24/h).
LLaMA-33B (multi-head attention, G = 1): DOP (1, 2), one H100 and two H20s ($20.32/h), against vLLM on two H100s
($22.12/h). Traces by their mean lengths (Table 4): Azure-Conv 1,154.7 prompt / 211.1 output tokens, Azure-Code
2,047.8 / 27.9, Kimi-Conv 12,035.1 / 342.6, Kimi-TA 8,560.0 / 182.1.

Claims (abstract and section 6.1, Fig. 10): 16.1-90.1% higher throughput than vLLM at similar cost, over its models
and traces, with an average batch 2.39x larger. The per-trace values are in plots not readable here, so each trace is
held to the whole range (5% slack on each side: 1.10-2.0x) and the batch to 2.39x within 25%.

Here: a serving run per design, every request arriving at once, a prefill pool of 32 replicas large enough that the
decode pool sets the pace, engine execution, 1,024 sequences at most per iteration (the KV cache bounds both designs
below it), each device's memory used to vLLM's default share (gpu_memory_utilization 0.9, the baseline's; Lamina's
own share is not given, the same is assumed), decode throughput (`decode_tokens_per_s`) and the decode replica's
time-weighted mean batch.
"""

from __future__ import annotations

import numpy as np
import pytest

from explore.design_point import DesignPoint
from sim.serving_spec import ServingSpec
from workloads.requests import Fixed

pytestmark = pytest.mark.slow

# (prompt, output) mean tokens of Lamina's traces (Table 4), and requests enough for the decode pool's steady state.
TRACES = {"azure-conv": (1155, 211, 3000), "azure-code": (2048, 28, 3000), "kimi-conv": (12035, 343, 2500),
          "kimi-ta": (8560, 182, 2500)}
PAPER_RANGE = (1.161, 1.901)  # section 6.1: 16.1-90.1% higher throughput
PAPER_BATCH = 2.39  # section 6.1: average batch size over vLLM's

MISS = ("our model side (2 H100s, tp2) at Lamina's ~2.2x larger batch is GEMM-bound: its fitted GEMMs run at about "
        "55% of peak and take ~80% of an iteration, so half the GPUs at twice the batch serve no more tokens than "
        "vLLM's four at its KV-bound batch, where GEMMs are half the step; and two micro-batches read the weights "
        "twice. What makes the paper's vLLM baseline slower, or its model side faster, is not established")


# Lamina's degree of parallelism (model H100s, attention H20s) per model, and vLLM's H100s (Table 5).
DOP = {"llama-3-70b": ((2, 4), 4), "llama-33b": ((1, 2), 2)}


def _run(evaluator, trace: str, lamina: bool, model: str = "llama-3-70b"):
    prompt, output, requests = TRACES[trace]
    (model_gpus, attention_gpus), vllm_gpus = DOP[model]
    spec = ServingSpec(requests=requests, rate_per_s=1e4, prompt=Fixed(tokens=prompt), output=Fixed(tokens=output),
                       prefill_replicas=32, max_seqs=1024, memory_utilization=0.9,
                       **(dict(attention_device="h20", attention_devices=attention_gpus) if lamina else {}))
    point = DesignPoint(model=model, device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0,
                        serving=spec, execution="engine", tp=model_gpus if lamina else vllm_gpus)
    return evaluator.evaluate(point)


def _decode_batch(evaluation) -> float:
    """The decode replica's time-weighted mean batch."""
    log = evaluation.result.iterations
    decode = np.array([name.startswith("decode") for name in log.replica_names])[log.replica]
    return float((log.batch_size * log.duration_s)[decode].sum() / log.duration_s[decode].sum())


@pytest.mark.parametrize("trace", [
    pytest.param("azure-conv", marks=pytest.mark.xfail(strict=True, reason=f"0.79x, the direction reversed: {MISS}")),
    pytest.param("azure-code", marks=pytest.mark.xfail(strict=True, reason=f"0.66x, the direction reversed: {MISS}")),
    pytest.param("kimi-conv", marks=pytest.mark.xfail(strict=True, reason=f"1.08x, below the paper's range: {MISS}")),
    "kimi-ta",
])
def test_lamina_decodes_faster_than_vllm_at_similar_cost(evaluator, trace):
    """LLaMA3-70B: Lamina's decode throughput over vLLM's within the paper's range (long contexts gain most: attention
    and the KV cache grow with them)."""
    ratio = (_run(evaluator, trace, True).metrics["decode_tokens_per_s"]
             / _run(evaluator, trace, False).metrics["decode_tokens_per_s"])
    assert PAPER_RANGE[0] / 1.05 <= ratio <= PAPER_RANGE[1] * 1.05, ratio


@pytest.mark.parametrize("trace", list(TRACES))
def test_lamina_decodes_llama_33b_faster_than_vllm(evaluator, trace):
    """LLaMA-33B, whose multi-head attention makes its KV cache eight times Llama-3-70B's per token and layer: at
    every trace two H20s' KV cache doubles the batch one H100 can decode, and Lamina's throughput over vLLM's two H100s
    lies in the paper's range (measured at the time of writing: 1.17-1.24x, batches 2.0-2.1x)."""
    lamina, vllm = (_run(evaluator, trace, side, "llama-33b") for side in (True, False))
    ratio = lamina.metrics["decode_tokens_per_s"] / vllm.metrics["decode_tokens_per_s"]
    assert PAPER_RANGE[0] / 1.05 <= ratio <= PAPER_RANGE[1] * 1.05, ratio
    assert PAPER_BATCH / 1.25 <= _decode_batch(lamina) / _decode_batch(vllm) <= PAPER_BATCH * 1.25


def test_lamina_holds_a_larger_batch(evaluator):
    """The attention devices' KV cache (0.9 of four H20s' 102 GB) holds about twice the sequences of vLLM's four
    H100s after the weights (0.9 of 4 x 84.9 GB, less 141 GB): Azure-Conv's decode batch 2.39x vLLM's within 25%.
    (The two designs' prices compare as the paper's, 0.92, by construction: the H20 preset's price is the paper's
    ratio to an H100's.)"""
    lamina, vllm = _run(evaluator, "azure-conv", True), _run(evaluator, "azure-conv", False)
    ratio = _decode_batch(lamina) / _decode_batch(vllm)
    assert PAPER_BATCH / 1.25 <= ratio <= PAPER_BATCH * 1.25, ratio
