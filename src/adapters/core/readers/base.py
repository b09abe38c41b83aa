"""The reader protocol: list keys and infos from headers alone, then read one tensor (or one slice) at a time."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..errors import ReadError
from ..table import TensorInfo

__all__ = ["Reader"]


class Reader(ABC):
    """A lazily read checkpoint.

    `keys()` and `info()` come from headers; `read()` and `read_slice()` read exactly the bytes of what they
    return and count them in `bytes_read`. Returned tensors are CPU tensors that own their memory (never views
    into a file mapping), so a caller may keep them after the reader is closed.
    """

    path: str
    bytes_read: int = 0
    tensors_read: int = 0

    @abstractmethod
    def keys(self) -> list[str]:
        """Every tensor key, in file order (shard by shard, by offset within a file)."""

    @abstractmethod
    def info(self, key: str) -> TensorInfo: ...

    @abstractmethod
    def _read(self, key: str) -> torch.Tensor: ...

    def _read_slice(self, key: str, index: tuple[slice, ...]) -> torch.Tensor:
        return self._read(key)[index].clone()

    def table(self) -> dict[str, TensorInfo]:
        return {k: self.info(k) for k in self.keys()}

    def read(self, key: str) -> torch.Tensor:
        """The whole tensor `key`, owned, on CPU."""
        self._check(key)
        tensor = self._read(key)
        self.bytes_read += tensor.nbytes
        self.tensors_read += 1
        return tensor

    def read_slice(self, key: str, index: tuple[slice, ...]) -> torch.Tensor:
        """`tensor[index]` for basic slices, reading only the rows the slice needs where the format allows."""
        self._check(key)
        tensor = self._read_slice(key, index)
        self.bytes_read += tensor.nbytes
        self.tensors_read += 1
        return tensor

    def view(self, key: str) -> torch.Tensor | None:
        """`key` as a CPU tensor backed by the file's mapping (copy-on-write), or None where the format has none.

        For a tensor the loader would only copy (no op, no cast, CPU target) a view is the copy avoided: its pages
        are the page cache's, read when first touched; writing to it (training) copies just the pages written.
        Counted in `bytes_read` like a read. Unlike `read`, the result is not owned memory.
        """
        return None

    def release(self, key: str, view: torch.Tensor) -> None:  # noqa: B027 - optional hook, like close()
        """Give back the pages of `view` (from `view(key)`) once the caller has copied what it needs from it.

        A copy out of a mapping (a concatenation, a cast) touches its pages, and touched pages count towards the
        RSS while the mapping lives. Only for views nobody has written to; readers without mappings do nothing.
        """

    def _check(self, key: str) -> None:
        if key not in self._key_set():
            raise ReadError(f"{self.path} has no tensor {key!r}")

    def _key_set(self) -> frozenset[str]:
        cached = getattr(self, "_keys_cache", None)
        if cached is None:
            cached = frozenset(self.keys())
            self._keys_cache = cached
        return cached

    def close(self) -> None:  # noqa: B027 - optional hook: readers without handles need nothing
        """Release file handles and mappings. Safe to call twice."""

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"
