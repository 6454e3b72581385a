"""A hybrid of full and windowed attention layers (retrieval_heads with kv_budget, kernels/kv_policy.py) against
LongGen's inference speed-ups.

LongGen (Ge et al., "A Little Goes a Long Way: Efficient Long Context Training and Inference with Partial Contexts",
ICLR 2025, arXiv 2410.01485 abstract): Llama-2-7B extended to 128K tokens with 1/3 full attention layers (the middle
ones) and 2/3 KV-reduced layers (attention sink + local window); "during inference, LongGen reduces KV cache memory
by 62%, achieving 1.67x prefilling speedup and 1.41x decoding speedup". Only the abstract could be read here: the
GPU, the engine and the window are not, so the setting is built as follows and says so.
- Context: 128K, the length the abstract names. Full attention there holds 13.5 GB of weights and 67 GB of cache,
  more than an 80 GB card, so the price is taken on an H200 (141 GB), the one single GPU here on which it fits.
- Window: every layer costs the same, so a third of the layers at full attention prices as a third of the heads
  (retrieval_heads 1/3: reads, cache and a windowed prefill all mix per layer alike); the window is the one the
  abstract's 62% implies, 2/3 x (1 - w / 128K) = 0.62, w = 7% of the context. The 62% is thus an input, not a check.
- Engine: not known, so both ends are priced: eager PyTorch and a fused serving engine.
Tolerance: each ratio within 25% of the paper's, both sides.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from sim.workload import BatchWorkload
from tests.explore.tiny_sweep import write_long_context

CONTEXT = 128_000
OUTPUT = 16
FULL_LAYERS = 1 / 3
KV_REDUCTION = 0.62
WINDOW = int(CONTEXT * (1 - KV_REDUCTION / (1 - FULL_LAYERS)))
PAPER_PREFILL = 1.67
PAPER_DECODE = 1.41


@pytest.fixture(scope="module")
def llama_2_7b_128k(tmp_path_factory) -> str:
    """Llama-2-7B's shapes with LongGen's extended context (its fine-tuning changes no shape)."""
    return write_long_context(tmp_path_factory.mktemp("llama-2-7b-128k"), "llama-2-7b", CONTEXT + OUTPUT)


def full_and_longgen(evaluator, model: str, execution: str) -> list[tuple[float, float, float]]:
    """(ttft_s, tpot_s, KV-cache bytes) of full attention and of LongGen's hybrid."""
    out = []
    for knobs in ((), (("kv_budget", WINDOW), ("retrieval_heads", FULL_LAYERS))):
        point = DesignPoint(model=model, device="h200", batch=1, prompt=CONTEXT, output=OUTPUT, execution=execution,
                            knobs=knobs)
        metrics = evaluator.evaluate(point).metrics
        memory = evaluator.batch_memory(point, evaluator.point_device(point),
                                        BatchWorkload(batch=1, prompt_len=CONTEXT, output_len=OUTPUT),
                                        evaluator.kv_window(point))
        out.append((metrics["ttft_s"], metrics["tpot_s"], memory.kv_cache_B))
    return out


@pytest.mark.parametrize("execution", ["eager", "engine"])
def test_longgen_prefill_speedup_and_cache(tiny_evaluator, llama_2_7b_128k, execution):
    (full_ttft, _, full_kv), (hybrid_ttft, _, hybrid_kv) = full_and_longgen(tiny_evaluator, llama_2_7b_128k,
                                                                             execution)
    got = full_ttft / hybrid_ttft
    assert PAPER_PREFILL * 0.75 <= got <= PAPER_PREFILL * 1.25
    assert got > 1.0  # the paper's conclusion: the windowed layers prefill faster
    # the window was chosen from the 62%: the cache held must then fall by it (sinks, and the tokens decoded past
    # the prompt, move it by under a point)
    assert 1 - hybrid_kv / full_kv == pytest.approx(KV_REDUCTION, abs=0.01)


@pytest.mark.parametrize("execution", [
    pytest.param("eager", marks=pytest.mark.xfail(strict=True, reason="eager pricing puts batch-1 decode of the "
                                                  "traced Llama-2-7B on its host-launch floor (about 28 ms a token), "
                                                  "which both runs sit on at 128K on an H200: 1.0x")),
    pytest.param("engine", marks=pytest.mark.xfail(strict=True, reason="a fused engine's decode is priced "
                                                   "bandwidth-bound: the step reads 2.07x fewer bytes (13.5 GB of "
                                                   "weights plus 67 GB of cache against 25.5 GB) and the model "
                                                   "gives 1.9x; the paper's 1.41x leaves overhead the model does "
                                                   "not see, or a shorter context than the one assumed here")),
])
def test_longgen_decode_speedup(tiny_evaluator, llama_2_7b_128k, execution):
    (_, full_tpot, _), (_, hybrid_tpot, _) = full_and_longgen(tiny_evaluator, llama_2_7b_128k, execution)
    got = full_tpot / hybrid_tpot
    assert PAPER_DECODE * 0.75 <= got <= PAPER_DECODE * 1.25
    assert got > 1.0
