"""`save_hf`: a SAT model (live, or a SAT checkpoint folder) as an HF checkpoint folder that transformers (or the
THUDM remote code) loads with no missing and no unexpected keys.

Steps, all before the first byte is written: pick the family (recorded by `from_hf`, named, or the nearest one
holding the model's class); translate the args back into ``config.json`` (`Family.hf_config`) and run that config
forward again through the family's `args`, which must give back the model's args; build the family's spec for the
HF layout and plan it backwards over the model, LoRA layers seen merged or as their base weights (`adapters.sat.lora`);
lay out the shards from the plan. Then stream: one fusion unit at a time is read from the model, run through the
inverse ops, cast, and written into its shard, so peak memory is the model plus one unit. The folder is written
beside `out_dir` and renamed into place; the model (and a source folder) is never modified.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from ..core import ExportError, HookError, Plan, PlanError, Reader, TensorInfo
from ..core.export import iter_export, parse_size, plan_export, write_folder_atomically, write_safetensors_shards
from ..core.readers.module import ModuleReader
from .family import Family, find_family
from .hf_checkpoint import CONFIG, SAT_CONFIG, HFCheckpoint
from .hf_config import HFLayout
from .lora import LoraReader, PeftAdapter, find_lora, peft_adapter
from .specs import FAMILIES

__all__ = ["ADAPTER_DIR", "export_family", "save_hf"]

ADAPTER_DIR = "adapter"  # where lora="peft" puts the PEFT adapter, inside out_dir
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_HIDE = {None: None, True: False, False: True}  # progress= -> tqdm's disable= (None: on a terminal only)
_NOT_ARCHITECTURE = ("text_processor_version", "tokenizer_type")  # prompt and tokenizer names, not the model


def save_hf(
    model: nn.Module | str | os.PathLike,
    out_dir: str | os.PathLike,
    args: argparse.Namespace | None = None,
    *,
    family: str | None = None,
    dtype: torch.dtype | str | None = None,
    lora: str = "merge",
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
    progress: bool | None = None,
    model_class: type | None = None,
) -> Path:
    """Write a SAT model as an HF checkpoint folder: sharded safetensors (+ index), ``config.json``.

    Args:
        model: a live SAT model, or a SAT checkpoint folder (``latest``, ``{iteration}/mp_rank_XX_model_states.pt``,
            ``model_config.json``; any number of model-parallel ranks, joined as they are read).
        out_dir: the folder to write; it must not exist or be empty, unless `overwrite`.
        args: the SAT args the model was built with (what `from_hf`/`from_pretrained` return with it). None for a
            model `from_hf` loaded: its recorded HF config is translated again.
        family: the HF family to write (``"glm4"`` THUDM names, ``"glm"`` transformers' Glm, ...). Default: the one
            the model was loaded from, else the one whose SAT class is nearest to the model's.
        dtype: floating-point dtype of the files (default: the model's).
        lora: lora2 LoRA layers (`sat.model.finetune.lora2.LoraMixin`): ``"merge"`` adds each update into its base
            weight; ``"peft"`` writes the base weights unmerged plus a PEFT adapter in ``out_dir/adapter``
            (``adapter_config.json``, ``adapter_model.safetensors``) for ``PeftModel.from_pretrained``.
        max_shard_size: largest shard, as transformers takes it (bytes, ``"5GB"``, ``"500MiB"``).
        overwrite: replace an existing `out_dir` (only once the new folder is complete).
        progress: tqdm bar over the tensors; None shows it on a terminal only.
        model_class: the SAT class to build a checkpoint folder into (default: its ``model_config.json``'s).

    Returns:
        `out_dir`.

    Raises:
        ExportError: no family exports this model, its args cannot be written as the family's config, a tensor has
            no HF home, or writing failed. Nothing is left behind: `out_dir` is untouched.

    Example:
        >>> model, args = LLaMAModel.from_hf("meta-llama/Llama-3.2-1B")
        >>> ...  # fine-tune in SAT, e.g. with a LoraMixin
        >>> save_hf(model, "llama-finetuned", args)
        >>> LlamaForCausalLM.from_pretrained("llama-finetuned")
    """
    if lora not in ("merge", "peft"):
        raise ExportError(f"lora={lora!r} is not an export mode\n  hint: pass lora='merge' or lora='peft'")
    max_shard_size = parse_size(max_shard_size)
    dtype = None if dtype is None else _dtype(dtype, None)
    if isinstance(model, (str, os.PathLike)):
        model, args = _load_folder(Path(model), model_class, progress)
    if not isinstance(model, nn.Module):
        raise ExportError(
            f"save_hf takes a SAT model or a SAT checkpoint folder, not {type(model).__name__}\n"
            "  hint: pass the model from_hf / from_pretrained returned, or the folder SAT's save_checkpoint wrote"
        )
    export = _prepare(model, Path(out_dir), args, family=family, dtype=dtype, lora=lora)
    return write_folder_atomically(
        out_dir, lambda tmp: export.write(tmp, max_shard_size, progress), overwrite=overwrite
    )


@dataclass(frozen=True)
class _Export:
    """Everything an export writes, decided before the first byte: the plan, the announced tensors, the config."""

    plan: Plan
    reader: Reader
    entries: list[tuple[str, TensorInfo]]
    extra: dict[str, torch.Tensor]
    config: dict[str, Any]
    adapter: PeftAdapter | None

    def write(self, folder: Path, max_shard_size: int, progress: bool | None) -> None:
        tensors = itertools.chain(iter_export(self.plan, self.reader), self.extra.items())
        bar = tqdm(tensors, total=len(self.entries), desc="Writing HF shards", unit="tensor", disable=_HIDE[progress])
        write_safetensors_shards(folder, self.entries, bar, max_shard_size=max_shard_size)
        (folder / CONFIG).write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
        if self.adapter is not None:
            (folder / ADAPTER_DIR).mkdir()
            save_file(self.adapter.tensors, folder / ADAPTER_DIR / "adapter_model.safetensors",
                      metadata={"format": "pt"})  # fmt: skip
            (folder / ADAPTER_DIR / "adapter_config.json").write_text(json.dumps(self.adapter.config, indent=2) + "\n")


def _prepare(model: nn.Module, out_dir: Path, args, *, family: str | None, dtype, lora: str) -> _Export:
    """Family, config (checked by translating it forward again), plan and shard entries; reads no tensor."""
    chosen = export_family(model, family)
    loaded_as = getattr(model, "adapters_family", None)
    recorded = getattr(model, "adapters_hf_config", None) if loaded_as == chosen.name else None
    args = _args(chosen, args, recorded, out_dir)
    ways = int(getattr(args, "model_parallel_size", 1) or 1)
    if ways != 1:
        raise ExportError(
            f"{type(model).__name__} holds one of {ways} model-parallel partitions; an HF checkpoint needs the whole "
            "model\n  hint: save it with SAT's save_checkpoint and pass that folder to save_hf, which joins the ranks"
        )
    layers = find_lora(model)
    if lora == "peft" and not layers:
        raise ExportError(
            f"lora='peft' was asked for, but {type(model).__name__} has no LoRA layers (lora2 LoraLinear)\n"
            "  hint: export without lora='peft'"
        )
    reader = LoraReader(model, layers, merge=lora == "merge") if layers else ModuleReader(model)
    dtype = dtype or _dtype(None, model)
    layout = chosen.hf_config(model, args, recorded)  # type: ignore[misc]
    ckpt = HFCheckpoint(out_dir, layout.config, name=str(out_dir))
    _check_translation(chosen, ckpt, args, model)
    the_plan = _plan(chosen, ckpt, layout, reader, model, dtype)
    extra = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in layout.extra.items()}  # fmt: skip
    entries = [(t, i) for u in the_plan.units for t, i in zip(u.targets, u.target_infos)]
    entries += [(k, TensorInfo(tuple(v.shape), v.dtype)) for k, v in extra.items()]
    adapter = peft_adapter(the_plan, reader, base_model=str(out_dir), dtype=dtype) if lora == "peft" else None
    return _Export(the_plan, reader, entries, extra, _stamp_dtype(layout.config, dtype), adapter)


def export_family(model: nn.Module, name: str | None = None) -> Family:
    """The family to export `model` as: `name`, else the one it was loaded from, else the nearest holding its class.

    Raises:
        ExportError: an unknown name, a class no family holds, or two families at the same distance.
    """
    by_name = {f.name: f for f in FAMILIES}
    cls = type(model)
    if name is not None:
        if name not in by_name:
            raise ExportError(f"family={name!r} is not a SAT family\n  hint: pass one of {', '.join(sorted(by_name))}")
        if not by_name[name].holds(cls):
            raise ExportError(
                f"family={name!r} exports {by_name[name].class_name}, and {cls.__name__} is not one\n"
                "  hint: leave family= out to pick the family from the model class"
            )
        return by_name[name]
    loaded = getattr(model, "adapters_family", None)
    if loaded in by_name and by_name[loaded].holds(cls):
        return by_name[loaded]
    fits = [(len(f.load_class().__mro__), f) for f in FAMILIES if f.holds(cls)]
    if not fits:
        raise ExportError(
            f"no SAT family exports {cls.__name__}\n"
            f"  hint: the exportable classes are {', '.join(sorted({f.class_name for f in FAMILIES}))}"
        )
    depth = max(d for d, _ in fits)
    nearest = [f for d, f in fits if d == depth]
    if len(nearest) > 1:
        names = " or ".join(f'family="{f.name}"' for f in nearest)
        raise ExportError(
            f"{cls.__name__} is held by {len(nearest)} HF families ({', '.join(f.name for f in nearest)}), which "
            f"write different files\n  hint: name the one to write: save_hf(..., {names})"
        )
    return nearest[0]


def _load_folder(path: Path, model_class: type | None, progress) -> tuple[nn.Module, argparse.Namespace]:
    """The SAT checkpoint folder as one model on CPU (model-parallel ranks joined tensor by tensor)."""
    if not path.is_dir():
        raise ExportError(f"{path}: no such folder\n  hint: pass a SAT checkpoint folder or a live SAT model")
    if not (path / SAT_CONFIG).is_file():
        raise ExportError(
            f"{path} is not a SAT checkpoint folder (no {SAT_CONFIG})\n"
            "  hint: pass a folder SAT's save_checkpoint wrote, or a live SAT model"
        )
    from .sat_checkpoint import load_sat

    # In the checkpoint's own dtype: LoRA updates are merged at that precision, and `dtype` casts only the result.
    return load_sat(model_class, path, device="cpu", overwrite_args={"model_parallel_size": 1}, progress=progress)


def _args(family: Family, args, recorded: Mapping[str, Any] | None, out_dir) -> argparse.Namespace:
    if args is not None:
        return args
    if recorded is None:
        raise ExportError(
            "save_hf needs the model's SAT args for a model from_hf did not load\n"
            "  hint: pass the args SAT returned with the model: save_hf(model, out_dir, args)"
        )
    return argparse.Namespace(**family.args(HFCheckpoint(Path(out_dir), dict(recorded))))


def _dtype(dtype, model: nn.Module | None) -> torch.dtype:
    if dtype is None:
        found = Counter(p.dtype for p in model.parameters() if p.is_floating_point()) if model is not None else {}
        return max(found, key=found.__getitem__) if found else torch.float32
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), dtype)
    if dtype not in _FLOAT_DTYPES:
        raise ExportError(
            f"dtype={dtype!r} cannot be written\n  hint: pass torch.float32, torch.bfloat16 or torch.float16"
        )
    return dtype


def _same(a: Any, b: Any) -> bool:
    """`a` (from the config) agrees with `b` (the args): None on either side is SAT's default and agrees with
    anything; dicts compare on their common keys, sequences as lists."""
    if a is None or b is None:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_same(v, b.get(k)) for k, v in a.items())
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _check_translation(family: Family, ckpt: HFCheckpoint, args: argparse.Namespace, model: nn.Module) -> None:
    """The written config, read by the family as `from_hf` reads it, must give back the model's args."""
    try:
        back = family.args(ckpt)
    except HookError as e:
        reason = str(e).splitlines()[0].removeprefix(f"{ckpt.path / CONFIG}: ")
        raise ExportError(
            f"{type(model).__name__} cannot be written as an HF {family.name} checkpoint: {reason}\n"
            "  hint: its args ask for something the HF architecture does not compute"
        ) from e
    wrong = [(k, v, getattr(args, k)) for k, v in back.items()
             if k not in _NOT_ARCHITECTURE and not _same(v, getattr(args, k, None))]  # fmt: skip
    if wrong:
        lines = [f"    {k}: the config gives {v!r}, the args have {a!r}" for k, v, a in wrong]
        raise ExportError(
            f"the HF {family.name} config for {type(model).__name__} would build another model than its args\n"
            + "\n".join(lines)
            + f"\n  hint: the model is not in the layout from_hf builds for {family.name}; pass the args it was built "
            "with, or another family="
        )
    found = find_family(ckpt, FAMILIES, type(model))
    if found is not family:
        raise ExportError(
            f"the HF {family.name} config written for {type(model).__name__} reads back as family {found.name}\n"
            "  hint: this is a bug in the family's hf_config; please report it"
        )


def _plan(family: Family, ckpt: HFCheckpoint, layout: HFLayout, reader, model: nn.Module, dtype: torch.dtype):
    spec = family.spec(ckpt, layout.keys)
    try:
        the_plan, _ = plan_export(spec, reader, dims=family.dims(ckpt), dtype=dtype)
    except PlanError as e:
        raise ExportError(
            f"{type(model).__name__} does not fit the HF {family.name} layout:\n"
            + "\n".join("  " + line for line in str(e).splitlines()[:-1])
            + f"\n  hint: the model has tensors (or lacks ones) that from_hf's {family.name} model does not; "
            "export a model built as from_hf builds it, or name another family="
        ) from e
    clash = sorted(set(layout.extra) & set(the_plan.targets))
    if clash:
        raise ExportError(f"{family.name}: {clash} would be written twice\n  hint: a bug in the family's hf_config")
    return the_plan


def _stamp_dtype(config: dict, dtype: torch.dtype) -> dict:
    """The config with the files' dtype: ``torch_dtype`` where the config (remote code) uses it, else ``dtype``."""
    name = str(dtype).removeprefix("torch.")
    key = "torch_dtype" if "torch_dtype" in config or "auto_map" in config else "dtype"
    return {**config, key: name}
