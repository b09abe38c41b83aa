"""Atomic file writes: write a temporary file beside the destination, fsync, then rename over it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ExportError

__all__ = ["failing_as_export_error", "staging", "write_atomically"]


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
    with staging(dest) as staged, failing_as_export_error(dest):
        tmp = str(staged)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    dir_fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return dest


@contextmanager
def failing_as_export_error(dest: Path) -> Iterator[None]:
    """Any failure inside, but an interrupt or an `ExportError` already typed, as an `ExportError` naming `dest`."""
    try:
        yield
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit, ExportError)):
            raise
        raise ExportError(f"writing {dest} failed: {e}\n  hint: nothing was written; fix the cause and retry") from e


@contextmanager
def staging(dest: Path) -> Iterator[Path]:
    """A path to write `dest` at before renaming it into place: ``.<name>.<random>.tmp/<name>`` beside `dest`.

    Nothing exists at the path yet, so the file or folder written there gets the modes the umask gives (0644/0755
    under umask 022), as a plain ``open``/``mkdir`` would; ``mkstemp``/``mkdtemp``'s own are 0600/0700, which other
    users could not read. The private folder around it keeps the name unique; it is removed, with anything left
    in it, on exit.
    """
    box = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield box / dest.name
    finally:
        shutil.rmtree(box, ignore_errors=True)
