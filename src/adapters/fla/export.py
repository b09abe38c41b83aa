"""Export an FLA `RWKV7ForCausalLM` back to a BlinkDL ``.pth``, through the inverse of the load spec."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..core import export
from .specs.rwkv7 import SPEC

__all__ = ["save_blinkdl"]


def save_blinkdl(
    model, path: str | os.PathLike, *, dtype: torch.dtype = torch.bfloat16, overwrite: bool = False
) -> Path:
    """Write `model` as a BlinkDL x070 ``.pth`` (bf16 by default, like the released files), atomically.

    Args:
        model: an FLA `RWKV7ForCausalLM` (loaded from a BlinkDL file, or trained in FLA).
        path: destination ``.pth``; BlinkDL's `rwkv` package is given it without the suffix.
        dtype: dtype of every tensor written. Use ``torch.float32`` to keep fp32 training results bit-exact.
        overwrite: replace an existing file.

    Returns:
        The path written.

    ``blocks.0.att.v0/v1/v2`` are not written, by decision. Layer 0 has no value residual, so FLA has no
    parameters to export them from, and no forward reads them: the `rwkv` package (0.8.32) replaces them with
    empty tensors when it loads a file (``RWKV_x070.__init__``), so a file without them runs the same there
    (``tests/fla/test_hook_export.py`` runs an export in it). Released G1 files carry them only because
    RWKV-LM's trainer builds them in every layer; to resume training there, whose ``load_state_dict`` is
    strict, pass ``--load_partial 1``, which fills missing keys from the freshly built model.

    Example::

        model = RWKV7ForCausalLM.from_pretrained("rwkv7-g1-0.1b.pth")   # after ``import adapters.fla``
        ...                                                               # fine-tune
        save_blinkdl(model, "rwkv7-finetuned.pth")
    """
    return export(SPEC, model, path, dtype=dtype, overwrite=overwrite)
