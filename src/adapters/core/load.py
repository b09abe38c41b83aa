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
from accelerate.utils import set_module_tensor_to_device
from accelerate.utils.modeling import retie_parameters
from torch import nn
from tqdm.auto import tqdm

from .errors import AdapterError, LoadError
from .keys import summarize_keys
from .plan import Plan, plan
from .readers.base import Reader
from .readers.open import open_source
from .report import LoadReport, RuleSummary
from .spec import Spec
from .table import TensorInfo

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

    Returns:
        The `LoadReport`.

    Raises:
        PlanError: source and model do not fit (nothing was read).
        ReadError: the source cannot be read.
        LoadError: placement failed; the model's tensors are back on `meta`, never half-filled.

    Example:
        >>> with empty_weights():
        ...     model = MyModel(config)
        >>> report = load(SPEC, "ckpt/", model, dims={"q_dim": 64, "kv_dim": 16})
        >>> print(report)
    """
    reader = open_source(source)
    try:
        the_plan = plan(spec, reader, model, dims=dims, dtype=dtype)
        return materialize(the_plan, reader, model, device=device, dtype=dtype, progress=progress)
    finally:
        if reader is not source:
            reader.close()


def _placement(targets: list[str], device: Device | DeviceMap) -> dict[str, Device]:
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
    if on_disk:
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
) -> LoadReport:
    """Execute a clean plan into `model`. See `load`."""
    placement = _placement(the_plan.targets, device)
    written: list[str] = []
    start, bytes_before, reads_before = time.perf_counter(), reader.bytes_read, reader.tensors_read
    bar = tqdm(total=the_plan.source_bytes, unit="B", unit_scale=True, desc="loading",
               disable=(not progress) if progress is not None else None, leave=False)  # fmt: skip
    try:
        for unit in the_plan.units:
            tensors = tuple(reader.read(k) for k in unit.sources)
            for op in unit.ops:
                tensors = op.apply(tensors)
            for name, tensor, info in zip(unit.targets, tensors, unit.target_infos):
                value = _finish(tensor, info, placement[name])
                set_module_tensor_to_device(model, name, placement[name], value=value,
                                            dtype=info.dtype if info.dtype.is_floating_point else None, clear_cache=False)  # fmt: skip
                written.append(name)
            del tensors
            bar.update(unit.source_bytes)
        _retie(the_plan, model)
        _check_complete(the_plan, model, written)
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


def _check_complete(the_plan: Plan, model: nn.Module, written: list[str]) -> None:
    # The bitmap check: every planned target written exactly once, and no parameter left on meta.
    if sorted(written) != sorted(the_plan.targets) or len(set(written)) != len(written):
        raise LoadError(f"internal: wrote {len(written)} tensors for a plan of {len(the_plan.targets)}")
    on_meta = [k for k, v in model.state_dict(keep_vars=True).items() if v.device.type == "meta"]
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
