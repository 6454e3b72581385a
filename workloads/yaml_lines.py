"""Load YAML keeping the line of every key, so validation errors can name file:line.

Sweep and device files come from users, so reading one must not hang or exhaust memory whatever it holds: the
text is bounded (MAX_FILE_BYTES), and before a tree is built one pass over the parser's events (no recursion,
no tree) bounds the nesting (MAX_YAML_DEPTH) and the values the data holds once aliases are expanded
(MAX_YAML_VALUES): a "billion laughs" file is a few hundred bytes that expand to 10^9 values.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from workloads.errors import MAX_FILE_BYTES, InputError, read_user_text

# Nesting levels: the deepest shipped file has 5. PyYAML's composer recurses about twice per level, and the
# checks after it once more, so 100 levels stay far inside Python's recursion limit (1,000 frames).
MAX_YAML_DEPTH = 100
# Scalars and collections once every alias (*name) is expanded: a device file has about 300, a sweep with
# long value lists a few thousand. Validating 100,000 takes about a second; a billion-laughs file would
# expand to 10^9 and hang every walk over the data.
MAX_YAML_VALUES = 100_000

# The shape pass only needs events: libyaml's parser when PyYAML has it (fast, and iterative in C), else PyYAML's
# own (iterative too). The tree itself is built by PyYAML's Python loader, whose messages users see.
_EVENT_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_shape(text: str, where: str) -> None:
    """Refuse text nested deeper than MAX_YAML_DEPTH or holding more than MAX_YAML_VALUES values with aliases
    expanded, reading only the parser's events. A syntax error ends the pass: the full parse reports it."""
    expanded = 0  # values so far, each alias counted as the whole node it names
    sizes: dict[str, int] = {}  # anchor -> expanded values of its node
    open_nodes: list[tuple[str | None, int]] = []  # (anchor, `expanded` at its start) of each open collection
    try:
        for event in yaml.parse(text, Loader=_EVENT_LOADER):
            if isinstance(event, yaml.AliasEvent):
                expanded += sizes.get(event.anchor, 1)  # an alias of an open (recursive) anchor counts once
            elif isinstance(event, yaml.ScalarEvent):
                expanded += 1
                if event.anchor:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                open_nodes.append((event.anchor, expanded))
                expanded += 1
                if len(open_nodes) > MAX_YAML_DEPTH:
                    raise InputError(f"{where}:{event.start_mark.line + 1}: found values nested more than "
                                     f"{MAX_YAML_DEPTH} levels deep, allowed: at most {MAX_YAML_DEPTH} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, start = open_nodes.pop()
                if anchor:
                    sizes[anchor] = expanded - start
            else:
                continue
            if expanded > MAX_YAML_VALUES:
                how = " once aliases (*name) are expanded" if sizes or isinstance(event, yaml.AliasEvent) else ""
                raise InputError(f"{where}:{event.start_mark.line + 1}: found more than {MAX_YAML_VALUES:,} "
                                 f"values{how}, allowed: at most {MAX_YAML_VALUES:,}")
    except yaml.YAMLError:
        return


def _lines(node, path: tuple, table: dict[tuple, int], where: str, seen: set[int]) -> None:
    if id(node) in seen:
        return  # an alias of a node already walked: its lines are the anchor's, and walking it again multiplies
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = path + (key_node.value,)
            line = key_node.start_mark.line + 1
            if child in table:
                # YAML loaders keep the last of two equal keys: one of the user's values would be dropped.
                raise InputError(f"{where}:{line}: {'.'.join(map(str, child))}: duplicate key (first at line "
                                 f"{table[child]}); allowed: each key once")
            table[child] = line
            _lines(value_node, child, table, where, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            table[path + (i,)] = item.start_mark.line + 1
            _lines(item, path + (i,), table, where, seen)


class LocatedYAML:
    """Parsed YAML data plus a lookup from key path to line number."""

    def __init__(self, path: str | Path, text: str | None = None):
        """Parse the file at path, or `text` read from it already (path then only names it in messages)."""
        self.path = str(path)
        text = read_user_text(path) if text is None else text
        if len(text) > MAX_FILE_BYTES:
            raise InputError(f"{path}: found more than {MAX_FILE_BYTES:,} characters, allowed: at most "
                             f"{MAX_FILE_BYTES >> 20} MiB (sweep and device files are a few KB)")
        _check_shape(text, self.path)
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()  # parsed once: the data is constructed from this tree
            self._table: dict[tuple, int] = {}
            if node is not None:  # lines first: constructing merges '<<' keys into the tree's mappings
                _lines(node, (), self._table, self.path, set())
            self.data = None if node is None else loader.construct_document(node)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise InputError(f"{path}{line}: not valid YAML: {problem}") from None
        except RecursionError:  # the shape pass bounds nesting; this is the last guard
            raise InputError(f"{path}: found values nested too deeply to read, allowed: at most {MAX_YAML_DEPTH} "
                             f"levels") from None
        finally:
            loader.dispose()

    def line_of(self, loc: tuple) -> int | None:
        """Line of the deepest known key along loc."""
        loc = tuple(loc)
        while loc:
            if loc in self._table:
                return self._table[loc]
            loc = loc[:-1]
        return None

    def key_line(self, key: str) -> int | None:
        """Line of the first key of this name at any depth (a message names a key, not its section)."""
        lines = [line for loc, line in self._table.items() if loc and loc[-1] == key]
        return min(lines) if lines else None

    def where(self, loc: tuple) -> str:
        line = self.line_of(loc)
        return f"{self.path}:{line}" if line else self.path
