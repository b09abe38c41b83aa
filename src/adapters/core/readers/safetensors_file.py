"""One ``.safetensors`` file, read with safetensors' own `safe_open` / `get_slice`."""

from __future__ import annotations

import torch
from safetensors import SafetensorError, safe_open

from ..errors import CorruptFileError
from ..table import TensorInfo
from .base import Reader
from .pages import drop_pages

__all__ = ["SafetensorsReader"]

# safetensors header dtype codes → torch dtypes (the ones torch can hold).
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
}  # fmt: skip


def _open(path: str):
    # The pread backend reads each tensor into memory it owns: a whole-file mapping would count every page
    # touched towards the process' RSS until the file is closed, i.e. the whole checkpoint on top of the model.
    try:
        return safe_open(path, framework="pt", device="cpu", backend="pread")
    except TypeError:  # safetensors < 0.8 has no backend choice
        return safe_open(path, framework="pt", device="cpu")


class SafetensorsReader(Reader):
    """Reads tensors from one safetensors file; the header is parsed once, on open."""

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self.bytes_read = 0
        self.tensors_read = 0
        try:
            self._file = _open(self.path)
            self._keys = list(self._file.offset_keys())
            self._infos = {k: self._header_info(k) for k in self._keys}
        except SafetensorError as e:
            raise CorruptFileError(
                f"{self.path} is not a valid safetensors file: {e}\n"
                "  hint: the file is truncated or corrupt; download or write it again"
            ) from e

    def _header_info(self, key: str) -> TensorInfo:
        sl = self._file.get_slice(key)
        code = sl.get_dtype()
        if code not in _DTYPES:
            raise CorruptFileError(
                f"{self.path}: tensor {key!r} has dtype {code}, which torch cannot hold\n"
                f"  hint: adapters reads {', '.join(_DTYPES)}; convert the file's {code} tensors first"
            )
        return TensorInfo(tuple(sl.get_shape()), _DTYPES[code], self.path)

    def keys(self) -> list[str]:
        return list(self._keys)

    def info(self, key: str) -> TensorInfo:
        return self._infos[key]

    def _read(self, key: str) -> torch.Tensor:
        try:
            return self._file.get_tensor(key)
        except SafetensorError as e:
            raise CorruptFileError(f"{self.path}: cannot read tensor {key!r}: {e}") from e

    def _read_slice(self, key: str, index: tuple[slice, ...]) -> torch.Tensor:
        try:
            return self._file.get_slice(key)[index]
        except SafetensorError as e:
            raise CorruptFileError(f"{self.path}: cannot read slice {index} of {key!r}: {e}") from e

    def view(self, key: str) -> torch.Tensor | None:
        self._check(key)
        if getattr(self, "_mapped", None) is None:
            # safetensors' default backend maps the file privately: tensors are views, writes are copy-on-write,
            # and each view keeps the mapping alive after this reader is closed.
            self._mapped = safe_open(self.path, framework="pt", device="cpu")
        try:
            tensor = self._mapped.get_tensor(key)
        except SafetensorError as e:
            raise CorruptFileError(f"{self.path}: cannot read tensor {key!r}: {e}") from e
        self.bytes_read += tensor.nbytes
        self.tensors_read += 1
        return tensor

    def release(self, key: str, view: torch.Tensor) -> None:
        drop_pages(view)

    def close(self) -> None:
        self._file = None  # type: ignore[assignment]
        self._mapped = None
