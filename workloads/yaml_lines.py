"""Load YAML keeping the line of every key, so validation errors can name file:line."""

from __future__ import annotations

from pathlib import Path

import yaml

from workloads.errors import InputError, read_user_text


def _lines(node, path: tuple, table: dict[tuple, int], where: str) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = path + (key_node.value,)
            line = key_node.start_mark.line + 1
            if child in table:
                # YAML loaders keep the last of two equal keys: one of the user's values would be dropped.
                raise InputError(f"{where}:{line}: {'.'.join(map(str, child))}: duplicate key (first at line "
                                 f"{table[child]}); allowed: each key once")
            table[child] = line
            _lines(value_node, child, table, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            table[path + (i,)] = item.start_mark.line + 1
            _lines(item, path + (i,), table, where)


class LocatedYAML:
    """Parsed YAML data plus a lookup from key path to line number."""

    def __init__(self, path: str | Path, text: str | None = None):
        """Parse the file at path, or `text` read from it already (path then only names it in messages)."""
        self.path = str(path)
        text = read_user_text(path) if text is None else text
        try:
            self.data = yaml.safe_load(text)
            node = yaml.compose(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise InputError(f"{path}{line}: not valid YAML: {problem}") from None
        self._table: dict[tuple, int] = {}
        if node is not None:
            _lines(node, (), self._table, self.path)

    def line_of(self, loc: tuple) -> int | None:
        """Line of the deepest known key along loc."""
        loc = tuple(loc)
        while loc:
            if loc in self._table:
                return self._table[loc]
            loc = loc[:-1]
        return None

    def where(self, loc: tuple) -> str:
        line = self.line_of(loc)
        return f"{self.path}:{line}" if line else self.path
