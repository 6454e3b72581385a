"""Hostile and mistaken inputs (tests/data/bad/, plus big files made at test time): each is refused by the CLI
with exit code 2 and exactly one line on stderr, no traceback, well within 10 s (alias bombs, deep nesting,
huge ranges and grids used to hang or grow memory; sweep names could write outside out/)."""

from __future__ import annotations

import faulthandler
import sys
import time
from pathlib import Path

import pytest

from explore.cli import main
from explore.schema import MAX_NAME_BYTES
from explore.sweep import MAX_RANGE_STEPS, MAX_SEARCH_SPACE, MAX_SWEEP_POINTS
from workloads.errors import MAX_FILE_BYTES
from workloads.yaml_lines import MAX_YAML_DEPTH, MAX_YAML_VALUES

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
LIMIT_S = 10.0


def _sweep(name: str) -> list[str]:
    return [str(BAD / name)]  # run it: no --out, so a name decides the folder (out/<name> under tmp_path)


def _check(name: str) -> list[str]:
    return ["check", str(BAD / name)]


def _model(name: str) -> list[str]:
    return ["run", "--model", str(BAD / name), "--device", "h100-sxm"]


def _device(name: str) -> list[str]:
    return ["run", "--model", "llama-2-7b", "--device", str(BAD / name)]


def _big_sweep(tmp: Path) -> list[str]:
    """A valid sweep under a comment of more than MAX_FILE_BYTES (a 60 MB one took minutes to parse)."""
    path = tmp / "big-sweep.yaml"
    path.write_text("#" + "x" * MAX_FILE_BYTES + "\nname: big\nmodel: llama-2-7b\ndevice: h100-sxm\n")
    return [str(path)]


def _big_device(tmp: Path) -> list[str]:
    path = tmp / "big-device.yaml"
    path.write_text("kind: gpu\nname: big\n" + "#" + "x" * MAX_FILE_BYTES + "\n")
    return ["run", "--model", "llama-2-7b", "--device", str(path)]


def _absolute_name(tmp: Path) -> list[str]:
    """A name that is an absolute path (inside this test's folder, so a failure writes nowhere else)."""
    path = tmp / "absolute-name.yaml"
    path.write_text(f"name: {tmp / 'escaped'}\nmodel: llama-2-7b\ndevice: h100-sxm\n")
    return [str(path)]


def _long_name(tmp: Path) -> list[str]:
    path = tmp / "long-name.yaml"
    path.write_text(f"name: {'n' * (MAX_NAME_BYTES + 1)}\nmodel: llama-2-7b\ndevice: h100-sxm\n")
    return [str(path)]


# (case, argv or a function of tmp_path giving it, text the one line must hold)
CASES = [
    ("sweep alias bomb", _sweep("sweep_alias_bomb.yaml"), f"more than {MAX_YAML_VALUES:,} values once aliases"),
    ("device alias bomb", _device("device_alias_bomb.yaml"), f"more than {MAX_YAML_VALUES:,} values once aliases"),
    ("sweep nested 3000 deep", _check("sweep_deep_nesting.yaml"), f"more than {MAX_YAML_DEPTH} levels deep"),
    ("sweep JSON nested 3000 deep", _sweep("sweep_deep_nesting.json"), f"more than {MAX_YAML_DEPTH} levels deep"),
    ("device nested 3000 deep", _device("device_deep_nesting.yaml"), f"more than {MAX_YAML_DEPTH} levels deep"),
    ("config.json nested 3000 deep", _model("model_deep_nesting.json"), "nested too deeply"),
    ("range of 10,000,000 steps", _check("sweep_range_steps.yaml"), f"less than or equal to {MAX_RANGE_STEPS}"),
    ("override of 1,001 values", _check("sweep_override_values.yaml"),
     f"1,001 values, allowed: at most {MAX_RANGE_STEPS:,}"),
    ("grid of 1,030,301 points", _check("sweep_grid_points.yaml"), f"at most {MAX_SWEEP_POINTS:,}"),
    ("budget of 10,000,000", _check("sweep_budget.yaml"), f"at most {MAX_SWEEP_POINTS:,}"),
    ("search space of 10^18", _check("sweep_search_space.yaml"), f"at most {MAX_SEARCH_SPACE:.0e}"),
    ("derived from 10^9 combinations", _check("sweep_derived_inputs.yaml"), "reads 1,000,000,000 combinations"),
    ("name ../..", _sweep("name_dotdot.yaml"), "name: found '../..'"),
    ("absolute name", _absolute_name, "escaped', allowed: a folder name"),
    ("name with a separator", _sweep("name_separator.yaml"), "name: found 'results/escaped'"),
    ("name with a backslash", _sweep("name_backslash.yaml"), "name: found '..\\\\escaped'"),
    ("empty name", _sweep("name_empty.yaml"), "name: found ''"),
    ("name ..", _sweep("name_parent.yaml"), "name: found '..'"),
    ("name longer than a file name", _long_name, f"1 to {MAX_NAME_BYTES} bytes"),
    ("sweep over 1 MiB", _big_sweep, f"more than {MAX_FILE_BYTES:,} bytes"),
    ("device file over 1 MiB", _big_device, f"more than {MAX_FILE_BYTES:,} bytes"),
]


@pytest.fixture
def watchdog():
    """A case that hangs fails the session with every thread's stack instead of blocking CI forever."""
    faulthandler.dump_traceback_later(60, exit=True, file=sys.__stderr__)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.mark.parametrize("argv,needle", [pytest.param(a, n, id=c) for c, a, n in CASES])
def test_bad_input_is_one_line_exit_2(argv, needle, tmp_path, monkeypatch, capsys, watchdog):
    monkeypatch.chdir(tmp_path)  # a sweep's default output folder, out/<name>, lands here
    argv = argv(tmp_path) if callable(argv) else argv
    start = time.monotonic()
    code = main(argv)
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
    assert elapsed < LIMIT_S
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped").exists()  # no folder made


def test_corpus_files_are_all_used():
    """Every file under tests/data/bad/ is a case above (a file nobody runs guards nothing)."""
    used = {Path(arg).name for _, argv, _ in CASES if not callable(argv) for arg in argv if arg.startswith(str(BAD))}
    assert {p.name for p in BAD.iterdir()} <= used
