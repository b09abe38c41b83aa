"""Export: run a spec backwards over a live model and write the foreign format atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .atomic import write_atomically
from .errors import ExportError
from .plan import plan
from .readers.module import ModuleReader
from .spec import Spec

__all__ = ["export", "export_tensors"]

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
    for unit in the_plan.units:
        tensors = tuple(reader.read(k) for k in unit.sources)
        for op in unit.ops:
            tensors = op.apply(tensors)
        for name, tensor, info in zip(unit.targets, tensors, unit.target_infos):
            value = tensor.detach().to("cpu", info.dtype).contiguous()
            # A file must own each tensor's bytes: views of a split or of the live parameter are copied.
            out[name] = (
                value.clone()
                if value.untyped_storage().nbytes() != value.nbytes or value.data_ptr() == tensor.data_ptr()
                else value
            )
    return out


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
