"""`open_source`: a path (file, folder, or index) → the right reader."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CorruptFileError, ReadError, SourceNotFoundError, UnsupportedFormatError
from .base import Reader
from .legacy_torch_file import LegacyTorchReader
from .safetensors_file import SafetensorsReader
from .sharded import ShardedReader
from .torch_file import TorchReader

__all__ = ["open_source", "open_file", "find_checkpoint"]

# Folder layouts in the order transformers itself prefers them.
_STANDARD = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")
_SUFFIXES = (".safetensors.index.json", ".bin.index.json", ".safetensors", ".pth", ".pt", ".bin")


def open_source(source: str | os.PathLike | Reader) -> Reader:
    """A reader for `source`: a `Reader` (returned as is), a checkpoint file, an ``*.index.json``, or a folder."""
    if isinstance(source, Reader):
        return source
    path = Path(source)
    if path.is_dir():
        path = find_checkpoint(path)
    if not path.exists():
        raise SourceNotFoundError(f"{path} does not exist")
    if path.name.endswith(".index.json"):
        return ShardedReader(str(path), open_file)
    return open_file(str(path))


def find_checkpoint(folder: Path) -> Path:
    """The one checkpoint in `folder`: a standard HF name first, else the single file of a known kind."""
    for name in _STANDARD:
        if (folder / name).is_file():
            return folder / name
    files = sorted(p for p in folder.iterdir() if p.is_file())
    for suffix in _SUFFIXES:
        found = [p for p in files if p.name.endswith(suffix)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise SourceNotFoundError(
                f"{folder} holds several checkpoints: {', '.join(p.name for p in found)}\n"
                "  hint: pass the path of the one to load"
            )
    raise SourceNotFoundError(
        f"{folder} holds no checkpoint (looked for {', '.join(_STANDARD)} and *{', *'.join(_SUFFIXES)})"
    )


def open_file(path: str) -> Reader:
    """A reader for one checkpoint file, chosen by its first bytes, not its name."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except FileNotFoundError as e:
        raise SourceNotFoundError(f"{path} does not exist") from e
    except OSError as e:  # permission denied, a folder, an I/O error
        raise ReadError(f"{path} cannot be read: {e.strerror or e}\n  hint: check the path and its permissions") from e
    if not head:
        raise CorruptFileError(f"{path} is empty (0 bytes)\n  hint: the download or save was interrupted; do it again")
    if head[:4] == b"PK\x03\x04":
        return TorchReader(path)
    if len(head) == 9 and head[8:9] == b"{":
        return SafetensorsReader(path)
    if head[:1] == b"\x80":
        return LegacyTorchReader(path)  # a legacy (non-zip) torch pickle: read whole, weights only
    raise UnsupportedFormatError(
        f"{path} is neither a safetensors file nor a zip-format torch file (starts with {head[:8]!r})\n"
        "  hint: adapters reads .safetensors, sharded *.index.json, and torch.save files (.pth/.pt/.bin)"
    )
