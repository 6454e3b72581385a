"""Files rewritten whole, atomically: written to a temporary file of their own beside them, then renamed over."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside path, renamed over it when the block ends without error (removed otherwise).

    Its name is unique (this process's pid and a random part): two processes or threads writing the same file
    never share a temporary file, and the last rename wins with a complete file (readers see the old file or the
    new one, never a mix). The writer creates it, so it gets the usual permissions (mkstemp's would be
    owner-only).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
