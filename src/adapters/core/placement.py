"""Placement: a host's ``device`` / ``device_map`` made concrete for `load`, and accelerate's hooks after it.

One process, accelerate's vocabulary: one device; a map of module prefix → device (``"cpu"``, ``0``,
``"cuda:1"``, ``"disk"``); or a strategy (``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"``) that
accelerate's `infer_auto_device_map` turns into a map from the model's size. `load` then places each tensor on its
device as it is read (``"disk"`` tensors go straight to ``offload_folder``), and `dispatch` adds the hooks that move
activations between devices and bring offloaded weights in, as transformers does.

``together`` names modules whose weights other modules use from inside their own forward (SAT's ``mixins``:
per-layer weights in ModuleLists, rotary buffers). accelerate moves inputs only into a hooked module's own forward
and loads offloaded weights only there, so such a module must sit whole on the device every module computes on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .errors import HookError
from .keys import summarize_keys
from .load import Device

__all__ = ["STRATEGIES", "plan_placement", "dispatch", "disjoint_device_map"]

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
Placement = Device | dict[str, Device]


def plan_placement(
    model: nn.Module,
    device: Device | Mapping[str, Device],
    *,
    max_memory: Mapping[int | str, int | str] | None = None,
    dtype: torch.dtype,
    no_split: Sequence[str] = (),
    path: str,
    offload_folder: str | None = None,
    disk: bool = True,
    together: Sequence[str] = (),
    module_hint: str = "",
) -> Placement:
    """`device` made concrete for `load`: one device, or a device map with the strategies resolved.

    Args:
        model: the host model, built on meta.
        device: a device, a dict of module prefix → device, or one of `STRATEGIES`.
        max_memory: device → bytes (or "10GiB") for the strategies; accelerate's default is what is free.
        dtype: the dtype the weights will have (sizes for the strategies).
        no_split: module class names a strategy keeps whole on one device.
        path: the checkpoint, named first in every message.
        offload_folder: where ``"disk"`` entries go; without it a map that needs disk is refused.
        disk: whether the host supports disk offload at all (False: refused whatever the folder).
        together: module prefixes that must sit whole on the map's execution device (see the module docstring).
        module_hint: module names for the hint of the unknown-module message.

    Raises:
        HookError: an unplaceable `device`, unknown module names, disk without a folder, a split `together`.
    """
    if isinstance(device, str) and device in STRATEGIES:
        placement = _planned_map(model, device, max_memory=max_memory, dtype=dtype, path=path, disk=disk,
                                 offload_folder=offload_folder, no_split=[*no_split, *_classes(model, together)])  # fmt: skip
    elif (
        isinstance(device, Mapping)
        and all(isinstance(k, str) for k in device)
        and all(v == "disk" or _is_device(v) for v in device.values())
    ):
        _check_modules(model, device, path, module_hint)
        placement = dict(device)
        on_disk = [m or "''" for m, d in placement.items() if d == "disk"]
        if on_disk and disk and offload_folder is None:
            raise HookError(
                f"{path}: the device map offloads {summarize_keys(on_disk)} to disk, which needs an offload folder\n"
                "  hint: pass offload_folder= (a folder for the offloaded weights)"
            )
    elif not isinstance(device, Mapping) and _is_device(device):
        return device
    else:
        raise HookError(
            f"{path}: cannot place the model on {device!r}: expected a device, a dict of module prefix -> device, "
            f"or one of {', '.join(map(repr, STRATEGIES))}\n"
            '  hint: for example device_map="cpu", device_map=0, device_map={"": "cuda:0"} or device_map="auto"'
        )
    _check_together(model, placement, together, path)
    return placement


def dispatch(model: nn.Module, placement: Placement, offload_folder: str | None = None) -> None:
    """Record ``hf_device_map``; for a map over several devices (or disk), add accelerate's hooks.

    Buffers the model computed itself (not loaded) are moved with their module, as `dispatch_model` moves them.
    """
    if not isinstance(placement, Mapping):
        return
    if len({_same(d) for d in placement.values()}) > 1 or "disk" in placement.values():
        from accelerate import dispatch_model

        # dispatch_model places each mapped module's whole subtree, so it is given disjoint prefixes; it records
        # hf_device_map itself. Disk weights are already in offload_folder (written by `load`, with index.json).
        dispatch_model(model, device_map=disjoint_device_map(model, _with_buffers(model, placement)),
                       offload_dir=offload_folder)  # fmt: skip
    else:
        model.to(next(iter(placement.values())))
        model.hf_device_map = dict(placement)


def _with_buffers(model: nn.Module, device_map: Mapping[str, Device]) -> dict[str, Device]:
    """`device_map` plus the modules of buffers it does not cover (a map need only cover what is loaded).

    Such buffers were computed by the model itself; they go to the device the model computes on.
    """
    accelerators = [d for d in device_map.values() if _same(d) not in (("cpu", None), "disk")]
    main = min(accelerators, key=lambda d: str(_same(d))) if accelerators else "cpu"
    extra = {n.rpartition(".")[0]: main for n, _ in model.named_buffers() if _device_of(device_map, n) is None}
    return {**device_map, **extra}


def _classes(model: nn.Module, prefixes: Sequence[str]) -> list[str]:
    return [type(model.get_submodule(p)).__name__ for p in prefixes if _has(model, p)]


def _has(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _is_device(value: object) -> bool:
    """A device tensors can be loaded onto: not "meta", which holds no data."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value >= 0
    if isinstance(value, (str, torch.device)):
        try:
            return torch.device(value).type != "meta"
        except RuntimeError:
            return False
    return False


def _check_modules(model: nn.Module, device_map: Mapping[str, Device], path: str, module_hint: str) -> None:
    # A misspelt prefix would otherwise be ignored and its modules placed by a shorter one.
    names = {n for n, _ in model.named_modules()} | {n for n, _ in model.named_parameters()}
    unknown = [k for k in device_map if k not in names]
    if unknown:
        raise HookError(
            f"{path}: the device map names {summarize_keys(unknown)}, which {type(model).__name__} does not have\n"
            f"  hint: name modules such as {module_hint or ', '.join(n for n, _ in model.named_children())}, "
            "or '' for the rest"
        )


def _planned_map(model, strategy, *, max_memory, dtype, path, disk, offload_folder, no_split) -> dict[str, Device]:
    """accelerate's map for `strategy`, as transformers plans it: balanced strategies even out the GPUs' budgets."""
    from accelerate.utils import get_balanced_memory, get_max_memory, infer_auto_device_map

    if strategy == "sequential":
        memory = get_max_memory(dict(max_memory) if max_memory is not None else None)
    else:
        memory = get_balanced_memory(model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype,
                                     low_zero=strategy == "balanced_low_0")  # fmt: skip
    device_map = dict(infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split, dtype=dtype))
    on_disk = [m or "the whole model" for m, d in device_map.items() if d == "disk"]
    if on_disk and not disk:
        raise HookError(
            f"{path}: device_map={strategy!r} leaves {summarize_keys(on_disk)} to disk offload, which is not "
            f"supported (max_memory: {memory})\n"
            "  hint: allow more memory in max_memory, or load in a smaller dtype"
        )
    if on_disk and offload_folder is None:
        raise HookError(
            f"{path}: device_map={strategy!r} leaves {summarize_keys(on_disk)} to disk offload, which needs an "
            f"offload folder (max_memory: {memory})\n"
            "  hint: pass offload_folder=, allow more memory in max_memory, or load in a smaller dtype"
        )
    return device_map


def _execution(device: Device, main: object) -> object:
    """Where a module computes under accelerate's hooks: cpu and disk modules compute on the main device."""
    key = _same(device)
    return main if key in (("cpu", None), "disk") else key


def _check_together(model: nn.Module, device_map: Mapping[str, Device], together: Sequence[str], path: str) -> None:
    """Each `together` module sits whole, not offloaded, on the one device every module computes on."""
    if not isinstance(device_map, Mapping):
        return
    placed = _tensor_devices(model, device_map)
    accelerators = {_same(d) for d in placed.values()} - {("cpu", None), "disk"}
    main = min(accelerators, key=str) if accelerators else ("cpu", None)
    for prefix in (p for p in together if _has(model, p)):
        inside = {n: d for n, d in placed.items() if n.startswith(prefix + ".")}
        devices = {_same(d) for d in inside.values()}
        offloaded = len(devices) == 1 and main != ("cpu", None) and devices == {("cpu", None)}
        if len(devices) > 1 or devices == {"disk"} or offloaded or len(accelerators) > 1:
            raise HookError(
                f"{path}: the device map puts {prefix} on {_names(devices)} and the model computes on "
                f"{_names(accelerators) or 'cpu'}; {prefix} must sit whole on the one device every module computes on\n"
                f"  hint: {prefix}'s weights are used inside other modules' forward, where accelerate's hooks "
                f"neither move nor load them: map {prefix!r} to that device and use one accelerator"
            )


def _names(keys) -> str:
    """Device keys (see `_same`) as text: ``cpu``, ``cuda:0``, ``disk``."""
    return ", ".join(sorted(k if isinstance(k, str) else k[0] if k[1] is None else f"{k[0]}:{k[1]}" for k in keys))


def _tensor_devices(model: nn.Module, device_map: Mapping[str, Device]) -> dict[str, Device]:
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    return {n: d for n in names if (d := _device_of(device_map, n)) is not None}


def _device_of(device_map: Mapping[str, Device], name: str) -> Device | None:
    prefixes = [p for p in device_map if p == "" or name == p or name.startswith(p + ".")]
    return device_map[max(prefixes, key=len)] if prefixes else None


def _same(device: Device) -> object:
    """A key under which equal devices compare equal ("cpu", torch.device("cpu"); 0 and "cuda:0")."""
    if device == "disk":
        return device
    if isinstance(device, int):
        return ("cuda", device)  # accelerate's meaning of a bare index on CUDA machines
    device = torch.device(device)
    return ("cpu", None) if device.type == "cpu" else (device.type, device.index)


def disjoint_device_map(model: nn.Module, device_map: Mapping[str, Device]) -> dict[str, Device]:
    """`device_map` with no key inside another (``{"": "cpu", "model.layers.1": 0}`` → every top module by name).

    accelerate's `dispatch_model` places a mapped module's whole subtree on its device, so it needs the largest
    modules whose parameters all sit on one device, each named once; `load` resolves prefixes by the longest
    match, and this keeps that meaning.
    """

    def device_of(name: str) -> Device:
        return device_map[max((p for p in device_map if p == "" or name == p or name.startswith(p + ".")), key=len)]

    out: dict[str, Device] = {}

    def visit(prefix: str, module: nn.Module) -> None:
        tensors = [*module.named_parameters(), *module.named_buffers()]
        names = [f"{prefix}.{n}" if prefix else n for n, _ in tensors]
        if len({_same(device_of(n)) for n in names}) <= 1:
            if names:
                out[prefix] = device_of(names[0])
            return
        for name, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            out[f"{prefix}.{name}" if prefix else name] = device_of(f"{prefix}.{name}" if prefix else name)
        for name, child in module.named_children():
            visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    return out
