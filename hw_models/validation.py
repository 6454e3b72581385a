"""Turn pydantic validation errors and unknown keys into the one-line messages users get."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Callable

from pydantic import BaseModel, ValidationError

from hw_models.spec_common import PLAUSIBLE, Plausible, ReadWith, Unread
from workloads.errors import InputError, did_you_mean, found_value


def dotted(loc) -> str:
    return ".".join(str(part) for part in loc)


def _is_type_tag(part) -> bool:
    """Parts pydantic adds to an error's location for union members ('list[int]', 'constrained-int')."""
    return isinstance(part, str) and ("[" in part or "-" in part or part in _TAGS)


_TAGS = frozenset({"int", "float", "str", "bool", "list", "dict", "tuple", "Range", "none"})


def _most_specific(errors: list[dict]) -> dict:
    """Of the errors a union produces, the one about a single value deepest in the file."""
    def score(e):
        leaf = not isinstance(e.get("input"), list | dict)
        # A list fails a union's scalar member by its type; the list member that took the type and then
        # failed a rule (too short, a repeated value) says what is wrong.
        # A list given where one value or a list of them is allowed: the list member's rule, not the scalar's type.
        list_member = isinstance(e.get("input"), list) and any("list[" in str(p) for p in e["loc"])
        return (leaf, len([p for p in e["loc"] if not _is_type_tag(p)]), not e["type"].endswith("_type"),
                list_member)
    return max(errors, key=score)


def _values(count: int) -> str:
    return f"{count} value" if count == 1 else f"{count} values"


TEXT = "a text value"
# A number with an exponent that YAML 1.1 reads as text: it takes one only with a '.' and a signed exponent (1.0e+3).
_EXPONENT = re.compile(r"[-+]?([0-9][0-9_]*\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")
MAPPING = "a mapping of its keys (key: value, ...)"  # a section given a value: input_error names its keys where it can
# What a type error allows, said plainly (pydantic: "a valid integer, got a number with a fractional part").
PLAIN_ALLOWED = {
    "bool_type": "true or false",  # not the text "false" or "no": a string where a flag is meant is a mistake
    "bool_parsing": "true or false",
    "int_from_float": "an integer", "int_parsing": "an integer", "int_type": "an integer",
    "float_parsing": "a number", "float_type": "a number",
    "model_type": MAPPING, "dict_type": MAPPING,
    # A section of a device spec (a pydantic dataclass): pydantic names the Python class ('an instance of MemorySpec').
    "dataclass_type": MAPPING, "mapping_type": MAPPING, "model_attributes_type": MAPPING,
    # pydantic's 'a valid string', 'a valid list' (a tuple's length: _list_allowed).
    "string_type": TEXT, "string_sub_type": TEXT, "string_unicode": TEXT,
    "list_type": "a list", "tuple_type": "a list", "set_type": "a list", "frozen_set_type": "a list",
    "iterable_type": "a list",
}


def input_error(err: ValidationError, where: str, prefix: str = "",
                line_of: Callable[[tuple], int | None] | None = None, cls=None) -> InputError:
    """The most specific error of a pydantic ValidationError as 'file:line: key: found X, allowed: Y'; `cls`: the class
    validated, whose sections' keys a section given another value is told."""
    first = _most_specific(err.errors())
    loc = tuple(p for p in first["loc"] if not _is_type_tag(p))
    # A list of a fixed length (a tuple) short of values: pydantic names each index missing, the last at the length.
    short = first["type"] == "missing" and bool(loc) and isinstance(loc[-1], int)
    if short:
        loc = loc[:-1]
    key = prefix + dotted(loc)
    line = line_of(loc) if line_of else None
    place = f"{where}:{line}" if line else where
    if first["type"] == "extra_forbidden":
        return InputError(f"{place}: {key}: unknown key")
    if short:
        length = 1 + max(e["loc"][-1] for e in err.errors()
                         if e["type"] == "missing" and e["loc"][:-1] == first["loc"][:-1])
        return InputError(f"{place}: {key}: found {found_value(first.get('input'))}, "
                          f"allowed: a list of {length} values")
    if first["type"] == "missing":
        return InputError(f"{place}: {key}: missing, allowed: a value (the key is required)")
    allowed = first["msg"]
    if first["type"] == "too_short":
        allowed = f"a list of at least {_values(first['ctx']['min_length'])}"
    if first["type"] == "too_long":  # a tuple's length is its only one
        most = first["ctx"]["max_length"]
        allowed = f"a list of {most} values" if first["ctx"].get("field_type") == "Tuple" else \
            f"a list of at most {_values(most)}"
    if first["type"] in ("string_too_short", "string_too_long"):  # pydantic: 'String should have at least 3 characters'
        least = first["type"] == "string_too_short"
        length = first["ctx"]["min_length" if least else "max_length"]
        allowed = f"text of at {'least' if least else 'most'} {length} character{'s' * (length != 1)}"
    allowed = PLAIN_ALLOWED.get(first["type"], allowed)
    if first["type"] == "tuple_type" and cls is not None:
        allowed = _list_allowed(field_hint(cls, dotted(loc)))
    if allowed == MAPPING and cls is not None and (keys := _fields(field_hint(cls, dotted(loc)))):
        allowed = f"a mapping of its keys {', '.join(keys)} (key: value, ...)"
    if first["type"] == "int_type" and any(e["type"] == "float_type" and e["input"] is first["input"]
                                           for e in err.errors()):
        allowed = "a number"  # an integer or a decimal: a union of the two refused both
    for prefix_text in ("Input should be ", "Value error, "):
        allowed = allowed.removeprefix(prefix_text)
    # A section's key (or the whole file's): where `cls` says which keys are sections, a mapping at any other is a
    # value given in place of one (parallel.ep: {values: [...]}), quoted as any other value, unless the refusal says
    # what it found itself (a range's, a constraint's: a mapping may be theirs).
    section = not key or cls is None or _fields(field_hint(cls, dotted(loc))) is not None or "found " in allowed
    if isinstance(first.get("input"), dict) and not first["type"].endswith("_type") and section:
        # A rule over several fields of a section (or of the whole file): its message names them; the
        # section itself is no value to quote. A mapping where a value of another type belongs is quoted.
        return InputError(f"{place}: {key}: {allowed}" if key else f"{place}: {allowed}")
    if first["type"] == "string_type" and isinstance(first.get("input"), list):
        allowed = "one text value, not a list (the key does not sweep)"
    if isinstance(first.get("input"), str) and _EXPONENT.fullmatch(first["input"]) and first["type"] != "literal_error":
        # The user wrote a number (1e3, 5e-4, 1.0e3), which YAML 1.1 reads as text.
        allowed += " (YAML reads 1e3 or 1.0e3 as text: write 1.0e+3 or 1000)"
    if first["type"] == "string_type" and isinstance(first.get("input"), bool):
        # YAML 1.1 reads yes/no/on/off/true/false unquoted as booleans: the user wrote a word.
        allowed += " (YAML reads an unquoted yes, no, on, off, true or false as a boolean: quote it)"
    return InputError(f"{place}: {key}: found {found_value(first.get('input'))}, allowed: {allowed}")


def _list_allowed(hint) -> str:
    """A tuple field's type in words: 'a list of 2 values' where its length is fixed (a capacity's [low, high]), else
    'a list'."""
    for member in _members(hint):
        args = typing.get_args(member)
        if typing.get_origin(member) is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {_values(len(args))}"
    return "a list"


def _members(hint) -> list:
    """The types a field's hint may hold: each member of a union, each unwrapped of Annotated."""
    if typing.get_origin(hint) is typing.Annotated:
        return _members(typing.get_args(hint)[0])
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return [m for arg in typing.get_args(hint) for m in _members(arg)]
    return [hint]


def check_keys(data, cls, where: str, prefix: str = "", line_of=None, path: tuple = (),
               elsewhere: Callable[[tuple], str] | None = None) -> None:
    """Raise on the first key of `data` that dataclass `cls` (and its nested dataclasses) does not have;
    `elsewhere(path)` may say where such a key belongs (' (a key of serving:)'), else ''.

    pydantic reports unknown keys too, but cannot say which known key was meant.
    """
    if typing.get_origin(cls) is dict and isinstance(data, dict):
        # A mapping of user-chosen names to specs: check each value, not the names.
        value_type = typing.get_args(cls)[1]
        for key, value in data.items():
            check_keys(value, value_type, where, prefix, line_of, path + (key,), elsewhere)
        return
    hints = _fields(cls)
    if not isinstance(data, dict) or hints is None:
        return
    for key, value in data.items():
        if key not in hints:
            line = line_of(path + (key,)) if line_of else None
            place = f"{where}:{line}" if line else where
            belongs = elsewhere(path + (key,)) if elsewhere else ""
            raise InputError(f"{place}: {prefix}{dotted(path + (key,))}: unknown key"
                             f"{belongs or did_you_mean(key, hints)}; allowed: {', '.join(hints)}")
        check_keys(value, hints[key], where, prefix, line_of, path + (key,), elsewhere)


@functools.cache  # typing.get_type_hints evaluates every annotation anew: most of a device load's checks
def _fields(cls) -> dict[str, type] | None:
    """Field names and types of a dataclass or pydantic model (the first such member of a union); read only."""
    for member in typing.get_args(cls) or (cls,):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return {name: f.annotation for name, f in member.model_fields.items()}
        # A class only: pydantic's Annotated metadata (AfterValidator, ...) are dataclass instances.
        if isinstance(member, type) and dataclasses.is_dataclass(member):
            return typing.get_type_hints(member)
    return None


def declared_field(cls, path: str) -> bool:
    """Whether dotted `path` names a field of spec class `cls` (a field with a default may be absent from a preset's
    file and still be set by an override)."""
    return field_hint(cls, path) is not _UNDECLARED


_UNDECLARED = object()


def default_fields(cls, section: str) -> list[str]:
    """The fields (not sections) spec class `cls` declares in the section at dotted `section` ('' for the top level):
    those a preset may leave out and an override still set (declared_field)."""
    hint = cls if not section else field_hint(cls, section)
    fields = _fields(hint) if hint is not _UNDECLARED else None
    return [name for name, field in (fields or {}).items() if _fields(field) is None]


def field_hint(cls, path: str) -> typing.Any:
    """The declared type of the field at dotted `path` of spec class `cls`; _UNDECLARED where `cls` declares none (a
    key of a mapping field, such as a dtype under mac_pJ)."""
    hint = cls
    for key in path.split("."):
        fields = _fields(hint)
        if not fields or key not in fields:
            return _UNDECLARED
        hint = fields[key]
    return hint


def not_a_number(cls, path: str, value: typing.Any) -> str | None:
    """What the field at dotted `path` of spec class `cls` holds where that is no number ('a yes/no field', 'a
    name', 'a section'), judged by its `value` in a preset (None: absent or null, judged by its declared type);
    None for a number field, which a what-if may set."""
    if isinstance(value, bool):
        return "a yes/no field"
    if isinstance(value, str):
        return "a name"
    if isinstance(value, dict):
        return "a section"
    if isinstance(value, list):
        return "a list"
    if value is None:
        hint = field_hint(cls, path)
        if hint is not _UNDECLARED and _fields(hint) is not None:
            return "a section"
        if hint is not _UNDECLARED and not _holds_number(hint):
            return "a field that holds no number"
    return None


def absent_number_fields(cls, data: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the number fields of spec class `cls` that a preset's `data` leaves out, inside the sections it
    has: fields declared with a default, which a what-if may still set."""
    found = []
    for name, hint in (_fields(cls) or {}).items():
        if name not in data and _holds_number(hint):
            found.append(f"{prefix}{name}")
        elif isinstance(data.get(name), dict):
            found += absent_number_fields(hint, data[name], f"{prefix}{name}.")
    return found


def _holds_number(hint) -> bool:
    """Whether a field's type is a number (int or float, optionally None)."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union  # X | None, Optional[X]
    members = [m for m in (typing.get_args(hint) if union else (hint,)) if m is not type(None)]
    return bool(members) and all(m in (int, float) for m in members)


@functools.cache
def unread_fields(cls) -> dict[tuple[str, ...], str]:
    """Paths of the fields of spec class `cls` marked Unread (no cost model reads them), with the reason;
    '*' stands for a user-chosen name (a cache level, a dtype)."""
    return {path: marker.why for path, marker in _marked(cls, Unread).items()}


@functools.cache
def read_with_fields(cls) -> dict[tuple[str, ...], ReadWith]:
    """Paths of the fields of spec class `cls` marked ReadWith (read only beside another field), with the marker."""
    return _marked(cls, ReadWith)


def _marked(cls, marker_type: type) -> dict[tuple[str, ...], typing.Any]:
    """Paths of the fields of spec class `cls` whose Annotated metadata holds a `marker_type`, with that marker."""
    found: dict[tuple[str, ...], typing.Any] = {}

    def walk(hint, path: tuple[str, ...]) -> None:
        origin = typing.get_origin(hint)
        if origin is typing.Annotated:
            base, *metadata = typing.get_args(hint)
            for marker in metadata:
                if isinstance(marker, marker_type):
                    found[path] = marker
            walk(base, path)
        elif origin is dict:
            walk(typing.get_args(hint)[1], path + ("*",))
        elif origin in (typing.Union, types.UnionType):
            for member in typing.get_args(hint):
                walk(member, path)
        elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
            for name, field_hint in typing.get_type_hints(hint, include_extras=True).items():
                walk(field_hint, path + (name,))

    walk(cls, ())
    return found


def idle_reason(cls, path: str, data: dict) -> str | None:
    """Why no cost model reads the field at dotted `path` on the device `data` describes though one reads it on others
    (a ReadWith field on a device without the section or the setting it is read beside), or None when one does."""
    marker = read_with_fields(cls).get(tuple(path.split(".")))
    if marker is None:
        return None
    found = _value_at(data, marker.path)
    if marker.value is None:
        return None if found is not None else f"read only beside a {marker.path} section, which the device has none of"
    if found == marker.value:
        return None
    return f"read only with {marker.path}: {found_value(marker.value)} (the device: {found_value(found)})"


def _value_at(data: dict, path: str) -> typing.Any:
    """The value at dotted `path` of nested mappings, None where a key is missing."""
    node: typing.Any = data
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def unread_reason(cls, path: str) -> str | None:
    """Why no cost model reads the field at dotted `path` of a `cls` spec, or None when one does."""
    keys = tuple(path.split("."))
    for pattern, why in unread_fields(cls).items():
        if len(pattern) == len(keys) and all(p in ("*", k) for p, k in zip(pattern, keys, strict=True)):
            return why
    return None


@functools.cache  # a sweep validates a device once per override value: the same few paths each time
def plausible_range(path: str) -> Plausible | None:
    """The plausible range of the preset field at dotted `path` (spec_common.PLAUSIBLE), or None for a field
    without a unit to judge (a name, a source)."""
    for pattern, rule in _PLAUSIBLE:
        if pattern.search(path):
            return rule
    return None


_PLAUSIBLE = tuple((re.compile(pattern), rule) for pattern, rule in PLAUSIBLE)


def _shown(x: float) -> str:
    return f"{int(x):,}" if x >= 1 and x == int(x) else f"{x:g}"


def _numbers(node, path: tuple = ()):
    """(key path, value) of every scalar under nested mappings."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _numbers(value, path + (key,))
    elif not isinstance(node, list | tuple):
        yield path, node


def check_plausible(data: dict, where: str, line_of: Callable[[tuple], int | None] | None = None) -> None:
    """Refuse a device's number that is not finite (.inf, .nan) or outside its kind's plausible range, naming
    the file, line (where known) and key. Run before the spec's types: pydantic takes .inf as a positive float."""
    for path, value in _numbers(data):
        key = dotted(path)
        rule = plausible_range(key)
        number = value
        if isinstance(value, str) and rule is not None:
            try:
                number = float(value)  # pydantic reads '1e3' (YAML's text for 1e3 without a dot) as a number
            except ValueError:
                continue  # not a number at all: the spec's type says so
        if isinstance(number, bool) or not isinstance(number, int | float):
            if isinstance(number, bool) and rule is not None:
                raise _at(where, line_of, path, value, f"a number ({rule.unit or 'a count'})")
            continue
        if not math.isfinite(number):
            allowed = f"{_shown(rule.low)} to {_shown(rule.high)} {rule.unit}".rstrip() if rule else "a number"
            raise _at(where, line_of, path, value, f"a finite number ({allowed})")
        if rule is not None and number > 0 and not rule.low <= number <= rule.high:  # sign: the type's rule
            raise _at(where, line_of, path, value, f"{_shown(rule.low)} to {_shown(rule.high)}"
                                                   f"{' ' + rule.unit if rule.unit else ''} ({rule.why})")


def _at(where: str, line_of, path: tuple, value, allowed: str) -> InputError:
    line = line_of(path) if line_of else None
    return InputError(f"{where}{f':{line}' if line else ''}: {dotted(path)}: found {found_value(value)}, "
                      f"allowed: {allowed}")
