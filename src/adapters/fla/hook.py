"""The load hook: after ``import adapters.fla``, ``RWKV7ForCausalLM.from_pretrained`` also takes a BlinkDL ``.pth``.

A ``.pth`` file, or a folder holding exactly one ``.pth`` and no ``config.json``, goes to `from_blinkdl`; anything
else (an FLA/HF checkpoint, a hub id) goes to FLA's own `from_pretrained`, unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..core import HookError
from .blinkdl import from_blinkdl

__all__ = ["install_hook", "blinkdl_file"]

_MARK = "_adapters_blinkdl_hook"


def blinkdl_file(name_or_path: object) -> Path | None:
    """The BlinkDL file `name_or_path` designates, or None when it is something FLA loads itself."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        return None
    path = Path(name_or_path)
    if path.is_file() and path.suffix == ".pth":
        return path
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(path.glob("*.pth"))
        return found[0] if len(found) == 1 else None
    return None


def _dtype(value: object, path: Path) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    if value == "auto":
        return None  # from_blinkdl's default; the file's own dtype is usually bf16, which users ask for explicitly
    found = getattr(torch, str(value), None)
    if not isinstance(found, torch.dtype) or not found.is_floating_point:
        raise HookError(
            f"{path}: torch_dtype={value!r} is not a floating-point torch dtype\n"
            '  hint: pass torch.bfloat16, torch.float16, torch.float32, or a name such as "bfloat16"'
        )
    return found


def install_hook() -> None:
    """Wrap `RWKV7ForCausalLM.from_pretrained` (idempotent)."""
    from fla.models import RWKV7ForCausalLM

    current = RWKV7ForCausalLM.__dict__.get("from_pretrained")
    if current is not None and getattr(current.__func__, _MARK, False):
        return
    original = RWKV7ForCausalLM.from_pretrained  # bound to the class

    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        path = blinkdl_file(pretrained_model_name_or_path)
        if path is None:
            return original.__func__(cls, pretrained_model_name_or_path, *args, **kwargs)
        if args:
            raise HookError(
                f"{path}: from_pretrained got {len(args)} positional argument(s) after the path; a BlinkDL file "
                "takes none\n  hint: pass torch_dtype=, device_map= and config fields as keyword arguments"
            )
        dtype = _dtype(kwargs.pop("torch_dtype", None) or kwargs.pop("dtype", None), path)
        device_map = kwargs.pop("device_map", None)
        device = device_map if isinstance(device_map, (str, torch.device)) and device_map != "auto" else "cpu"
        if device_map is not None and not isinstance(device_map, (str, torch.device)):
            raise HookError(
                f"{path}: device_map={device_map!r} is not supported for BlinkDL files yet (expected one device)\n"
                '  hint: pass one device, e.g. device_map="cpu" or device_map="cuda:0"'
            )
        return from_blinkdl(path, dtype=dtype, device=device, **kwargs)

    setattr(from_pretrained, _MARK, True)
    RWKV7ForCausalLM.from_pretrained = classmethod(from_pretrained)
