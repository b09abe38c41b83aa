"""A reader under other names: the keys (and optionally shapes) a spec expects, over a file that spells them otherwise.

Naming variants of one format (a wrapper prefix, an older spelling of the same parameter) are a property of the
file, not of the mapping, so they are undone here, below the spec: one spec then serves every spelling, and the
plan, its errors and its report all speak the canonical names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ..errors import ReadError
from ..keys import summarize_keys
from ..table import TensorInfo
from .base import Reader

__all__ = ["RenamedReader"]


class RenamedReader(Reader):
    """`inner` with some keys renamed and, optionally, some tensors given another shape of the same size.

    Args:
        inner: the reader to read through. Closing this reader closes it.
        renames: inner key → exposed key. Keys not named keep their names.
        shapes: exposed key → the shape to expose it with (a reshape, so the element count must not change).

    Reads go through ``inner.read`` / ``inner.read_slice``, so both readers count the bytes they return: `inner`
    what it read from the file, this reader what it handed out.

    Example:
        >>> reader = RenamedReader(open_source("old.pth"), {"blocks.0.att.time_faaaa": "blocks.0.att.r_k"},
        ...                        shapes={"blocks.0.att.r_k": (12, 64)})
    """

    def __init__(
        self, inner: Reader, renames: Mapping[str, str], shapes: Mapping[str, tuple[int, ...]] | None = None
    ) -> None:
        self.inner = inner
        self.path = inner.path
        self.bytes_read = 0
        self.tensors_read = 0
        self._renames = dict(renames)
        self._shapes = {k: tuple(v) for k, v in (shapes or {}).items()}
        self._source = self._exposed_to_inner(inner.keys())
        self._check_shapes()

    def _exposed_to_inner(self, inner_keys: list[str]) -> dict[str, str]:
        present = set(inner_keys)
        absent = [k for k in self._renames if k not in present]
        if absent:
            raise ReadError(
                f"{self.path}: cannot rename {summarize_keys(absent)}: the file has no such tensor\n"
                "  hint: build the renames from this reader's own keys()"
            )
        source: dict[str, str] = {}
        clashes: dict[str, list[str]] = {}
        for key in inner_keys:
            exposed = self._renames.get(key, key)
            if exposed in source:
                clashes.setdefault(exposed, [source[exposed]]).append(key)
            source[exposed] = key
        if clashes:
            lines = "".join(f"  {new}: {', '.join(old)}\n" for new, old in sorted(clashes.items()))
            raise ReadError(
                f"{self.path}: renaming gives {len(clashes)} name(s) to more than one tensor\n{lines}"
                "  hint: the file holds both spellings of these tensors; keep one of them"
            )
        return source

    def _check_shapes(self) -> None:
        for key, shape in self._shapes.items():
            if key not in self._source:
                raise ReadError(
                    f"{self.path}: cannot reshape {key!r}: no tensor has that name after renaming\n"
                    "  hint: name tensors in shapes= by their exposed (renamed) keys"
                )
            old = self.inner.info(self._source[key]).shape
            if math.prod(old) != math.prod(shape):
                raise ReadError(
                    f"{self.path}: cannot view {key!r} of shape {list(old)} as {list(shape)}\n"
                    f"  hint: a reshape keeps the element count ({math.prod(old)} here)"
                )

    def keys(self) -> list[str]:
        return list(self._source)

    def info(self, key: str) -> TensorInfo:
        info = self.inner.info(self._source[key])
        shape = self._shapes.get(key)
        return info if shape is None else TensorInfo(shape, info.dtype, info.file)

    def _read(self, key: str) -> torch.Tensor:
        tensor = self.inner.read(self._source[key])
        shape = self._shapes.get(key)
        return tensor if shape is None else tensor.reshape(shape)

    def _read_slice(self, key: str, index: tuple[slice, ...]) -> torch.Tensor:
        if key in self._shapes:  # the slice is in the new shape's coordinates: read whole, then cut
            return self._read(key)[index].clone()
        return self.inner.read_slice(self._source[key], index)

    def view(self, key: str) -> torch.Tensor | None:
        self._check(key)
        before_bytes, before_reads = self.inner.bytes_read, self.inner.tensors_read
        tensor = self.inner.view(self._source[key])
        shape = self._shapes.get(key)
        if tensor is not None and shape is not None:
            # A strided file tensor cannot be viewed in the new shape without a copy: then it is read instead.
            tensor = tensor.view(shape) if tensor.is_contiguous() else None
        if tensor is None:
            return None
        self.bytes_read += self.inner.bytes_read - before_bytes
        self.tensors_read += self.inner.tensors_read - before_reads
        return tensor

    def release(self, key: str, view: torch.Tensor) -> None:
        self.inner.release(self._source[key], view)

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"RenamedReader({self.inner!r}, {len(self._renames)} renamed, {len(self._shapes)} reshaped)"
