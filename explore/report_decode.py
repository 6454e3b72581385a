"""The decode-time section of the design report: time and energy per output token against the KV budget (kv_budget,
retrieval_heads) and against speculative decoding's acceptance rate, when a sweep sets them. Reads stored results
only."""

from __future__ import annotations

from typing import Any

import numpy as np

from explore.plots import figure_png
from explore.plots_decode import DecodeSeries, decode_figure
from explore.report import ReportFigure
from explore.rows import as_number, device_label, format_label, knobs_label, overrides_label
from kernels.kv_policy import DUO_RECENT_TOKENS, DUO_SINK_TOKENS, DUO_WINDOW_TOKENS

TITLE = "Time and energy per output token against the KV budget and the acceptance rate"
HOW_TO_READ = ("Lower is better. A KV budget saves time where decode attention's reads are a large share of a step's "
               "bytes (long contexts, large batches); speculation pays off once the acceptance rate lifts the tokens "
               "per step above what verifying the drafts and running the draft cost, less so at large batches where "
               "the verification is compute-bound.")


def _budget(row: dict[str, Any]) -> float:
    """The tokens a (streaming) head keeps: its kv_budget, DuoAttention's window where only retrieval_heads is set,
    or its whole context where the budget keeps all."""
    budget = as_number(row.get("kv_budget") or 0)
    if not budget and as_number(row.get("retrieval_heads") or 0):
        budget = DUO_WINDOW_TOKENS
    context = as_number(row.get("prompt")) + as_number(row.get("output"))
    return min(budget, context) if budget else context


def _kept_words(row: dict[str, Any]) -> str:
    """What a row's windowed heads keep, in words: the whole cache, its kv_budget ('KV 512'), or DuoAttention's own
    window where only retrieval_heads is set (no kv_budget: not a budget the sweep gave)."""
    if _budget(row) >= as_number(row.get("prompt")) + as_number(row.get("output")):  # nothing windowed
        return "whole KV cache"
    if not as_number(row.get("kv_budget") or 0):
        return f"DuoAttention's {DUO_SINK_TOKENS} sinks + {DUO_RECENT_TOKENS} recent"
    return f"KV {int(_budget(row))}"


# The knobs the figure's axes and line names show themselves (the KV policy, the draft and its acceptance rate).
SHOWN_KNOBS = ("kv_budget", "retrieval_heads", "spec_draft", "acceptance")


def _design(row: dict[str, Any]) -> dict[str, str]:
    """What else may tell a row's design apart, by name: its format and execution, the generic knobs it sets beyond
    those the figure shows (topk_fraction, kv_budget_method, spec_tokens ...), its what-if values and its lengths."""
    knobs = (label.split("=", 1) for label in knobs_label(row))
    return {"format": format_label(row) if "weight_bits" in row else "",
            **{name: f"{name}={value}" for name, value in knobs if name not in SHOWN_KNOBS},
            "overrides": overrides_label(row), "lengths": f"p{row.get('prompt')} o{row.get('output')}"}


def _apart(rows: list[dict[str, Any]]):
    """A row's label suffix naming the parts of its design (_design) that differ among `rows` ('' where none do)."""
    designs = [_design(row) for row in rows]
    names = dict.fromkeys(name for design in designs for name in design)
    varying = [name for name in names if len({design.get(name, "") for design in designs}) > 1]

    def suffix(row: dict[str, Any]) -> str:
        design = _design(row)
        return "".join(f" / {design[name]}" for name in varying if design.get(name))

    return suffix


def _series(rows: list[dict[str, Any]], x, key) -> list[DecodeSeries]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((device_label(row), key(row)), []).append(row)
    out = []
    for (device, what), members in groups.items():
        members = sorted(members, key=x)
        out.append(DecodeSeries(label=f"{device} / {what}", color_key=device, x=np.array([x(r) for r in members]),
                                tpot_s=np.array([as_number(r["tpot_s"]) for r in members]),
                                energy_J=np.array([as_number(r["energy_per_token_J"]) for r in members])))
    return out


def decode_section(feasible: list[dict[str, Any]]) -> list[ReportFigure]:
    """The figure, where the sweep sets kv_budget, retrieval_heads or a speculative draft (else none)."""
    if not any(k in row for row in feasible for k in ("kv_budget", "retrieval_heads", "spec_draft")):
        return []
    # One model and batch at a time would need panels of their own: the first of each is drawn (caption says so).
    model, batch = feasible[0]["model"], feasible[0].get("batch")
    rows = [r for r in feasible if r["model"] == model and r.get("batch") == batch]
    plain = [r for r in rows if not r.get("spec_draft")]
    speculative = [r for r in rows if r.get("spec_draft")]
    # Designs that differ beyond the figure's own knobs (a format, a top-k fraction, a what-if) are lines of their own,
    # named by what tells them apart among the points of their column.
    plain_apart, speculative_apart = _apart(plain), _apart(speculative)

    def policy(row: dict[str, Any]) -> str:
        share = as_number(row.get("retrieval_heads") or 0)
        return f"{share:.0%} retrieval heads" if share else "every head windowed"

    def plain_key(row: dict[str, Any]) -> str:
        return policy(row) + plain_apart(row)

    def spec_key(row: dict[str, Any]) -> str:
        kept = _kept_words(row)
        return (f"{row['spec_draft']} / " + (kept if kept == "whole KV cache" else f"{kept} / {policy(row)}")
                + speculative_apart(row))

    # Lines against the budget take the plain points; lines against acceptance, the speculative ones at the
    # fewest and most tokens a windowed head keeps (every window would crowd the panel; results.csv holds them all).
    budgets = sorted({_budget(r) for r in speculative})
    ends = {budgets[0], budgets[-1]} if budgets else set()
    by_budget = _series(plain, _budget, plain_key) if len({_budget(r) for r in plain}) > 1 else []
    by_acceptance = _series([r for r in speculative if _budget(r) in ends],
                            lambda r: as_number(r.get("acceptance") or 0), spec_key)
    if not by_budget and not by_acceptance:
        return []
    columns = [text for text, drawn in (
        ("plain decoding against the KV budget (a streaming head's window with retrieval heads; the whole context at "
         "the right end), one line per KV policy", by_budget),
        (f"speculative decoding against the acceptance rate at the fewest and most tokens a windowed head keeps (its "
         f"kv_budget, or DuoAttention's {DUO_SINK_TOKENS} sinks + {DUO_RECENT_TOKENS} recent tokens where only "
         f"retrieval_heads is set)", by_acceptance))
        if drawn]
    shown = (f"Left: {columns[0]}. Right: {columns[1]}." if len(columns) == 2 else f"{columns[0][0].upper()}"
             f"{columns[0][1:]}.")
    caption = (f"Feasible points of {model} at batch {batch}; color: device. {shown} The other points are in "
               f"results.csv.")
    return [ReportFigure(name="decode_time", title=TITLE, caption=f"{caption} {HOW_TO_READ}",
                         png=figure_png(decode_figure(by_budget, by_acceptance)))]
