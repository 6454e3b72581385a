"""Speculative decoding on design points (sim/speculative.py through explore/evaluate.py): invariants on a tiny
Llama and its tinier draft, static batches and serving runs, bad input, and Medusa-1 against its paper."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from explore.blocks import evaluate_points
from explore.cli import main
from explore.design_point import DesignPoint
from kernels.formats import NumericFormat
from sim.serving_spec import ServingSpec
from sim.speculative import expected_tokens
from tests.explore.tiny_sweep import TINY_CONFIG, write_sweep
from tests.workloads.test_mtp import GEMM
from workloads.requests import Fixed

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

DRAFT_CONFIG = TINY_CONFIG | {"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64}


@pytest.fixture(scope="module")
def draft(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("draft") / "config.json"
    path.write_text(json.dumps(DRAFT_CONFIG))
    return str(path)


def point(model: str, **knobs) -> DesignPoint:
    return DesignPoint(model=model, device="h100-sxm", batch=4, prompt=200, output=33, execution="engine",
                       knobs=tuple(sorted(knobs.items())))


@pytest.mark.parametrize("kind", ["draft", "medusa"])
def test_acceptance_zero_is_never_faster_and_more_acceptance_never_slower(tiny_config, tiny_evaluator, draft, kind):
    name = draft if kind == "draft" else "medusa"
    plain = tiny_evaluator.evaluate(point(tiny_config)).metrics
    tpots = [tiny_evaluator.evaluate(point(tiny_config, spec_draft=name, spec_tokens=4, acceptance=a)).metrics["tpot_s"]
             for a in (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0)]
    assert tpots[0] >= plain["tpot_s"]
    assert tpots == sorted(tpots, reverse=True)


def test_full_acceptance_gives_k_plus_one_tokens_per_step(tiny_config, tiny_evaluator):
    """With a = 1 and k = 3 the 32 decode tokens take 8 steps: the decode time is 8 verification passes (Medusa
    heads included), which is what a = 1, k = 7 takes in 4 passes of its own, each verifying 8 tokens."""
    for k, steps in ((3, 8), (7, 4)):
        evaluation = tiny_evaluator.evaluate(point(tiny_config, spec_draft="medusa", spec_tokens=k, acceptance=1.0))
        decode_s = evaluation.metrics["tpot_s"] * 32
        assert expected_tokens(1.0, k) == k + 1
        # One step's time: price the same point with output 1 + (k + 1) tokens, a single step.
        single = tiny_evaluator.evaluate(DesignPoint(
            model=tiny_config, device="h100-sxm", batch=4, prompt=200, output=k + 2, execution="engine",
            knobs=(("acceptance", 1.0), ("spec_draft", "medusa"), ("spec_tokens", k)))).metrics["tpot_s"] * (k + 1)
        assert decode_s == pytest.approx(steps * single, rel=0.05)  # later steps read a few more keys


def test_the_draft_holds_its_weights_and_cache(tiny_config, tiny_evaluator, draft):
    plain = tiny_evaluator.evaluate(point(tiny_config)).metrics["peak_memory_B"]
    drafted = tiny_evaluator.evaluate(point(tiny_config, spec_draft=draft, acceptance=0.5)).metrics["peak_memory_B"]
    # The draft's KV: keys and values of 1 layer x 2 KV heads x 8 dims (32 / 4 heads) at 2 bytes, 232 tokens x 4.
    assert drafted - plain >= 2 * 1 * 2 * 8 * 2 * 232 * 4


def test_blocks_take_the_reference_path(tiny_config, tiny_evaluator, draft):
    points = [DesignPoint(model=tiny_config, device="h100-sxm", batch=4, prompt=200, output=9,
                          overrides=(("memory.bandwidth_GBps", bw),),
                          knobs=(("acceptance", 0.7), ("spec_draft", draft)))
              for bw in (1000.0, 3000.0)]
    for p, block in zip(points, evaluate_points(tiny_evaluator, points), strict=True):
        assert block["tpot_s"] == tiny_evaluator.evaluate(p).metrics["tpot_s"]


def test_a_draft_models_first_step_runs_the_verified_tokens_and_the_sampled_one(tiny_config, tiny_evaluator, draft):
    """vLLM v1's DraftModelProposer (vllm/v1/spec_decode/draft_model.py, set_inputs_first_pass) runs its first step of
    each speculative step over the k + 1 tokens the target verified (the rejected ones as padding) and the token the
    target sampled after them, k + 2 a sequence, and samples one logit a sequence; its other k - 1 steps run a token.
    k = 2, 4 sequences: 16 tokens. By hand, the draft (hidden 32, 4 query heads and 2 KV heads of 8, FFN 64, one
    layer, vocabulary 128): q and o 32 x 32, k and v 32 x 16, gate, up and down 32 x 64, 9,216 weights a token, so
    2 x 16 x 9,216 GEMM FLOPs, and the LM head 2 x 4 x 32 x 128 (one row a sequence); its other step, the one-token
    decode step, 2 x 4 x (9,216 + 4,096). Served, the replica's speculation runs the first step over 4 tokens of each
    decode (tests/sim/test_speculative.py prices its shape). Before, the first step was the one-token decode step."""
    p = replace(point(tiny_config, spec_draft=draft, spec_tokens=2, acceptance=0.8), execution="eager")
    tables = tiny_evaluator.speculative_tables(p, tiny_evaluator.point_tables(p, tiny_evaluator.point_device(p)))
    assert tables.draft_query == 4
    first, rest = tables.draft_first, tables.draft.decode
    assert first.flops[np.isin(first.kind, GEMM)].sum() == 2 * 16 * 9216 + 2 * 4 * 32 * 128
    assert rest.flops[np.isin(rest.kind, GEMM)].sum() == 2 * 4 * (9216 + 4096)
    served = serving_point(tiny_config, spec_draft=draft, spec_tokens=2, acceptance=0.8)
    device = tiny_evaluator.point_device(served)
    assert tiny_evaluator._serving_speculation(served, served.numeric_format, "serve", device).draft_query == 4


@pytest.mark.parametrize("kind", ["draft", "medusa"])
def test_the_verification_computes_logits_at_every_verified_token(tiny_config, tiny_evaluator, draft, kind):
    """vLLM v1's rejection sampler takes the target's logits at each drafted token and at the bonus one, k + 1 rows a
    sequence (vllm/v1/sample/rejection_sampler.py: logits of num_tokens + batch_size rows). By hand, the tiny target
    (hidden 64, vocabulary 128), 4 sequences, k = 3: the LM head 2 x 4 x 4 x 64 x 128 = 262,144 FLOPs and the logits
    4 x 4 x 128 bf16 values, 4,096 B; a plain decode step's LM head one row a sequence, 2 x 4 x 64 x 128 = 65,536 FLOPs
    (Medusa's own heads, medusa_head.*, are apart). Before, the verification's LM head ran on the last token only."""
    name = draft if kind == "draft" else "medusa"
    p = replace(point(tiny_config, spec_draft=name, spec_tokens=3, acceptance=0.8), execution="eager")
    plain = tiny_evaluator.point_tables(p, tiny_evaluator.point_device(p))
    tables = tiny_evaluator.speculative_tables(p, plain)

    def lm_head(table) -> list:
        return [kernel for kernel in table.kernels if kernel.module == "lm_head"]

    (verify_head,), (decode_head,) = lm_head(tables.verify), lm_head(plain.decode)
    assert verify_head.flops == 2 * 4 * 4 * 64 * 128
    assert verify_head.act_bytes >= 4 * 4 * 128 * 2
    assert decode_head.flops == 2 * 4 * 64 * 128


def test_check_finds_the_verification_a_run_traced(tiny_config, tmp_path, monkeypatch, capsys):
    """explore check counts the verification's trace as the run takes it, logits at every verified token: once a run
    has captured a Medusa point's passes (the target's prefill and decode, its verification of k + 1 = 3 tokens a
    sequence, at the batch of 2 and at one sequence), none of the 4 traces is left to capture. Before, check looked
    for a verification sampling one token."""
    from explore.runner import run_sweep
    from explore.sweep import load_sweep

    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))  # empty: nothing traced yet
    path = write_sweep(tmp_path, f"name: s\nmodel: {tiny_config}\ndevice: h100-sxm\n"
                                 "workload: {batch: 2, prompt: 16, output: 4, spec_draft: medusa, spec_tokens: 2}\n")
    run_sweep(load_sweep(path), tmp_path / "out")
    capsys.readouterr()
    assert main(["check", path]) == 0
    assert "0 of 4 traces to capture" in capsys.readouterr().out


def serving_point(model: str, seed: int = 0, **knobs) -> DesignPoint:
    spec = ServingSpec(requests=12, rate_per_s=50.0, prompt=Fixed(tokens=200), output=Fixed(tokens=24), seed=seed)
    return DesignPoint(model=model, device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0, serving=spec,
                       execution="engine", knobs=tuple(sorted(knobs.items())))


def served_together(evaluator, model: str, knobs: tuple, batch: int, prompt: int, output: int, tmp_path,
                    seeds: range = range(5)) -> dict[str, float]:
    """The mean metrics over `seeds` of a static batch served: `batch` requests of `prompt` + `output` tokens
    arriving at once on the static scheduler, each drawing its own speculation."""
    trace = tmp_path / "together.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n" + f"0,{prompt},{output}\n" * batch)
    runs = [evaluator.evaluate(DesignPoint(
        model=model, device="h100-sxm", batch=batch, prompt=0, output=0, execution="engine", knobs=knobs,
        serving=ServingSpec(requests=batch, arrival="trace", trace=str(trace), rate_per_s=None, scheduler="static",
                            max_seqs=batch, max_batched_tokens=batch * prompt, seed=seed))).metrics for seed in seeds]
    return {name: float(np.mean([run[name] for run in runs])) for name in ("tokens_per_s", "decode_tokens_per_s",
                                                                           "tpot_s")}


@pytest.mark.parametrize("kind", ["draft", "medusa"])
def test_a_static_batch_finishes_as_its_sequences_served_together_do(tiny_config, tiny_evaluator, draft, kind,
                                                                      tmp_path):
    """The closed form (a sequence's expected steps, cheaper as others finish, and the steps the batch's slowest
    sequences take after it) against the serving simulation of the same batch: 32 requests arriving at once on the
    static scheduler, each drawing its own acceptances, over five seeds. Tokens/s and decode tokens/s (over the
    makespan, and from the first token to it: the batch waits for its slowest sequence) and mean TPOT agree within
    4%. Priced as its mean sequence alone, the batch's tokens/s
    was 15-20% above the simulation's: this host-bound tiny model's steps cost the same with fewer sequences."""
    batch, prompt, output = 32, 200, 96
    knobs = (("acceptance", 0.6), ("spec_draft", draft if kind == "draft" else "medusa"), ("spec_tokens", 4))
    result = tiny_evaluator.evaluate(DesignPoint(model=tiny_config, device="h100-sxm", batch=batch, prompt=prompt,
                                                 output=output, execution="engine", knobs=knobs)).result
    static = result.metrics()
    assert sum(result.time_by_class_s.values()) == pytest.approx(result.makespan_s, rel=1e-9)  # the tail's too
    served = served_together(tiny_evaluator, tiny_config, knobs, batch, prompt, output, tmp_path)
    for name in ("tokens_per_s", "decode_tokens_per_s", "tpot_s"):
        assert static[name] == pytest.approx(served[name], rel=0.04), name
    assert static["tokens_per_s"] < batch * output / static["e2e_s"]  # the makespan is past the mean's finish


@pytest.mark.parametrize("kind", ["draft", "medusa"])
def test_serving_speculates_with_the_same_draws_for_the_same_seed(tiny_config, tiny_evaluator, draft, kind):
    name = draft if kind == "draft" else "medusa"
    plain = tiny_evaluator.evaluate(serving_point(tiny_config)).metrics
    nothing = tiny_evaluator.evaluate(serving_point(tiny_config, spec_draft=name, acceptance=0.0)).metrics
    assert nothing["tpot_s"] >= plain["tpot_s"]
    runs = [tiny_evaluator.evaluate(serving_point(tiny_config, seed=s, spec_draft=name, acceptance=0.7)).metrics
            for s in (3, 3)]
    assert runs[0]["tpot_s"] == runs[1]["tpot_s"] and runs[0]["e2e_s"] == runs[1]["e2e_s"]
    every = tiny_evaluator.evaluate(serving_point(tiny_config, spec_draft=name, acceptance=1.0)).metrics
    assert every["tpot_s"] < runs[0]["tpot_s"] < nothing["tpot_s"]


@pytest.mark.parametrize(("kind", "slots"), [("draft", 6), ("medusa", 3)])
def test_a_drafts_decoding_sequence_holds_the_slots_of_its_next_proposals(tiny_config, tiny_evaluator, draft, kind,
                                                                          slots):
    """vLLM v1's scheduler holds a decoding sequence's blocks for its next token, the k = 3 drafted tokens it
    verifies and, for a draft that proposes after the pass, k more (num_lookahead_tokens = num_spec_tokens for a draft
    model or an EAGLE/MTP module): 3 + 3 slots past the next token; Medusa's heads write no KV: 3."""
    point = serving_point(tiny_config, spec_draft=draft if kind == "draft" else "medusa", spec_tokens=3)
    assert tiny_evaluator._pool(point, NumericFormat(), "serve", 1).limits.lookahead_slots == slots


@pytest.mark.parametrize(("knobs", "message"), [
    ("acceptance: 1.5", "workload.acceptance: found 1.5, allowed: "),
    ("acceptance: -0.1", "workload.acceptance: found -0.1"),
    ("spec_tokens: 0", "workload.spec_tokens: found 0"),
    ("spec_tokens: 1000", "workload.spec_tokens: found 1000, allowed: "),
    ("spec_draft: no-such-model", "workload.spec_draft: found 'no-such-model'"),
    ("retrieval_heads: 2", "workload.retrieval_heads: found 2"),
])
def test_bad_sweep_values_get_one_line_and_exit_2(tiny_config, tmp_path, capsys, knobs, message):
    path = write_sweep(tmp_path, f"name: s\nmodel: {tiny_config}\ndevice: h100-sxm\nworkload: {{{knobs}}}\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_draft_larger_than_the_target_is_refused(tiny_config, draft, tmp_path, capsys):
    path = write_sweep(tmp_path,
                       f"name: s\nmodel: {draft}\ndevice: h100-sxm\nworkload: {{spec_draft: {tiny_config}}}\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err
    assert "workload.spec_draft: found" in err and "allowed: a model smaller than the target" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["run", "--model", draft, "--device", "h100-sxm", "--spec-draft", tiny_config]) == 2
    err = capsys.readouterr().err
    assert "--spec-draft: found" in err and len(err.strip().splitlines()) == 1
    assert main(["run", "--model", tiny_config, "--device", "h100-sxm", "--acceptance", "2"]) == 2
    assert "--acceptance: found 2," in capsys.readouterr().err


def test_a_dense_draft_reading_more_a_token_than_an_moe_target_is_refused(tmp_path, capsys):
    """Qwen3-8B (8.19 B parameters) for Qwen3-30B-A3B, which reads 3.35 B of its 30.5 B a token (by hand:
    tests/sim/test_speculative.py): a slower step than the target's at batch 1, refused by the sweep check in one
    line (explore run refuses through the same draft_error: test_a_draft_larger_than_the_target_is_refused)."""
    path = write_sweep(tmp_path, "name: s\nmodel: qwen3-30b-a3b\ndevice: h100-sxm\nworkload: {spec_draft: qwen3-8b}\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err
    assert "workload.spec_draft: found qwen3-8b (8.19 B parameters active per token)" in err
    assert len(err.strip().splitlines()) == 1



@pytest.fixture(scope="module")
def short_draft(tmp_path_factory) -> str:
    """The tiny draft with a context of 128 tokens (the target's: 2,048)."""
    path = tmp_path_factory.mktemp("short-draft") / "config.json"
    path.write_text(json.dumps(DRAFT_CONFIG | {"max_position_embeddings": 128}))
    return str(path)


def static_metrics(evaluator, model: str, prompt: int, output: int, **knobs) -> dict:
    return evaluator.evaluate(DesignPoint(model=model, device="h100-sxm", batch=1, prompt=prompt, output=output,
                                          execution="engine", knobs=tuple(sorted(knobs.items())))).metrics


def test_a_static_batch_past_the_drafts_context_verifies_zero_drafts(tiny_config, tiny_evaluator, draft, short_draft):
    """vLLM v1 drafts after a pass only where the batch's longest sequence + k stays within the draft's context
    (vllm/v1/worker/gpu_model_runner.py _input_fits_in_drafter: max_seq_len + num_spec_tokens <=
    effective_drafter_max_model_len); past it sample_tokens hands every sequence k zero draft tokens, which the next
    pass verifies (Scheduler.update_draft_token_ids keeps them) and rejects. A 200-token prompt and the 128-token
    draft: 200 + 4 passes 128 after the prefill, so the draft never runs, its prefill neither (the first token comes
    as early as without a draft), and each of the 32 steps verifies 5 tokens a sequence for one: slower than plain
    decoding, and the same whatever the acceptance. A 100-token prompt, k = 4 all accepted: steps at 0, 5, 10, 15 and
    20 decode tokens draft (a verification holding 100 + s + 5 tokens fits while s <= 19), so 28 outputs take the
    steps 26 outputs do and 2 steps of zero drafts, at 130 and 131 keys: what the 2 steps of a 125-token prompt (past
    the draft's context from its prefill) take, and more than plain decoding's 2 steps there. Before (vLLM v0's
    Top1Proposer, per sequence), a sequence past the draft's context decoded one query token a step, as plain
    decoding, and the draft computed its KV of a prompt past its context."""
    def decode_s(metrics: dict) -> float:
        return metrics["e2e_s"] - metrics["ttft_s"]

    drafting = {"spec_tokens": 4, "acceptance": 1.0}
    past = static_metrics(tiny_evaluator, tiny_config, 200, 33, spec_draft=short_draft, **drafting)
    rejected = static_metrics(tiny_evaluator, tiny_config, 200, 33, spec_draft=short_draft, spec_tokens=4,
                              acceptance=0.0)
    plain = static_metrics(tiny_evaluator, tiny_config, 200, 33)
    assert past["ttft_s"] == pytest.approx(plain["ttft_s"], rel=1e-9)
    assert decode_s(past) == pytest.approx(decode_s(rejected), rel=1e-9)
    assert decode_s(past) > decode_s(plain)
    crossing = static_metrics(tiny_evaluator, tiny_config, 100, 28, spec_draft=short_draft, **drafting)
    drafted = static_metrics(tiny_evaluator, tiny_config, 100, 26, spec_draft=short_draft, **drafting)
    never = static_metrics(tiny_evaluator, tiny_config, 125, 3, spec_draft=short_draft, **drafting)
    assert decode_s(crossing) - decode_s(drafted) == pytest.approx(decode_s(never), rel=1e-6)
    plain_two = (decode_s(static_metrics(tiny_evaluator, tiny_config, 100, 28))
                 - decode_s(static_metrics(tiny_evaluator, tiny_config, 100, 26)))
    assert decode_s(never) > plain_two * (1 + 1e-6)


def test_a_served_batch_past_the_drafts_context_verifies_zero_drafts(tiny_config, tiny_evaluator, short_draft):
    """One request of a 100-token prompt and 28 outputs, the 128-token draft drafting k = 4 tokens all accepted: the
    draft runs after the prefill (100 + 4 <= 128) and after the verifications at 100, 105, 110 and 115 cached tokens
    (each of 5 tokens: 105 + 4 ... 120 + 4 <= 128), not after the one at 120 (125 + 4 > 128): its next two iterations,
    at 125 and 126 cached tokens, verify 4 zero drafts each and yield a token each (vllm/v1/worker/gpu_model_runner.py
    _input_fits_in_drafter, sample_tokens). They take what a 125-token prompt's two decode iterations take (past the
    draft's context from its prefill), longer than plain decoding's there (5 query tokens, not 1). Before (vLLM v0),
    the last two decoded one token each, as plain decoding."""
    def serving(prompt: int, output: int, requests: int = 1, **knobs):
        spec = ServingSpec(requests=requests, rate_per_s=1e6, prompt=Fixed(tokens=prompt), output=Fixed(tokens=output))
        return tiny_evaluator.evaluate(DesignPoint(model=tiny_config, device="h100-sxm", batch=spec.max_seqs, prompt=0,
                                                   output=0, serving=spec, execution="engine",
                                                   knobs=tuple(sorted(knobs.items()))))

    drafting = {"spec_draft": short_draft, "spec_tokens": 4, "acceptance": 1.0}
    crossing = serving(100, 28, **drafting).result.iterations
    never = serving(125, 3, **drafting).result.iterations
    plain = serving(100, 28).result.iterations
    assert len(crossing) == 1 + 7 and len(never) == 1 + 2 and len(plain) == 1 + 27
    assert crossing.duration_s[-2:] == pytest.approx(never.duration_s[-2:], rel=1e-9)
    assert (crossing.duration_s[-2:] > plain.duration_s[-2:] * (1 + 1e-6)).all()


def test_a_decode_pools_second_run_starts_with_every_sequence_drafting(tiny_config, tiny_evaluator, short_draft):
    """A capacity search runs the same pools at several rates: the request that crossed the draft's context in one run
    (its last two iterations verifying zero drafts) must start the next drafting, as in the first. Behind a prefill
    pool its first decode iteration is its first in the decode pool (no prefill there to decide again). The same
    requests twice on one prefill and one decode pool: the same iterations of the same durations."""
    from sim.serving import serve_pools

    spec = ServingSpec(requests=1, rate_per_s=1e6, prompt=Fixed(tokens=100), output=Fixed(tokens=28),
                       prefill_replicas=1)
    point = DesignPoint(model=tiny_config, device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0, serving=spec,
                        execution="engine", knobs=(("acceptance", 1.0), ("spec_draft", short_draft),
                                                   ("spec_tokens", 4)))
    pools = [tiny_evaluator._pool(point, NumericFormat(), role, 1) for role in ("prefill", "decode")]
    requests = spec.request_set().clipped_to_context(2048)[0]
    first, second = (serve_pools(pools, requests).iterations for _ in range(2))
    assert len(second) == len(first)
    assert second.duration_s == pytest.approx(first.duration_s, rel=1e-12)


def test_a_serving_draft_whose_context_is_short_runs(tiny_config, short_draft, capsys):
    """A serving run with requests past the draft's context is not refused (they verify zero drafts past it)."""
    assert main(["run", "--model", tiny_config, "--device", "h100-sxm", "--spec-draft", short_draft, "--serving",
                 "--requests", "4", "--rate", "10", "--prompt", "200", "--output", "24"]) == 0
    capsys.readouterr()


def test_a_row_that_does_not_speculate_shows_no_acceptance(tiny_config, tmp_path, capsys):
    """An acceptance rate a derived: section computes (or a grid gives) beside spec_draft ['', medusa] is read by
    the drafting points only: the plain point's row shows none (empty, as a serving setting a point does not read),
    the Medusa point's the rate."""
    import csv

    path = write_sweep(tmp_path, f"name: s\nmodel: {tiny_config}\ndevice: h100-sxm\n"
                                 f"workload: {{batch: 2, prompt: 64, output: 8, spec_draft: ['', medusa]}}\n"
                                 f"derived: {{acceptance: '0.5 + 0.1 * (batch > 4)'}}\n")
    out = tmp_path / "out"
    assert main(["--quiet", path, "--out", str(out)]) == 0
    capsys.readouterr()
    with open(out / "results.csv", newline="") as file:
        rows = {row["spec_draft"]: row for row in csv.DictReader(file)}
    assert rows[""]["acceptance"] == "" and float(rows["medusa"]["acceptance"]) == 0.5


# Medusa-1 (Cai et al., "Medusa: Simple LLM Inference Acceleration Framework with Multiple Decoding Heads", ICML
# 2024; abstract: "Medusa-1 can achieve over 2.2x speedup without compromising generation quality", Vicuna-7B at
# batch 1 on an A100, through its PyTorch reference implementation: eager execution). Vicuna-7B v1.3 has
# LLaMA-7B's shapes, which the llama-2-7b preset shares (hidden 4096, 32 layers, 32 heads, vocab 32000).
# Acceptance: the paper's tree attains its acceleration from 5 heads whose top-1 accuracies on Vicuna-7B are
# 0.5604, 0.3164, 0.2010, 0.1474, 0.1175 (FasterDecoding/Medusa, assets/medusa_acc.csv, run "7b"); along the top-1
# chain, a head's token is kept when it and every head before it are right, so a step yields 1 + 0.5604 + 0.3164 +
# 0.2010 + 0.1474 + 0.1175 = 2.34 tokens; the acceptance rate below gives that E with k = 5 (eq. 1), a lower bound
# of the tree's. Tolerance: 2.2x within [1.6, 2.8] (the paper's figure is a mean over MT-bench categories whose
# speed-ups range from about 1.8x to 2.6x). And less at a large batch: the verification's GEMMs of 64 x 6 rows are
# compute-bound where plain decoding is not.
MEDUSA_TOKENS_PER_STEP = 1 + 0.5604 + 0.3164 + 0.2010 + 0.1474 + 0.1175


def acceptance_for(tokens: float, drafted: int) -> float:
    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if expected_tokens(mid, drafted) < tokens else (low, mid)
    return low


def medusa_speedup(evaluator, batch: int) -> float:
    base = DesignPoint(model="llama-2-7b", device="a100-sxm-80gb", batch=batch, prompt=256, output=256)
    knobs = (("acceptance", acceptance_for(MEDUSA_TOKENS_PER_STEP, 5)), ("spec_draft", "medusa"), ("spec_tokens", 5))
    return evaluator.evaluate(base).metrics["tpot_s"] / evaluator.evaluate(
        DesignPoint(**{**base.__dict__, "knobs": knobs})).metrics["tpot_s"]


def test_medusa_1_speedup_at_batch_1_and_less_at_batch_64(tiny_evaluator):
    at_1 = medusa_speedup(tiny_evaluator, 1)
    assert 1.6 <= at_1 <= 2.8
    assert medusa_speedup(tiny_evaluator, 64) < at_1


def sharded(model: str, tp: int, **knobs) -> DesignPoint:
    return DesignPoint(model=model, device="h100-sxm", batch=4, prompt=200, output=33, execution="engine", tp=tp,
                       knobs=tuple(sorted(knobs.items())))


def test_a_sharded_draft_holds_its_kv_heads_on_each_device_that_needs_them(tiny_config, tiny_evaluator, draft):
    """On four devices a draft of 2 KV heads keeps a copy of each on two of them (as the target does): its cache takes
    twice its one-device bytes, 1 layer x 2 KV heads x 8 dims x K and V x 2 B x 232 tokens x 4 sequences each."""
    one_copy_B = 2 * 1 * 2 * 8 * 2 * 232 * 4
    held = {}
    for tp in (1, 4):
        plain = tiny_evaluator.evaluate(sharded(tiny_config, tp)).metrics["peak_memory_B"]
        drafted = tiny_evaluator.evaluate(sharded(tiny_config, tp, spec_draft=draft, acceptance=0.5))
        held[tp] = drafted.metrics["peak_memory_B"] - plain
    assert held[4] - held[1] == pytest.approx(one_copy_B, rel=1e-9)


def test_medusa_heads_keep_their_first_matrix_on_every_device(tiny_config, tiny_evaluator):
    """Medusa's blocks are replicated over the tensor-parallel devices and its LM heads split by vocabulary (vLLM's
    Medusa): on two devices 4 heads hold one more copy of W1 and its bias, 4 x (64 x 64 + 64) bf16 values."""
    held = {}
    for tp in (1, 2):
        plain = tiny_evaluator.evaluate(sharded(tiny_config, tp)).metrics["peak_memory_B"]
        heads = tiny_evaluator.evaluate(sharded(tiny_config, tp, spec_draft="medusa", spec_tokens=4, acceptance=0.5))
        held[tp] = heads.metrics["peak_memory_B"] - plain
    assert held[2] - held[1] == pytest.approx(4 * (64 * 64 + 64) * 2, rel=1e-9)


@pytest.mark.parametrize("kind", ["draft", "medusa"])
def test_speculation_on_two_devices_keeps_the_one_device_laws(tiny_config, tiny_evaluator, draft, kind):
    """On two tensor-parallel devices speculation obeys what it obeys on one: more acceptance is never slower, and a
    draft's steps run its own all-reduces (a draft model's communication time grows with the drafted tokens)."""
    name = draft if kind == "draft" else "medusa"
    tpots = [tiny_evaluator.evaluate(sharded(tiny_config, 2, spec_draft=name, spec_tokens=4, acceptance=a))
             .metrics["tpot_s"] for a in (0.0, 0.4, 0.8, 1.0)]
    assert tpots == sorted(tpots, reverse=True) and tpots[0] > tpots[-1]
    if kind == "draft":
        comm = [tiny_evaluator.evaluate(sharded(tiny_config, 2, spec_draft=draft, spec_tokens=k, acceptance=0.0))
                .metrics["time_communication_s"] for k in (1, 2, 4)]
        assert comm[0] < comm[1] < comm[2]


def test_a_draft_that_cannot_shard_is_one_line(tiny_config, tmp_path, capsys):
    """A draft of 2 attention heads cannot split over 4 devices: refused naming the draft, as its target would be."""
    narrow = tmp_path / "narrow.json"
    narrow.write_text(json.dumps(DRAFT_CONFIG | {"num_attention_heads": 2, "num_key_value_heads": 1}))
    assert main(["run", "--model", tiny_config, "--device", "h100-sxm", "--tp", "4", "--spec-draft", str(narrow)]) == 2
    err = capsys.readouterr().err
    assert "--spec-draft:" in err and "with --tp 4" in err and "2 attention heads" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_serving_speculates_on_two_devices(tiny_config, tiny_evaluator, draft):
    """A serving run speculates on a tensor-parallel replica: the same seed gives the same run, and full acceptance
    of 4 drafted tokens serves the requests' decodes faster than none."""
    def run(acceptance: float) -> dict:
        p = serving_point(tiny_config, spec_draft=draft, spec_tokens=4, acceptance=acceptance)
        return tiny_evaluator.evaluate(DesignPoint(**{**p.__dict__, "tp": 2})).metrics
    names = ("ttft_s", "tpot_s", "e2e_s", "tokens_per_s", "energy_per_token_J")
    assert [run(0.9)[n] for n in names] == [run(0.9)[n] for n in names]
    assert run(1.0)["tpot_s"] < run(0.0)["tpot_s"]


def test_a_lone_request_pays_for_the_drafts_prefill_as_a_static_batch_does(tiny_config, tiny_evaluator, draft):
    """A draft model computes its own KV cache of the prompt before it can draft: one request served alone (its
    prefill in an iteration of no decodes) takes as long to its first token as the static batch of one, which adds the
    draft's prefill to the target's; and longer than without speculation. Before, a serving iteration without
    decodes priced the target alone, so the lone request's first token came as early as with no draft at all."""
    def serving(**knobs) -> dict:
        spec = ServingSpec(requests=1, rate_per_s=1.0, prompt=Fixed(tokens=200), output=Fixed(tokens=8))
        return tiny_evaluator.evaluate(DesignPoint(model=tiny_config, device="h100-sxm", batch=spec.max_seqs, prompt=0,
                                                   output=0, serving=spec, execution="engine",
                                                   knobs=tuple(sorted(knobs.items())))).metrics

    static = tiny_evaluator.evaluate(DesignPoint(model=tiny_config, device="h100-sxm", batch=1, prompt=200, output=8,
                                                 execution="engine",
                                                 knobs=(("acceptance", 0.5), ("spec_draft", draft))))
    alone = serving(spec_draft=draft, acceptance=0.5)
    assert alone["ttft_s"] == pytest.approx(static.metrics["ttft_s"], rel=1e-3)
    assert alone["ttft_s"] > serving()["ttft_s"]


def test_a_prefill_pool_computes_the_drafts_kv_it_hands_over(tiny_config, tiny_evaluator, draft):
    """Behind a prefill pool (prefill_replicas) the decode pool's draft drafts from its own KV of the prompt, which
    crosses with the target's: the prefill pool computes it, so a lone request's first token comes as late as where
    one replica prefills both models (the draft's prefill added to the target's), and later than without a draft.
    Before, the prefill pool ran the target alone: the draft's prefill was priced nowhere."""
    def first_token_s(prefill_replicas: int, **knobs) -> float:
        spec = ServingSpec(requests=1, rate_per_s=1.0, prompt=Fixed(tokens=200), output=Fixed(tokens=8),
                           prefill_replicas=prefill_replicas)
        return tiny_evaluator.evaluate(DesignPoint(model=tiny_config, device="h100-sxm", batch=spec.max_seqs,
                                                   prompt=0, output=0, serving=spec, execution="engine",
                                                   knobs=tuple(sorted(knobs.items())))).metrics["ttft_s"]

    drafting = {"spec_draft": draft, "acceptance": 0.5}
    assert first_token_s(1) == pytest.approx(first_token_s(0), rel=1e-3)  # the same device either way
    assert first_token_s(1, **drafting) == pytest.approx(first_token_s(0, **drafting), rel=1e-3)
    assert first_token_s(1, **drafting) > first_token_s(1)
