"""The one error type for bad user input, shared by every layer (it lives in the lowest one)."""

import difflib
import os
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
