"""`from_hf`: an HF checkpoint (folder or hub id) as a SAT model, returned the way SAT returns one: ``(model, args)``.

Steps: resolve the checkpoint and read its config; pick the family from ``model_type``; translate the config to
SAT args and merge them into the caller's namespace the way SAT merges a ``model_config.json`` (config first,
``overwrite_args`` last); build the SAT class on meta; plan the spec against it from the file headers; stream every
tensor onto the target device; fix what SAT hard-codes (rope base). Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

import torch

from ..core import HookError, empty_weights, load, open_source
from ..core.placement import dispatch, plan_placement
from .cpu import install_cpu_fallbacks
from .family import Family, find_family
from .hf_checkpoint import HFCheckpoint, resolve_hf
from .partition import prepare_parallel, sat_sharding
from .specs import FAMILIES

__all__ = ["Target", "build_on_meta", "family_of", "from_hf", "merge_args", "resolve_target", "target_class"]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MODULE_HINT = "mixins, transformer.word_embeddings, transformer.layers.0, transformer.final_layernorm"


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
    check_finite: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
    device_map: str | int | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | os.PathLike | None = None,
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
        overwrite_args: fields that win over the translated config. ``{"model_parallel_size": N}`` inside a
            torch.distributed job (N ranks per model-parallel group) builds this rank's SAT partition and reads
            only its slice of each partitioned tensor (`adapters.sat.partition`).
        build_only: build the model with SAT's own initialisation and load nothing (SAT's ``build_only``).
        progress: tqdm bar; None shows it on a terminal only.
        check_finite: scan the weights for NaN/Inf and raise `NonFiniteError` naming them (off by default).
        revision, cache_dir, local_files_only, token: for hub ids (huggingface_hub).
        device_map: wins over `device`: accelerate's placement (a device, a dict of module prefix -> device with
            ``"cpu"``/``"disk"``/GPU entries, or ``"auto"``/``"balanced"``/``"balanced_low_0"``/``"sequential"``),
            single process, each tensor read straight onto its device; the model gets ``hf_device_map`` and
            accelerate's hooks. Layers stay whole, and ``mixins`` sits whole on the device the model computes on:
            mixins hold weights that layers use inside their own forward, where the hooks neither move nor load them.
        max_memory: device -> bytes (or "10GiB") for the planned strategies.
        offload_folder: where ``"disk"`` entries are written (accelerate's offload format).
        model_kwargs: passed to the SAT class constructor, as SAT's `get_model` passes them.

    Raises:
        HookError: unsupported architecture or config, a class that cannot hold the family, an option not honoured.
        PlanError: the weights do not fit the model built from the config (nothing was read).
        ReadError: missing or corrupt weight files.
        LoadError: placement failed; the model is back on meta and is not returned.
    """
    # A device_map wins over device: the map places the tensors; args describe a CPU build.
    target = resolve_target(cls, name_or_path, args, device=device if device_map is None else "cpu", dtype=dtype,
                            overwrite_args=overwrite_args, revision=revision, cache_dir=cache_dir,
                            local_files_only=local_files_only, token=token)  # fmt: skip
    family, ckpt, args, dtype, device = target.family, target.ckpt, target.args, target.dtype, target.device
    if build_only:
        from sat.model.base_model import get_model

        return get_model(args, target.sat_cls, **model_kwargs), args

    reader = open_source(ckpt.path)
    try:
        model, spec = build_on_meta(target, frozenset(reader.keys()), model_kwargs)
        # Model parallel: this rank's model holds its partitions only, and it reads only the slices they need.
        sharding = sat_sharding(model) if args.model_parallel_size != 1 else None
        placement = (
            device if device_map is None else _plan_map(model, device_map, max_memory, offload_folder, dtype, ckpt)
        )
        report = load(spec, reader, model, dims=family.dims(ckpt), device=placement, dtype=dtype, progress=progress,
                      check_finite=check_finite, sharding=sharding, offload_folder=offload_folder)  # fmt: skip
    finally:
        reader.close()
    if device_map is None:
        model.to(device)  # buffers SAT computed at construction (inv_freq) join the parameters
    if family.finish is not None:
        family.finish(model, ckpt)
    if device_map is not None:
        dispatch(model, placement, offload_folder)  # buffers move with their module; hooks for spanning maps
    model.adapters_load_report = report
    model.adapters_family = family.name  # what save_hf exports it as, and the config fields SAT args do not hold
    model.adapters_hf_config = dict(ckpt.config)
    return model, args


@dataclass(frozen=True)
class Target:
    """What `from_hf` builds, decided before any weight is read: family, checkpoint, SAT class, merged args
    (``device``, ``fp16``/``bf16`` set), and the parameter dtype and device."""

    family: Family
    ckpt: HFCheckpoint
    sat_cls: type
    args: argparse.Namespace
    dtype: torch.dtype
    device: torch.device


def resolve_target(
    cls: type | None,
    name_or_path: str | os.PathLike,
    args: argparse.Namespace | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    overwrite_args: dict[str, Any] | None = None,
    **hub: Any,
) -> Target:
    """`from_hf`'s first half: the family, class and args it builds `name_or_path` with (see `from_hf`)."""
    install_cpu_fallbacks()
    family, ckpt = family_of(name_or_path, cls, **hub)
    sat_cls = target_class(cls, family, ckpt)
    args = merge_args(sat_cls, family.args(ckpt), args, dict(overwrite_args or {}), ckpt)
    dtype = _resolve_dtype(dtype, args, ckpt)
    device = _resolve_device(device, args, ckpt)
    args.device = str(device)  # SAT classes read it while building (GLM-4V's vision tower)
    args.fp16, args.bf16 = dtype == torch.float16, dtype == torch.bfloat16
    return Target(family, ckpt, sat_cls, args, dtype, device)


def build_on_meta(target: Target, keys: frozenset[str], model_kwargs: dict[str, Any] | None = None):
    """The target's SAT model on meta, prepared for a file holding `keys` (a missing head dropped), and the spec
    that loads those keys into it; returns ``(model, spec)``. Used by `from_hf` and ``adapters inspect``."""
    spec = target.family.spec(target.ckpt, keys)
    target.args.skip_init, target.args.use_gpu_initialization = True, False  # weights come from the file, not init
    with empty_weights():
        model = _build(target.sat_cls, target.args, target.dtype, model_kwargs or {}, target.ckpt)
    if target.family.prepare is not None:
        target.family.prepare(model, target.ckpt, keys)
    return model, spec


def _plan_map(model, device_map, max_memory, offload_folder, dtype, ckpt: HFCheckpoint):
    """`device_map` for `load`: layers whole (`BaseTransformerLayer`), `mixins` whole on the computing device."""
    return plan_placement(model, device_map, max_memory=max_memory, dtype=dtype, no_split=["BaseTransformerLayer"],
                          path=str(ckpt.path), offload_folder=None if offload_folder is None else str(offload_folder),
                          together=("mixins",), module_hint=_MODULE_HINT)  # fmt: skip


def _build(sat_cls, args, dtype, model_kwargs, ckpt: HFCheckpoint):
    if args.model_parallel_size == 1:
        return sat_cls(args, params_dtype=dtype, **model_kwargs)
    try:
        return sat_cls(args, params_dtype=dtype, **model_kwargs)
    except AssertionError as e:  # sat.mpu.utils.divide: a size `prepare_parallel` does not know of
        raise HookError(
            f"{ckpt.path}: SAT cannot split {sat_cls.__name__} among {args.model_parallel_size} ranks: {e}\n"
            "  hint: pick a model_parallel_size that divides the model's heads and layer sizes"
        ) from e


def target_class(cls: type | None, family: Family, ckpt: HFCheckpoint) -> type:
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


def merge_args(sat_cls, translated: dict, args, overwrite: dict, ckpt: HFCheckpoint) -> argparse.Namespace:
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
    args.model_parallel_size = int(getattr(args, "model_parallel_size", 1))
    if args.model_parallel_size != 1:
        prepare_parallel(args, str(ckpt.path))
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
