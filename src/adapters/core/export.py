"""Export: run a spec backwards over a live model and write the foreign format atomically.

Two shapes of output: one file (`export`: the whole state dict, then one write), or a folder of safetensors shards
streamed one tensor at a time (`plan_export` + `iter_export` + `write_safetensors_shards`, inside
`write_folder_atomically`), whose peak memory is one tensor, never the model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .atomic import failing_as_export_error, staging, write_atomically
from .errors import ExportError
from .plan import Plan, plan
from .readers.base import Reader
from .readers.module import ModuleReader
from .spec import Spec
from .table import TensorInfo

__all__ = [
    "export",
    "export_tensors",
    "iter_export",
    "parse_size",
    "plan_export",
    "shard_layout",
    "write_folder_atomically",
    "write_safetensors_shards",
]

_TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def export_tensors(
    spec: Spec, model: nn.Module, *, dims: Mapping[str, int] | None = None, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """The foreign state dict of `model`: every model tensor through the inverse rules (plain CPU tensors).

    Every model tensor must be used by a rule or named by the spec's `keep` (which the inverse ignores).
    """
    reader = ModuleReader(model)
    the_plan = plan(spec.inverse(), reader, None, dims=dims, dtype=dtype)
    out: dict[str, torch.Tensor] = {}
    for name, value in iter_export(the_plan, reader):
        out[name] = value.clone()  # a file must own each tensor's bytes: never a view of a split or of the model
    return out


def plan_export(
    spec: Spec, source: nn.Module | Reader, *, dims: Mapping[str, int] | None = None, dtype: torch.dtype | None = None
) -> tuple[Plan, Reader]:
    """The plan of `spec` run backwards over `source` (a live model, or a reader that presents one), and the reader.

    Every tensor of the source must be used by a rule or named by the spec's `keep`; nothing is read yet, so the
    names, shapes and dtypes of the whole export are known before the first byte is written.
    """
    reader = source if isinstance(source, Reader) else ModuleReader(source)
    return plan(spec.inverse(), reader, None, dims=dims, dtype=dtype), reader


def iter_export(the_plan: Plan, reader: Reader) -> Iterator[tuple[str, torch.Tensor]]:
    """``(foreign name, tensor)`` in plan order, one fusion unit at a time: contiguous CPU tensors of the planned
    dtype. A tensor may share memory with the model (a rename); copy it before keeping it past the next step."""
    for unit in the_plan.units:
        tensors = tuple(reader.read(k) for k in unit.sources)
        for op in unit.ops:
            tensors = op.apply(tensors)
        for name, tensor, info in zip(unit.targets, tensors, unit.target_infos):
            yield name, tensor.detach().to("cpu", info.dtype).contiguous()
        tensors = tensor = None  # type: ignore[assignment]  # freed before the next unit is read, not after


def export(
    spec: Spec,
    model: nn.Module,
    path: str | os.PathLike,
    *,
    dims: Mapping[str, int] | None = None,
    dtype: torch.dtype | None = None,
    metadata: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `model` in the source format of `spec` to `path` (``.safetensors``, or ``.pth``/``.pt``/``.bin``).

    The file appears whole or not at all (temporary file + rename); the model and any source file are untouched.

    Args:
        spec: the spec the model was loaded with (it is run backwards).
        model: the live model.
        path: destination; its suffix picks the format.
        dims: the same named sizes as for loading.
        dtype: floating-point dtype to write (default: the model's).
        metadata: safetensors header metadata (safetensors only).
        overwrite: replace an existing file.

    Returns:
        The path written.
    """
    dest = Path(path)
    if dest.suffix not in (".safetensors", *_TORCH_SUFFIXES):
        raise ExportError(f"cannot tell the format of {dest}\n  hint: use a .safetensors, .pth, .pt or .bin name")
    tensors = export_tensors(spec, model, dims=dims, dtype=dtype)
    if dest.suffix == ".safetensors":
        meta = dict(metadata or {})
        return write_atomically(dest, lambda tmp: save_file(tensors, tmp, metadata=meta), overwrite=overwrite)
    return write_atomically(dest, lambda tmp: torch.save(tensors, tmp), overwrite=overwrite)


# --- sharded safetensors, one tensor at a time ------------------------------------------------------------------------

_ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip


def parse_size(size: int | str) -> int:
    """Bytes in ``5000``, ``"5GB"`` (10^9) or ``"5GiB"`` (2^30), as transformers reads ``max_shard_size``."""
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    match = _SIZE.match(size) if isinstance(size, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise ExportError(
            f"max_shard_size={size!r} is not a size\n  hint: pass a number of bytes or a string like '5GB' or '500MiB'"
        )
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def shard_layout(entries: Sequence[tuple[str, TensorInfo]], max_bytes: int) -> list[list[str]]:
    """Names grouped into shards in order, as transformers cuts them: a shard takes tensors while they fit in
    `max_bytes`; a tensor larger than that gets a shard of its own."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, info in entries:
        if shards[-1] and size + info.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += info.nbytes
    return shards


def _header(entries: Sequence[tuple[str, TensorInfo]], metadata: Mapping[str, str]) -> bytes:
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, info in entries:
        if info.dtype not in _ST_DTYPES:
            raise ExportError(f"{name}: safetensors has no dtype {info.dtype}\n  hint: export with another dtype=")
        header[name] = {"dtype": _ST_DTYPES[info.dtype], "shape": list(info.shape),
                        "data_offsets": [offset, offset + info.nbytes]}  # fmt: skip
        offset += info.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return len(raw).to_bytes(8, "little") + raw


def write_safetensors_shards(
    folder: str | os.PathLike,
    entries: Sequence[tuple[str, TensorInfo]],
    tensors: Iterable[tuple[str, torch.Tensor]],
    *,
    max_shard_size: int | str = "5GB",
    metadata: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Write `tensors` into safetensors shards of `folder`, holding one tensor in memory at a time.

    `entries` announces every tensor (name, shape, dtype) in the order `tensors` yields them, so each shard's header
    is written before its data. One shard is ``model.safetensors``; more are ``model-0000i-of-0000N.safetensors``
    (transformers' names), listed in ``model.safetensors.index.json``.

    Returns:
        The weight map, name → shard file name.

    Raises:
        ExportError: a tensor arrives that `entries` did not announce (name, shape or dtype).
    """
    folder = Path(folder)
    meta = {"format": "pt", **(metadata or {})}
    shards = shard_layout(entries, parse_size(max_shard_size))
    infos = dict(entries)
    n = len(shards)
    names = ["model.safetensors"] if n == 1 else [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    stream = iter(tensors)
    weight_map: dict[str, str] = {}
    for file_name, shard in zip(names, shards):
        with open(folder / file_name, "wb") as f:
            f.write(_header([(k, infos[k]) for k in shard], meta))
            for expected in shard:
                name, tensor = next(stream, (None, None))
                _check_streamed(expected, infos[expected], name, tensor)
                f.write(tensor.reshape(-1).view(torch.uint8).numpy().data)  # type: ignore[union-attr]
                weight_map[expected] = file_name
                tensor = None  # freed before the next one is made
            f.flush()
            os.fsync(f.fileno())
    if n > 1:
        index = {"metadata": {"total_size": sum(i.nbytes for i in infos.values())}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return weight_map


def _check_streamed(expected: str, info: TensorInfo, name: str | None, tensor: torch.Tensor | None) -> None:
    got = "nothing" if tensor is None else f"{name} {list(tensor.shape)} {tensor.dtype}"
    if tensor is None or name != expected or tuple(tensor.shape) != tuple(info.shape) or tensor.dtype != info.dtype:
        raise ExportError(
            f"the export announced {expected} {list(info.shape)} {info.dtype} but produced {got}\n"
            "  hint: this is a bug in the exporter; please report it with the model class"
        )


def write_folder_atomically(dest: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Call ``write(tmp)`` on a fresh folder beside `dest`, then rename it to `dest`: whole or not at all.

    An existing non-empty `dest` is refused unless `overwrite`; then it is replaced only after the new folder is
    complete (moved aside, the new one renamed in, the old one removed). On any failure, including an interrupt,
    the temporary folder is removed and `dest` is as it was.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"{dest} exists and is not a folder\n  hint: choose another output path")
    if dest.is_dir() and any(dest.iterdir()) and not overwrite:
        raise ExportError(f"{dest} already exists\n  hint: pass overwrite=True to replace it, or choose another path")
    if not dest.parent.is_dir():
        raise ExportError(f"cannot write {dest}: folder {dest.parent} does not exist")
    with staging(dest) as tmp, failing_as_export_error(dest):  # tmp is removed, with what was written, on failure
        tmp.mkdir()  # umask modes (0755), not mkdtemp's 0700
        write(tmp)
        _replace_folder(tmp, dest)
    return dest


def _replace_folder(tmp: Path, dest: Path) -> None:
    if not dest.exists():
        os.rename(tmp, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
    os.rename(dest, old / "x")
    try:
        os.rename(tmp, dest)
    except BaseException:
        os.rename(old / "x", dest)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
