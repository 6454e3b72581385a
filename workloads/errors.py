"""The one error type for bad user input, shared by every layer (it lives in the lowest one)."""

import os
from pathlib import Path


class InputError(ValueError):
    """A user mistake (unknown preset, malformed file, out-of-range value): the CLI prints it as one
    line naming the file, the key, what was found and what is allowed, and exits with code 2."""


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
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from None
