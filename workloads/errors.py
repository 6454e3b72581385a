"""The one error type for bad user input, shared by every layer (it lives in the lowest one)."""

import datetime
import difflib
import math
import numbers
import os
import re
from pathlib import Path


class InputError(ValueError):
    """A user mistake (unknown preset, malformed file, out-of-range value): the CLI prints it as one
    line naming the file, the key, what was found and what is allowed, and exits with code 2."""


# A word that begins at most this many choices is completed to them ('h100': 'h100-pcie' or 'h100-sxm').
MAX_COMPLETIONS = 3


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x'?)' naming the choices a word begins (up to MAX_COMPLETIONS: a short name's closest
    spelling may be another thing, 'h100' -> 'h200'), else the closest choice; '' when none is close. Case is
    ignored in the comparison ('H100' is completed to 'h100-pcie' or 'h100-sxm'), the choices named as spelled."""
    word, names = str(word), [str(c) for c in choices]
    folded_word = word.casefold()
    completions = [name for name in names
                   if len(word) >= 2 and name != word and name.casefold().startswith(folded_word)]
    if 0 < len(completions) <= MAX_COMPLETIONS:
        return f" (did you mean {' or '.join(repr(name) for name in completions)}?)"
    by_folded: dict[str, str] = {}
    for name in names:
        by_folded.setdefault(name.casefold(), name)
    close = difflib.get_close_matches(folded_word, list(by_folded), n=1)
    return f" (did you mean {by_folded[close[0]]!r}?)" if close else ""


def found_document(data) -> str:
    """What a user's YAML file holds where a mapping was expected, as an error's 'found' part: 'no keys (an empty
    file)' where it is empty, else 'a list', 'a str', ..."""
    return "no keys (an empty file)" if data is None else f"a {type(data).__name__}"


# Longest value an error shows; a longer one is shown by its start and its length (one line stays readable).
MAX_FOUND_CHARS = 80


def found_value(value, *, json: bool = False) -> str:
    """A value read from a user's YAML file (`json`: JSON file) as an error's 'found' part, spelled as the file spells
    it (null, true, .inf or JSON's Infinity, [1, 2], {key: 'text'}: text quoted), by its first characters and its
    length when long."""
    text = _spelled(value, JSON_NUMBERS if json else YAML_NUMBERS)
    if len(text) <= MAX_FOUND_CHARS:
        return text
    return f"{text[:MAX_FOUND_CHARS - 20]}... ({len(text):,} characters)"


def found_json(value) -> str:
    """found_value of a value read from a JSON file (config.json, a trace's lines)."""
    return found_value(value, json=True)


def found_key(mapping: dict, key: str, *, json: bool = False) -> str:
    """'found' and the value at `key` of a mapping read from a user's file, as found_value spells it, or 'missing'
    where the mapping has no such key (a null is found)."""
    return f"found {found_value(mapping[key], json=json)}" if key in mapping else "missing"


# How each kind of file spells the numbers that are not finite: YAML's core schema, and Python's json module (JSON
# itself has none; json.loads reads these).
YAML_NUMBERS = {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}
JSON_NUMBERS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_PLAIN_KEY = re.compile(r"[A-Za-z_][\w.\-]*")  # a mapping key YAML reads as text unquoted


def _spelled(value, not_finite: dict[str, str]) -> str:
    """The flow spelling of a parsed value, its numbers that are not finite as `not_finite` names them; text and
    other objects as repr writes them."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):  # numpy's floats too, whose repr names their type
        number = float(value)
        return repr(number) if math.isfinite(number) else not_finite[str(number)]
    if isinstance(value, list | tuple):
        return f"[{', '.join(_spelled(item, not_finite) for item in value)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(key, not_finite)}: {_spelled(item, not_finite)}"
                               for key, item in value.items()) + "}"
    if isinstance(value, datetime.date):  # YAML reads an unquoted 2024-01-01 as a date
        return value.isoformat()
    return repr(value)


def _key(key, not_finite: dict[str, str]) -> str:
    """A mapping key as written: bare where YAML reads it as text unquoted."""
    return key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else _spelled(key, not_finite)


# Sweep files, device YAMLs and config.json are written by hand: the largest shipped is 7 KB. 1 MiB is over a
# hundred times that and still parses in about a second; a bigger file is a mistake (a log, a data set), and
# one of 60 MB would take minutes to parse.
MAX_FILE_BYTES = 1 << 20


def read_user_text(path) -> str:
    """The text of a user's file, or an InputError saying why it cannot be read (missing, a folder, not UTF-8,
    larger than MAX_FILE_BYTES)."""
    too_big = InputError(f"{path}: found a file of more than {MAX_FILE_BYTES:,} bytes, allowed: at most "
                         f"{MAX_FILE_BYTES >> 20} MiB (sweep, device and model files are a few KB)")
    try:
        with Path(path).open("rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_FILE_BYTES:
                raise too_big
            raw = f.read(MAX_FILE_BYTES + 1)  # bounded: a device or a pipe reports no size
        if len(raw) > MAX_FILE_BYTES:
            raise too_big
        return raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # newlines as text mode reads them
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                         f"allowed: a UTF-8 file (save it as UTF-8)") from None
    except FileNotFoundError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}{nearest_file(Path(path))}") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from None


def nearest_file(path: Path) -> str:
    """' (did you mean 'x'?)' naming the file beside a missing one whose name is closest to it; '' when none is."""
    try:
        names = [entry.name for entry in path.parent.iterdir() if entry.is_file()] if path.parent.is_dir() else []
    except OSError:
        return ""
    return did_you_mean(path.name, names)
