"""DeepSeek's multi-token-prediction module as a speculative draft on design points (spec_draft: mtp): its memory, its
layout over tensor-parallel devices, static and serving runs, the assumptions explore run prints and what is refused,
on the tiny DeepSeek of tests/workloads/test_mtp.py (46,288 parameters of its own, bf16; one MLA layer of KV, 16 + 4
values a token: 40 B)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from sim.serving_spec import ServingSpec
from sim.step_costs import pass_execution
from sim.workload import BatchWorkload
from tests.explore.test_deepseek_points import TINY_DEEPSEEK
from tests.explore.tiny_sweep import write_sweep
from tests.workloads.test_mtp import GEMM, OWN_PARAMS, TINY_MTP
from workloads.requests import Fixed

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

MTP_KV_B_PER_TOKEN = (16 + 4) * 2


@pytest.fixture(scope="module")
def tiny_mtp(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny-mtp") / "config.json"
    path.write_text(json.dumps(TINY_MTP))
    return str(path)


@pytest.fixture(scope="module")
def tiny_deepseek(tmp_path_factory) -> str:
    """The same model without an MTP module."""
    path = tmp_path_factory.mktemp("tiny-deepseek") / "config.json"
    path.write_text(json.dumps(TINY_DEEPSEEK))
    return str(path)


def point(model: str, tp: int = 1, **knobs) -> DesignPoint:
    return DesignPoint(model=model, device="h100-sxm", batch=4, prompt=100, output=21, execution="engine", tp=tp,
                       knobs=tuple(sorted(knobs.items())))


def test_the_module_holds_its_weights_and_one_layer_of_kv(tiny_mtp, evaluator):
    """Beside the target: the module's own 46,288 bf16 parameters (not the embedding and LM head it shares) and its
    layer's KV of the prompt and every output token but the last, 4 x 120 tokens x 40 B."""
    plain, drafting = point(tiny_mtp), point(tiny_mtp, spec_draft="mtp", spec_tokens=2, acceptance=0.8)
    device, window = evaluator.point_device(plain), evaluator.kv_window(plain)
    batch = BatchWorkload(batch=4, prompt_len=100, output_len=21)
    before, after = (evaluator.batch_memory(p, device, batch, window) for p in (plain, drafting))
    assert after.weights_B - before.weights_B == OWN_PARAMS * 2
    assert after.kv_cache_B - before.kv_cache_B == 4 * 120 * MTP_KV_B_PER_TOKEN


def test_every_device_runs_eh_proj_whole_and_its_share_of_the_lm_head(tiny_mtp, evaluator):
    """vLLM's DeepSeekMultiTokenPredictorLayer builds eh_proj as an nn.Linear (every rank computes it whole) and the
    shared head as a ParallelLMHead (split by vocabulary); its layer's heads split as the target's."""
    def draft_decode(tp: int):
        p = point(tiny_mtp, tp=tp, spec_draft="mtp", spec_tokens=1, acceptance=0.8)
        return evaluator.speculative_tables(p, evaluator.point_tables(p, evaluator.point_device(p))).draft.decode

    one, two = draft_decode(1), draft_decode(2)

    def flops(table, module: str) -> float:
        return float(table.flops[np.array([k.module == module for k in table.kernels])].sum())

    assert flops(two, "eh_proj") == flops(one, "eh_proj") == 2 * 4 * 128 * 64
    assert flops(two, "lm_head") == flops(one, "lm_head") / 2
    assert flops(two, "layers.0.self_attn.q_proj") == flops(one, "layers.0.self_attn.q_proj") / 2


def test_the_module_prefills_the_prompt_to_fill_its_cache(tiny_mtp, evaluator):
    """vLLM runs the MTP layer over the prompt's tokens and the target's hidden states before it drafts: its prefill
    projects every one of the 4 x 100 tokens (eh_proj: 2 x 400 x 128 x 64 FLOPs), attends over their causal pairs and
    writes their latents (400 x 20 x 2 B), and the first token waits for it."""
    p = point(tiny_mtp, spec_draft="mtp", spec_tokens=1, acceptance=0.8)
    prefill = evaluator.speculative_tables(p, evaluator.point_tables(p, evaluator.point_device(p))).draft.prefill
    modules = np.array([k.module for k in prefill.kernels])
    assert list(prefill.flops[modules == "eh_proj"]) == [2 * 400 * 128 * 64]
    assert prefill.kv_bytes.sum() == 400 * 20 * 2
    assert evaluator.evaluate(p).metrics["ttft_s"] > evaluator.evaluate(point(tiny_mtp)).metrics["ttft_s"]


def test_each_speculative_step_drafts_first_over_the_verified_tokens(tiny_mtp, evaluator):
    """vLLM's EAGLE proposer (vllm/v1/spec_decode/eagle.py propose, prepare_inputs_padded) runs the module's first
    step over the k + 1 tokens the target verified, padded, and samples one logit a sequence; its other k - 1 steps
    run a token. k = 2, 4 sequences: 12 tokens. By hand (tests/workloads/test_mtp.py's counts): eh_proj 2 x 12 x 128 x
    64; the LM head 2 x 4 x 64 x 128; q, kv_a, o, the router and the shared expert 2 x 12 x their 12,288 weights; the
    absorbed bmms 2 x 4 heads x 12 x (8 x 16 + 16 x 6); 24 routed rows of 3 x 2 x 64 x 32 (run eagerly: the
    engine's fused MoE adds its activation's FLOPs). Its other steps are the one-token decode step."""
    p = replace(point(tiny_mtp, spec_draft="mtp", spec_tokens=2, acceptance=0.8), execution="eager")
    tables = evaluator.speculative_tables(p, evaluator.point_tables(p, evaluator.point_device(p)))
    first = tables.draft_first
    modules = np.array([k.module for k in first.kernels])
    assert list(first.flops[modules == "eh_proj"]) == [2 * 12 * 128 * 64]
    assert list(first.flops[modules == "lm_head"]) == [2 * 4 * 64 * 128]
    gemm = np.isin(first.kind, GEMM)
    by_hand = (2 * 12 * (8192 + 3072 + 1280 + 1536 + 256 + 6144) + 2 * 4 * 8192 + 2 * 4 * 12 * (8 * 16 + 16 * 6)
               + 24 * 3 * 2 * 64 * 32)
    assert first.flops[gemm].sum() == by_hand
    assert tables.draft.decode.flops[np.isin(tables.draft.decode.kind, GEMM)].sum() == (
        2 * 4 * (8192 + 3072 + 1280 + 1536 + 256 + 6144 + 8192) + 2 * 4 * 4 * (8 * 16 + 16 * 6) + 8 * 3 * 2 * 64 * 32)


def test_each_speculative_step_runs_the_first_step_and_k_minus_1_one_token_steps(tiny_mtp, evaluator):
    """k = 3 at full acceptance: a step yields 4 tokens, so an output of 9 tokens takes one speculative step more than
    one of 5, and that step costs, in GEMM time (which no key length moves), one verification, one first step of the
    module over the 4 verified tokens of each of 4 sequences (eh_proj 2 x 16 x 128 x 64 FLOPs, by hand) and k - 1 = 2
    of its one-token steps (eh_proj 2 x 4 x 128 x 64), each pass priced alone on the device."""
    def run(output: int) -> DesignPoint:
        return replace(point(tiny_mtp, spec_draft="mtp", spec_tokens=3, acceptance=1.0), output=output)

    longer, shorter = (evaluator.evaluate(run(output)).metrics["time_gemm_s"] for output in (9, 5))
    device = evaluator.point_device(run(5))
    tables = evaluator.speculative_tables(run(5), evaluator.point_tables(run(5), device))
    first, one_token = tables.draft_first, tables.draft.decode
    for table, rows in ((first, 16), (one_token, 4)):
        assert [k.flops for k in table.kernels if k.module == "eh_proj"] == [2 * rows * 128 * 64]

    def gemm_s(table) -> float:
        costs = device.cost_table(table, pass_execution(device, "engine", decode_only=True, tokens=16))
        return float(costs.time_s[table.class_masks["gemm"]].sum())

    assert longer - shorter == pytest.approx(gemm_s(tables.verify) + gemm_s(first) + 2 * gemm_s(one_token), rel=1e-9)


def test_explore_run_ops_shows_the_modules_first_step(tiny_mtp, capsys):
    """--ops lists the passes a point runs: with the module, its first step over the 3 verified tokens of each of 4
    sequences (eh_proj 2 x 12 x 128 x 64 FLOPs) beside its one-token decode step (2 x 4 x 128 x 64)."""
    assert main(["run", "--model", tiny_mtp, "--device", "h100-sxm", "--batch", "4", "--prompt", "100", "--output",
                 "21", "--spec-draft", "mtp", "--spec-tokens", "2", "--acceptance", "0.8", "--ops", "--json"]) == 0
    ops = json.loads(capsys.readouterr().out)["ops"]
    assert {r["phase"] for r in ops} == {"prefill", "draft_prefill", "verify", "draft_first", "draft_decode"}
    eh_proj = {r["phase"]: r["flops"] for r in ops if r["module"] == "eh_proj"}
    assert (eh_proj["draft_first"], eh_proj["draft_decode"]) == (2 * 12 * 128 * 64, 2 * 4 * 128 * 64)


def test_a_served_module_drafts_first_over_the_verified_tokens(tiny_mtp, evaluator):
    """Served, the draft's first step of an iteration takes the k + 1 verified tokens of each decode (a draft model's,
    one): the replica's speculation says so to Batch.draft_shapes (tests/sim/test_speculative.py)."""
    spec = ServingSpec(requests=8, rate_per_s=50.0, prompt=Fixed(tokens=100), output=Fixed(tokens=20))
    p = DesignPoint(model=tiny_mtp, device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0, serving=spec,
                    execution="engine", knobs=(("acceptance", 0.8), ("spec_draft", "mtp"), ("spec_tokens", 3)))
    device = evaluator.point_device(p)
    assert evaluator._serving_speculation(p, p.numeric_format, "serve", device).draft_query == 4


def test_static_speculation_never_slower_with_more_acceptance(tiny_mtp, evaluator):
    """At acceptance 0 the module only costs; more acceptance never slows a step's tokens."""
    plain = evaluator.evaluate(point(tiny_mtp)).metrics["tpot_s"]
    tpots = [evaluator.evaluate(point(tiny_mtp, spec_draft="mtp", spec_tokens=1, acceptance=a)).metrics["tpot_s"]
             for a in (0.0, 0.5, 0.9, 1.0)]
    assert tpots[0] > plain
    assert tpots == sorted(tpots, reverse=True)


def test_a_serving_run_drafts_with_the_module(tiny_mtp, evaluator):
    """Served, the module's steps and KV come with each replica: acceptance 0 is slower than plain decoding, 1 faster
    than 0.5, and the replica holds fewer KV blocks (each token's MTP latent beside the target's)."""
    def serve(**knobs):
        spec = ServingSpec(requests=8, rate_per_s=50.0, prompt=Fixed(tokens=100), output=Fixed(tokens=20))
        return evaluator.evaluate(DesignPoint(model=tiny_mtp, device="h100-sxm", batch=spec.max_seqs, prompt=0,
                                              output=0, serving=spec, execution="engine",
                                              knobs=tuple(sorted(knobs.items())))).metrics

    plain = serve()
    runs = [serve(spec_draft="mtp", spec_tokens=2, acceptance=a)["tpot_s"] for a in (0.0, 0.5, 1.0)]
    assert runs[0] > plain["tpot_s"]
    assert runs[2] < runs[1] < runs[0]


def test_explore_run_says_it_drafts_with_the_module(tiny_mtp, capsys):
    assert main(["run", "--model", tiny_mtp, "--device", "h100-sxm", "--spec-draft", "mtp", "--spec-tokens", "1",
                 "--acceptance", "0.9", "--execution", "engine"]) == 0
    assumptions = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("#"))
    assert ("speculative decoding: the target's multi-token-prediction module (eh_proj, its norms and one decoder "
            "layer with a KV cache of its own, the target's embedding and LM head shared: workloads/mtp.py) run once "
            "a step") in assumptions
    assert "accepted with probability 0.9 (1.90 tokens a step in expectation)" in assumptions


def test_a_model_without_the_module_is_refused_in_one_line(tiny_deepseek, tmp_path, capsys):
    name = Path(tiny_deepseek).parent.name  # a config.json is named by its folder
    assert main(["run", "--model", tiny_deepseek, "--device", "h100-sxm", "--spec-draft", "mtp"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"explore: error: --spec-draft: found 'mtp' with {name}, whose config has no "
                          f"num_nextn_predict_layers")
    assert "allowed: 'mtp' with a model that ships one" in err and len(err.strip().splitlines()) == 1
    path = write_sweep(tmp_path, f"name: s\nmodel: [deepseek-v3, {tiny_deepseek}]\ndevice: h100-sxm\n"
                                 f"workload:\n  spec_draft: mtp\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err
    assert f"{path}:5: workload.spec_draft: found 'mtp' with {name}, whose config has no" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_served_module_recomputes_the_last_block_of_each_prefix_hit(tiny_mtp, evaluator):
    """vLLM drops a prefix hit's last block where its draft reads the target's hidden states (use_eagle: mtp among
    its methods; sim/kv_cache.py PagedKVCache.cached_prefix). Requests starting with a 64-token prefix (4 blocks of
    16, cached from the start) find all 4 blocks plainly, 3 drafting with the module: hit rates 1 and 3 / 4."""
    def hit_rate(**knobs) -> float:
        spec = ServingSpec(requests=8, rate_per_s=50.0, prompt=Fixed(tokens=100), output=Fixed(tokens=4),
                           prefix_tokens=64)
        return evaluator.evaluate(DesignPoint(model=tiny_mtp, device="h100-sxm", batch=spec.max_seqs, prompt=0,
                                              output=0, serving=spec, execution="engine",
                                              knobs=tuple(sorted(knobs.items())))).metrics["prefix_hit_rate"]

    assert hit_rate() == 1.0
    assert hit_rate(spec_draft="mtp", spec_tokens=2, acceptance=0.8) == pytest.approx(3 / 4)
