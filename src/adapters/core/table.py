"""Key tables: what a checkpoint or a model holds, as shapes and dtypes only (no tensor data).

Planning works on two tables, the source's (from file headers) and the target's (from a model built on `meta`),
so every key, shape and dtype problem is found before the first byte of tensor data is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["TensorInfo", "ModelTable", "model_table"]


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """Shape and dtype of one tensor, and the file it lives in (None for a live model's tensors)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    file: str | None = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _itemsize(self.dtype)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype, device="meta").element_size()


@dataclass(frozen=True, slots=True)
class ModelTable:
    """A model's state-dict keys (parameters and persistent buffers) with their infos.

    Attributes:
        tensors: canonical key → info. A tied tensor appears once, under its first name.
        aliases: other name of a tied tensor → its canonical key.
        buffers: the keys that are buffers, not parameters.
        name: the model's class name, for messages.
    """

    tensors: dict[str, TensorInfo]
    aliases: dict[str, str]
    buffers: frozenset[str]
    name: str


def model_table(model: nn.Module) -> ModelTable:
    """The table of `model` (which may live on `meta`): every key `state_dict()` would have."""
    tensors: dict[str, TensorInfo] = {}
    aliases: dict[str, str] = {}
    first_name: dict[int, str] = {}
    param_ids = {id(p) for p in model.parameters()}
    buffers = set()
    for key, value in model.state_dict(keep_vars=True).items():
        canonical = first_name.setdefault(id(value), key)
        if canonical != key:
            aliases[key] = canonical
            continue
        tensors[key] = TensorInfo(tuple(value.shape), value.dtype)
        if id(value) not in param_ids:
            buffers.add(key)
    return ModelTable(tensors, aliases, frozenset(buffers), type(model).__name__)
