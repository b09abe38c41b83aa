"""Zip-format torch files (``.pth``, ``.pt``, ``.bin``), read lazily through `torch.load(mmap=True, weights_only=True)`.

torch's weights-only unpickler builds tensors over a file mapping without reading their bytes, and refuses any
global outside its allowlist, so a hostile pickle is rejected before anything runs. Nested dicts are flattened
with dots (``{"state_dict": {"w": t}}`` → ``state_dict.w``); non-tensor leaves (an iteration counter, args) are
kept aside in `extras`.
"""

from __future__ import annotations

import pickle
import re
import struct
import zipfile
from collections.abc import Mapping

import torch

from ..errors import CorruptFileError, UnsafePickleError, UnsupportedFormatError
from ..table import TensorInfo
from .base import Reader
from .pages import drop_pages

__all__ = ["TorchReader", "flatten", "load_weights_only"]

# torch names the refused global in a few phrasings across versions ("Unsupported global: GLOBAL os.system",
# "Trying to load unsupported GLOBAL posix.system whose module posix is blocked").
_GLOBAL = re.compile(r"(?:unsupported global:?|GLOBAL)\s+(?:GLOBAL\s+)?([\w.]+)", re.IGNORECASE)


def _flatten(obj: object, prefix: str, tensors: dict[str, torch.Tensor], extras: dict[str, object]) -> None:
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), tensors, extras)
    elif isinstance(obj, (list, tuple)) and any(isinstance(v, (torch.Tensor, Mapping)) for v in obj):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}.{i}" if prefix else str(i), tensors, extras)
    else:
        extras[prefix] = obj


def load_weights_only(path: str, *, mmap: bool) -> object:
    """``torch.load(path, weights_only=True)`` on CPU, its failures as typed errors; a refused pickle runs nothing.

    Raises:
        UnsafePickleError: the pickle references a global outside torch's weights-only allowlist.
        CorruptFileError: anything else torch cannot read (truncated, damaged records).
    """
    try:
        return torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
    except pickle.UnpicklingError as e:
        found = _GLOBAL.search(str(e))
        what = f"global '{found.group(1)}'" if found else "an object outside torch's weights-only allowlist"
        raise UnsafePickleError(
            f"refusing to unpickle {what} in {path}\n"
            "  hint: the file references code, not only tensors and containers; load it with "
            "torch.load(weights_only=False) only if you trust its source"
        ) from e
    except Exception as e:  # noqa: BLE001 - a damaged pickle fails in many ways inside torch; nothing ran
        raise CorruptFileError(
            f"{path} is not a readable torch file: {str(e).splitlines()[0] if str(e) else type(e).__name__}\n"
            "  hint: the file is truncated or corrupt; download or write it again"
        ) from e


def flatten(obj: object) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """A loaded torch object as ``(tensors, extras)``: nested keys joined with dots, non-tensor leaves apart."""
    tensors: dict[str, torch.Tensor] = {}
    extras: dict[str, object] = {}
    _flatten(obj, "", tensors, extras)
    return tensors, extras


def _is_zipfile(path: str) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except zipfile.BadZipFile:  # raised (not returned) for some damaged end records, e.g. a "multi-disk" one
        return False


def _check_records(path: str, tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse a file whose storage records are shorter than the tensors over them.

    With ``mmap=True`` torch maps each storage at its record's offset with the size the pickle states, without
    comparing it with the record: a damaged record would silently read the bytes that follow it in the file.
    """
    storages = {}
    for key, t in tensors.items():
        st = t.untyped_storage()
        if st.nbytes():
            storages.setdefault(st.data_ptr(), (st.nbytes(), key))
    if not storages:
        return
    records = {}
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
            for info in archive.infolist():
                if info.filename.rpartition("/")[0].rpartition("/")[2] != "data":  # storages are <archive>/data/<key>
                    continue
                # The local header must be where the directory says and name the same record (zipfile checks
                # this when it opens a member; torch's mmap path does not, and would map the wrong bytes).
                f.seek(info.header_offset)
                local = f.read(30)
                name_len, extra_len = struct.unpack("<HH", local[26:30]) if len(local) == 30 else (0, 0)
                if local[:4] != b"PK\x03\x04" or f.read(name_len) != info.filename.encode():
                    raise zipfile.BadZipFile(f"the local header of {info.filename} does not match the directory")
                records[info.header_offset + 30 + name_len + extra_len] = (info.file_size, info.filename)
    except (zipfile.BadZipFile, OSError, NotImplementedError, ValueError, EOFError, struct.error) as e:
        raise CorruptFileError(
            f"{path} is not a readable torch file: {e}\n  hint: the file is truncated or corrupt; download or write it again"
        ) from e
    first = min(storages)
    for offset in sorted(records):  # the record the lowest storage sits in fixes where the mapping starts
        base = first - offset
        if all(ptr - base in records for ptr in storages):
            short = [(k, n, records[p - base]) for p, (n, k) in storages.items() if records[p - base][0] < n]
            if not short:
                return
            key, need, (size, name) = min(short, key=lambda s: s[2][1])
            raise CorruptFileError(
                f"{path}: tensor {key!r} needs {need} bytes but its record {name} holds {size}\n"
                "  hint: the file is truncated or corrupt; download or write it again"
            )
    raise CorruptFileError(
        f"{path}: the tensors' storages do not line up with the archive's records\n"
        "  hint: the file is truncated or corrupt; download or write it again"
    )


class TorchReader(Reader):
    """Reads tensors from one zip-format torch file over a private, read-only-in-practice file mapping."""

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self.bytes_read = 0
        self.tensors_read = 0
        with open(self.path, "rb") as f:
            magic = f.read(4)
        if magic == b"PK\x03\x04" and not _is_zipfile(self.path):
            raise CorruptFileError(
                f"{self.path} is a torch zip file whose archive is incomplete (no central directory)\n"
                "  hint: the file is truncated; download or write it again"
            )
        if magic != b"PK\x03\x04" and not _is_zipfile(self.path):
            raise UnsupportedFormatError(
                f"{self.path} is a legacy (non-zip) torch pickle, which cannot be read lazily\n"
                "  hint: re-save it with torch >= 1.6 (torch.save writes the zip format by default)"
            )
        obj = load_weights_only(self.path, mmap=True)
        self._tensors, self.extras = flatten(obj)
        _check_records(self.path, self._tensors)
        self._order = self._file_order()

    def _file_order(self) -> list[str]:
        # Tensors sorted by where their bytes sit in the file, so a plan walks the file front to back.
        return sorted(self._tensors, key=lambda k: (self._tensors[k].untyped_storage().data_ptr(), k))

    def keys(self) -> list[str]:
        return list(self._order)

    def info(self, key: str) -> TensorInfo:
        t = self._tensors[key]
        return TensorInfo(tuple(t.shape), t.dtype, self.path)

    def _read(self, key: str) -> torch.Tensor:
        view = self._tensors[key]
        try:
            return view.clone(memory_format=torch.contiguous_format)
        finally:
            drop_pages(view)  # the copy is what the caller keeps; the mapped pages would only add to the RSS

    def _read_slice(self, key: str, index: tuple[slice, ...]) -> torch.Tensor:
        view = self._tensors[key]
        try:
            return view[index].clone(memory_format=torch.contiguous_format)
        finally:
            drop_pages(view)

    def view(self, key: str) -> torch.Tensor | None:
        self._check(key)
        tensor = self._tensors[key].detach()  # a new tensor object over the same private, copy-on-write mapping
        self.bytes_read += tensor.nbytes
        self.tensors_read += 1
        return tensor

    def release(self, key: str, view: torch.Tensor) -> None:
        drop_pages(view)

    def close(self) -> None:
        self._tensors = {}
