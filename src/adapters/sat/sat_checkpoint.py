"""SAT's own checkpoints, loaded lazily into any model-parallel size: `resolve_sat`, `SatCheckpoint`, `load_sat`.

A SAT checkpoint folder, as ``sat.training.model_io.save_checkpoint`` writes it::

    model_config.json                     SAT args: model_class, model_parallel_size, architecture fields
    latest                                the iteration to load ("1000", or "release")
    1000/mp_rank_00_model_states.pt       {"module": rank 0's state dict, ...}, one file per model-parallel rank
    1000/mp_rank_01_model_states.pt

`load_sat` builds the class on meta with the merged args, opens the rank files as one checkpoint of full tensors
(`SatReader`: headers only, each tensor joined from its parts when it is read) and loads it through the engine
with a spec that maps every name of the model to itself. In a model-parallel job each rank reads only the slices
it keeps, from the files that hold them; in one process the model is filled one tensor at a time, so the peak is
the model plus one tensor, never the checkpoint. No GPU is needed.

Routing (`adapters.sat.hook`): SAT's ``from_pretrained`` of a SAT folder goes through `load_sat` when SAT's own
path would gather or scatter the whole model on rank 0 over CUDA, or build the wrong model:

* ``overwrite_args`` names ``model_parallel_size`` (any value): SAT's resharding path, GPU-only, which also
  refuses any checkpoint saved with model_parallel_size != 1;
* the folder was saved with model_parallel_size N > 1 and this process is not in a job of N ranks: SAT would build
  the unsplit model and fail on rank 0's part (load_sat raises a `HookError` that says what to pass).

Everything else (the same size, in a job of that size, or a size-1 folder) stays on SAT's own path, which works
on CPU: each rank `torch.load`s its own file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core import (
    CorruptFileError,
    HookError,
    MissingSourceError,
    ModelTable,
    PlanError,
    SourceNotFoundError,
    Spec,
    UnusedSourceError,
    empty_weights,
    ignore,
    load,
    model_table,
    rule,
    summarize_keys,
)
from ..core.partition import Partition, Sharding
from .cpu import install_cpu_fallbacks
from .from_hf import _build, _resolve_device, _resolve_dtype, merge_args
from .partition import job_world_size, sat_partitions
from .sat_reader import SatReader

__all__ = [
    "SatCheckpoint",
    "identity_spec",
    "is_sat_checkpoint",
    "load_sat",
    "resolve_sat",
    "stored_model_parallel_size",
]

SAT_CONFIG = "model_config.json"
TRACKER = "latest"
_RANK_FILE = re.compile(r"mp_rank_(\d+)_model_states\.pt")
_NUMBER = re.compile(r"0|[1-9][0-9]*")


def _rank_file(rank: int) -> str:
    return f"mp_rank_{rank:02d}_model_states.pt"


@dataclass(frozen=True)
class SatCheckpoint:
    """A resolved SAT checkpoint: its folder, ``model_config.json``, the iteration and its rank files.

    Attributes:
        path: the checkpoint folder.
        config: ``model_config.json`` as a dict.
        iteration: the name of the iteration folder (``"1000"``, ``"release"``).
        files: the rank files, rank 0 first; there are ``model_parallel_size`` of them.
    """

    path: Path
    config: dict[str, Any] = field(repr=False)
    iteration: str
    files: tuple[Path, ...]

    @property
    def model_parallel_size(self) -> int:
        """How many ranks wrote the checkpoint (one file each)."""
        return len(self.files)

    @property
    def model_class(self) -> str | None:
        return self.config.get("model_class")

    def args(self) -> dict[str, Any]:
        """The config as SAT reads it into args: relative ``*_path`` values resolved against the folder."""
        return {
            k: str(self.path / v) if k.endswith("_path") and isinstance(v, str) else v for k, v in self.config.items()
        }

    def open(self, partitions: Mapping[str, Partition], *, prefix: str = "", replicas_from: int = 0) -> SatReader:
        """The rank files as one reader of full tensors under SAT's names (see `SatReader`).

        Args:
            partitions: `sat_partitions(model)` of a model of this checkpoint's class (built on meta at any size).
            prefix: read only the keys starting with it, without it (SAT's ``from_pretrained(prefix=...)``).
            replicas_from: the rank whose file replicated tensors are read from.
        """
        return SatReader(self.files, partitions, prefix=prefix, replicas_from=replicas_from,
                         path=self.path / self.iteration)  # fmt: skip


def is_sat_checkpoint(path: object) -> bool:
    """True for a local folder with SAT's ``model_config.json``."""
    return isinstance(path, (str, os.PathLike)) and (Path(path) / SAT_CONFIG).is_file()


def stored_model_parallel_size(path: str | os.PathLike) -> int:
    """``model_parallel_size`` of ``model_config.json`` (1 when absent), without resolving the iteration."""
    return _size(Path(path), _read_config(Path(path)))


def resolve_sat(path: str | os.PathLike, *, specific_iteration: int | None = None) -> SatCheckpoint:
    """Find the config, the iteration (``latest``, or `specific_iteration`) and its rank files; reads no tensor.

    Raises:
        SourceNotFoundError: no such folder, no ``latest``, an iteration folder or a rank file that is missing.
        HookError: the folder is not a SAT checkpoint (no ``model_config.json``), a bad `specific_iteration`.
        CorruptFileError: an unreadable ``model_config.json`` or ``latest``, rank files of another size.
    """
    path = Path(path)
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "no such folder"
        raise SourceNotFoundError(
            f"{path}: {what}\n  hint: pass a SAT checkpoint folder (model_config.json, latest, <iteration>/)"
        )
    config = _read_config(path)
    iteration = _iteration(path, specific_iteration)
    folder = path / iteration
    ways = _size(path, config)
    present = sorted(p.name for p in folder.iterdir() if _RANK_FILE.fullmatch(p.name))
    wanted = [_rank_file(r) for r in range(ways)]
    missing = [name for name in wanted if name not in present]
    if missing:
        raise SourceNotFoundError(
            f"{folder}: model_parallel_size={ways} ({SAT_CONFIG}) needs {', '.join(wanted)}; "
            f"missing: {', '.join(missing)}\n"
            f"  hint: SAT writes one file per model-parallel rank; copy every rank's file of iteration {iteration}"
        )
    extra = [name for name in present if name not in wanted]
    if extra:
        raise CorruptFileError(
            f"{folder} holds {', '.join(extra)} beyond the {ways} rank file(s) model_parallel_size={ways} "
            f"({SAT_CONFIG}) names\n"
            "  hint: the folder mixes saves of different model-parallel sizes; keep the files of one save"
        )
    return SatCheckpoint(path, config, iteration, tuple(folder / name for name in wanted))


def _read_config(path: Path) -> dict[str, Any]:
    file = path / SAT_CONFIG
    if not file.is_file():
        raise HookError(
            f"{path} has no {SAT_CONFIG}, so it is not a SAT checkpoint folder\n"
            f"  hint: SAT's save_checkpoint writes {SAT_CONFIG}, latest and <iteration>/mp_rank_XX_model_states.pt; "
            "an HF checkpoint (config.json) loads with from_hf"
        )
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(f"{file} is not readable JSON: {e}\n  hint: the save was interrupted; save again") from e
    if not isinstance(config, dict):
        raise CorruptFileError(f"{file} holds {type(config).__name__}, not a JSON object\n  hint: save again")
    return config


def _size(path: Path, config: Mapping[str, Any]) -> int:
    ways = config.get("model_parallel_size", 1)
    if isinstance(ways, bool) or not isinstance(ways, int) or ways < 1:
        raise CorruptFileError(
            f"{path / SAT_CONFIG}: model_parallel_size is {ways!r}, not a positive integer\n"
            "  hint: set it to the number of mp_rank_XX_model_states.pt files the iteration holds"
        )
    return ways


def _iteration(path: Path, specific: int | None) -> str:
    """The iteration folder's name: `specific` when given, else what ``latest`` names (SAT's order)."""
    if specific is not None:
        if isinstance(specific, bool) or not isinstance(specific, int) or specific < 1:
            raise HookError(
                f"{path}: specific_iteration={specific!r} is not a positive integer\n"
                f"  hint: pass the number of an iteration folder (here: {_iterations(path)}), or None for '{TRACKER}'"
            )
        name, source = str(specific), f"specific_iteration={specific}"
    else:
        tracker = path / TRACKER
        if not tracker.is_file():
            raise SourceNotFoundError(
                f"{path} has no '{TRACKER}' file naming the iteration to load\n"
                f"  iterations present: {_iterations(path)}\n"
                f"  hint: pass specific_iteration=N, or write the iteration into {tracker}"
            )
        name, source = tracker.read_text(encoding="utf-8", errors="replace").strip(), f"{tracker}"
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise CorruptFileError(
                f"{tracker} holds {name!r}, not an iteration\n"
                "  hint: SAT writes the iteration number (or 'release') there; write it again"
            )
    if not (path / name).is_dir():
        raise SourceNotFoundError(
            f"{source} names iteration {name}, but {path / name} does not exist\n"
            f"  iterations present: {_iterations(path)}\n"
            "  hint: the save of that iteration is missing or incomplete; pass specific_iteration= to load another"
        )
    return name


def _iterations(path: Path) -> str:
    found = sorted((p.name for p in path.iterdir() if p.is_dir() and any(p.glob("mp_rank_*_model_states.pt"))),
                   key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0, n))  # fmt: skip
    return ", ".join(found) or "none"


def load_sat(
    cls: type | None,
    path: str | os.PathLike,
    args: argparse.Namespace | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    overwrite_args: dict[str, Any] | None = None,
    progress: bool | None = None,
    prefix: str = "",
    specific_iteration: int | None = None,
    check_finite: bool = False,
    **model_kwargs: Any,
):
    """Build a SAT model from a SAT checkpoint folder saved at any model-parallel size; returns ``(model, args)``.

    Args:
        cls: the class to build; None (or SAT's ``AutoModel``) takes ``model_class`` of ``model_config.json``
            from SAT's model registry.
        path: the checkpoint folder.
        args: a SAT args namespace to update. Merged as SAT merges: class defaults ← `args` ←
            ``model_config.json`` ← `overwrite_args`; None starts from the class defaults with dropout 0.
        device: where each tensor goes as it is read (default: ``args.device``, else CUDA when present, else CPU).
        dtype: parameter dtype (default: bf16/fp16 when ``args.bf16``/``args.fp16``, else float32), cast from the
            checkpoint's as SAT's own loader casts.
        overwrite_args: fields that win over the file. ``{"model_parallel_size": N}`` loads into N ranks (inside
            a torch.distributed job of a multiple of N processes; N=1 needs none), whatever size the checkpoint was
            saved with; without it the model gets the checkpoint's size.
        progress: tqdm bar; None shows it on a terminal only.
        prefix: load only the keys starting with it, without it (SAT's ``prefix``).
        specific_iteration: the iteration to load instead of the one ``latest`` names.
        check_finite: scan what is read for NaN/Inf and raise `NonFiniteError` naming it.
        model_kwargs: passed to the class constructor, as SAT's `get_model` passes them.

    Raises:
        HookError: no usable class, a size the job or the model cannot take.
        ReadError: a missing iteration or rank file, rank files that disagree, an unreadable file.
        PlanError: the checkpoint and the model built from its config do not hold the same tensors or shapes.

    Example:
        >>> model, args = load_sat(None, "checkpoints/llama-mp2", overwrite_args={"model_parallel_size": 1})
    """
    install_cpu_fallbacks()
    ckpt = resolve_sat(path, specific_iteration=specific_iteration)
    sat_cls = _target_class(cls, ckpt)
    overwrite = dict(overwrite_args or {})
    if "model_parallel_size" not in overwrite:
        _check_job(ckpt)
    args = merge_args(sat_cls, ckpt.args(), args, overwrite, ckpt)
    dtype = _resolve_dtype(dtype, args, ckpt)
    device = _resolve_device(device, args, ckpt)
    args.device = str(device)
    args.fp16, args.bf16 = dtype == torch.float16, dtype == torch.bfloat16
    args.skip_init, args.use_gpu_initialization = True, False  # weights come from the files, never from init
    with empty_weights():
        model = _build(sat_cls, args, dtype, model_kwargs, ckpt)
    partitions = sat_partitions(model)
    ways = args.model_parallel_size
    rank = _model_parallel_rank() if ways > 1 else 0
    reader = ckpt.open(partitions, prefix=prefix, replicas_from=rank)
    try:
        _restore_pooler(model, reader)
        table = model_table(model)
        _check_keys(reader, table, ckpt, sat_cls.__name__)
        sharding = Sharding(ways, rank, partitions) if ways > 1 else None
        report = load(identity_spec(table, f"sat->{sat_cls.__name__}"), reader, model,
                      device=device, dtype=dtype, progress=progress, check_finite=check_finite, sharding=sharding)  # fmt: skip
    finally:
        reader.close()
    model.to(device)  # buffers SAT computes at construction and does not save
    if getattr(args, "mode", "inference") == "inference":
        model.eval()  # as SAT's load_checkpoint does
    model.adapters_load_report = report
    return model, args


def _restore_pooler(model, reader) -> None:
    """A folder saved from a `from_hf` encoder keeps HF's pooler as ``mixins.pooler.*`` (`adapters.sat.pooler`);
    SAT's class has no such mixin, so give it one before the key check, or the trained pooler would be refused
    (or, by SAT's own loader, dropped)."""
    from .pooler import POOLER_MIXIN, add_pooler

    if f"mixins.{POOLER_MIXIN}.dense.weight" in reader.keys() and POOLER_MIXIN not in model.mixins:
        add_pooler(model)


def _target_class(cls: type | None, ckpt: SatCheckpoint) -> type:
    from sat.model.base_model import AutoModel
    from sat.model.registry import model_registry

    if cls is not None and cls is not AutoModel:
        return cls  # SAT's own from_pretrained builds the class it is called on, whatever model_class says
    name = ckpt.model_class
    if not name:
        raise HookError(
            f"{ckpt.path / SAT_CONFIG} names no model_class\n"
            "  hint: name the class: LLaMAModel.from_pretrained(...) instead of AutoModel, or load_sat(LLaMAModel, ...)"
        )
    if name not in model_registry.member:
        raise HookError(
            f"{ckpt.path / SAT_CONFIG}: model_class {name!r} is not a SAT model class this process knows\n"
            f"  hint: import the module that defines {name} first (SAT registers a class when it is defined), "
            "or call from_pretrained on the class"
        )
    return model_registry.get(name)


def _check_job(ckpt: SatCheckpoint) -> None:
    """A checkpoint saved by N > 1 ranks, loaded at that size, needs a job of N ranks: say so before building."""
    ways, world = ckpt.model_parallel_size, job_world_size()
    if ways > 1 and world % ways:
        raise HookError(
            f"{ckpt.path} was saved with model_parallel_size={ways}, which needs a torch.distributed job of a "
            f"multiple of {ways} processes; this one has {world}\n"
            '  hint: pass overwrite_args={"model_parallel_size": 1} to load the whole model in this process, or '
            f"start {ways} processes (torchrun --nproc-per-node {ways})"
        )


def _model_parallel_rank() -> int:
    from sat import mpu

    return mpu.get_model_parallel_rank()


def identity_spec(table: ModelTable, name: str) -> Spec:
    """Every key of a model's table onto itself: one rule per key shape, layer numbers as placeholders.

    ``transformer.layers.0.attention.dense.weight`` and its siblings in every layer share the rule
    ``transformer.layers.{n2}.attention.dense.weight -> (the same)``. A second name of a tied tensor is ignored:
    the model holds it once, under its first name.
    """
    patterns = dict.fromkeys(_pattern(key) for key in table.tensors)
    rules = [rule(p, p) for p in patterns]
    ignores = [
        ignore(alias, f"tied to {canonical}; the model holds it once") for alias, canonical in table.aliases.items()
    ]
    return Spec(name, tuple(rules), tuple(ignores))


def _pattern(key: str) -> str:
    return ".".join(f"{{n{i}}}" if _NUMBER.fullmatch(part) else part for i, part in enumerate(key.split(".")))


def _check_keys(reader: SatReader, table: ModelTable, ckpt: SatCheckpoint, class_name: str) -> None:
    """The checkpoint holds exactly the model's tensors (a tied tensor under any of its names)."""
    source = set(reader.keys())
    known = set(table.tensors) | set(table.aliases)
    extra = sorted(source - known)
    missing = sorted(set(table.tensors) - source)
    if not (extra or missing):
        return
    kind = PlanError if extra and missing else UnusedSourceError if extra else MissingSourceError
    saved = f"model_class {ckpt.model_class!r}" if ckpt.model_class else f"no model_class in {SAT_CONFIG}"
    raise kind(
        f"{reader.path}: the checkpoint and {class_name} do not hold the same tensors\n"
        + (f"  only in the checkpoint: {summarize_keys(extra)}\n" if extra else "")
        + (f"  only in {class_name}: {summarize_keys(missing)}\n" if missing else "")
        + f"  hint: the checkpoint was saved from {saved}; load it with that class, its mixins and its args"
    )
