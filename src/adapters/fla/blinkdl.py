"""BlinkDL RWKV-7 ``.pth`` files as FLA `RWKV7ForCausalLM` models: config from tensor shapes, load through the engine.

Shapes read from the file (``C`` hidden, ``H`` heads, ``N`` head size, ``F`` FFN size, ``V`` vocab)::

    emb.weight [V, C]   blocks.0.att.r_k [H, N]   blocks.0.ffn.key.weight [F, C]
    blocks.0.att.{w1,a1,g1} [C, D_w|D_a|D_g]      blocks.1.att.v1 [C, D_v]  (block 0's copy is unused)

FLA's config defaults match no released model, so every field that matters is set from the file. Files that spell
the x070 names otherwise (a wrapper prefix, ``attn``, rc4a's ``time_*``) are read under the canonical names
(`variants`); files of other generations are refused by name before anything is read.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping

import torch

from ..core import HookError, Reader, TensorInfo, load, open_source, summarize_keys
from ..core.empty import no_init
from ..core.load import Device
from .specs.rwkv7 import SPEC
from .variants import canonical_reader

__all__ = ["config_from_shapes", "from_blinkdl"]

_REQUIRED = ("emb.weight", "blocks.0.att.r_k", "blocks.0.ffn.key.weight", "blocks.0.att.w1", "blocks.0.att.a1",
             "blocks.0.att.g1", "head.weight")  # fmt: skip
_BLOCK = re.compile(r"blocks\.(\d+)\.")
_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_NO_SPLIT = ["RWKV7Block"]  # a block's time mix and channel mix share its token-shift input: keep it on one device


def config_from_shapes(table: Mapping[str, TensorInfo], path: str = "checkpoint") -> dict:
    """`RWKV7Config` keyword arguments for a BlinkDL x070 file, from its key table alone."""
    absent = [k for k in _REQUIRED if k not in table]
    if absent:
        raise HookError(
            f"{path} is not a BlinkDL RWKV-7 (x070) checkpoint: it has no {', '.join(absent)}\n"
            "  hint: adapters.fla loads final x070 files (rwkv7-*.pth, RWKV-x070-*.pth)"
        )
    vocab, hidden = table["emb.weight"].shape
    layers = 1 + max(int(m.group(1)) for k in table if (m := _BLOCK.match(k)))
    heads, head_dim = table["blocks.0.att.r_k"].shape
    v1 = table.get("blocks.1.att.v1") or table.get("blocks.0.att.v1")
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "head_dim": head_dim,
        "num_heads": heads,
        "intermediate_size": table["blocks.0.ffn.key.weight"].shape[0],
        "decay_low_rank_dim": table["blocks.0.att.w1"].shape[1],
        "a_low_rank_dim": table["blocks.0.att.a1"].shape[1],
        "gate_low_rank_dim": table["blocks.0.att.g1"].shape[1],
        "v_low_rank_dim": v1.shape[1] if v1 is not None else 1,  # a 1-layer model has no value residual
        "value_dim": [hidden] * layers,
        "hidden_act": "sqrelu",
        "norm_first": True,
        "norm_bias": True,
        "norm_eps": 1e-5,  # nn.LayerNorm's default, which BlinkDL uses
        "tie_word_embeddings": False,
    }


def from_blinkdl(
    path: str | os.PathLike | Reader,
    *,
    dtype: torch.dtype | None = None,
    device: Device | Mapping[str, Device] = "cpu",
    max_memory: Mapping[int | str, int | str] | None = None,
    progress: bool | None = None,
    **config_overrides,
):
    """An FLA `RWKV7ForCausalLM` holding a BlinkDL x070 ``.pth``, in eval mode; nothing is written to disk.

    Args:
        path: the ``.pth`` file (read lazily through a file mapping), or an open `Reader`.
        dtype: floating dtype of the model (default float32, like transformers' `from_pretrained`).
        device: where the weights go, each tensor placed there as it is read: one device; a device map (module
            prefix → device, e.g. ``{"model.layers.0": 0, "": "cpu"}``); or ``"auto"``, ``"balanced"``,
            ``"balanced_low_0"``, ``"sequential"``, for which accelerate plans the map from the model's size. With
            a map, the model records it as ``hf_device_map``, and spans of several devices are dispatched with
            accelerate's hooks, as transformers does.
        max_memory: device → bytes (or "10GiB") for the planned strategies; accelerate's default is what is free.
        progress: tqdm bar; None shows it on a terminal only.
        config_overrides: `RWKV7Config` fields to set (e.g. ``fuse_norm=False``).

    Raises:
        HookError: the file is not final RWKV-7 x070 (the message names its generation), or `device` is not a
            placement this loader can honour. Both are raised before any tensor is read.
    """
    from fla.models import RWKV7Config, RWKV7ForCausalLM

    from .cpu_ops import install_cpu_fallbacks
    from .rwkv7_eps import set_blinkdl_gnorm_eps

    install_cpu_fallbacks()
    reader = open_source(path)
    try:
        source = canonical_reader(reader)
        config = RWKV7Config(**(config_from_shapes(source.table(), reader.path) | config_overrides))
        # FLA's initialisers assign `.data` of fresh tensors, which accelerate's init_empty_weights refuses;
        # the meta device context makes those tensors meta too, and no_init skips torch's init calls.
        with torch.device("meta"), no_init(), _without_fla_init():
            model = RWKV7ForCausalLM(config)
        dtype = dtype or torch.float32
        placement = _placement(model, device, max_memory=max_memory, dtype=dtype, path=reader.path)
        load(SPEC, source, model, device=placement, dtype=dtype, progress=progress)
    finally:
        if reader is not path:
            reader.close()
    set_blinkdl_gnorm_eps(model)
    _dispatch(model, placement)
    return model.eval()


@contextlib.contextmanager
def _without_fla_init():
    """Skip FLA's per-channel RWKV-7 initialisers while the model is built on meta; the file overwrites it all.

    `RWKV7Attention` and `RWKV7FeedForward` run their initialiser unless ``transformers.modeling_utils._init_weights``
    is False, a flag transformers 4 set inside `no_init_weights` and transformers 5 no longer defines (so FLA always
    initialises). The attention initialiser loops over every channel in Python: 14 s of a 16 s load at 0.3B size,
    growing with hidden size × layers. Defining the flag as False for the build is the switch FLA itself reads.
    """
    import transformers.modeling_utils as modeling_utils

    missing = object()
    previous = getattr(modeling_utils, "_init_weights", missing)
    modeling_utils._init_weights = False
    try:
        yield
    finally:
        if previous is missing:
            del modeling_utils._init_weights
        else:
            modeling_utils._init_weights = previous


def _placement(model, device, *, max_memory, dtype: torch.dtype, path: str) -> Device | dict[str, Device]:
    """`device` made concrete for `load`: one device, or a device map with accelerate's strategies resolved."""
    if isinstance(device, str) and device in _STRATEGIES:
        return _planned_map(model, device, max_memory=max_memory, dtype=dtype, path=path)
    if isinstance(device, Mapping):
        if all(isinstance(k, str) for k in device) and all(v == "disk" or _is_device(v) for v in device.values()):
            _check_modules(model, device, path)
            return dict(device)
    elif _is_device(device):
        return device
    raise HookError(
        f"{path}: cannot place the model on {device!r}: expected a device, a dict of module prefix -> device, "
        f"or one of {', '.join(map(repr, _STRATEGIES))}\n"
        '  hint: for example device_map="cpu", device_map=0, device_map={"": "cuda:0"} or device_map="auto"'
    )


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


def _check_modules(model, device_map: Mapping[str, Device], path: str) -> None:
    # A misspelt prefix would otherwise be ignored and its modules placed by a shorter one.
    names = {n for n, _ in model.named_modules()} | {n for n, _ in model.named_parameters()}
    unknown = [k for k in device_map if k not in names]
    if unknown:
        raise HookError(
            f"{path}: the device map names {summarize_keys(unknown)}, which {type(model).__name__} does not have\n"
            "  hint: name modules such as model.embeddings, model.layers.0, model.norm, lm_head, or '' for the rest"
        )


def _planned_map(model, strategy: str, *, max_memory, dtype: torch.dtype, path: str) -> dict[str, Device]:
    """accelerate's map for `strategy`, as transformers plans it: balanced strategies even out the GPUs' budgets."""
    from accelerate.utils import get_balanced_memory, get_max_memory, infer_auto_device_map

    if strategy == "sequential":
        memory = get_max_memory(max_memory)
    else:
        memory = get_balanced_memory(model, max_memory=max_memory, no_split_module_classes=_NO_SPLIT, dtype=dtype,
                                     low_zero=strategy == "balanced_low_0")  # fmt: skip
    device_map = dict(infer_auto_device_map(model, max_memory=memory, no_split_module_classes=_NO_SPLIT, dtype=dtype))
    on_disk = [m or "the whole model" for m, d in device_map.items() if d == "disk"]
    if on_disk:
        raise HookError(
            f"{path}: device_map={strategy!r} leaves {summarize_keys(on_disk)} to disk offload, which is not "
            f"supported (max_memory: {memory})\n"
            "  hint: allow more memory in max_memory, or load in a smaller dtype"
        )
    return device_map


def _dispatch(model, placement: Device | dict[str, Device]) -> None:
    if not isinstance(placement, Mapping):
        return
    if len({_same(d) for d in placement.values()}) > 1:
        from accelerate import dispatch_model

        # Hooks that move activations between devices, as transformers adds them; dispatch_model records
        # hf_device_map itself.
        dispatch_model(model, device_map=disjoint_device_map(model, placement))
    else:
        model.hf_device_map = dict(placement)


def _same(device: Device) -> object:
    """A key under which equal devices compare equal ("cpu", torch.device("cpu"); 0 and "cuda:0")."""
    if device == "disk":
        return device
    if isinstance(device, int):
        return ("cuda", device)  # accelerate's meaning of a bare index on CUDA machines
    device = torch.device(device)
    return ("cpu", None) if device.type == "cpu" else (device.type, device.index)


def disjoint_device_map(model, device_map: Mapping[str, Device]) -> dict[str, Device]:
    """`device_map` with no key inside another (``{"": "cpu", "model.layers.1": 0}`` → every top module by name).

    accelerate's `dispatch_model` places a mapped module's whole subtree on its device, so it needs the largest
    modules whose parameters all sit on one device, each named once; `load` resolves prefixes by the longest
    match, and this keeps that meaning.
    """

    def device_of(name: str) -> Device:
        return device_map[max((p for p in device_map if p == "" or name == p or name.startswith(p + ".")), key=len)]

    out: dict[str, Device] = {}

    def visit(prefix: str, module) -> None:
        names = [f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters()]
        if len({_same(device_of(n)) for n in names}) <= 1:
            if names:
                out[prefix] = device_of(names[0])
            return
        for name, _ in module.named_parameters(recurse=False):
            out[f"{prefix}.{name}" if prefix else name] = device_of(f"{prefix}.{name}" if prefix else name)
        for name, child in module.named_children():
            visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    return out
