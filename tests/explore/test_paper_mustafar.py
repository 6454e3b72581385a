"""Unstructured KV sparsity (kv_sparsity, kernels/kv_sparsity.py) against Mustafar's compression and throughput claims:
a partial expression.

Mustafar (Joo, Hosseini, Hadidi, Asgari, "Mustafar: Promoting Unstructured Sparsity for KV Cache Pruning in LLM
Inference", NeurIPS 2025, arXiv 2505.22913, abstract): the bitmap format and its attention kernel "delivers
substantial compression of KV cache up to 45% of dense inference and thereby enables longer context length and
increased tokens/sec throughput of up to 2.23x compared to dense inference", at 70% sparsity of Keys and Values.
Only the abstract and a third-party summary could be read here (app.argminai.com's dashboard of 2505.22913v2: "up to
2.23x tokens/sec (Llama-3-8B, batch 8)"); the GPU and the lengths were not, so the setting is built as follows and
says so.
- Model: Llama-3-8B, the summary's (the authors' mem_spd_test.py runs Meta-Llama-3-8B-Instruct).
- Batch 8, the summary's; lengths: a 4,096-token prompt and 4,096 generated tokens, the longest setting of
  mem_spd_test.py (commented out there beside 2,048 + 2,048 and 300 + 600), Llama-3-8B's whole 8,192-token context.
- GPU: an A100-SXM 80 GB (not stated in what could be read).
- Execution: eager PyTorch for the paper's figure, as its Hugging Face generate() runs; the trends are asserted on
  graph replay, where the device's time shows (an eager batch of 8 waits on the host in the tool).
What is priced: the bitmap layout's bytes (values, bitmap, offsets, padding) in the cache's memory, decode attention's
reads and the cache writes; the dense attention math. What is not: the dense window of recent tokens the authors'
code keeps (32 to 287 tokens a sequence), the separate local-window attention and its launches, the 256-token
compression steps' extra passes, and the dense baseline's own overheads in Hugging Face (its cache grown by
concatenation each step).
The compression is a layout fact and is held to 5%; the throughput figure is held to 25%, both sides; the tool's
gains are also bounded by the compression's ceiling, 1 / kv_scale, the gain of a step that moved only its KV cache.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from kernels.formats import NumericFormat
from sim.workload import BatchWorkload

MODEL, DEVICE, BATCH, PROMPT, OUTPUT = "llama-3-8b", "a100-sxm-80gb", 8, 4096, 4096
PAPER_SPARSITY = 0.7
PAPER_SHARE_OF_DENSE = 0.45
PAPER_THROUGHPUT = 2.23


def point(sparsity: float, execution: str = "graphs", prompt: int = PROMPT, output: int = OUTPUT,
          batch: int = BATCH) -> DesignPoint:
    return DesignPoint(model=MODEL, device=DEVICE, batch=batch, prompt=prompt, output=output, execution=execution,
                       knobs=(("kv_sparsity", sparsity),) if sparsity else ())


def kv_cache_B(evaluator, sparsity: float) -> float:
    p = point(sparsity)
    return evaluator.batch_memory(p, evaluator.point_device(p), BatchWorkload(batch=BATCH, prompt_len=PROMPT,
                                                                              output_len=OUTPUT),
                                  evaluator.kv_window(p)).kv_cache_B


def gain(evaluator, sparsity: float, execution: str = "graphs", **lengths) -> float:
    dense, sparse = (evaluator.evaluate(point(s, execution, **lengths)).metrics["tokens_per_s"]
                     for s in (0.0, sparsity))
    return sparse / dense


def test_mustafar_cache_is_45_percent_of_dense_at_70_percent(tiny_evaluator):
    """The batch's KV cache at 70% against 16-bit dense: 44.8% (7.175 of 16 bits an element)."""
    got = kv_cache_B(tiny_evaluator, PAPER_SPARSITY) / kv_cache_B(tiny_evaluator, 0.0)
    assert PAPER_SHARE_OF_DENSE * 0.95 <= got <= PAPER_SHARE_OF_DENSE * 1.05
    assert kv_cache_B(tiny_evaluator, 0.5) > kv_cache_B(tiny_evaluator, PAPER_SPARSITY)  # more sparsity, less cache


@pytest.mark.slow  # six 8K-context runs of Llama-3-8B: the cache check above stays in the default run
def test_mustafar_gain_grows_with_sparsity_and_context_under_the_ceiling(tiny_evaluator):
    """Graph replay, batch 8: 1.07x at 50% and 1.11x at 70% over 4,096 + 4,096 tokens, 1.06x at 70% over 2,048 +
    2,048; at the largest batch each cache fits (47 dense, 79 packed) 1.66x. Every gain stays under the ceiling."""
    ceiling = 1.0 / NumericFormat(kv_sparsity=PAPER_SPARSITY).kv_scale(4096 // 32)  # Llama-3-8B's heads
    half, full = gain(tiny_evaluator, 0.5), gain(tiny_evaluator, PAPER_SPARSITY)
    assert 1.0 < half < full < ceiling
    assert 1.0 < gain(tiny_evaluator, PAPER_SPARSITY, prompt=2048, output=2048) < full  # grows with the context
    dense = tiny_evaluator.evaluate(point(0.0, batch=47)).metrics
    packed = tiny_evaluator.evaluate(point(PAPER_SPARSITY, batch=79)).metrics
    assert dense["fits_in_memory"] and packed["fits_in_memory"]
    assert not tiny_evaluator.evaluate(point(0.0, batch=79)).metrics["fits_in_memory"]
    assert full < packed["tokens_per_s"] / dense["tokens_per_s"] < ceiling


@pytest.mark.xfail(strict=True, reason=(
    "ours 1.00x eager (an eager batch of 8 waits on the host's dispatch, dense or packed) and 1.11x replayed from "
    "graphs, against the paper's up-to 2.23x: at batch 8 over 8,192 tokens each decode step reads Llama-3-8B's 16 GB "
    "of weights beside up to 8.6 GB of dense KV cache (3.9 GB packed), so the bytes saved are at most a fifth of a "
    "step's. 2.23 is "
    "1 / 0.448, the compression's own reciprocal: the paper's figure is what a step that moved only its KV cache "
    "would gain (or its dense baseline pays costs the tool does not price), which the setting read here cannot show"))
def test_mustafar_2_23x_tokens_per_s_at_batch_8(tiny_evaluator):
    got = gain(tiny_evaluator, PAPER_SPARSITY, execution="eager")
    assert PAPER_THROUGHPUT * 0.75 <= got <= PAPER_THROUGHPUT * 1.25
