"""A live model's state dict as a reader: the source side of an export."""

from __future__ import annotations

import torch
from torch import nn

from ..table import TensorInfo, model_table
from .base import Reader

__all__ = ["ModuleReader"]


class ModuleReader(Reader):
    """Reads a model's parameters and persistent buffers; tied tensors appear once, under their first name."""

    def __init__(self, model: nn.Module) -> None:
        self.path = f"<{type(model).__name__} in memory>"
        self.bytes_read = 0
        self.tensors_read = 0
        self.table_ = model_table(model)
        self._state = model.state_dict(keep_vars=True)

    def keys(self) -> list[str]:
        return list(self.table_.tensors)

    def info(self, key: str) -> TensorInfo:
        return self.table_.tensors[key]

    def _read(self, key: str) -> torch.Tensor:
        return self._state[key].detach()
