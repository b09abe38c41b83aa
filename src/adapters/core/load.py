"""Materialisation: walk a clean plan one fusion unit at a time and place each result on its device.

Peak host memory is the model plus one unit (the sources of one target group and their outputs), never the
source checkpoint: each unit's sources are read, transformed, cast, handed to accelerate's
`set_module_tensor_to_device`, and dropped before the next unit is read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import torch
from accelerate.utils import offload_weight, save_offload_index, set_module_tensor_to_device
from accelerate.utils.modeling import retie_parameters
from torch import nn
from tqdm.auto import tqdm

from .errors import AdapterError, LoadError, NonFiniteError
from .keys import summarize_keys
from .ops import Concat
from .partition import Sharding
from .plan import Plan, plan
from .readers.base import Reader
from .readers.open import open_source
from .report import LoadReport, RuleSummary
from .spec import Spec
from .table import TensorInfo, model_table

__all__ = ["load", "materialize", "Device"]

Device = str | int | torch.device
DeviceMap = Mapping[str, Device]


def load(
    spec: Spec,
    source: str | os.PathLike | Reader,
    model: nn.Module,
    *,
    dims: Mapping[str, int] | None = None,
    device: Device | DeviceMap = "cpu",
    dtype: torch.dtype | None = None,
    progress: bool | None = None,
    check_finite: bool = False,
    sharding: Sharding | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> LoadReport:
    """Plan, then fill `model` (usually built under `empty_weights()`) from `source`.

    Args:
        spec: the family's rules.
        source: a checkpoint path (file, ``*.index.json`` or folder) or an open `Reader`.
        model: the target; its parameters may be on `meta`.
        dims: numbers for the named sizes in the spec's ops.
        device: one device for everything, or an accelerate-style device map (module prefix → device).
        dtype: floating-point dtype of the loaded tensors (default: each parameter's own).
        progress: show a tqdm bar; None shows it only on a terminal.
        check_finite: scan every source tensor for NaN and Inf and raise `NonFiniteError` naming them (off by
            default: one extra pass over the data).
        sharding: for a model-parallel rank: `model` holds this rank's partitions (local shapes); the plan is
            checked against the full shapes and each source is read only as far as the rank needs it.
        offload_folder: where targets mapped to ``"disk"`` are written (accelerate's offload format: one ``.dat``
            per tensor and ``index.json``); they stay on meta in `model`, for `placement.dispatch` to hook.

    Returns:
        The `LoadReport`; its `bytes_read` is what this rank read.

    Raises:
        PlanError: source and model do not fit (nothing was read).
        ReadError: the source cannot be read.
        LoadError: placement failed; the model's tensors are back on `meta`, never half-filled.
        NonFiniteError: with `check_finite`, source tensors hold NaN or Inf (the model is back on `meta`).

    Example:
        >>> with empty_weights():
        ...     model = MyModel(config)
        >>> report = load(SPEC, "ckpt/", model, dims={"q_dim": 64, "kv_dim": 16})
        >>> print(report)
    """
    reader = open_source(source)
    try:
        target = model if sharding is None else sharding.full_table(model_table(model))
        the_plan = plan(spec, reader, target, dims=dims, dtype=dtype)
        return materialize(the_plan, reader, model, device=device, dtype=dtype, progress=progress,
                           check_finite=check_finite, sharding=sharding, offload_folder=offload_folder)  # fmt: skip
    finally:
        if reader is not source:
            reader.close()


def _placement(targets: list[str], device: Device | DeviceMap, disk: bool = False) -> dict[str, Device]:
    """Each target's device: the one device, or the device map's entry with the longest matching module prefix."""
    if not isinstance(device, Mapping):
        return {t: device for t in targets}
    placement: dict[str, Device] = {}
    for name in targets:
        prefixes = [p for p in device if p == "" or name == p or name.startswith(p + ".")]
        if prefixes:
            placement[name] = device[max(prefixes, key=len)]
    unplaced = [t for t in targets if t not in placement]
    if unplaced:
        raise LoadError(
            f"the device map places no device for {summarize_keys(unplaced)}\n"
            "  hint: add their modules (or '') to the device map"
        )
    on_disk = [t for t, d in placement.items() if d == "disk"]
    if on_disk and not disk:
        raise LoadError(
            f"the device map offloads {summarize_keys(on_disk)} to disk, which is not supported yet\n"
            "  hint: map them to 'cpu' instead"
        )
    return placement


def _finish(tensor: torch.Tensor, info: TensorInfo, device: Device) -> torch.Tensor:
    """Cast, move, and make sure the result owns exactly its own memory (no view into a larger source tensor)."""
    out = tensor.to(dtype=info.dtype) if tensor.dtype != info.dtype else tensor
    out = out.to(device).contiguous()
    if out.untyped_storage().nbytes() != out.nbytes:
        out = out.clone()
    return out


def materialize(
    the_plan: Plan,
    reader: Reader,
    model: nn.Module,
    *,
    device: Device | DeviceMap = "cpu",
    dtype: torch.dtype | None = None,
    progress: bool | None = None,
    check_finite: bool = False,
    sharding: Sharding | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> LoadReport:
    """Execute a clean plan into `model`. See `load`."""
    placement = _placement(the_plan.targets, device, disk=offload_folder is not None)
    offloaded: dict[str, dict] = {}  # accelerate's offload index of what went to disk
    if offload_folder is not None and "disk" in placement.values():
        os.makedirs(offload_folder, exist_ok=True)
    written: list[str] = []
    nonfinite: list[str] = []
    start, bytes_before, reads_before = time.perf_counter(), reader.bytes_read, reader.tensors_read
    bar = tqdm(total=the_plan.source_bytes, unit="B", unit_scale=True, desc="loading",
               disable=(not progress) if progress is not None else None, leave=False)  # fmt: skip
    try:
        for unit in the_plan.units:
            if sharding is None:
                viewed = _viewed(unit, reader, placement)
                copied = None if viewed or check_finite else _copied(unit, reader, placement)
                tensors = viewed or copied or tuple(reader.read(k) for k in unit.sources)
                if check_finite:
                    nonfinite += _nonfinite(unit.sources, tensors)
                for op in () if copied else unit.ops:
                    tensors = op.apply(tensors)
            else:  # this rank's slices; what it never reads it cannot check, so the check names targets
                tensors = sharding.run(unit, reader)
                if check_finite:
                    nonfinite += _nonfinite(unit.targets, tensors)
            for name, tensor, info in zip(unit.targets, tensors, unit.target_infos):
                if sharding is not None:
                    _check_local_shape(model, name, tensor)
                if placement[name] == "disk":  # straight to the folder; the parameter stays on meta
                    offload_weight(_finish(tensor, info, "cpu"), name, offload_folder, offloaded)
                    written.append(name)
                    continue
                value = _finish(tensor, info, placement[name])
                set_module_tensor_to_device(model, name, placement[name], value=value,
                                            dtype=info.dtype if info.dtype.is_floating_point else None, clear_cache=False)  # fmt: skip
                written.append(name)
            del tensors
            bar.update(unit.source_bytes)
        if nonfinite:
            raise NonFiniteError(
                f"{the_plan.source_name}: {len(nonfinite)} source tensor(s) hold NaN or Inf: {_first(nonfinite)}\n"
                "  hint: the checkpoint is damaged or was saved after training diverged; the model was reset to meta"
            )
        _retie(the_plan, model)
        _check_complete(the_plan, model, written, offloaded)
        save_offload_index(offloaded, offload_folder)
    except BaseException as e:
        _reset(model, written)
        if isinstance(e, AdapterError) or not isinstance(e, Exception):
            raise
        raise LoadError(
            f"loading {the_plan.source_name} into {the_plan.target_name} failed after {len(written)} of "
            f"{len(the_plan.targets)} tensors: {e}\n  hint: the model was reset to meta; fix the cause and load again"
        ) from e
    finally:
        bar.close()
    return _report(the_plan, reader, device, dtype, time.perf_counter() - start, bytes_before, reads_before)


def _first(items: list[str], limit: int = 8) -> str:
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _nonfinite(keys: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> list[str]:
    """``key (n NaN, m Inf)`` for each floating-point tensor that holds NaN or Inf."""
    found = []
    for key, t in zip(keys, tensors):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            found.append(f"{key} ({', '.join(f'{n} {w}' for n, w in ((nan, 'NaN'), (inf, 'Inf')) if n)})")
    return found


def _check_local_shape(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module, _, attr = name.rpartition(".")
    want = tuple(getattr(model.get_submodule(module), attr).shape)
    if tuple(tensor.shape) != want:
        raise LoadError(f"internal: this rank's part of {name} is {list(tensor.shape)}, its model has {list(want)}")


def _viewed(unit, reader: Reader, placement: Mapping[str, Device]) -> tuple[torch.Tensor, ...] | None:
    """The unit's one source as a view of the file, where the loader would only copy it: no op, no cast, CPU target.

    Most of a checkpoint is such renames (every LLaMA tensor but q/k/v), and a view costs no read and no memory
    beyond the page cache, as transformers' own loading does. Anything else is read into owned memory.
    """
    if unit.ops or len(unit.sources) != 1 or unit.source_infos[0].dtype != unit.target_infos[0].dtype:
        return None
    if not _on_cpu(placement[unit.targets[0]]):
        return None
    tensor = reader.view(unit.sources[0])
    return None if tensor is None else (tensor,)


def _on_cpu(where: Device) -> bool:
    return where != "disk" and torch.device(where).type == "cpu"


def _copied(unit, reader: Reader, placement: Mapping[str, Device]) -> tuple[torch.Tensor, ...] | None:
    """A concatenation (fused q/k/v) or a cast onto CPU, written once from file views into the target's memory.

    Reading each source into memory of its own and then concatenating or casting copies every byte twice and
    faults in twice the fresh pages; here each byte is copied once, straight from the page cache, and the pages
    the copy touched are given back. None where the unit needs more (other ops) or the reader has no views.
    """
    if len(unit.targets) != 1 or not _on_cpu(placement[unit.targets[0]]):
        return None
    concat = unit.ops[0] if len(unit.ops) == 1 and isinstance(unit.ops[0], Concat) else None
    if unit.ops and concat is None:
        return None
    views: list[torch.Tensor] = []
    for key in unit.sources:
        view = reader.view(key)
        if view is None:  # a reader has views for every tensor or for none: only the first can be missing
            return None
        views.append(view)
    info = unit.target_infos[0]
    out = torch.empty(info.shape, dtype=info.dtype)
    if concat is not None:
        concat.out_shapes([tuple(v.shape) for v in views])  # the same checks as Concat.apply
        torch.cat(views, dim=concat.dim, out=out)
    else:
        out.copy_(views[0])
    for key, view in zip(unit.sources, views):
        reader.release(key, view)
    return (out,)


def _check_complete(the_plan: Plan, model: nn.Module, written: list[str], offloaded=()) -> None:
    # The bitmap check: every planned target written exactly once, and no parameter left on meta.
    if sorted(written) != sorted(the_plan.targets) or len(set(written)) != len(written):
        raise LoadError(f"internal: wrote {len(written)} tensors for a plan of {len(the_plan.targets)}")
    on_meta = [k for k, v in model.state_dict(keep_vars=True).items() if v.device.type == "meta" and k not in offloaded]
    if on_meta:
        raise LoadError(
            f"{the_plan.target_name} still has tensors on meta after loading: {summarize_keys(on_meta)}\n"
            "  hint: a keep=[...] entry names a parameter the model does not compute itself; map it with a rule"
        )


def _retie(the_plan: Plan, model: nn.Module) -> None:
    groups: dict[str, list[str]] = {}
    for alias, canonical in the_plan.aliases.items():
        groups.setdefault(canonical, [canonical]).append(alias)
    if groups:
        retie_parameters(model, list(groups.values()))


def _reset(model: nn.Module, written: list[str]) -> None:
    for name in written:
        try:
            set_module_tensor_to_device(model, name, "meta")
        except Exception:  # noqa: BLE001 - best effort: the original error is what the caller needs to see
            pass


def _report(
    the_plan: Plan, reader: Reader, device, dtype, seconds: float, bytes_before: int, reads_before: int
) -> LoadReport:
    per_rule: dict[int, list[int]] = {}
    for u in the_plan.units:
        entry = per_rule.setdefault(u.rule_index, [0, 0])
        entry[0] += 1
        entry[1] += u.source_bytes
    rules = tuple(RuleSummary(i, str(the_plan.spec.rules[i]), n, b) for i, (n, b) in sorted(per_rule.items()))
    devices = sorted({str(d) for d in device.values()}) if isinstance(device, Mapping) else [str(device)]
    return LoadReport(
        spec=the_plan.spec.name,
        source=the_plan.source_name,
        target=the_plan.target_name,
        tensors_written=len(the_plan.targets),
        tensors_read=reader.tensors_read - reads_before,
        ignored=len(the_plan.ignored),
        kept=len(the_plan.kept),
        bytes_read=reader.bytes_read - bytes_before,
        seconds=seconds,
        device=", ".join(devices),
        dtype=str(dtype).replace("torch.", "") if dtype is not None else "model dtypes",
        rules=rules,
    )
