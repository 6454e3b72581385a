"""The README's knob and metric tables, rendered from the registries (explore/knobs.py, explore/metrics.py).

tests/explore/test_registries.py checks that README.md holds them as rendered here; after a registry change,
`python3 -m explore.docs_tables README.md` rewrites them between their markers.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from explore.knobs import Knob, knobs
from explore.metrics import METRICS

SECTION_WORDS = {"top": "top level", "workload": "`workload:`", "format": "`format:`", "parallel": "`parallel:`",
                 "serving": "`serving:`"}
METRIC_SECTIONS = {"point": "every sweep", "price": "systems, serving", "constraints": "with constraints",
                   "serving": "serving", "urgent": "serving with request priorities",
                   "slowdown": "serving with a slowdown SLO",
                   "capacity": "serving with a capacity search", "autoscale": "serving with max_replicas",
                   "rejection": "serving with busy thresholds",
                   "breakdown": "every sweep", "communication": "systems"}
BETTER_WORDS = {"min": "lower", "max": "higher", None: "-"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or "-"


def _default(knob: Knob) -> str:
    if knob.required:
        return "required"
    return f"`{knob.default}`" if knob.default not in (None, "") else "-"


def knob_table() -> str:
    """One row per registered knob: where a sweep sets it, its type, allowed values, default, unit and help."""
    lines = ["| knob | sweep section | type | allowed | default | unit | what it sets |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for k in knobs():
        lines.append(f"| `{k.name}` | {SECTION_WORDS[k.section]} | {k.type.__name__} | {_cell(k.allowed_words())} | "
                     f"{_default(k)} | {_cell(k.unit)} | {_cell(k.help)} |")
    return "\n".join(lines)


def metric_table() -> str:
    """One row per registered metric: unit, which direction is better, label, definition and which sweeps have it."""
    lines = ["| metric | unit | better | label | columns in | definition |",
             "| --- | --- | --- | --- | --- | --- |"]
    for m in METRICS.entries():
        lines.append(f"| `{m.name}` | {_cell(m.unit)} | {BETTER_WORDS[m.better]} | {_cell(m.label)} | "
                     f"{METRIC_SECTIONS[m.section]} | {_cell(m.definition)} |")
    return "\n".join(lines)


TABLES = {"knobs": knob_table, "metrics": metric_table}


def marked(name: str) -> re.Pattern[str]:
    """The README's block of one table: its begin marker, the table, its end marker."""
    return re.compile(rf"(<!-- {name} table: begin[^>]*-->\n)(.*?)(<!-- {name} table: end -->)", re.DOTALL)


def rewrite(text: str) -> str:
    """The README text with every marked table re-rendered."""
    for name, render in TABLES.items():
        text, found = marked(name).subn(lambda match, render=render: match[1] + render() + "\n" + match[3], text)
        if found != 1:
            raise ValueError(f"README: found {found} '{name} table' blocks, allowed: exactly one")
    return text


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "README.md")
    path.write_text(rewrite(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
