"""The load hook: after ``import adapters.fla``, ``RWKV7ForCausalLM.from_pretrained`` and
``AutoModelForCausalLM.from_pretrained`` also take a BlinkDL ``.pth``, and every RWKV-7 model built from a config
with ``adapters_ln_x_eps`` (what ``adapters convert --to fla`` writes) gets BlinkDL's ln_x eps (`rwkv7_eps`).

A ``.pth`` file, or a folder holding exactly one ``.pth`` and no ``config.json``, goes to `from_blinkdl`; anything
else (an FLA/HF checkpoint, a hub id) goes to the class's own `from_pretrained`, unchanged. `AutoModel` is not
wrapped: it returns base models, and a BlinkDL file always holds the head of an `RWKV7ForCausalLM`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..core import HookError
from .blinkdl import from_blinkdl
from .rwkv7_eps import install_ln_x_eps_hook

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
    """Wrap `RWKV7ForCausalLM.from_pretrained` and `AutoModelForCausalLM.from_pretrained`, and `RWKV7Block`'s
    construction for ``adapters_ln_x_eps`` (idempotent)."""
    from fla.models import RWKV7ForCausalLM
    from transformers import AutoModelForCausalLM

    for cls in (RWKV7ForCausalLM, AutoModelForCausalLM):
        _wrap(cls)
    install_ln_x_eps_hook()


def _wrap(cls: type) -> None:
    current = cls.__dict__.get("from_pretrained")
    if current is not None and getattr(current.__func__, _MARK, False):
        return
    original = cls.from_pretrained  # bound to the class (AutoModelForCausalLM inherits it from the auto base class)

    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        path = blinkdl_file(pretrained_model_name_or_path)
        if path is None:
            return original.__func__(cls, pretrained_model_name_or_path, *args, **kwargs)
        return _from_blinkdl(path, args, kwargs)

    setattr(from_pretrained, _MARK, True)
    cls.from_pretrained = classmethod(from_pretrained)


def _from_blinkdl(path: Path, args: tuple, kwargs: dict):
    """`from_pretrained`'s arguments as `from_blinkdl`'s: dtype, device_map, max_memory and offload_folder; the rest
    is config."""
    if args:
        raise HookError(
            f"{path}: from_pretrained got {len(args)} positional argument(s) after the path; a BlinkDL file "
            "takes none\n  hint: pass torch_dtype=, device_map= and config fields as keyword arguments"
        )
    torch_dtype, dtype = kwargs.pop("torch_dtype", None), kwargs.pop("dtype", None)
    device_map = kwargs.pop("device_map", None)
    return from_blinkdl(
        path,
        dtype=_dtype(torch_dtype if torch_dtype is not None else dtype, path),
        device="cpu" if device_map is None else device_map,
        max_memory=kwargs.pop("max_memory", None),
        offload_folder=kwargs.pop("offload_folder", None),
        **kwargs,
    )
