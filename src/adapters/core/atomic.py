"""Atomic file writes: write a temporary file beside the destination, fsync, then rename over it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import ExportError

__all__ = ["write_atomically"]


def write_atomically(path: str | os.PathLike, write: Callable[[str], None], *, overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)``, then move the result to `path` in one rename.

    A reader of `path` sees the old file or the whole new one, never a part; on any failure (including an
    interrupt) the temporary file is removed and `path` is untouched.
    """
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise ExportError(f"{dest} already exists\n  hint: pass overwrite=True to replace it, or choose another path")
    if not dest.parent.is_dir():
        raise ExportError(f"cannot write {dest}: folder {dest.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, (KeyboardInterrupt, SystemExit, ExportError)):
            raise
        raise ExportError(f"writing {dest} failed: {e}\n  hint: nothing was written; fix the cause and retry") from e
    dir_fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return dest
