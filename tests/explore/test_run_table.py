"""`explore run`'s table of metrics as a person reads it: a yes/no metric shown as 1 or 0 whatever its Python type
(fits_in_memory a bool, capacity_judged a float flag), --json keeping JSON's true/false; a serving run left without
--rate told in one line what it lacks and what it takes instead."""

from __future__ import annotations

import json

import pytest

from explore.cli import main
from tests.explore.tiny_sweep import write_tiny_model

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")


def _table(capsys, args: list[str]) -> dict[str, str]:
    """`explore run`'s table lines after its # header, as {metric: shown value}."""
    assert main(["run", *args]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line and not line.startswith("#")]
    return {key: value.strip() for key, _, value in (line.partition(" ") for line in lines)}


def test_yes_no_metrics_show_as_1_or_0(tmp_path, capsys):
    """capacity_judged (kind bool, metrics.py) prints 1 where judged; fits_in_memory, the same kind, prints 1 where the
    point fits, not Python's True; --json still writes true."""
    args = ["--model", write_tiny_model(tmp_path), "--device", "h100-sxm", "--execution", "graphs"]
    assert _table(capsys, args)["fits_in_memory"] == "1"
    assert main(["run", *args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fits_in_memory"] is True
    serving = _table(capsys, [*args, "--serving", "--requests", "4", "--prompt", "32", "--output", "4",
                              "--capacity", "1", "4", "--slo-ttft", "1"])
    assert serving["fits_in_memory"] == "1" and serving["capacity_judged"] in ("0", "1")


def test_a_serving_run_without_a_rate_says_what_it_lacks(tmp_path, capsys):
    """Poisson arrivals left without --rate: one line naming --rate, the missing rate, and what it takes (a rate, or
    --capacity's search), as a sweep's serving: without a rate says."""
    args = ["run", "--model", write_tiny_model(tmp_path), "--device", "h100-sxm", "--serving", "--requests", "4",
            "--prompt", "32", "--output", "4"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "--rate: found poisson arrivals without a rate, allowed: a rate > 0 req/s" in err, err
    assert "--capacity" in err and "found none" not in err, err
