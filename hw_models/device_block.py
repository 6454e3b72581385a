"""A device priced for a block of design points: one preset whose what-if knobs take one value per point.

A sweep's hardware knobs (dotted spec paths, 'memory.bandwidth_GBps') are validated by their values, not per
point: each distinct value alone through the same checks a single what-if gets (registry.load_device), and
the corners of the knobs' ranges together, for the checks that compare fields (idle power below the TDP).
The values are then set on one copy of the spec as arrays of shape (points, 1): a cost model's arithmetic
over a kernel table (arrays of shape (kernels,)) broadcasts to (points, kernels), so one call prices a table
for every point of the block (hw_models/gpu.py). Only the fields a family lists in `block_fields` may vary
across a block: fields that change a table's shape-dependent terms (an SM count sets the GEMM waves) are
left to one block per value.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from hw_models.registry import load_device

# Knobs whose range corners are validated together: 2^n device loads. Beyond this many, every distinct
# combination of values in the block is validated instead.
MAX_CORNER_KNOBS = 6


def varies_in_block(model_class: type, path: str) -> bool:
    """Whether knob `path` may take a different value at each point of a block on devices of this family."""
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in getattr(model_class, "block_fields", ()))


def with_columns(spec: Any, columns: Mapping[str, np.ndarray]) -> Any:
    """A copy of a validated spec with each dotted-path field replaced by an array (already validated values)."""
    for path, values in columns.items():
        spec = _set(spec, path.split("."), values)
    return spec


def _set(node: Any, keys: list[str], value: Any) -> Any:
    if isinstance(node, Mapping):
        changed = dict(node)
        changed[keys[0]] = value if len(keys) == 1 else _set(node[keys[0]], keys[1:], value)
        return changed
    changed = copy.copy(node)  # a frozen spec dataclass: its fields are set on the copy directly
    object.__setattr__(changed, keys[0], value if len(keys) == 1 else _set(getattr(node, keys[0]), keys[1:], value))
    return changed


def check_knob_values(name: str, knobs: Mapping[str, Sequence[Any]], *, fixed: Mapping[str, Any] | None = None,
                      calibrated: bool = True, checked: set | None = None) -> None:
    """Validate what-if values as every point of a block would be: each value alone, and the corners of the
    ranges together (every combination where there are more than MAX_CORNER_KNOBS knobs), each with the
    `fixed` overrides all points share. InputError as a single point's what-if raises it. `checked` remembers
    what passed, across the blocks of a sweep."""
    checked = set() if checked is None else checked
    fixed = tuple(sorted((fixed or {}).items()))
    singles = [((path, value),) for path in sorted(knobs) for value in sorted(set(knobs[path]))]
    for overrides in itertools.chain(singles, knob_corners(knobs)):
        key = (name, calibrated, fixed, tuple(sorted(set(overrides))))
        if key not in checked:
            load_device(name, dict(fixed) | dict(overrides), calibrated=calibrated)
            checked.add(key)


def knob_corners(knobs: Mapping[str, Sequence[Any]]) -> Iterable[tuple[tuple[str, Any], ...]]:
    """The what-if values checked together, as (path, value) pairs: every corner of the knobs' ranges (each at its
    least or its greatest value), or with more than MAX_CORNER_KNOBS knobs each combination the points take (their
    values zipped). The checks that compare fields (idle power below a power cap, below the TDP) fail at a corner
    where they fail anywhere."""
    paths = sorted(knobs)
    distinct = {path: sorted(set(knobs[path])) for path in paths}
    if len(paths) <= MAX_CORNER_KNOBS:
        return itertools.product(*([(path, values[0]), (path, values[-1])] for path, values in distinct.items()))
    return set(zip(*([(path, value) for value in knobs[path]] for path in paths), strict=True))


def block_device(base, knobs: Mapping[str, Sequence[Any]]):
    """The cost model `base` (a preset with any fixed what-if overrides) with knob `path` set to knobs[path][i] at
    point i of a block, every knob a field its family's `block_fields` lets vary, and every value checked
    (check_knob_values). Spec fields that vary are arrays of shape (points, 1)."""
    unknown = [path for path in knobs if not varies_in_block(type(base), path)]
    if unknown:
        raise ValueError(f"{base.name}: {', '.join(unknown)} cannot vary within a block of {base.kind} points")
    columns = {path: np.asarray(values, dtype=float)[:, None] for path, values in knobs.items()}
    return type(base)(with_columns(base.spec, columns), reference=base.reference, calibration=base.calibration)
