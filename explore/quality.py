"""Published model quality per numeric format: the table explore/data/quality.csv and the quality_delta of a design
point read from it.

The table holds quality figures as papers publish them: one row per model, quantization or pruning method and
numeric format, naming the paper, the table the figure was read from, the metric and its context length, the
16-bit baseline and the value of the compressed model, both from that table. Nothing in it is fitted, interpolated
or estimated: a point whose model and format no row covers gets no quality figure (NaN), with the reason (the
published formats nearest to the point's and the fields they differ in).

Two WikiText-2 perplexities are published: the token perplexity of fixed windows (wikitext2_ppl: GPTQ's protocol,
which most quantization papers follow) and lm-evaluation-harness's word perplexity of whole documents
(wikitext_word_ppl: what toolkits such as torchao report). Their scales differ, so a figure is never taken across
them: quality_delta is the token-level change where a row gives one, else the word-level one, and quality_source
names the metric.

A row names the numeric format it was measured in by the columns named after NumericFormat fields (weight_bits,
act_bits, kv_bits, group_size, sparsity and any field kernels/formats.py adds later); a blank cell, or a field the
table has no column for, is that field's default. A row applies to a point only when the point's NumericFormat
equals the row's, field by field: a figure measured at 4-bit integer weights says nothing of 4-bit floats or of
another group size. Fields are compared only where they are used (NumericFormat.idle_fields): a format whose weights
are scaled per channel or per tensor and whose KV cache is 16-bit has no groups, whatever its group_size says. The
model is matched by its name (the preset name, or the folder of a config.json path), so a figure for llama-2-7b
never stands in for llama-2-13b.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernels.block_sparse import SALE_DENSE_QUERIES
from kernels.early_exit import kept_layers
from kernels.formats import NumericFormat
from kernels.kv_policy import DUO_WINDOW_TOKENS
from kernels.token_prune import first_pruned_layer, kept_prompt_tokens
from workloads.errors import InputError

TABLE_PATH = Path(__file__).parent / "data" / "quality.csv"
ANY_METHOD = "any"  # the quant_method knob's default: the best published method for the point's format
# The metrics quality_delta reports, in order of preference (a point takes the first one some row gives it), and how
# each change is signed: +1 where a larger value is worse (perplexity), -1 where a larger value is better (an
# accuracy). Rows of other metrics may sit in the table for the record.
METRICS = ("wikitext2_ppl", "wikitext_word_ppl")
WORSE_WHEN_LARGER = {"wikitext2_ppl": 1, "wikitext_word_ppl": 1}
TEXT_COLUMNS = ("model", "method", "paper", "table", "metric", "note")
COLUMNS = ("model", "method", "paper", "table", "metric", "context_tokens", "baseline", "value", "note")
REQUIRED = ("model", "method", "paper", "table", "metric", "context_tokens", "baseline", "value")
FORMAT_FIELDS = {f.name: f for f in dataclasses.fields(NumericFormat)}


@dataclass(frozen=True)
class QualityRow:
    """One published figure: `value` of `metric` for `model` compressed by `method` in `fmt`, against the 16-bit
    `baseline` of the same table."""

    model: str
    method: str
    paper: str
    table: str
    metric: str
    context_tokens: int
    baseline: float
    value: float
    fmt: NumericFormat
    note: str = ""

    @property
    def delta(self) -> float:
        """The change of the metric, positive when the compressed model is worse."""
        # Rounded to the table's precision: 5.60 - 5.47 is 0.13, not 0.12999999999999989.
        return round((self.value - self.baseline) * WORSE_WHEN_LARGER[self.metric], 6)

    @property
    def source(self) -> str:
        """The row as a results cell names it: method, paper, where in it, metric and values."""
        return (f"{self.method}: {self.paper}, {self.table}; {self.metric} at {self.context_tokens} tokens "
                f"{self.baseline:g} -> {self.value:g}")


@dataclass(frozen=True)
class QualityFigure:
    """The quality_delta of a point and where it comes from (or why there is none: delta NaN)."""

    delta: float
    source: str


def _field_value(name: str, text: str) -> Any:
    """A NumericFormat field's value from a CSV cell, typed like the field's default (ValueError if it is not)."""
    kind = type(FORMAT_FIELDS[name].default)
    return int(text) if kind is int else float(text) if kind is float else text


def _row(cells: dict[str, str]) -> QualityRow:
    """A table row from its cells; ValueError naming the first bad cell."""
    missing = [name for name in REQUIRED if not (cells.get(name) or "").strip()]
    if missing:
        raise ValueError(f"{missing[0]}: empty, allowed: a value (required: {', '.join(REQUIRED)})")
    text = {name: (cells.get(name) or "").strip() for name in TEXT_COLUMNS}
    if text["metric"] not in WORSE_WHEN_LARGER:
        raise ValueError(f"metric: found {text['metric']!r}, allowed: {', '.join(WORSE_WHEN_LARGER)}")
    numbers: dict[str, float] = {}
    for name in ("baseline", "value", "context_tokens"):
        try:
            numbers[name] = float(cells[name])
        except ValueError:
            raise ValueError(f"{name}: found {cells[name]!r}, allowed: a number") from None
        if not (math.isfinite(numbers[name]) and numbers[name] > 0):
            raise ValueError(f"{name}: found {cells[name]!r}, allowed: a finite number > 0")
    if numbers["context_tokens"] != int(numbers["context_tokens"]):
        raise ValueError(f"context_tokens: found {cells['context_tokens']!r}, allowed: a whole number of tokens")
    parts = {}
    for name in FORMAT_FIELDS:
        value = (cells.get(name) or "").strip()
        if value:
            try:
                parts[name] = _field_value(name, value)
            except ValueError:
                raise ValueError(f"{name}: found {value!r}, allowed: a value of NumericFormat.{name}") from None
    fmt = NumericFormat(**parts)  # ValueError names the field and what it allows
    return QualityRow(model=text["model"].lower(), method=text["method"].lower(), paper=text["paper"],
                      table=text["table"], metric=text["metric"], context_tokens=int(numbers["context_tokens"]),
                      baseline=numbers["baseline"], value=numbers["value"], fmt=fmt, note=text["note"])


def read_table(path: str | Path) -> tuple[QualityRow, ...]:
    """The rows of a quality CSV; InputError naming the file, the row (its line) and the bad cell."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or ())
            unknown = [name for name in header if name not in COLUMNS and name not in FORMAT_FIELDS]
            if unknown or not set(REQUIRED) <= set(header):
                bad = unknown[0] if unknown else next(name for name in REQUIRED if name not in header)
                raise InputError(f"{path}: header: found {'column ' + repr(bad) if unknown else 'no ' + repr(bad)}, "
                                 f"allowed: columns {', '.join(COLUMNS)} and NumericFormat fields "
                                 f"{', '.join(FORMAT_FIELDS)} ({', '.join(REQUIRED)} required)")
            rows = []
            for cells in reader:
                if None in cells or any(value is None for value in cells.values()):
                    raise InputError(f"{path}: line {reader.line_num}: found {len(cells) - (None in cells)} cells "
                                     f"or more, allowed: {len(header)} cells, one per column")
                try:
                    rows.append(_row(cells))
                except ValueError as err:
                    raise InputError(f"{path}: line {reader.line_num}: {err}") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text, allowed: a UTF-8 CSV file") from None
    return tuple(rows)


@functools.cache
def shipped_table() -> tuple[QualityRow, ...]:
    """The table that ships with the project (read once per process)."""
    return read_table(TABLE_PATH)


def methods(path: str | Path = TABLE_PATH) -> tuple[str, ...]:
    """The methods a quality CSV names, in order of first appearance: its method column alone, unchecked (the
    quant_method knob lists them at import; the rows are checked where they are used)."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as f:
            names = ((row.get("method") or "").strip().lower() for row in csv.DictReader(f))
            return tuple(dict.fromkeys(name for name in names if name))
    except (OSError, UnicodeDecodeError):
        return ()


def is_uncompressed(fmt: NumericFormat) -> bool:
    """16-bit weights, activations and KV cache, dense (no weight, activation or KV sparsity): the baseline every
    figure is a change from."""
    return (fmt.weight_bits >= 16 and fmt.act_bits >= 16 and fmt.kv_bits >= 16 and fmt.weight_density == 1.0
            and fmt.act_kept >= 1.0 and not fmt.kv_sparsity)


def quality_figure(model: str, fmt: NumericFormat, method: str = ANY_METHOD,
                   rows: Iterable[QualityRow] | None = None) -> QualityFigure:
    """The published change in the first of METRICS any row gives for `model` (a model name, e.g. 'llama-2-7b') in
    `fmt` by `method` ('any': the best figure of any method), from `rows` (the shipped table by default). Among
    several matching rows of that metric the smallest change is taken (the best published result, the source names
    it). 16-bit dense is 0 by definition."""
    if is_uncompressed(fmt):
        return QualityFigure(0.0, "16-bit dense: the baseline (0 by definition)")
    model = model.lower()
    table = shipped_table() if rows is None else tuple(rows)
    key = _matched_format(fmt)
    for metric in METRICS:
        matching = [row for row in table if row.metric == metric and row.model == model
                    and _matched_format(row.fmt) == key and method in (ANY_METHOD, row.method)]
        if matching:
            best = min(matching, key=lambda row: row.delta)
            return QualityFigure(best.delta, best.source)
    return QualityFigure(math.nan, _why_none(model, fmt, method, table))


def _matched_format(fmt: NumericFormat) -> NumericFormat:
    """The format as rows are matched on: its fields that change nothing at it at their defaults
    (NumericFormat.canonical: group_size where no tensor is scaled per group, the weights' scale fields at 16-bit
    weights, ...). head_bits is not matched: the rows are the methods' own figures, whose LM head and embeddings are
    as each method keeps them (most at 16 bits)."""
    return dataclasses.replace(fmt.canonical, head_bits=FORMAT_FIELDS["head_bits"].default)


NEAREST_SHOWN = 3  # nearest published formats a reason names


def _why_none(model: str, fmt: NumericFormat, method: str, table: tuple[QualityRow, ...]) -> str:
    """Why no row gives a figure: the model is not in the table, or none of its rows has the format (and method);
    then the reason names the published formats nearest to the point's (fewest NumericFormat fields apart) and the
    fields they differ in, so a point one field off a published format (a codebook scaled per group where the
    paper's is per channel, another group size) says which field to change."""
    where = f"no published {' or '.join(METRICS)} figure"
    of_model = [row for row in table if row.metric in METRICS and row.model == model]
    if not of_model:
        return f"{where} for model {model} (the table has {', '.join(sorted({r.model for r in table}))})"
    by = "" if method == ANY_METHOD else f" by {method}"
    candidates = [row for row in of_model if method in (ANY_METHOD, row.method)]
    if not candidates:
        return f"{where} for {model} in {format_words(fmt)}{by} (its methods: " \
               f"{', '.join(sorted({r.method for r in of_model}))})"
    return f"{where} for {model} in {format_words(fmt)}{by} (nearest published: {_nearest(fmt, candidates)})"


def _nearest(fmt: NumericFormat, rows: list[QualityRow]) -> str:
    """The published formats of `rows` fewest fields away from `fmt` (as rows are matched), each with its methods
    and the fields it differs in: 'w3a16kv16-w:lut-channel by squeezellm (scale_granularity=channel vs group)'."""
    key = _matched_format(fmt)
    apart: dict[NumericFormat, tuple[str, ...]] = {}
    by_format: dict[NumericFormat, set[str]] = {}
    for row in rows:
        other = _matched_format(row.fmt)
        apart[other] = tuple(name for name in FORMAT_FIELDS if getattr(other, name) != getattr(key, name))
        by_format.setdefault(other, set()).add(row.method)
    fewest = min(len(fields) for fields in apart.values())
    nearest = sorted((other for other, fields in apart.items() if len(fields) == fewest), key=format_words)
    words = [f"{format_words(other)} by {', '.join(sorted(by_format[other]))} ("
             + ", ".join(f"{name}={getattr(other, name)} vs {getattr(key, name)}" for name in apart[other]) + ")"
             for other in nearest[:NEAREST_SHOWN]]
    more = len(nearest) - NEAREST_SHOWN
    return "; ".join(words) + (f"; {more} more as near" if more > 0 else "")


LABELLED = ("weight_bits", "act_bits", "kv_bits", "sparsity")  # the fields NumericFormat.label spells


def format_words(fmt: NumericFormat) -> str:
    """The format's label and every other field not at its default that the label does not spell already
    ('w4a16kv16 group_size=64')."""
    others = [f"{name}={getattr(fmt, name)}" for name, field in FORMAT_FIELDS.items()
              if name not in LABELLED and getattr(fmt, name) != field.default
              and str(getattr(fmt, name)) not in fmt.label]
    return " ".join([fmt.label, *others])


# ModelConfig fields that leave a model's weights and outputs as published: its name and source, the 16-bit type it
# is stored in, the context it allows (the figures are at 2,048 or 4,096 tokens) and the form MLA is computed in.
SAME_MODEL_FIELDS = ("name", "source", "dtype", "max_positions", "mla_form")


def preset_fields_apart(config) -> str:
    """Where a model's config (workloads.model_config.ModelConfig) differs from the shipped preset of its name, as
    'num_layers 16 vs 32'; '' where it is that preset's model or no preset has its name."""
    from workloads.model_config import load_model_config, preset_names

    if config.name.lower() not in preset_names():
        return ""
    preset = load_model_config(config.name.lower())
    return ", ".join(f"{field.name} {getattr(config, field.name)} vs {getattr(preset, field.name)}"
                     for field in dataclasses.fields(preset) if field.name not in SAME_MODEL_FIELDS
                     and getattr(config, field.name) != getattr(preset, field.name))


@functools.lru_cache(maxsize=4096)
def _point_figure(model: str, fmt: NumericFormat, method: str) -> QualityFigure:
    from workloads.model_config import load_model_config

    config = load_model_config(model)
    if not is_uncompressed(fmt) and (apart := preset_fields_apart(config)):
        return QualityFigure(math.nan, f"no published figure for {model}: a config named as the preset "
                                       f"{config.name.lower()} with other shapes ({apart}), so another model "
                                       f"than the one the papers measured")
    return quality_figure(config.name, fmt, method)


def point_quality(point) -> QualityFigure:
    """The quality figure of a design point (explore.design_point.DesignPoint): its model's name, its
    NumericFormat and its quant_method knob; NaN with the reason where the point also runs a decode-time technique
    that changes the model's outputs (lossy_techniques), since no row of the table measured one."""
    from workloads.model_config import load_model_config

    # A static sequence caches its prompt and every output token but the last; a serving run's requests vary.
    context = point.prompt + point.output - 1 if point.serving is None else math.inf
    prompt = point.prompt if point.serving is None else math.inf
    lossy = lossy_techniques(point.knob, context, lambda: load_model_config(point.model).num_layers, prompt)
    if lossy:
        return QualityFigure(math.nan, f"no published figure with {', '.join(lossy)}: the table measures numeric "
                                       f"formats and pruning, not KV eviction, token selection, layer skipping, "
                                       f"prompt-token pruning or block-sparse prefill attention")
    return _point_figure(point.model, point.numeric_format, point.knob("quant_method"))


def _prunes_tokens(prompt_tokens: float, kept: float) -> bool:
    """Whether a pruned layer keeps fewer than the prompt's tokens once the share is rounded to whole tokens (a
    prompt of unknown length, inf: yes)."""
    return math.isinf(prompt_tokens) or kept_prompt_tokens(int(prompt_tokens), kept) < prompt_tokens


def lossy_techniques(knob, context_tokens: float, layers: Callable[[], int],
                     prompt_tokens: float = math.inf) -> list[str]:
    """The inference-time techniques a point runs (`knob`: its value of a knob by name) that change what the model
    computes, each as its knob and value: KV eviction to a budget short of the `context_tokens` a sequence caches, by
    every head or by streaming heads (retrieval_heads below 1: DuoAttention's streaming heads keep its window of sinks
    and recent tokens where there is no budget), attention to a top-k of the cached tokens (topk_fraction below 1),
    layer skipping (exit_depth short of all `layers()` once rounded to whole layers), prompt-token pruning in the
    prefill (prompt_kept below 1 where a layer prunes once prune_start is rounded to whole layers, and fewer of the
    `prompt_tokens` are kept once rounded to whole tokens) and block-sparse prefill attention (prefill_kept below 1 on a
    prompt longer than the queries a forward runs dense; a serving run's prompts, inf, vary). Speculative decoding and
    offloading give the model's own outputs and are not among them."""
    budget, retrieval, depth = knob("kv_budget"), knob("retrieval_heads"), knob("exit_depth")
    lossy = []
    # The window the windowed heads keep: the budget, DuoAttention's where only retrieval heads are set, else none.
    window = budget or (DUO_WINDOW_TOKENS if retrieval > 0 else 0)
    if retrieval < 1 and 0 < window < context_tokens:
        evicting = [f"kv_budget={budget}"] if budget else []  # no budget: the streaming heads keep their own window
        evicting += [f"retrieval_heads={retrieval:g}"] if retrieval else []
        lossy.append(" with ".join(evicting))
    if knob("topk_fraction") < 1:
        lossy.append(f"topk_fraction={knob('topk_fraction'):g}")
    if depth < 1 and kept_layers(count := layers(), depth) < count:  # the model's layers read only where asked
        lossy.append(f"exit_depth={depth:g}")
    if (knob("prompt_kept") < 1 and first_pruned_layer(count := layers(), knob("prune_start")) < count
            and _prunes_tokens(prompt_tokens, knob("prompt_kept"))):
        lossy.append(f"prompt_kept={knob('prompt_kept'):g}")
    if knob("prefill_kept") < 1 and prompt_tokens > SALE_DENSE_QUERIES:  # a shorter forward runs dense
        lossy.append(f"prefill_kept={knob('prefill_kept'):g}")
    return lossy
