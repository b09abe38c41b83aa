"""Legacy (non-zip) torch files: ``torch.save(..., _use_new_zipfile_serialization=False)``, as old ``.bin``s are.

transformers reads them, so we do. The legacy format writes the pickle first and every storage's bytes after it,
with no archive index, so torch cannot map it (``mmap=True`` needs the zip format): `LegacyTorchReader` reads the
whole file into memory once, with ``torch.load(mmap=False, weights_only=True)``.

Memory: the file's tensors stay in memory until the reader is closed, and each read returns an owned copy of one
tensor, so a load's peak is the model plus the file's size (a zip-format file costs the model plus one tensor).
torch's weights-only unpickler still refuses any global outside its allowlist before anything runs.
"""

from __future__ import annotations

import torch

from ..table import TensorInfo
from .base import Reader
from .torch_file import flatten, load_weights_only

__all__ = ["LegacyTorchReader"]


class LegacyTorchReader(Reader):
    """Reads a legacy torch pickle whole on opening (peak memory: the file's size); keys in the pickle's order.

    Attributes:
        extras: the non-tensor leaves of the pickle (an iteration counter, args), as `TorchReader` keeps them.
    """

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self.bytes_read = 0
        self.tensors_read = 0
        self._tensors, self.extras = flatten(load_weights_only(self.path, mmap=False))

    def keys(self) -> list[str]:
        return list(self._tensors)

    def info(self, key: str) -> TensorInfo:
        t = self._tensors[key]
        return TensorInfo(tuple(t.shape), t.dtype, self.path)

    def _read(self, key: str) -> torch.Tensor:
        # A copy: tensors of the pickle may share one storage (tied weights), and the caller may write to what it gets.
        return self._tensors[key].clone(memory_format=torch.contiguous_format)

    def _read_slice(self, key: str, index: tuple[slice, ...]) -> torch.Tensor:
        return self._tensors[key][index].clone(memory_format=torch.contiguous_format)

    def close(self) -> None:
        self._tensors = {}
