"""`from_hf`: an HF checkpoint (folder or hub id) as a SAT model, returned the way SAT returns one: ``(model, args)``.

Steps: resolve the checkpoint and read its config; pick the family from ``model_type``; translate the config to
SAT args and merge them into the caller's namespace the way SAT merges a ``model_config.json`` (config first,
``overwrite_args`` last); build the SAT class on meta; plan the spec against it from the file headers; stream every
tensor onto the target device; fix what SAT hard-codes (rope base). Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch

from ..core import HookError, empty_weights, load, open_source
from .cpu import install_cpu_fallbacks
from .family import Family, find_family
from .hf_checkpoint import HFCheckpoint, resolve_hf
from .specs import FAMILIES

__all__ = ["from_hf", "family_of"]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def family_of(name_or_path: str | os.PathLike, cls: type | None = None, **hub: Any) -> tuple[Family, HFCheckpoint]:
    """The family that reads this HF checkpoint (as `cls`, when given: see `find_family`), and the checkpoint."""
    ckpt = resolve_hf(name_or_path, **hub)
    return find_family(ckpt, FAMILIES, cls), ckpt


def from_hf(
    cls: type | None,
    name_or_path: str | os.PathLike,
    args: argparse.Namespace | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    overwrite_args: dict[str, Any] | None = None,
    build_only: bool = False,
    progress: bool | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
    **model_kwargs: Any,
):
    """Build `cls` (or, for None, the family's SAT class) from an HF checkpoint; returns ``(model, args)``.

    Args:
        cls: the SAT class to build: the family's class, a subclass of it, or a class the family names as
            compatible (`Family.compatible_class_names`); None picks the family's class. When
            several families read the checkpoint's model_type (ChatGLM2/3/GLM-4), it also picks the family.
        name_or_path: an HF checkpoint folder (``config.json`` + weights) or a hub id.
        args: a SAT args namespace to update (as SAT's `from_pretrained` updates it from ``model_config.json``);
            None starts from the class defaults with dropout 0, ready for inference.
        device: where each tensor goes as it is read (default: ``args.device``, else CUDA when present, else CPU).
        dtype: parameter dtype (default: bf16/fp16 when ``args.bf16``/``args.fp16``, else float32).
        overwrite_args: fields that win over the translated config.
        build_only: build the model with SAT's own initialisation and load nothing (SAT's ``build_only``).
        progress: tqdm bar; None shows it on a terminal only.
        revision, cache_dir, local_files_only, token: for hub ids (huggingface_hub).
        model_kwargs: passed to the SAT class constructor, as SAT's `get_model` passes them.

    Raises:
        HookError: unsupported architecture or config, a class that cannot hold the family, an option not honoured.
        PlanError: the weights do not fit the model built from the config (nothing was read).
        ReadError: missing or corrupt weight files.
        LoadError: placement failed; the model is back on meta and is not returned.
    """
    install_cpu_fallbacks()
    family, ckpt = family_of(name_or_path, cls, revision=revision, cache_dir=cache_dir,
                             local_files_only=local_files_only, token=token)  # fmt: skip
    sat_cls = _target_class(cls, family, ckpt)
    args = _merge_args(sat_cls, family.args(ckpt), args, dict(overwrite_args or {}), ckpt)
    dtype = _resolve_dtype(dtype, args, ckpt)
    device = _resolve_device(device, args, ckpt)
    args.device = str(device)
    args.fp16, args.bf16 = dtype == torch.float16, dtype == torch.bfloat16
    if build_only:
        from sat.model.base_model import get_model

        return get_model(args, sat_cls, **model_kwargs), args

    reader = open_source(ckpt.path)
    try:
        keys = frozenset(reader.keys())
        spec = family.spec(ckpt, keys)
        args.skip_init, args.use_gpu_initialization = True, False  # weights come from the file, never from init
        with empty_weights():
            model = sat_cls(args, params_dtype=dtype, **model_kwargs)
        if family.prepare is not None:
            family.prepare(model, ckpt, keys)
        report = load(spec, reader, model, dims=family.dims(ckpt), device=device, dtype=dtype, progress=progress)
    finally:
        reader.close()
    model.to(device)  # buffers SAT computed at construction (inv_freq) join the parameters
    if family.finish is not None:
        family.finish(model, ckpt)
    model.adapters_load_report = report
    return model, args


def _target_class(cls: type | None, family: Family, ckpt: HFCheckpoint) -> type:
    from sat.model.base_model import BaseModel

    family_cls = family.load_class()
    if cls is None or cls is BaseModel:
        return family_cls
    if isinstance(cls, type) and family.holds(cls):
        return cls
    name = getattr(cls, "__name__", repr(cls))
    raise HookError(
        f"{ckpt.path}: a {family.name} checkpoint ({_named(ckpt)}) loads into {family.class_name} "
        f"or a subclass of it, not {name}\n"
        f"  hint: call {family.class_name}.from_hf(...), or sat.AutoModel.from_hf(...) to pick the class"
    )


def _named(ckpt: HFCheckpoint) -> str:
    """How the config names its architecture: ``model_type``, else (THUDM's CogVLM files) ``architectures``."""
    if ckpt.model_type:
        return f"model_type {ckpt.model_type!r}"
    return "architectures: " + (", ".join(ckpt.get("architectures") or []) or "none listed")


def _merge_args(sat_cls, translated: dict, args, overwrite: dict, ckpt: HFCheckpoint) -> argparse.Namespace:
    """Class defaults ← caller's namespace ← translated config ← `overwrite`, as SAT merges model_config.json."""
    defaults = sat_cls.get_args()
    if args is None:
        args = defaults
        args.hidden_dropout = args.attention_dropout = 0.0  # inference unless the caller says otherwise
    else:
        for key, value in vars(defaults).items():
            if not hasattr(args, key):
                setattr(args, key, value)
    for key, value in {**translated, **overwrite}.items():
        setattr(args, key, value)
    if getattr(args, "model_parallel_size", 1) != 1:
        raise HookError(
            f"{ckpt.path}: model_parallel_size={args.model_parallel_size} is not supported by from_hf yet\n"
            "  hint: load with model_parallel_size=1; rank-local sliced loading is tracked in its own issue"
        )
    return args


def _resolve_dtype(dtype, args, ckpt: HFCheckpoint) -> torch.dtype:
    if dtype is None:
        if getattr(args, "bf16", False):
            return torch.bfloat16
        return torch.float16 if getattr(args, "fp16", False) else torch.float32
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, dtype)
    if dtype not in _FLOAT_DTYPES:
        raise HookError(
            f"{ckpt.path}: dtype={dtype!r} is not one SAT models run in\n"
            "  hint: pass torch.float32, torch.bfloat16 or torch.float16"
        )
    return dtype


def _resolve_device(device, args, ckpt: HFCheckpoint) -> torch.device:
    if device is None:
        device = getattr(args, "device", None)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    except (RuntimeError, TypeError) as e:
        raise HookError(
            f'{ckpt.path}: device={device!r} is not a torch device\n  hint: pass "cpu", "cuda" or "cuda:N"'
        ) from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HookError(
            f"{ckpt.path}: device={str(device)!r} was asked for, but this torch has no CUDA device\n"
            '  hint: pass device="cpu", or install a CUDA build of torch'
        )
    return device
