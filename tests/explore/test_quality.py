"""Published quality per format (explore/quality.py, explore/data/quality.csv): the loader refuses malformed rows,
paper rows give quality_delta for matching points, other points get NaN with the reason, and a quality constraint
leaves points without a figure out."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

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

HEADER = ("model,method,paper,table,metric,context_tokens,baseline,value,weight_bits,act_bits,kv_bits,group_size,"
          "sparsity")
GOOD = "llama-2-7b,awq,paper,Table 1,wikitext2_ppl,2048,5.47,5.60,4,16,16,128,"


def _point(**fields) -> DesignPoint:
    return DesignPoint(model="llama-2-7b", device="a100-sxm-80gb", batch=1, prompt=128, output=16, **fields)


def test_the_shipped_table_loads_and_every_row_is_a_loss_against_its_own_baseline():
    rows = shipped_table()
    assert len(rows) >= 50
    # Every compression in these papers loses some perplexity against 16 bits (none reports a gain).
    assert all(row.delta > 0 and row.paper and row.table and row.context_tokens in (2048, 4096) for row in rows)


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


def test_wanda_readme_keeps_the_paper_conclusion_at_2_4_on_llama_2_7b():
    """Wanda (Sun et al. 2023, arXiv:2306.11695), github.com/locuslab/wanda README LLaMA-2 table (context 4096):
    llama2-7b dense 5.12, 2:4 SparseGPT 10.17, Wanda 11.02, magnitude 54.59. At 2:4 on 7B SparseGPT is the best,
    and every 2:4 pruning loses more than 4-bit weights do (QServe: +0.13)."""
    fmt = NumericFormat(sparsity="2:4")
    best = quality_figure("llama-2-7b", fmt)
    assert best.delta == pytest.approx(10.17 - 5.12) and "sparsegpt" in best.source and "4096" in best.source
    assert quality_figure("llama-2-7b", fmt, "wanda").delta == pytest.approx(11.02 - 5.12)
    assert best.delta > quality_figure("llama-2-7b", NumericFormat(weight_bits=4)).delta


def test_16_bit_dense_is_zero_by_definition():
    figure = quality_figure("any-model-at-all", NumericFormat())
    assert figure.delta == 0.0 and "16-bit" in figure.source


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
