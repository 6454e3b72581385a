"""W4A16 on one GPU against FP16 over two (weight_bits, group_size, tp) against SmoothQuant+ (J. Pan et al.,
"SmoothQuant+: Accurate and Efficient 4-bit Post-Training Weight Quantization for LLM", arXiv:2312.03788, abstract).

The claim: Code Llama-34B quantized to 4-bit weights in groups (W4A16, the authors' CUDA kernel inside vLLM) on one
A100 40GB reaches 1.9x to 4.0x the throughput of the FP16 model on two A100 40GB, and its latency per token is 68% of
the FP16 model's. The paper's text past its abstract is not readable here (the search tool holds the abstract only),
so neither the prompt and output lengths nor the batch behind either figure is known: the latency is checked at batch
1 (one sequence decoding alone, where latency per token is tpot_s) and the throughput as vLLM's offline benchmark
measures it, every request queued at once and served by continuous batching (output tokens over the makespan), at
512 prompt and 256 output tokens, the engine holding vLLM's default 90% of each GPU (gpu_memory_utilization 0.9:
serving memory_utilization). Groups of 128 (the group size of the SmoothQuant+ model zoo's 4-bit checkpoints,
github.com/Adlik/smoothquantplus, and vLLM's group-wise kernels). Both sides run as a serving engine (execution
"engine"); FP16 shards Megatron-style over the pair (tp 2, NVLink, an all-reduce per block).

Code Llama-34B (Rozière et al., "Code Llama: Open Foundation Models for Code", 2023; the Hugging Face
codellama/CodeLlama-34b-hf config.json): Llama 2 34B's shapes, 48 layers, hidden 8192, 64 heads with 8 KV heads
(GQA), FFN 22016, vocabulary 32000, RoPE theta 1e6, 16,384 positions.

Tolerance: 25% on either side of the paper's figure (of its range, for throughput), as the other paper checks of a
ratio between two runs on the same model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explore.design_point import DesignPoint
from sim.serving_spec import ServingSpec
from workloads.requests import Fixed

PRESETS = Path(__file__).resolve().parents[2] / "workloads" / "presets"
A100_40GB = "a100-sxm-40gb"
TOLERANCE = 0.25
W4A16 = dict(weight_bits=4, knobs=(("group_size", 128),))
FP16_TWO_GPUS = dict(tp=2)


@pytest.fixture(scope="module")
def code_llama_34b(tmp_path_factory) -> str:
    """Code Llama-34B's config.json (shapes in the module docstring), on Llama-2-13B's preset for the common keys."""
    data = json.loads((PRESETS / "llama-2-13b.json").read_text()) | {
        "_source": "Hugging Face codellama/CodeLlama-34b-hf config.json", "_name_or_path": "codellama/CodeLlama-34b-hf",
        "hidden_size": 8192, "intermediate_size": 22016, "num_attention_heads": 64, "num_hidden_layers": 48,
        "num_key_value_heads": 8, "max_position_embeddings": 16384, "rope_theta": 1000000.0}
    path = tmp_path_factory.mktemp("code-llama") / "codellama-34b.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.slow  # a whole run of seconds: run with the slow checks
def test_w4a16_on_one_gpu_fits_where_fp16_needs_two(evaluator, code_llama_34b):
    """The paper's premise: FP16 weights (68 GB) do not fit one A100 40GB, 4-bit ones (about 18 GB) do."""
    def fits(**fmt) -> bool:
        point = DesignPoint(model=code_llama_34b, device=A100_40GB, batch=1, prompt=128, output=8,
                            execution="engine", **fmt)
        return bool(evaluator.evaluate(point).metrics["fits_in_memory"])

    assert not fits() and fits(**W4A16) and fits(**FP16_TWO_GPUS)


# Ours 0.63: 18.5 ms a token for 4-bit weights on one GPU, 29.4 ms for FP16 over two.
def test_latency_per_token_is_68_percent_of_fp16_on_two_gpus(evaluator, code_llama_34b):
    def tpot_s(**fmt) -> float:
        point = DesignPoint(model=code_llama_34b, device=A100_40GB, batch=1, prompt=128, output=128,
                            execution="engine", **fmt)
        return evaluator.evaluate(point).metrics["tpot_s"]

    ratio = tpot_s(**W4A16) / tpot_s(**FP16_TWO_GPUS)
    assert 0.68 * (1 - TOLERANCE) <= ratio <= 0.68 * (1 + TOLERANCE), ratio
    assert ratio < 1.0  # the paper's conclusion: one GPU with 4-bit weights answers sooner than two with FP16


@pytest.mark.slow  # two serving runs of a 34B model, about 6 s
@pytest.mark.xfail(strict=True, reason=(
    "ours 1.08x (604 against 561 output tokens/s), not 1.9-4.0x. At vLLM's gpu_memory_utilization 0.9 the FP16 pair "
    "keeps 3.3 GB of KV after its 68.7 GB of weights and activations, 21 sequences on average against 50 for W4A16 "
    "(with every byte, as before the setting, 0.63x: 45 against 59). The rest is the prefill: one GPU prefills at "
    "half the pair's rate and every arriving prompt stalls the running decodes (W4A16 tpot 0.15 s against 0.04 s); "
    "128-token prompts with 512 output tokens give 1.38x. The paper's lengths are not known here"))
def test_throughput_is_1_9_to_4_times_fp16_on_two_gpus(evaluator, code_llama_34b):
    spec = ServingSpec(requests=200, rate_per_s=1000.0, prompt=Fixed(tokens=512), output=Fixed(tokens=256),
                       memory_utilization=0.9)

    def output_tokens_per_s(**fmt) -> float:
        point = DesignPoint(model=code_llama_34b, device=A100_40GB, batch=spec.max_seqs, prompt=0, output=0,
                            execution="engine", serving=spec, **fmt)
        return evaluator.evaluate(point).metrics["output_tokens_per_s"]

    ratio = output_tokens_per_s(**W4A16) / output_tokens_per_s(**FP16_TWO_GPUS)
    assert 1.9 * (1 - TOLERANCE) <= ratio <= 4.0 * (1 + TOLERANCE), ratio
    assert ratio > 1.0  # the paper's conclusion: one GPU with 4-bit weights outserves two with FP16
