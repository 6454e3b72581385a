"""Cascade attention of a shared prefix (serving prefix_attention: cascade; kernels/shapes.py step_shape shared_prefix,
StepTemplate._shared_prefix_attention) against FlashInfer's cascade inference and Hydragen.

FlashInfer (Ye et al., "Cascade Inference: Memory Bandwidth Efficient Shared Prefix Batch Decoding", flashinfer.ai
blog, 2 Feb 2024; its text in flashinfer-ai/flashinfer-ai.github.io _posts/2024-01-08-cascade-inference.md, the
figures themselves not readable here): one decode step's attention, Llama-2-7B's shapes (32 heads of 128, MHA), on an
H100 SXM 80GB, pages of 16 tokens. The cascade kernel pair is up to 26x faster than FlashInfer's batch decode kernel
without cascading (and 31x than vLLM 0.2.6's PagedAttention), "for very long shared prompt (32768) ... with large
batch size (>= 128) and short unique kv-length (<= 256)"; the benefit grows with the shared prefix length and the
batch and shrinks as the unique suffix grows. Checked at the corner the text names: a 32,768-token prefix, 128
sequences, 256 tokens of their own; the tool's paged attention stands for the non-cascading FlashInfer kernel (each
sequence reads its own copy of the shared pages).

Hydragen (Juravsky et al., "Hydragen: High-Throughput LLM Inference with Shared Prefixes", arXiv:2402.05099; the
abstract and its ICML 2024 ES-FoMo workshop abstract, the figures not readable here): end-to-end CodeLlama-13B
throughput with tensor parallelism over eight A100s at batch 1,024 is over 3x vLLM's with a 1K-token shared prefix and
over 30x (up to 32x) with a 16K one; from a 1K to a 16K prefix Hydragen's throughput falls under 15% and the
baselines' over 90%. Setting from the authors' benchmark script (ScalingIntelligence/hydragen scripts/synth.py and
docs/sweeps_from_paper.md): one prompt of 1,024 or 16,256 tokens completed 1,024 times (vLLM's n), 128 new tokens
each, vLLM at gpu_memory_utilization 0.9 and tp 8; here a serving run with every request arriving at once, the whole
prompt the shared prefix, memory_utilization 0.9, paged attention as vLLM's and cascade as Hydragen's. Which A100
(40 or 80 GB) is not readable here: the 40 GB one is used; on the 80 GB one the tool's 16K ratio is lower still
(17x), so the miss below does not hang on that choice. CodeLlama-13B (Hugging Face codellama/CodeLlama-13b-hf
config.json): Llama-2-13B's shapes, vocabulary 32016, RoPE theta 1e6, 16,384 positions.

Tolerance: 25% on either side of the paper's figure, as the other paper checks of a ratio between two runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from explore.design_point import DesignPoint
from explore.evaluate import fusion_of
from kernels.formats import NumericFormat
from kernels.kernel import KernelKind
from kernels.shapes import step_shape
from kernels.table import KIND_CODE
from sim.serving_spec import ServingSpec
from workloads.requests import Fixed

PRESETS = Path(__file__).resolve().parents[2] / "workloads" / "presets"
TOLERANCE = 0.25
ATTENTION = (KIND_CODE[KernelKind.ATTENTION_PREFILL], KIND_CODE[KernelKind.ATTENTION_DECODE])


def attention_s(evaluator, batch: int, prefix: int, suffix: int, cascade: bool) -> float:
    """One decode step's attention time of Llama-2-7B on an H100 SXM: `batch` sequences, each `prefix` shared tokens
    and `suffix` of its own."""
    template = evaluator.template("llama-2-7b", NumericFormat(), fusion=fusion_of("engine", "gpu"))
    shape = step_shape(decode_kv=[prefix + suffix] * batch, sampled=batch, shared_prefix=prefix if cascade else 0)
    table, count = template.table(shape)
    attention = np.isin(table.kind, ATTENTION)
    return float(evaluator.device("h100-sxm").cost_table(table).time_s[attention] @ count[attention])


def cascade_speedup(evaluator, batch: int, prefix: int, suffix: int) -> float:
    return (attention_s(evaluator, batch, prefix, suffix, cascade=False) /
            attention_s(evaluator, batch, prefix, suffix, cascade=True))


@pytest.mark.xfail(strict=True, reason="the tool's cascade is 59x faster than paged attention here, FlashInfer's "
                   "26x: paged attention is priced as every sequence reading its copy of the shared prefix from DRAM "
                   "(69 GB a layer at 128 x 32K tokens), and the prefix kernel at the attention fit's efficiency; the "
                   "measured non-cascading kernel is faster than its DRAM bytes (the sequences read the same pages at "
                   "about the same time, so many reads hit L2, which no cost model here prices) or the 2024 cascade "
                   "kernel slower than the fit, or both")
def test_flashinfer_cascade_decode_attention_speedup(evaluator):
    got = cascade_speedup(evaluator, batch=128, prefix=32768, suffix=256)
    assert 26 * (1 - TOLERANCE) <= got <= 26 * (1 + TOLERANCE)


def test_flashinfer_cascade_benefit_grows_with_prefix_and_batch_and_shrinks_with_suffix(evaluator):
    """The blog's direction: cascading pays, more with a longer shared prefix and a larger batch, less with a longer
    unique suffix."""
    base = cascade_speedup(evaluator, batch=128, prefix=32768, suffix=256)
    assert base > 1
    assert cascade_speedup(evaluator, batch=128, prefix=8192, suffix=256) < base
    assert cascade_speedup(evaluator, batch=16, prefix=32768, suffix=256) < base
    assert cascade_speedup(evaluator, batch=128, prefix=32768, suffix=1024) < base


@pytest.fixture(scope="module")
def code_llama_13b(tmp_path_factory) -> str:
    """CodeLlama-13B's config.json (module docstring), on Llama-2-13B's preset for the common keys."""
    data = json.loads((PRESETS / "llama-2-13b.json").read_text()) | {
        "_source": "Hugging Face codellama/CodeLlama-13b-hf config.json", "_name_or_path": "codellama/CodeLlama-13b-hf",
        "vocab_size": 32016, "rope_theta": 1000000.0, "max_position_embeddings": 16384}
    path = tmp_path_factory.mktemp("code-llama") / "codellama-13b.json"
    path.write_text(json.dumps(data))
    return str(path)


def throughput(evaluator, model: str, prefix: int, attention: str) -> float:
    """Output tokens per second of 1,024 completions of one `prefix`-token prompt, 128 tokens each, on eight
    A100 40GB (tp 8)."""
    spec = ServingSpec(requests=1024, rate_per_s=1e7, prompt=Fixed(tokens=prefix), output=Fixed(tokens=128),
                       max_seqs=1024, max_batched_tokens=20000, prefix_tokens=prefix, prefix_attention=attention,
                       memory_utilization=0.9)
    point = DesignPoint(model=model, device="a100-sxm-40gb", batch=spec.max_seqs, prompt=0, output=0, tp=8,
                        serving=spec, execution="engine")
    metrics = evaluator.evaluate(point).metrics
    assert metrics["infeasible_reason"] == ""
    return float(metrics["tokens_per_s"])


@pytest.fixture(scope="module")
def hydragen_runs(evaluator, code_llama_13b) -> dict[tuple[int, str], float]:
    return {(prefix, attention): throughput(evaluator, code_llama_13b, prefix, attention)
            for prefix in (1024, 16256) for attention in ("paged", "cascade")}


def test_hydragen_throughput_over_vllm_with_a_1k_prefix(hydragen_runs):
    got = hydragen_runs[1024, "cascade"] / hydragen_runs[1024, "paged"]
    assert 3 * (1 - TOLERANCE) <= got <= 3 * (1 + TOLERANCE)


@pytest.mark.xfail(strict=True, reason="20x, not over 30x: the tool's baseline falls as the paper's (to 10% of its "
                   "1K-prefix throughput at 16K), but its cascade falls 23% where Hydragen's falls under 15%: the "
                   "prefix kernel (1,024 stacked queries against 16K keys, compute-bound) costs the tool's step more "
                   "than it costs Hydragen's")
def test_hydragen_throughput_over_vllm_with_a_16k_prefix(hydragen_runs):
    got = hydragen_runs[16256, "cascade"] / hydragen_runs[16256, "paged"]
    assert 32 * (1 - TOLERANCE) <= got <= 32 * (1 + TOLERANCE)
    assert hydragen_runs[16256, "cascade"] > 0.85 * hydragen_runs[1024, "cascade"]


def test_hydragen_speedup_grows_with_the_prefix_and_the_baseline_collapses(hydragen_runs):
    """The paper's conclusion: the speed-up grows with the shared prefix, and a 16x longer prefix costs the paged
    baseline over 90% of its throughput and cascade far less."""
    short = hydragen_runs[1024, "cascade"] / hydragen_runs[1024, "paged"]
    long = hydragen_runs[16256, "cascade"] / hydragen_runs[16256, "paged"]
    assert long > short > 1
    assert hydragen_runs[16256, "paged"] < 0.1 * hydragen_runs[1024, "paged"]
    assert hydragen_runs[16256, "cascade"] > 0.5 * hydragen_runs[1024, "cascade"]
