"""KV budgets at design points: a budget above what a point can cache is refused (sweep files and `explore run`),
and kv_budget_method (H2O, D2O: kernels/kv_eviction.py) keeps the budget by scores, in static batches, blocks and
serving runs."""

from __future__ import annotations

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from tests.explore.test_blocks import assert_blocks_agree, assert_same
from tests.explore.tiny_sweep import write_sweep

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

SERVING = ("serving: {requests: 8, rate: 20, prompt: {dist: fixed, tokens: 200}, output: {dist: fixed, tokens: 8}}\n")


def one_error(capsys) -> str:
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


@pytest.mark.parametrize(("workload", "derived", "needle"), [
    # 200 + 9 = 209 tokens: a budget of 210 is above the point's prompt + output.
    ("{batch: 4, prompt: 200, output: 9, kv_budget: [64, 210]}", "",
     "workload.kv_budget: found a budget of 210 tokens, allowed: at most the point's prompt + output (200 + 9) of 209"),
    # The grid pairs the shorter prompt with the larger budget: 100 + 9 < 150.
    ("{batch: 4, prompt: [100, 300], output: 9, kv_budget: [64, 150]}", "",
     "found a budget of 150 tokens, allowed: at most the point's prompt + output (100 + 9) of 109"),
    # A derived budget is checked at every combination of what it reads.
    ("{batch: 4, prompt: [100, 300], output: 9}", "derived: {kv_budget: 'prompt + 20'}",
     "derived.kv_budget: found a budget of 120 tokens"),
])
def test_a_sweep_with_a_budget_above_the_context_is_refused(tiny_config, tmp_path, capsys, workload, derived,
                                                            needle):
    path = write_sweep(tmp_path, f"name: kv\nmodel: {tiny_config}\ndevice: h100-sxm\nworkload: {workload}\n"
                                 f"{derived}\n")
    assert main(["check", path]) == 2
    assert needle in one_error(capsys)


def test_a_budget_within_every_point_is_valid(tiny_config, tmp_path, capsys):
    path = write_sweep(tmp_path, f"name: kv\nmodel: {tiny_config}\ndevice: h100-sxm\n"
                                 "workload: {batch: 4, prompt: [100, 300], output: 9, kv_budget: [0, 64, 109]}\n")
    assert main(["check", path]) == 0


def test_a_serving_sweep_budget_is_bounded_by_the_model_context(tiny_config, tmp_path, capsys):
    """The tiny model's context is 2,048 tokens (max_position_embeddings)."""
    ok = write_sweep(tmp_path, f"name: kv\nmodel: {tiny_config}\ndevice: h100-sxm\nworkload: {{kv_budget: 2048}}\n"
                               + SERVING)
    assert main(["check", ok]) == 0
    capsys.readouterr()
    bad = write_sweep(tmp_path, f"name: kv\nmodel: {tiny_config}\ndevice: h100-sxm\nworkload: {{kv_budget: 4096}}\n"
                                + SERVING)
    assert main(["check", bad]) == 2
    assert "workload.kv_budget: found a budget of 4,096 tokens, allowed: at most" in (line := one_error(capsys))
    assert "context (max_position_embeddings) of 2,048 tokens" in line


def test_explore_run_refuses_a_budget_above_the_context(tiny_config, capsys):
    code = main(["run", "--model", tiny_config, "--device", "h100-sxm", "--prompt", "200", "--output", "9",
                 "--kv-budget", "300"])
    assert code == 2
    assert one_error(capsys).startswith(
        "explore: error: --kv-budget: found a budget of 300 tokens, allowed: at most --prompt + --output (200 + 9) "
        "of 209 tokens")
    assert main(["run", "--model", tiny_config, "--device", "h100-sxm", "--prompt", "200", "--output", "9",
                 "--kv-budget", "64", "--kv-budget-method", "h2o", "--json"]) == 0


def point(model: str, method: str = "streaming", budget: int = 64, **fields) -> DesignPoint:
    knobs = (("kv_budget", budget),) + ((("kv_budget_method", method),) if method != "streaming" else ())
    return DesignPoint(model=model, device="h100-sxm", batch=4, prompt=400, output=9, execution="engine",
                       knobs=tuple(sorted(knobs)), **fields)


def test_scores_cost_time_in_decode_and_prefill(tiny_config, tiny_evaluator):
    """The same budget by H2O's scores: decode reads the scores too and the prefill runs unfused (slower than the
    window, which reads the same KV); D2O adds its similarity row; every method holds the budget, far below the
    whole cache."""
    whole = tiny_evaluator.evaluate(point(tiny_config, budget=0)).metrics
    window, h2o, d2o = (tiny_evaluator.evaluate(point(tiny_config, m)).metrics for m in ("streaming", "h2o", "d2o"))
    assert window["time_attention_s"] < h2o["time_attention_s"] < d2o["time_attention_s"]
    assert h2o["ttft_s"] > window["ttft_s"] == whole["ttft_s"]
    assert max(window["peak_memory_B"], h2o["peak_memory_B"], d2o["peak_memory_B"]) < whole["peak_memory_B"]
    assert window["peak_memory_B"] < h2o["peak_memory_B"]  # the accumulated scores are held


def test_a_budget_that_holds_the_context_merges_nothing(tiny_config, tiny_evaluator):
    """Batch 2, 300 + 40 tokens: decode steps attend to 301-340 keys. The tiny model's KV is 2 x 16 x 2 B x 2 KV heads
    = 128 B a token and layer; H2O's scores 2 B x (5 x 4 query heads + 2 x 2 KV heads) = 48 B every step, the argmin
    2 B x 2 KV heads = 4 B a step that evicts, D2O's merge the kept keys again, 16 x 2 B x 2 = 64 B. A budget of 340
    holds every token: nothing is evicted or merged, so D2O reads what H2O reads, the whole cache and its scores
    (x 1 + 48/128: the unfused attention's cost). At a budget of 100 every step evicts: H2O reads the window x (1 +
    (48 + 4)/128), D2O x (1 + (48 + 4 + 64)/128)."""
    from tests.explore.test_paper_duoattention import decode_kv_bytes

    def read(budget: int = 0, method: str = "") -> float:
        return decode_kv_bytes(tiny_evaluator, tiny_config, kv_budget=budget, kv_budget_method=method)

    whole = read()
    assert read(340, "d2o") == pytest.approx(read(340, "h2o")) == pytest.approx(whole * (1 + 48 / 128))
    window = read(100)
    assert read(100, "h2o") == pytest.approx(window * (1 + 52 / 128))
    assert read(100, "d2o") == pytest.approx(window * (1 + 116 / 128))


def test_the_method_needs_a_budget(tiny_config, tiny_evaluator):
    """Without a kv_budget there is nothing to evict to: the method changes nothing."""
    plain = tiny_evaluator.evaluate(point(tiny_config, budget=0)).metrics
    h2o = tiny_evaluator.evaluate(point(tiny_config, "h2o", budget=0)).metrics
    assert_same(plain, h2o, "h2o without a budget")


def test_blocks_agree_with_the_reference(tiny_config, tiny_evaluator):
    points = [point(tiny_config, method, overrides=(("memory.bandwidth_GBps", bandwidth),))
              for method in ("h2o", "d2o") for bandwidth in (1000.0, 3000.0)]
    assert_blocks_agree(tiny_evaluator, points)


def test_a_serving_run_with_h2o(tiny_config, tiny_evaluator):
    from sim.serving_spec import ServingSpec
    from workloads.requests import Fixed

    spec = ServingSpec(requests=8, rate_per_s=20.0, prompt=Fixed(tokens=200), output=Fixed(tokens=8))
    window, h2o = (tiny_evaluator.evaluate(DesignPoint(
        model=tiny_config, device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0, serving=spec,
        knobs=tuple(sorted((("kv_budget", 32),) + ((("kv_budget_method", m),) if m else ()))))).metrics
        for m in ("", "h2o"))
    assert h2o["time_attention_s"] > window["time_attention_s"]
    assert h2o["kv_utilization_max"] >= window["kv_utilization_max"]


@pytest.mark.parametrize("method", ["h2o", "d2o"])
def test_serving_iterations_price_the_static_batch(tiny_config, tiny_evaluator, method):
    """B identical requests at 0 on the static scheduler (the step template, its prefill attention unfused for the
    scored heads) cost what the static batch (the traced prefill, scored_prefill) costs: the eviction's prefill is
    priced alike in both, where the serving path used to run it fused."""
    from dataclasses import replace

    from tests.sim.test_serving import assert_serves_as_static

    assert_serves_as_static(tiny_evaluator, replace(point(tiny_config, method), execution="eager"))


def test_d2o_prices_merging_the_prompt_tokens_its_prefill_evicts(tiny_config, tiny_evaluator):
    """Batch 4, a 400-token prompt, a budget of 64: D2O's prefill evicts 336 tokens a sequence and merges each into its
    most similar kept key (Wan et al., Section 3.3), a GEMM in every layer of the 336 evicted keys against the 64 kept
    for each of 4 sequences x 2 KV heads of 16 dims: 2 x 336 x 64 x 16 x 8 = 5,505,024 FLOPs. Its first token comes
    later than H2O's, whose prefill is otherwise the same; before, the two were equal."""
    from kernels.kv_eviction import SIMILARITY_OP

    d2o = point(tiny_config, "d2o")
    tables = tiny_evaluator.point_tables(d2o, tiny_evaluator.point_device(d2o))
    merges = [kernel for kernel in tables.prefill.kernels if kernel.op == SIMILARITY_OP]
    layers = {kernel.layer for kernel in tables.prefill.kernels if kernel.layer is not None}
    assert len(merges) == len(layers) and {kernel.flops for kernel in merges} == {2 * 336 * 64 * 16 * 8}
    h2o_ttft, d2o_ttft = (tiny_evaluator.evaluate(point(tiny_config, m)).metrics["ttft_s"] for m in ("h2o", "d2o"))
    assert d2o_ttft > h2o_ttft
