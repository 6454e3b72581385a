"""Batched speculative decoding: throughput at batch 8 against batch 1, against EXSPEC.

EXSPEC (Zhang et al., "Batch Speculative Decoding Done Right", arXiv:2510.22876, 2025; abstract): on SpecBench,
across Vicuna-7B/68M, Qwen3-8B/0.6B and GLM-4-9B/0.6B target/draft pairs, "up to 3x throughput improvement at batch
size 8 compared to batch size 1", in Hugging Face transformers without custom kernels. Its point is the ragged-tensor
problem: sequences of a batch accept different numbers of drafts, and realigning their position ids, masks and KV
caches is work of its own (40% of the overhead of its correctness-first EqSpec); EXSPEC regroups sequences of equal
length from a sliding pool to cut it. Its GPU, prompt lengths and acceptance rates were not readable in the copies we
could reach, so the check uses the abstract's figure only.

Here: Vicuna-7B as llama-2-7b (LLaMA-7B's shape; Vicuna-7B v1.3 is a fine-tuned LLaMA-7B), its 68M draft as
JackFram/llama-68m's config (2 layers of width 768, the Vicuna-68M draft's base), 4 drafted tokens each accepted with
probability 0.6, prompts and outputs of 256 tokens, on one A100-80GB (our choice), in eager execution (PyTorch
launching every aten op, as transformers does). Throughput: tokens_per_s of the static batch, speculation on at both
batches. Tolerance: within 1.35x either way of 3x, which bounds both sides. Measured at the time of writing: 7.2x
(eager; 7.8x before the batch of 8 waited for its slowest sequence: sim/speculative.py ragged_steps), where the
paper's batches gain 3x.
"""

from __future__ import annotations

import json

import pytest

from explore.design_point import DesignPoint

PAPER_GAIN = 3.0
TOLERANCE = 1.35
# JackFram/llama-68m config.json (Hugging Face): the draft of the paper's Vicuna-7B/68M pair is of this shape.
DRAFT = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 768, "intermediate_size": 3072,
         "num_attention_heads": 12, "num_key_value_heads": 12, "num_hidden_layers": 2,
         "max_position_embeddings": 2048, "vocab_size": 32000, "rms_norm_eps": 1e-6, "tie_word_embeddings": False}

pytestmark = pytest.mark.slow  # full-size Llama-2-7B traced eager at two batches


@pytest.fixture(scope="module")
def gain(evaluator, tmp_path_factory) -> float:
    """Tokens per second of the speculative batch of 8 over that of 1."""
    draft = tmp_path_factory.mktemp("exspec") / "llama-68m.json"
    draft.write_text(json.dumps(DRAFT))
    throughput = {}
    for batch in (1, 8):
        point = DesignPoint(model="llama-2-7b", device="a100-sxm-80gb", batch=batch, prompt=256, output=256,
                            execution="eager",
                            knobs=(("acceptance", 0.6), ("spec_draft", str(draft)), ("spec_tokens", 4)))
        throughput[batch] = evaluator.evaluate(point).metrics["tokens_per_s"]
    return throughput[8] / throughput[1]


def test_a_batch_of_8_speculates_with_more_throughput(gain):
    """The paper's direction: batching speculative decoding raises throughput."""
    assert gain > 1.5, gain


@pytest.mark.xfail(strict=True, reason="ours about 7.2x against the paper's up-to 3x: a static speculative batch here "
                                       "has no cost for realigning ragged sequences (padding, position ids, KV cache "
                                       "copies: 40% of EqSpec's overhead) or for EXSPEC's regrouping, host and copy "
                                       "work that grows with the batch (its sequences finish apart, each drawing its "
                                       "own acceptances, and the batch waits for its slowest)")
def test_batch_8_gain_near_the_paper(gain):
    assert PAPER_GAIN / TOLERANCE <= gain <= PAPER_GAIN * TOLERANCE, gain
