"""The version of the cost model a results row was priced by: a digest of every file that prices a design point.

A sweep's folder keeps the digests of the runs that wrote its rows (explore/results.py); a rerun by another version
keeps the stored rows as they were priced, so `explore SWEEP` says when the folder holds rows of another version.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

# The layers that price a point, whole: their code, presets, fits and measured tables.
PRICING_PACKAGES = ("workloads", "kernels", "hw_models", "sim")
# explore's files that turn a priced point into its results row (the rest run, store, plot and report rows).
PRICING_FILES = ("evaluate.py", "blocks.py", "point_blocks.py", "metrics.py", "derived.py", "quality.py",
                 "design_point.py", "point_values.py", "data")


@cache
def model_digest() -> str:
    """16 hex digits of a SHA-256 over the pricing files' paths and contents (cached bytecode left out)."""
    root = Path(__file__).resolve().parents[1]
    paths = [p for name in PRICING_PACKAGES for p in (root / name).rglob("*")]
    paths += [p for name in PRICING_FILES for p in ([root / "explore" / name] if name.endswith(".py")
                                                     else (root / "explore" / name).rglob("*"))]
    return _digest(root, paths)


@cache
def report_digest() -> str:
    """16 hex digits over explore's other code, which runs a sweep and draws its report from the rows: a report drawn
    by other code is not current (explore/rerun.py report_inputs)."""
    root = Path(__file__).resolve().parents[1]
    return _digest(root, [p for p in (root / "explore").glob("*.py") if p.name not in PRICING_FILES])


def _digest(root: Path, paths: list[Path]) -> str:
    """16 hex digits of a SHA-256 over `paths`' names (from `root`) and contents (cached bytecode left out)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in paths if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
