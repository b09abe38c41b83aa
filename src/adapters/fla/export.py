"""Export an FLA `RWKV7ForCausalLM` back to a BlinkDL ``.pth``, through the inverse of the load spec."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..core import export
from .specs.rwkv7 import SPEC

__all__ = ["save_blinkdl"]


def save_blinkdl(model, path: str | os.PathLike, *, dtype: torch.dtype = torch.bfloat16, overwrite: bool = False) -> Path:
    """Write `model` as a BlinkDL x070 ``.pth`` (bf16 by default, like the released files), atomically.

    ``blocks.0.att.v0/v1/v2`` are not written: no forward reads them, and BlinkDL's `rwkv` package runs without.
    """
    return export(SPEC, model, path, dtype=dtype, overwrite=overwrite)
