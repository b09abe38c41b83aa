"""Tiny random RWKV-7 (x070) checkpoints in BlinkDL's `.pth` format, for tests.

The builder lives in the library (`adapters.fla.tiny.tiny_blinkdl_rwkv7`, which documents the key layout and
value ranges) so that examples can use it too; `make_blinkdl_rwkv7` is that function under its test name.
"""

from __future__ import annotations

from pathlib import Path

import torch

from adapters.fla.tiny import tiny_blinkdl_rwkv7 as make_blinkdl_rwkv7

__all__ = ["make_blinkdl_rwkv7", "save_blinkdl_rwkv7"]


def save_blinkdl_rwkv7(state_dict: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write `state_dict` with `torch.save`, as BlinkDL does; `path` must end in `.pth` (the `rwkv` package
    appends the suffix itself, so it is given the path without it)."""
    path = Path(path)
    if path.suffix != ".pth":
        raise ValueError(f"BlinkDL checkpoints end in .pth, got {path}")
    torch.save(state_dict, path)
    return path
