"""Position-persistent sparse attention (topk_method: tidal_decode, kernels/token_select.py) against TidalDecode's
decode latency.

TidalDecode (Yang et al., "TidalDecode: Fast and Accurate LLM Decoding with Position Persistent Sparse Attention",
ICLR 2025, abstract: "reducing the LLM decoding latency by up to 2.1x"). Setting (DerrickYLJ/TidalDecode
scripts/bench_efficiency_e2e.sh and scripts/bench_textgen.py; the project page catalyst.cs.cmu.edu/projects/
tidaldecode.html names the GPU): Llama-2-7B in fp16 on one A100 80 GB SXM4, batch 1, contexts 10,240, 32,768 and
102,400 tokens, 256 decoded tokens, token budgets 32 to 4,096, against the same model with full attention in every
layer. Its model (tidal/models/llama.py) is PyTorch run eagerly with flashinfer-based kernels: eager execution. The
end-to-end figure (the page's Figure 1) could not be read here, so the pairing of budget and context behind "up to"
is not known; a selection saves the most at the longest context, so the check takes 102,400 tokens at both ends of
the budget pool. Tolerance: within 25% of the paper's 2.1x, both sides.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from tests.explore.tiny_sweep import write_long_context

CONTEXT = 102_400
DECODED = 256
PAPER_SPEEDUP = 2.1


@pytest.fixture(scope="module")
def llama_2_7b_100k(tmp_path_factory) -> str:
    """Llama-2-7B's shapes with room for the script's longest run (its context plus the decoded tokens)."""
    return write_long_context(tmp_path_factory.mktemp("llama-2-7b-100k"), "llama-2-7b", CONTEXT + DECODED)


def full_and_tidal(evaluator, model: str, budget: int) -> tuple[dict, dict]:
    """Metrics of full attention and of TidalDecode keeping `budget` tokens, at the script's longest context."""
    out = []
    for knobs in ((), (("topk_fraction", budget / CONTEXT), ("topk_method", "tidal_decode"))):
        point = DesignPoint(model=model, device="a100-sxm-80gb", batch=1, prompt=CONTEXT, output=DECODED,
                            execution="eager", knobs=tuple(sorted(knobs)))
        out.append(evaluator.evaluate(point).metrics)
    return out[0], out[1]


@pytest.mark.parametrize("budget", [32, 4096])
def test_tidaldecode_decodes_faster_and_prefills_alike(tiny_evaluator, llama_2_7b_100k, budget):
    """The paper's conclusion: decoding is faster; the prefill stays dense (TidalDecode selects in decode only)."""
    full, tidal = full_and_tidal(tiny_evaluator, llama_2_7b_100k, budget)
    assert full["tpot_s"] / tidal["tpot_s"] > 1.0
    assert tidal["ttft_s"] == full["ttft_s"]
    assert tidal["peak_memory_B"] == full["peak_memory_B"]  # no key summary: the cache held is the same


@pytest.mark.xfail(strict=True, reason="eager pricing charges the traced Hugging Face Llama's per-op host launches, "
                   "about 28 ms a token, a floor the sparse decode step sits on (1.4x); TidalDecode's own model fuses "
                   "norms, RoPE and attention into far fewer launches, so its step stays device-bound (with the "
                   "launch floor removed, graphs, the model gives 2.4-2.5x)")
@pytest.mark.parametrize("budget", [32, 4096])
def test_tidaldecode_decode_speedup(tiny_evaluator, llama_2_7b_100k, budget):
    full, tidal = full_and_tidal(tiny_evaluator, llama_2_7b_100k, budget)
    got = full["tpot_s"] / tidal["tpot_s"]
    assert PAPER_SPEEDUP * 0.75 <= got <= PAPER_SPEEDUP * 1.25
