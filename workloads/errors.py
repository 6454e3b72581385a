"""The one error type for bad user input, shared by every layer (it lives in the lowest one)."""

from pathlib import Path


class InputError(ValueError):
    """A user mistake (unknown preset, malformed file, out-of-range value): the CLI prints it as one
    line naming the file, the key, what was found and what is allowed, and exits with code 2."""


def read_user_text(path) -> str:
    """The text of a user's file, or an InputError saying why it cannot be read (missing, a folder, not UTF-8)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                         f"allowed: a UTF-8 file (save it as UTF-8)") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from None
