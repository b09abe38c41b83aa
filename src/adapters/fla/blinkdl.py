"""BlinkDL RWKV-7 ``.pth`` files as FLA `RWKV7ForCausalLM` models: config from tensor shapes, load through the engine.

Shapes read from the file (``C`` hidden, ``H`` heads, ``N`` head size, ``F`` FFN size, ``V`` vocab)::

    emb.weight [V, C]   blocks.0.att.r_k [H, N]   blocks.0.ffn.key.weight [F, C]
    blocks.0.att.{w1,a1,g1} [C, D_w|D_a|D_g]      blocks.1.att.v1 [C, D_v]  (block 0's copy is unused)

FLA's config defaults match no released model, so every field that matters is set from the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from ..core import HookError, Reader, TensorInfo, load, open_source
from ..core.empty import no_init
from .specs.rwkv7 import SPEC

__all__ = ["config_from_shapes", "from_blinkdl"]

_REQUIRED = ("emb.weight", "blocks.0.att.r_k", "blocks.0.ffn.key.weight", "blocks.0.att.w1", "blocks.0.att.a1",
             "blocks.0.att.g1", "head.weight")  # fmt: skip
_BLOCK = re.compile(r"blocks\.(\d+)\.")


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
    device: str | torch.device = "cpu",
    progress: bool | None = None,
    **config_overrides,
):
    """An FLA `RWKV7ForCausalLM` holding a BlinkDL x070 ``.pth``, in eval mode; nothing is written to disk.

    Args:
        path: the ``.pth`` file (read lazily through a file mapping).
        dtype: floating dtype of the model (default float32, like transformers' `from_pretrained`).
        device: where the weights go; each tensor is placed there as it is read.
        progress: tqdm bar; None shows it on a terminal only.
        config_overrides: `RWKV7Config` fields to set (e.g. ``fuse_norm=False``).
    """
    from fla.models import RWKV7Config, RWKV7ForCausalLM

    from .cpu_ops import install_cpu_fallbacks
    from .rwkv7_eps import set_blinkdl_gnorm_eps

    install_cpu_fallbacks()
    reader = open_source(path)
    try:
        config = RWKV7Config(**(config_from_shapes(reader.table(), reader.path) | config_overrides))
        # FLA's initialisers assign `.data` of fresh tensors, which accelerate's init_empty_weights refuses;
        # the meta device context makes those tensors meta too, and no_init skips torch's init calls.
        with torch.device("meta"), no_init():
            model = RWKV7ForCausalLM(config)
        load(SPEC, reader, model, device=device, dtype=dtype or torch.float32, progress=progress)
    finally:
        if reader is not path:
            reader.close()
    set_blinkdl_gnorm_eps(model)
    return model.eval()
