"""Design points as columns: a block of points that differ only in device what-if values, and a sequence of such
blocks that reads as a sequence of DesignPoints.

A grid's points are its non-device knobs' combinations, each with every combination of its device what-ifs
(explore/sweep.py); a PointBlock holds one such combination's points as one base DesignPoint and a column of
values per override path, so a sweep of 10,000 points is a few dozen objects. Keys, input columns and the
DesignPoints themselves are made from the columns: point_ids hash each point's canonical text
(DesignPoint.canonical) built from the base's text and the point's overrides, equal to the DesignPoint's own.
"""

from __future__ import annotations

import bisect
import itertools
import json
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Any

from explore.columns import Columns
from explore.design_point import DesignPoint, key_of

# Stands for the overrides in a base point's canonical text; a NUL-delimited name no field's value holds.
_MARK = "\x00overrides\x00"


@dataclass(frozen=True, eq=False)
class PointBlock:
    """`size` design points: `base` (no overrides) with override paths[j] set to values[j][i] at point i, in the
    order DesignPoint.overrides lists them."""

    base: DesignPoint
    paths: tuple[str, ...] = ()
    values: tuple[tuple[Any, ...], ...] = ()  # one tuple of `size` values per path
    size: int = 1

    def __len__(self) -> int:
        return self.size

    @classmethod
    def of(cls, point: DesignPoint) -> PointBlock:
        """The block of one point."""
        return _block([point])

    def overrides(self, i: int) -> tuple[tuple[str, Any], ...]:
        return tuple(zip(self.paths, (column[i] for column in self.values), strict=True))

    @cached_property
    def point_ids(self) -> list[str]:
        """Each point's point_id, in order: the base's canonical text around each point's overrides."""
        head, tail = replace(self.base, overrides=_MARK).canonical().split(json.dumps(_MARK))
        if not self.paths:
            return [key_of(f"{head}[]{tail}")] * self.size
        encoded = [_encoded_pairs(path, column) for path, column in zip(self.paths, self.values, strict=True)]
        return [key_of(f"{head}[{', '.join(pairs)}]{tail}") for pairs in zip(*encoded, strict=True)]

    def point(self, i: int) -> DesignPoint:
        """Point i as a DesignPoint (with its point_id where the block's are computed already)."""
        point = replace(self.base, overrides=self.overrides(i))
        if "point_ids" in self.__dict__:
            point.__dict__["point_id"] = self.point_ids[i]  # the cached_property's slot
        return point

    @cached_property
    def first(self) -> DesignPoint:
        """Point 0: what the block's points share besides their what-if values."""
        return self.point(0)

    def points(self) -> list[DesignPoint]:
        return [self.point(i) for i in range(self.size)]

    def take(self, indices: Sequence[int]) -> PointBlock:
        """The block of the points at `indices`, in that order."""
        block = PointBlock(base=self.base, paths=self.paths, size=len(indices),
                           values=tuple(tuple(column[i] for i in indices) for column in self.values))
        if "point_ids" in self.__dict__:
            ids = self.point_ids
            block.__dict__["point_ids"] = [ids[i] for i in indices]
        return block

    def input_columns(self) -> Columns:
        """The points' input columns (DesignPoint.row), as columns: the base's values once for all points."""
        fields = self.base.row_fields()
        arrays = {"point_id": self.point_ids} | {f"device.{path}": column
                                                   for path, column in zip(self.paths, self.values, strict=True)}
        system = self.base.system_what_if_columns()
        names = ("point_id", *fields, *(name for name in arrays if name != "point_id"), *system)
        return Columns(size=self.size, names=names, arrays=arrays, constants=fields | system)


def _encoded_pairs(path: str, column: tuple[Any, ...]) -> list[str]:
    """Each value of an override column as its [path, value] pair in a canonical text, each distinct value
    encoded once (keyed by type too: 1, 1.0 and True encode differently)."""
    prefix, cache = f"[{json.dumps(path)}, ", {}
    out = []
    for value in column:
        key = (type(value), value)
        text = cache.get(key)
        if text is None:
            text = cache[key] = f"{prefix}{json.dumps(value, default=str)}]"
        out.append(text)
    return out


def blocks_of(points: Sequence[DesignPoint]) -> list[PointBlock]:
    """Points as blocks, in order: neighbours that differ only in their override values share one."""
    if isinstance(points, PointSet):
        return list(points.blocks)
    blocks: list[PointBlock] = []
    run: list[DesignPoint] = []
    for point in points:
        if run and not _same_base(run[0], point):
            blocks.append(_block(run))
            run = []
        run.append(point)
    if run:
        blocks.append(_block(run))
    return blocks


# Every field of a point but its overrides.
_BASE = operator.attrgetter(*(f.name for f in fields(DesignPoint) if f.name != "overrides"))


def _same_base(a: DesignPoint, b: DesignPoint) -> bool:
    """Whether two points differ at most in their override values."""
    return (len(a.overrides) == len(b.overrides)
            and all(pa == pb for (pa, _), (pb, _) in zip(a.overrides, b.overrides, strict=True))
            and _BASE(a) == _BASE(b))


def _block(points: list[DesignPoint]) -> PointBlock:
    first = points[0]
    block = PointBlock(base=replace(first, overrides=()), paths=tuple(path for path, _ in first.overrides),
                       values=tuple(zip(*(tuple(v for _, v in p.overrides) for p in points), strict=True))
                       if first.overrides else (), size=len(points))
    if all("point_id" in p.__dict__ for p in points):  # keys already computed: kept
        block.__dict__["point_ids"] = [p.point_id for p in points]
    return block


class PointSet(Sequence[DesignPoint]):
    """Design points held as blocks (PointBlock): a sequence of DesignPoints, each made when it is read."""

    def __init__(self, blocks: Sequence[PointBlock]):
        self.blocks = tuple(block for block in blocks if block.size)
        self._starts = list(itertools.accumulate((b.size for b in self.blocks), initial=0))

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        at = bisect.bisect_right(self._starts, index) - 1
        return self.blocks[at].point(index - self._starts[at])

    def __iter__(self) -> Iterator[DesignPoint]:
        for block in self.blocks:
            yield from block.points()

    def point_ids(self) -> list[str]:
        return [i for block in self.blocks for i in block.point_ids]
