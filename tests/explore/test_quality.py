"""Published quality per format (explore/quality.py, explore/data/quality.csv): the loader refuses malformed rows,
paper rows give quality_delta for matching points, other points get NaN with the reason, and a quality constraint
leaves points without a figure out."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.metrics import METRICS, numeric_metrics
from explore.quality import (
    TABLE_PATH,
    point_quality,
    quality_figure,
    read_table,
    shipped_table,
)
from explore.report import write_report
from explore.runner import run_sweep
from explore.sweep import Constraint, load_sweep
from kernels.formats import NumericFormat
from tests.explore.tiny_sweep import write_sweep
from workloads.errors import InputError
from workloads.model_config import preset_names

HEADER = ("model,method,paper,table,metric,context_tokens,baseline,value,weight_bits,act_bits,kv_bits,group_size,"
          "sparsity")
GOOD = "llama-2-7b,awq,paper,Table 1,wikitext2_ppl,2048,5.47,5.60,4,16,16,128,"


def _point(**fields) -> DesignPoint:
    return DesignPoint(model="llama-2-7b", device="a100-sxm-80gb", batch=1, prompt=128, output=16, **fields)


def test_the_shipped_table_loads_and_every_row_is_a_loss_against_its_own_baseline():
    rows = shipped_table()
    assert len(rows) >= 124
    # Every compression in these sources loses some perplexity against 16 bits (none reports a gain). Contexts: 2,048
    # (QServe, GPTQ, SqueezeLLM, KVQuant's LLaMA), 4,096 (Wanda, KVQuant's Llama-2), 8,192 (KVQuant's Llama-3 and
    # Mistral-7B) and torchao's 131,072-token block size (lm-eval whole documents).
    assert all(row.delta > 0 and row.paper and row.table and row.context_tokens in (2048, 4096, 8192, 131072)
               for row in rows)


@pytest.mark.parametrize(("line", "says"), [
    ("llama-2-7b,awq,paper,Table 1,wikitext2_ppl,2048,5.47,abc,4,16,16,128,", "value: found 'abc'"),
    ("llama-2-7b,awq,paper,Table 1,wikitext2_ppl,2048,,5.60,4,16,16,128,", "baseline: empty"),
    ("llama-2-7b,awq,paper,Table 1,wikitext2_ppl,2048,5.47,5.60,7,16,16,128,", "weight_bits: found 7"),
    ("llama-2-7b,awq,paper,Table 1,wikitext2_ppl,2048,5.47,5.60,4,16,16,128,5:4", "sparsity: found '5:4'"),
    ("llama-2-7b,awq,paper,Table 1,mmlu_acc,2048,5.47,5.60,4,16,16,128,", "metric: found 'mmlu_acc'"),
    ("llama-2-7b,awq,paper,Table 1,wikitext2_ppl,2048.5,5.47,5.60,4,16,16,128,", "context_tokens"),
    ("llama-2-7b,awq,paper,Table 1,wikitext2_ppl,2048,5.47,inf,4,16,16,128,", "value: found 'inf'"),
    ("llama-2-7b,awq,paper,Table 1,wikitext2_ppl,2048,5.47,5.60,4,16,16,128,,extra", "cells"),
])
def test_a_malformed_row_is_a_one_line_error_naming_file_and_line(tmp_path: Path, line: str, says: str):
    path = tmp_path / "quality.csv"
    path.write_text(f"{HEADER}\n{GOOD}\n{line}\n")
    with pytest.raises(InputError) as err:
        read_table(path)
    message = str(err.value)
    assert message.startswith(f"{path}: line 3: ") and says in message and "\n" not in message


def test_an_unknown_column_is_refused(tmp_path: Path):
    path = tmp_path / "quality.csv"
    path.write_text(f"{HEADER},element_kind\n{GOOD},int\n")
    with pytest.raises(InputError, match="header: found column 'element_kind'"):
        read_table(path)


def test_qserve_awq_row_gives_the_published_change_for_llama_2_7b_w4a16():
    """QServe (Lin et al. 2024, arXiv:2405.04532), github.com/mit-han-lab/qserve README Accuracy Evaluation table,
    WikiText2 perplexity at 2048 tokens, Llama-2 7B: FP16 5.47, AWQ W4A16 g128 5.60, GPTQ-R W4A16 g128 5.63. AWQ is
    the better of the two, so 'any' method gives AWQ's 0.13."""
    w4 = NumericFormat(weight_bits=4)
    awq = quality_figure("llama-2-7b", w4, "awq")
    assert awq.delta == pytest.approx(5.60 - 5.47) and "QServe" in awq.source and "awq" in awq.source
    assert quality_figure("llama-2-7b", w4, "gptq").delta == pytest.approx(5.63 - 5.47)
    assert quality_figure("llama-2-7b", w4).delta == pytest.approx(0.13)
    # Through a design point: its model preset's name, NumericFormat and quant_method knob.
    assert point_quality(_point(weight_bits=4)).delta == pytest.approx(0.13)
    assert point_quality(_point(weight_bits=4, knobs=(("quant_method", "gptq"),))).delta == pytest.approx(0.16)


def test_a_config_file_named_as_a_preset_has_the_presets_figure_only_with_its_shapes(tmp_path: Path):
    """A row is a published model's figure: a config.json of one's own that keeps a preset's name but not its shapes
    (Llama-2-7B cut to 16 layers, saved as llama-2-7b.json) is another model, so it has no figure (it had AWQ's +0.13)
    and quality_source names the field that differs; a verbatim copy under that name keeps +0.13, and 16-bit dense
    stays 0 (the baseline) for any model."""
    preset = json.loads((Path(__file__).parents[2] / "workloads" / "presets" / "llama-2-7b.json").read_text())
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "llama-2-7b.json").write_text(json.dumps(preset))
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "llama-2-7b.json").write_text(json.dumps(preset | {"num_hidden_layers": 16}))
    copy, cut = (str(tmp_path / folder / "llama-2-7b.json") for folder in ("copy", "cut"))
    assert point_quality(dataclasses.replace(_point(weight_bits=4), model=copy)).delta == pytest.approx(0.13)
    figure = point_quality(dataclasses.replace(_point(weight_bits=4), model=cut))
    assert math.isnan(figure.delta) and "num_layers 16" in figure.source and "32" in figure.source
    assert point_quality(dataclasses.replace(_point(), model=cut)).delta == 0.0


def test_a_field_that_changes_nothing_does_not_hide_the_figure():
    """edge_layers says how many edge layers edge_layer_bits keeps at other bits: with no edge bits it changes
    nothing, so W4A16 with edge_layers 2 is AWQ's W4A16 (0.13); with edge bits it is another format."""
    w4 = NumericFormat(weight_bits=4)
    assert quality_figure("llama-2-7b", dataclasses.replace(w4, edge_layers=2)).delta == pytest.approx(0.13)
    assert math.isnan(quality_figure("llama-2-7b", dataclasses.replace(w4, edge_layers=2, edge_layer_bits=8)).delta)


def test_a_predictor_with_every_activation_kept_does_not_hide_the_figure():
    """act_predictor chooses which activations act_kept < 1 keeps: at act_kept 1 nothing is dropped, so W4A16 with
    act_predictor deja_vu is AWQ's W4A16 (QServe's table: 5.47 -> 5.60); with act_kept 0.5 it is another format."""
    w4 = NumericFormat(weight_bits=4)
    assert quality_figure("llama-2-7b", dataclasses.replace(w4, act_predictor="deja_vu")).delta == \
        pytest.approx(5.60 - 5.47)
    assert math.isnan(quality_figure("llama-2-7b", dataclasses.replace(w4, act_kept=0.5, act_predictor="deja_vu"))
                      .delta)


@pytest.mark.parametrize("scales", [{"scale_granularity": "channel"}, {"scale_type": "e8m0"},
                                    {"scale_granularity": "tensor"}])
def test_weight_scale_fields_change_nothing_at_16_bit_weights(scales: dict):
    """How quantized weights store their scales says nothing of 16-bit weights: 16-bit weights pruned 2:4 keep
    SparseGPT's figure (Wanda's README: 5.12 -> 10.17) and a 4-bit KV cache alone Atom's (KVQuant Table 18: 5.12 ->
    5.32) whatever the scale fields say; the same fields on 4-bit weights are another format."""
    assert quality_figure("llama-2-7b", NumericFormat(sparsity="2:4", **scales)).delta == pytest.approx(10.17 - 5.12)
    assert quality_figure("llama-2-7b", NumericFormat(kv_bits=4, **scales)).delta == pytest.approx(5.32 - 5.12)
    assert math.isnan(quality_figure("llama-2-7b", NumericFormat(weight_bits=4, **scales)).delta)


def test_spqr_groups_of_8_sizing_a_4_bit_kv_cache_beside_16_bit_weights_have_no_figure_not_a_crash():
    """16-bit weights with SpQR's statistics allow groups of 8, which then size a 4-bit KV cache's scales (no published
    row has them): the figure is NaN naming the group size, where matching put the scale type back to fp16 beside
    the group of 8, a format NumericFormat refuses (a traceback from explore run)."""
    figure = quality_figure("llama-2-7b", NumericFormat(kv_bits=4, scale_type="spqr3", group_size=8))
    assert math.isnan(figure.delta) and "group_size=128 vs 8" in figure.source


def test_the_head_is_kept_as_the_method_keeps_it():
    """AWQ's W4A16 figure is of AWQ's own model, whose LM head and embeddings stay at 16 bits: a point keeping them at
    16 bits (head_bits 16) gets it, as one that leaves head_bits at weight_bits does (the table does not say)."""
    w4 = NumericFormat(weight_bits=4)
    assert quality_figure("llama-2-7b", dataclasses.replace(w4, head_bits=16)).delta == pytest.approx(0.13)


def test_wanda_readme_keeps_the_paper_conclusion_at_2_4_on_llama_2_7b():
    """Wanda (Sun et al. 2023, arXiv:2306.11695), github.com/locuslab/wanda README LLaMA-2 table (context 4096):
    llama2-7b dense 5.12, 2:4 SparseGPT 10.17, Wanda 11.02, magnitude 54.59. At 2:4 on 7B SparseGPT is the best,
    and every 2:4 pruning loses more than 4-bit weights do (QServe: +0.13)."""
    fmt = NumericFormat(sparsity="2:4")
    best = quality_figure("llama-2-7b", fmt)
    assert best.delta == pytest.approx(10.17 - 5.12) and "sparsegpt" in best.source and "4096" in best.source
    assert quality_figure("llama-2-7b", fmt, "wanda").delta == pytest.approx(11.02 - 5.12)
    assert best.delta > quality_figure("llama-2-7b", NumericFormat(weight_bits=4)).delta


def test_wanda_readme_unstructured_rows_give_its_50_percent_figures():
    """The same README table's unstructured 50% rows (llama2-7b: magnitude 14.89, SparseGPT 6.51, Wanda 6.42;
    llama2-70b: SparseGPT and Wanda both 3.98, dense 3.12): a point pruned unstructured:0.5 reads them, Wanda the best
    on 7B; unstructured pruning loses less than 2:4 at the same 50% (the paper's point that N:M costs accuracy), and
    another share has no row."""
    half = NumericFormat(sparsity="unstructured:0.5")
    best = quality_figure("llama-2-7b", half)
    assert best.delta == pytest.approx(6.42 - 5.12) and "wanda" in best.source
    assert quality_figure("llama-2-7b", half, "magnitude").delta == pytest.approx(14.89 - 5.12)
    assert quality_figure("llama-2-70b", half).delta == pytest.approx(3.98 - 3.12)
    assert best.delta < quality_figure("llama-2-7b", NumericFormat(sparsity="2:4")).delta
    assert math.isnan(quality_figure("llama-2-7b", NumericFormat(sparsity="unstructured:0.7")).delta)


def test_16_bit_dense_is_zero_by_definition():
    figure = quality_figure("any-model-at-all", NumericFormat())
    assert figure.delta == 0.0 and "16-bit" in figure.source


@pytest.mark.parametrize(("knobs", "says"), [
    ((("kv_budget", 64),), "kv_budget=64"),  # StreamingLLM's window: the evicted tokens are never attended again
    ((("kv_budget", 64), ("kv_budget_method", "h2o")), "kv_budget=64"),
    ((("retrieval_heads", 0.5),), "retrieval_heads=0.5"),  # DuoAttention's streaming heads keep 64 + 256 tokens
    ((("topk_fraction", 0.25),), "topk_fraction=0.25"),  # Quest attends to a quarter of the cache
    ((("exit_depth", 0.5),), "exit_depth=0.5"),  # half the layers skipped per token
    ((("prompt_kept", 0.4),), "prompt_kept=0.4"),  # LazyLLM's later layers see 40% of the prompt
])
def test_a_lossy_decode_time_technique_has_no_figure_not_zero(knobs, says):
    """A 16-bit dense point is the baseline only while it computes what the model computes: KV eviction, streaming
    heads, top-k token selection, layer skipping and prompt-token pruning change the outputs, and no row of the table
    measured them, so quality_delta is NaN with the reason (it read 0 'by definition'), also beside a format that has
    a figure (AWQ's W4A16 +0.13 on its own)."""
    for fields in ({}, {"weight_bits": 4}):
        # 1,024 prompt tokens: past DuoAttention's window of 320, which holds a shorter context whole.
        figure = point_quality(dataclasses.replace(_point(**fields, knobs=knobs), prompt=1024))
        assert math.isnan(figure.delta) and says in figure.source and "no published figure" in figure.source


def test_the_reason_names_only_the_eviction_knobs_a_point_sets():
    """DuoAttention's streaming heads without a KV budget keep its own window: the reason names retrieval_heads, not
    a kv_budget of 0 the point never set (it read 'kv_budget=0 with retrieval_heads=0.25', as if the budget were 0
    tokens); a budget names itself, and both name both."""
    def source(knobs) -> str:
        return point_quality(dataclasses.replace(_point(knobs=knobs), prompt=1024)).source

    assert "retrieval_heads=0.25" in source((("retrieval_heads", 0.25),))
    assert "kv_budget" not in source((("retrieval_heads", 0.25),))
    assert "kv_budget=64" in source((("kv_budget", 64),)) and "retrieval_heads" not in source((("kv_budget", 64),))
    assert "kv_budget=64 with retrieval_heads=0.5" in source((("kv_budget", 64), ("retrieval_heads", 0.5)))


def test_lossless_decode_time_choices_keep_the_formats_figure():
    """Speculative decoding verifies every token against the target model (Leviathan et al.: the target's own
    distribution), every head kept whole (retrieval_heads 1) keeps the whole cache, a budget of the whole cache (128
    prompt tokens and 15 of the 16 output tokens: the last is never cached) evicts nothing, and an exit depth that
    rounds to all 32 of Llama-2-7B's layers skips none (a pruning start that does prunes in none): the format's figure
    stands."""
    assert point_quality(_point(knobs=(("acceptance", 0.6), ("spec_draft", "medusa")))).delta == 0.0
    assert point_quality(_point(weight_bits=4, knobs=(("kv_budget", 256), ("retrieval_heads", 1.0)))
                         ).delta == pytest.approx(0.13)
    assert point_quality(_point(knobs=(("kv_budget", 143),))).delta == 0.0
    assert math.isnan(point_quality(_point(knobs=(("kv_budget", 142),))).delta)
    assert point_quality(_point(knobs=(("exit_depth", 0.99),))).delta == 0.0  # 31.7 layers: all 32 run
    assert math.isnan(point_quality(_point(knobs=(("exit_depth", 0.95),))).delta)  # 30.4: 30 of 32
    assert point_quality(_point(knobs=(("prompt_kept", 0.4), ("prune_start", 0.99)))).delta == 0.0  # 31.7: no layer



def test_streaming_heads_whose_window_holds_the_context_keep_the_formats_figure():
    """Retrieval heads keep every token and the others a window: kv_budget's, or DuoAttention's 64 sinks + 256 recent
    tokens where it is 0. A window that holds all the 143 tokens a sequence caches (128 prompt, 15 of 16 outputs)
    evicts nothing from any head, and the point's times are the dense point's: the format's figure stands (it read
    NaN). A window one token short, or 320 tokens against a 1,024-token prompt, evicts: NaN."""
    assert point_quality(_point(knobs=(("kv_budget", 143), ("retrieval_heads", 0.5)))).delta == 0.0
    assert point_quality(_point(weight_bits=4, knobs=(("retrieval_heads", 0.5),))).delta == pytest.approx(0.13)
    assert math.isnan(point_quality(_point(knobs=(("kv_budget", 142), ("retrieval_heads", 0.5)))).delta)
    assert math.isnan(point_quality(dataclasses.replace(_point(knobs=(("retrieval_heads", 0.5),)), prompt=1024)).delta)


def test_a_prefill_left_whole_keeps_the_formats_figure():
    """A pruning share that rounds to the whole prompt (0.999 of 128 tokens: 127.9, all 128 kept) prunes nothing, and
    a block-sparse prefill of at most 1,024 queries runs dense with no estimate (SALE's patch: q_len <= 1024), as the
    prefill is priced: both compute what the model computes, so the format's figure stands (they read NaN, 'no
    published figure', beside times equal to the dense point's). 0.99 of 128 keeps 127 tokens, and a 2,048-token
    prompt selects: those stay NaN."""
    assert point_quality(_point(knobs=(("prompt_kept", 0.999),))).delta == 0.0
    assert math.isnan(point_quality(_point(knobs=(("prompt_kept", 0.99),))).delta)
    assert point_quality(_point(weight_bits=4, knobs=(("prefill_kept", 0.5),))).delta == pytest.approx(0.13)
    assert math.isnan(point_quality(dataclasses.replace(_point(knobs=(("prefill_kept", 0.5),)), prompt=2048)).delta)

@pytest.mark.parametrize(("model", "fmt", "method", "says"), [
    ("llama-2-7b", NumericFormat(weight_bits=3), "any", "llama-2-7b in w3a16kv16"),  # no 3-bit row
    ("llama-2-7b", NumericFormat(weight_bits=4, sparsity="2:4"), "any", "w4a16kv16-2:4"),  # never composed
    ("llama-2-7b", NumericFormat(weight_bits=4, group_size=64), "any", "64"),  # the rows are g128
    ("llama-2-7b", NumericFormat(weight_bits=8, act_bits=8, kv_bits=8), "any", "channel"),
    ("llama-2-7b", NumericFormat(weight_bits=4), "wanda", "by wanda"),  # Wanda prunes, it does not quantize
    ("tiny", NumericFormat(weight_bits=4), "any", "for model tiny"),  # no figure borrowed from another model
])
def test_no_matching_row_is_nan_with_the_reason(model, fmt, method, says):
    figure = quality_figure(model, fmt, method)
    assert math.isnan(figure.delta) and "no published" in figure.source and says in figure.source


def test_a_row_matches_on_every_numeric_format_field(tmp_path: Path):
    """A row names its format by NumericFormat fields; one at group size 64 matches only g64 points."""
    path = tmp_path / "quality.csv"
    path.write_text(f"{HEADER}\n{GOOD.replace(',128,', ',64,')}\n")
    rows = read_table(path)
    assert quality_figure("llama-2-7b", NumericFormat(weight_bits=4, group_size=64), rows=rows).delta == \
        pytest.approx(0.13)
    assert math.isnan(quality_figure("llama-2-7b", NumericFormat(weight_bits=4), rows=rows).delta)


def test_quality_is_a_numeric_metric_objectives_and_constraints_may_name():
    assert "quality_delta" in numeric_metrics() and METRICS["quality_delta"].better == "min"
    assert METRICS["quality_source"].kind == "text" and METRICS["quality_delta"].reason == "quality_source"
    assert not Constraint.parse("quality_delta <= 1").holds({"quality_delta": math.nan})
    assert Constraint.parse("quality_delta <= 1").holds({"quality_delta": 0.13})


@pytest.mark.parametrize("spelled", ["unstructured:0.50", "unstructured:.5"])
def test_a_share_spelled_another_way_is_the_same_format_and_reads_the_same_row(spelled: str):
    """Wanda's README row for Llama-2-7B unstructured 50% (5.12 -> 6.42) applies however the share is written: the
    pattern parses to the same 50% either way, so the format and its published figure are the same."""
    fmt = NumericFormat(sparsity=spelled)
    assert fmt == NumericFormat(sparsity="unstructured:0.5") and fmt.label.endswith("unstructured:0.5")
    assert quality_figure("llama-2-7b", fmt).delta == pytest.approx(6.42 - 5.12)


def test_a_share_spelled_another_way_in_a_sweep_is_one_point(tmp_path: Path, tiny_config: str):
    """A sweep stores the pattern in one spelling, so two spellings of the same share are one value listed twice."""
    sweep = load_sweep(write_sweep(tmp_path, f"""
name: spelled
model: {tiny_config}
device: a100-sxm-80gb
format: {{sparsity: ["block64:0.50", "2:4"]}}
"""))
    assert {point.sparsity for point in sweep.points()} == {"block64:0.5", "2:4"}
    twice = write_sweep(tmp_path, f"""
name: spelled
model: {tiny_config}
device: a100-sxm-80gb
format: {{sparsity: ["unstructured:0.50", "unstructured:.5"]}}
""")
    with pytest.raises(InputError, match="listed twice"):
        load_sweep(twice)


def test_a_quality_constraint_leaves_out_points_without_a_figure(tmp_path: Path, tiny_config: str, tiny_evaluator):
    """The tiny model has no published figure: its 16-bit point (0 by definition) meets the constraint, its 4-bit
    point has none (NaN, quality_source says why) and breaks it; the report says which and why."""
    sweep = load_sweep(write_sweep(tmp_path, f"""
name: quality-constraint
model: {tiny_config}
device: a100-sxm-80gb
workload: {{batch: 1, prompt: 32, output: 4}}
format: {{weight_bits: [16, 4]}}
objectives: {{minimize: [quality_delta], maximize: [tokens_per_J]}}
constraints: ["quality_delta <= 0.5"]
"""))
    rows = run_sweep(sweep, tmp_path / "out", evaluator=tiny_evaluator)
    by_bits = {row["weight_bits"]: row for row in rows}
    assert by_bits[16]["quality_delta"] == 0.0 and by_bits[16]["meets_constraints"]
    assert math.isnan(by_bits[4]["quality_delta"]) and not by_bits[4]["meets_constraints"]
    assert "for model tiny" in by_bits[4]["quality_source"]
    _, markdown = write_report(tmp_path / "out", rows, title="q", constraints=sweep.spec.constraints,
                               objectives={"minimize": ["quality_delta"], "maximize": ["tokens_per_J"]})
    text = markdown.read_text()
    assert "quality_delta <= 0.5 (perplexity increase" in text and "is n/a: no published" in text
    assert "without a value of quality_delta are not drawn" in text or "without a value of quality_delta is not" \
        in text


def test_a_bad_quant_method_is_a_one_line_sweep_error(tmp_path: Path, tiny_config: str):
    path = write_sweep(tmp_path, f"""
name: bad-method
model: {tiny_config}
device: a100-sxm-80gb
format: {{weight_bits: 4, quant_method: gptq-v9}}
""")
    with pytest.raises(InputError) as err:
        load_sweep(path)
    assert "quant_method" in str(err.value) and "awq" in str(err.value) and "\n" not in str(err.value)


def test_the_shipped_table_is_the_file_next_to_the_module():
    assert TABLE_PATH.is_file() and TABLE_PATH.parent.name == "data"


def test_a_row_of_another_element_type_matches_only_that_type(tmp_path: Path):
    """Fields of NumericFormat are matched generically: a 4-bit float row says nothing of 4-bit integers."""
    path = tmp_path / "quality.csv"
    path.write_text(f"{HEADER},weight_type\n{GOOD},fp4_e2m1\n")
    rows = read_table(path)
    fp4 = NumericFormat(weight_bits=4, weight_type="fp4_e2m1")
    assert quality_figure("llama-2-7b", fp4, rows=rows).delta == pytest.approx(0.13)
    assert math.isnan(quality_figure("llama-2-7b", NumericFormat(weight_bits=4), rows=rows).delta)


def test_gptq_readme_rows_give_3_bit_and_per_channel_figures_and_keep_its_conclusions():
    """GPTQ (Frantar et al., ICLR 2023), github.com/IST-DASLab/gptq README.md@2d65066, summary of LLaMa results (Wiki2
    PPL, llama.py at seqlen 2048), LLaMa-7B: FP16 5.68; 4bit-RTN 6.29, 4bit-GPTQ 6.09, 3bit-RTN 25.54, 3bit-GPTQ 8.07,
    3g128-GPTQ 6.61 (per-channel scales unless grouped). The README's conclusions: GPTQ beats round-to-nearest at
    both widths, and at 3 bits groups of 128 close most of GPTQ's per-channel gap."""
    per_channel_3 = NumericFormat(weight_bits=3, scale_granularity="channel")
    per_channel_4 = NumericFormat(weight_bits=4, scale_granularity="channel")
    g128_3 = NumericFormat(weight_bits=3)
    assert quality_figure("llama-7b", g128_3).delta == pytest.approx(6.61 - 5.68)
    assert quality_figure("llama-7b", per_channel_3, "gptq").delta == pytest.approx(8.07 - 5.68)
    assert quality_figure("llama-7b", per_channel_3, "rtn").delta == pytest.approx(25.54 - 5.68)
    best_4 = quality_figure("llama-7b", per_channel_4)
    assert best_4.delta == pytest.approx(6.09 - 5.68) and "gptq" in best_4.source and "2048" in best_4.source
    assert quality_figure("llama-7b", per_channel_4, "rtn").delta == pytest.approx(6.29 - 5.68)
    assert quality_figure("llama-7b", g128_3).delta < quality_figure("llama-7b", per_channel_3).delta
    # LLaMa-65B, the model GPTQ compresses best: FP16 3.53, 3g128-GPTQ 4.17.
    assert quality_figure("llama-65b", g128_3).delta == pytest.approx(4.17 - 3.53)
    # Per-channel weights and a 16-bit KV cache have no groups: the row holds whatever group_size the point names.
    assert quality_figure("llama-7b", NumericFormat(weight_bits=4, scale_granularity="channel", group_size=64)
                          ).delta == pytest.approx(0.41)


def test_llama_30b_figures_reach_the_llama_33b_preset():
    """The papers' "LLaMA-30B" is the model the llama-33b preset holds (huggyllama/llama-30b's config; LLaMA's Table 2
    counts 32.5B parameters): GPTQ's README (LLaMa-30B, Wiki2 at 2048 tokens) gives FP16 4.10 and 4bit-GPTQ 4.45, so a
    point on the preset reads +0.35, and no row hides under a name no preset or design point carries."""
    point = DesignPoint(model="llama-33b", device="a100-sxm-80gb", batch=1, prompt=128, output=16, weight_bits=4,
                        knobs=(("scale_granularity", "channel"),))
    figure = point_quality(point)
    assert figure.delta == pytest.approx(4.45 - 4.10) and "gptq" in figure.source
    assert "llama-30b" not in {row.model for row in shipped_table()}



def test_every_model_the_table_names_is_a_preset():
    """A row is reached by its model's name: each model the shipped table names ships as a model preset."""
    assert {row.model for row in shipped_table()} <= set(preset_names())


def test_a_run_on_the_yi_34b_preset_reads_qserves_figure(capsys):
    """QServe's README Accuracy Evaluation table (WikiText2 perplexity at 2048 tokens), Yi-34B: FP16 4.60, GPTQ-R
    W4A16 g128 4.68, so `explore run` on the preset reads +0.08."""
    assert main(["run", "--model", "yi-34b", "--device", "h100-sxm", "--weight-bits", "4", "--group-size", "128",
                 "--quant-method", "gptq", "--prompt", "128", "--output", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["quality_delta"] == pytest.approx(4.68 - 4.60)


MXFP8 = NumericFormat(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3", scale_type="e8m0",
                      group_size=32)
NVFP4 = NumericFormat(weight_bits=4, act_bits=4, weight_type="fp4_e2m1", act_type="fp4_e2m1", scale_type="e4m3",
                      group_size=16)
FP8_ROWWISE = NumericFormat(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3",
                            scale_granularity="channel")


def test_torchao_rows_give_fp8_mxfp8_and_nvfp4_figures_as_word_perplexity():
    """torchao (github.com/pytorch/ao pull request #3394, description 2025-11-26), Meta-Llama-3.1-8B, lm-eval wikitext
    word perplexity: bf16 7.55, float8 rowwise 7.62, mxfp8 (floor) 7.61, mxfp8 (rceil) 7.60, nvfp4 8.44. The 8-bit
    floats lose under a tenth of a point; NVFP4's 4-bit weights and activations lose about ten times more."""
    fp8 = quality_figure("llama-3.1-8b", FP8_ROWWISE)
    assert fp8.delta == pytest.approx(7.62 - 7.55) and "wikitext_word_ppl" in fp8.source and "3394" in fp8.source
    assert quality_figure("llama-3.1-8b", MXFP8).delta == pytest.approx(7.60 - 7.55)  # the better of the two roundings
    nvfp4 = quality_figure("llama-3.1-8b", NVFP4)
    assert nvfp4.delta == pytest.approx(8.44 - 7.55)
    assert nvfp4.delta > 10 * quality_figure("llama-3.1-8b", MXFP8).delta
    # A figure measured with fp4 activations says nothing of NVFP4 weights with 16-bit activations (W4A16).
    nvfp4_weights_only = NumericFormat(weight_bits=4, weight_type="fp4_e2m1", scale_type="e4m3", group_size=16)
    assert math.isnan(quality_figure("llama-3.1-8b", nvfp4_weights_only).delta)


def test_token_perplexity_is_preferred_and_never_mixed_with_word_perplexity(tmp_path: Path):
    """Where a model and format have rows of both perplexities, quality_delta is the token-level one even when the
    word-level change is smaller: the two scales differ, so the smaller number is not the better result."""
    path = tmp_path / "quality.csv"
    word = "llama-2-7b,rtn,toolkit,PR 1,wikitext_word_ppl,4096,8.00,8.05,4,16,16,128,"
    path.write_text(f"{HEADER}\n{GOOD}\n{word}\n")
    rows = read_table(path)
    figure = quality_figure("llama-2-7b", NumericFormat(weight_bits=4), rows=rows)
    assert figure.delta == pytest.approx(0.13) and "wikitext2_ppl" in figure.source
    assert quality_figure("llama-2-7b", NumericFormat(weight_bits=4), "rtn", rows=rows).delta == pytest.approx(0.05)


def test_element_type_columns_are_checked_like_every_format_field(tmp_path: Path):
    path = tmp_path / "quality.csv"
    path.write_text(f"{HEADER},weight_type,act_type\n{GOOD},fp8_e5m3,\n")
    with pytest.raises(InputError, match="line 2: weight_type: found 'fp8_e5m3'"):
        read_table(path)
