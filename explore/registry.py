"""An ordered registry of named entries: the shared mechanics of explore/knobs.py and explore/metrics.py.

Entries are frozen dataclasses with a `name`; the registry keeps them in registration order (which is the
order of results columns, flags and documentation tables). Views computed from the entries (the columns of a
table, the knobs of a section) are memoized with `view` until the next registration: they are read per design
point, and hashing the entries each time would cost more than the rest of a results row. A test that registers
an entry uses `added(...)`, which removes it again on exit, so no test leaks an entry into another.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic, Protocol, TypeVar


class Named(Protocol):
    @property
    def name(self) -> str: ...


E = TypeVar("E", bound=Named)
T = TypeVar("T")


class Registry(Generic[E]):
    """Entries by name, in registration order."""

    def __init__(self, what: str) -> None:
        self.what = what  # 'knob' or 'metric', for messages
        self._entries: dict[str, E] = {}
        self._tuple: tuple[E, ...] = ()
        self._views: dict[Hashable, Any] = {}  # memoized views of the entries, emptied on every change
        self.version = 0  # counts changes: a view that also reads another registry keys on its version

    def register(self, entry: E) -> E:
        """Add an entry; ValueError when its name is taken (one name, one meaning)."""
        if entry.name in self._entries:
            raise ValueError(f"{self.what} {entry.name!r} is registered already")
        self._entries[entry.name] = entry
        self._changed()
        return entry

    def unregister(self, name: str) -> None:
        del self._entries[name]
        self._changed()

    def _changed(self) -> None:
        self._tuple = tuple(self._entries.values())
        self._views.clear()
        self.version += 1

    def view(self, key: Hashable, compute: Callable[[], T]) -> T:
        """`compute()`, memoized under `key` until the entries change."""
        if key not in self._views:
            self._views[key] = compute()
        return self._views[key]

    @contextlib.contextmanager
    def added(self, *entries: E) -> Iterator[tuple[E, ...]]:
        """Register the entries for the duration of a `with` block (tests: a dummy knob or metric)."""
        done: list[E] = []
        try:
            for entry in entries:
                done.append(self.register(entry))
            yield entries
        finally:
            for entry in reversed(done):
                self.unregister(entry.name)

    def entries(self) -> tuple[E, ...]:
        return self._tuple

    def get(self, name: str) -> E | None:
        return self._entries.get(name)

    def __getitem__(self, name: str) -> E:
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries
