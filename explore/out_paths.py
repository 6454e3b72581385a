"""Checks of the paths a command writes, made before its work so that a refused write loses none of it: one-line
errors naming the flag, the path given and what is allowed; and the refusal of a path found unwritable as it is
written, after the work is stored."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workloads.errors import InputError


def check_out_file(flag: str, path: str | Path, suffixes: tuple[str, ...] = (), makes_folder: bool = False) -> None:
    """InputError where `path` cannot take the file a command writes: a name that does not end in one of `suffixes`
    (any name where none are given), an existing folder, or a folder that does not exist (or, where the command
    `makes_folder` with its parents, lies under a file) or that this user cannot write."""
    given, path = str(path), Path(path)
    ending = f" ending in {' or '.join(suffixes)}" if suffixes else ""
    if suffixes and not given.endswith(suffixes):
        raise InputError(f"{flag}: found {given!r}, allowed: a path{ending}")
    if path.is_dir():
        raise InputError(f"{flag}: found {given!r}, an existing folder; allowed: a file path{ending} (a new file or "
                         f"one to overwrite)")
    if makes_folder and (blocker := _file_at_or_above(path.parent)):
        raise InputError(f"{flag}: found {given!r}, under the file {blocker}; allowed: a file path{ending} in a "
                         f"folder (new or existing)")
    folder = path.resolve().parent
    if makes_folder and not folder.exists():
        return
    why = "does not exist" if not folder.is_dir() else "is not writable" if not os.access(folder, os.W_OK) else ""
    if why:
        raise InputError(f"{flag}: found {given!r}, whose folder {folder} {why}; allowed: a file in an existing "
                         f"folder this user can write")


def check_out_folder(flag: str, path: str | Path, allowed: str = "a folder (new, or one to write into)") -> None:
    """InputError where `path` cannot be the folder a command writes into: an existing file, or a path under one (a
    new folder is made, with its parents)."""
    if blocker := _file_at_or_above(Path(path)):
        where = "an existing file" if blocker == Path(path) else f"under the file {blocker}"
        raise InputError(f"{flag}: found {str(path)!r}, {where}; allowed: {allowed}")


def _file_at_or_above(path: Path) -> Path | None:
    """The existing file at `path` or above it, through which no folder can be made (None where there is none)."""
    existing = next(p for p in (path, *path.parents) if p.exists())  # the last of them, '.' or '/', exists
    return None if existing.is_dir() else existing


@contextmanager
def refusing_unwritable(allowed: str) -> Iterator[None]:
    """Writes into a results folder, a path among them this user cannot write (a file made read-only after a run)
    refused in one line naming it, with `allowed`: what may be there and what to do to write it."""
    try:
        yield
    except PermissionError as err:
        raise InputError(f"{err.filename}: found a path this user cannot write ({err.strerror}); allowed: "
                         f"{allowed}") from None
