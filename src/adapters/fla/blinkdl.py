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

from ..core import HookError, Reader, TensorInfo, load, open_source
from ..core.empty import no_init
from ..core.load import Device
from ..core.placement import disjoint_device_map, dispatch, plan_placement
from .rwkv7_eps import BLINKDL_LN_X_EPS, LN_X_EPS_FIELD, install_ln_x_eps_hook
from .specs.rwkv7 import SPEC
from .variants import canonical_reader

__all__ = ["config_from_shapes", "disjoint_device_map", "from_blinkdl"]  # the map helper: re-exported for tests

_REQUIRED = ("emb.weight", "blocks.0.att.r_k", "blocks.0.ffn.key.weight", "blocks.0.att.w1", "blocks.0.att.a1",
             "blocks.0.att.g1", "head.weight")  # fmt: skip
_BLOCK = re.compile(r"blocks\.(\d+)\.")
_NO_SPLIT = ["RWKV7Block"]  # a block's time mix and channel mix share its token-shift input: keep it on one device
_MODULE_HINT = "model.embeddings, model.layers.0, model.norm, lm_head"


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
        LN_X_EPS_FIELD: BLINKDL_LN_X_EPS,  # ln_x's eps, which norm_eps cannot express (`rwkv7_eps`)
    }


def from_blinkdl(
    path: str | os.PathLike | Reader,
    *,
    dtype: torch.dtype | None = None,
    device: Device | Mapping[str, Device] = "cpu",
    max_memory: Mapping[int | str, int | str] | None = None,
    offload_folder: str | os.PathLike | None = None,
    progress: bool | None = None,
    check_finite: bool = False,
    **config_overrides,
):
    """An FLA `RWKV7ForCausalLM` holding a BlinkDL x070 ``.pth``, in eval mode; nothing is written to disk.

    The load's `LoadReport` is ``model.adapters_load_report``, as on SAT models loaded by `adapters.sat.from_hf`.

    Args:
        path: the ``.pth`` file (read lazily through a file mapping), or an open `Reader`.
        dtype: floating dtype of the model (default float32, like transformers' `from_pretrained`); also
            ``model.config.dtype``, as transformers records it.
        device: where the weights go, each tensor placed there as it is read: one device; a device map (module
            prefix → device, e.g. ``{"model.layers.0": 0, "": "cpu"}``, with ``"disk"`` entries for offload); or
            ``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"``, for which accelerate plans the map
            from the model's size. With a map, the model records it as ``hf_device_map``, and spans of several
            devices (or disk) are dispatched with accelerate's hooks, as transformers does.
        max_memory: device → bytes (or "10GiB") for the planned strategies; accelerate's default is what is free.
        offload_folder: where ``"disk"`` entries are written as they are read (accelerate's offload format: one
            ``.dat`` per tensor and ``index.json``); their parameters stay on meta, and accelerate's hooks bring
            them in for each forward. Needed when the map has disk entries.
        progress: tqdm bar; None shows it on a terminal only.
        check_finite: scan the weights for NaN/Inf and raise `NonFiniteError` naming them (off by default).
        config_overrides: `RWKV7Config` fields to set (e.g. ``fuse_norm=False``).

    Raises:
        HookError: the file is not final RWKV-7 x070 (the message names its generation), or `device` is not a
            placement this loader can honour (disk entries without `offload_folder` included). Both are raised
            before any tensor is read.
    """
    from fla.models import RWKV7Config, RWKV7ForCausalLM

    from .cpu_ops import install_cpu_fallbacks

    install_cpu_fallbacks()
    install_ln_x_eps_hook()  # both done by `import adapters.fla`; repeated for callers of this module alone
    reader = open_source(path)
    try:
        source = canonical_reader(reader)
        config = RWKV7Config(**(config_from_shapes(source.table(), reader.path) | config_overrides))
        # FLA's initialisers assign `.data` of fresh tensors, which accelerate's init_empty_weights refuses;
        # the meta device context makes those tensors meta too, and no_init skips torch's init calls.
        with torch.device("meta"), no_init(), _without_fla_init():
            model = RWKV7ForCausalLM(config)
        dtype = dtype or torch.float32
        folder = None if offload_folder is None else str(offload_folder)
        placement = plan_placement(model, device, max_memory=max_memory, dtype=dtype, no_split=_NO_SPLIT,
                                   path=reader.path, offload_folder=folder, module_hint=_MODULE_HINT)  # fmt: skip
        report = load(SPEC, source, model, device=placement, dtype=dtype, progress=progress,
                      check_finite=check_finite, offload_folder=folder)  # fmt: skip
    finally:
        if reader is not path:
            reader.close()
    model.config.dtype = dtype  # what transformers' from_pretrained records; save_pretrained writes it
    dispatch(model, placement, folder)
    model.adapters_load_report = report  # what was read and written, as SAT models loaded by `from_hf` carry it
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
