"""Test helper: a BlinkDL state dict → an FLA model, through the real loader (`adapters.fla.blinkdl.from_blinkdl`).

The state dict is written to a temporary ``.pth`` and loaded lazily, exactly as a user's file would be.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from blinkdl_checkpoint import save_blinkdl_rwkv7

from adapters.fla.blinkdl import from_blinkdl
from adapters.fla.rwkv7_eps import set_blinkdl_gnorm_eps

__all__ = ["build_fla_rwkv7"]


def build_fla_rwkv7(state_dict: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32, *, fix_eps: bool = True,
                    **config_overrides):  # fmt: skip
    """FLA `RWKV7ForCausalLM` in eval mode holding `state_dict`; `fix_eps=False` keeps FLA's own g_norm eps."""
    with tempfile.TemporaryDirectory() as tmp:
        path = save_blinkdl_rwkv7(state_dict, Path(tmp) / "rwkv7.pth")
        model = from_blinkdl(path, dtype=dtype, **config_overrides)
    if not fix_eps:  # FLA's default, head_dim * norm_eps: the trap the eps fix exists for
        set_blinkdl_gnorm_eps(model, eps=model.config.head_dim * model.config.norm_eps)
    return model
