"""A static speculative batch's first token through the serving core: the batch's requests arriving at once on the
static scheduler, on an engine of the static point's limits (vLLM's max_num_seqs 256 and a budget of 8,192 tokens,
which size its CUDA graphs: sim/cuda_graphs.py), reach their first token when the static batch does. In both the
first token waits for the target's prefill and the draft's first round after it: vLLM v1 drafts after every pass of
the target, the prefill's too, before the pass's tokens are returned (vllm/v1/worker/gpu_model_runner.py
sample_tokens, propose_draft_token_ids; sim/speculative.py)."""

from __future__ import annotations

import json

import pytest

from explore.design_point import DesignPoint
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import TINY_CONFIG

DRAFT_CONFIG = TINY_CONFIG | {"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64}
OUTPUT = 9


@pytest.fixture(scope="module")
def draft(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("draft") / "config.json"
    path.write_text(json.dumps(DRAFT_CONFIG))
    return str(path)


def _first_tokens(evaluator, model: str, spec_draft: str, batch: int, prompt: int, execution: str,
                  tmp_path) -> tuple[float, float]:
    """(the static point's TTFT, its batch's served on an engine of the static point's limits); without speculation
    where `spec_draft` is empty."""
    knobs = (("acceptance", 0.0), ("spec_draft", spec_draft), ("spec_tokens", 3)) if spec_draft else ()
    trace = tmp_path / f"together-{batch}-{prompt}.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n" + f"0,{prompt},{OUTPUT}\n" * batch)
    served = evaluator.evaluate(DesignPoint(
        model=model, device="h100-sxm", batch=batch, prompt=0, output=0, execution=execution, knobs=knobs,
        serving=ServingSpec(requests=batch, arrival="trace", trace=str(trace), rate_per_s=None, scheduler="static",
                            max_seqs=256, max_batched_tokens=8192))).metrics
    static = evaluator.evaluate(DesignPoint(model=model, device="h100-sxm", batch=batch, prompt=prompt, output=OUTPUT,
                                            execution=execution, knobs=knobs)).metrics
    return static["ttft_s"], served["ttft_s"]


@pytest.mark.parametrize("execution", ["engine", "eager"])
@pytest.mark.parametrize("batch", [3, 4])
@pytest.mark.parametrize("spec_draft", ["medusa", "ngram"])
def test_heads_and_lookups_reach_the_first_token_as_served(tiny_config, tiny_evaluator, tmp_path, spec_draft, batch,
                                                            execution):
    """Medusa heads and n-gram lookups run nothing before the first token but the target's prefill, 96 or 128 tokens
    (captured sizes: multiples of 8 below 256): the static TTFT is the served one."""
    static, served = _first_tokens(tiny_evaluator, tiny_config, spec_draft, batch, 32, execution, tmp_path)
    assert static == pytest.approx(served, rel=1e-9)


@pytest.mark.parametrize(("batch", "prompt", "execution"), [(3, 33, "engine"), (5, 100, "engine"), (3, 33, "eager")])
def test_a_static_prefill_pads_as_served(tiny_config, tiny_evaluator, tmp_path, batch, prompt, execution):
    """Without speculation a static batch's first token is its prefill's, which an engine pads to the next captured
    size as vLLM pads a pass (sim/cuda_graphs.py: 3 x 33 = 99 tokens run as 104, 5 x 100 = 500 as 512); eager
    nothing pads. The static TTFT is the served one (it was 1.7e-8 s of 1.1e-4 below it at 99 tokens and 4.3e-8 s at
    500: the static path priced the prefill at its own tokens)."""
    static, served = _first_tokens(tiny_evaluator, tiny_config, "", batch, prompt, execution, tmp_path)
    assert static == pytest.approx(served, rel=1e-9)


@pytest.mark.parametrize(("batch", "prompt", "execution"), [(8, 31, "engine"), (3, 32, "engine"), (3, 32, "eager")])
def test_a_draft_models_first_round_is_the_served_one(tiny_config, tiny_evaluator, draft, tmp_path, batch, prompt,
                                                      execution):
    """A draft model's first round after the prefill: its pass over each prompt and its slot, then k - 1 = 2 steps of
    one token a sequence. 8 prompts of 31 tokens prefill 248 tokens in the target and 256 in the draft, both captured
    sizes; 3 prompts of 32 prefill 96 in the target and 99 in the draft, which an engine runs as 104, as vLLM pads the
    drafter's pass (vllm/v1/spec_decode/eagle.py pad_for_cudagraph); eager nothing pads. The static TTFT is the
    served one (it was 5.0e-10 s above it at batch 8: the served draft priced both later steps at the first's keys,
    where vLLM's propose() adds a key each step, as the static path does: tests/sim/test_speculative.py; and 4.9e-9 s
    of 3.0e-4 below it at batch 3: the static path priced the draft's prefill at its own tokens)."""
    static, served = _first_tokens(tiny_evaluator, tiny_config, draft, batch, prompt, execution, tmp_path)
    assert static == pytest.approx(served, rel=1e-9)


def test_an_engine_of_fewer_sequences_captures_no_prefill(tiny_config, tiny_evaluator, tmp_path):
    """Served on an engine of max_seqs 3, the same batch's prefill of 96 tokens runs past every captured graph: vLLM
    captures up to min(max_num_seqs x (k + 1) x 2, 512) = 24 tokens (sim/cuda_graphs.py), so its first token comes
    later than on an engine of vLLM's default 256 sequences (the static point's), whose graphs reach 512."""
    knobs = (("acceptance", 0.0), ("spec_draft", "medusa"), ("spec_tokens", 3))
    trace = tmp_path / "three.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n" + f"0,32,{OUTPUT}\n" * 3)
    ttft = {seqs: tiny_evaluator.evaluate(DesignPoint(
        model=tiny_config, device="h100-sxm", batch=3, prompt=0, output=0, execution="engine", knobs=knobs,
        serving=ServingSpec(requests=3, arrival="trace", trace=str(trace), rate_per_s=None, scheduler="static",
                            max_seqs=seqs, max_batched_tokens=8192))).metrics["ttft_s"] for seqs in (3, 256)}
    assert ttft[3] > ttft[256]
