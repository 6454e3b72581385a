"""Every whole `explore run` command the README quotes inline (the commands its figures were measured with) is one a
user can paste: each of its flags is one `explore run` takes, with a value of the kind the flag takes. Usage
synopses (with `[...]` placeholders) and fenced code blocks are left out."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from explore.cli import _command_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _quoted_runs() -> list[str]:
    """The inline `explore run --model ...` spans, each on one line (a span may wrap over the README's lines)."""
    text = re.sub(r"```.*?```", "", README.read_text(encoding="utf-8"), flags=re.S)
    spans = (" ".join(span.split()) for span in re.findall(r"`(explore run [^`]*)`", text))
    return [span for span in spans if "--model" in span and "[" not in span]


def test_the_readme_s_quoted_run_commands_parse():
    runs = _quoted_runs()
    # The serving figures' commands among them (router, gateway, autoscaling, fleet).
    assert sum("--serving" in run for run in runs) >= 6, runs
    parser = _command_parser()
    for run in runs:
        args = parser.parse_args(shlex.split(run)[1:])
        assert args.command == "run", run
