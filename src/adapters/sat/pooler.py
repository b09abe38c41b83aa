"""HF's pooler, kept on the SAT model so that HF → SAT → HF loses no trained weight.

HF encoders (``BertModel``, ``RobertaModel``, ``BertForPreTraining``) carry a pooler: ``tanh(dense(h[:, 0]))`` on
the last hidden states ``h``, trained by next-sentence prediction or a fine-tune. SAT's classes have none. When the
file has one, `add_pooler` gives the model a ``pooler`` mixin holding it (``mixins.pooler.dense``), which SAT's
forward never calls (it hooks nothing), and `save_hf` writes it back. ``model.mixins["pooler"](h)`` computes HF's
``pooler_output`` from SAT's last hidden states ``[B, S, H]``.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

__all__ = ["POOLER_MIXIN", "add_pooler"]

POOLER_MIXIN = "pooler"


@functools.cache
def _pooler_mixin_class() -> type:
    # Built on first use, so that listing the families imports no SAT.
    from sat.model.base_model import BaseMixin

    class PoolerMixin(BaseMixin):
        """HF's pooler: ``tanh(dense(hidden_states[:, 0]))``. Hooks nothing; call it on the last hidden states."""

        def __init__(self, hidden_size: int, dtype: torch.dtype) -> None:
            super().__init__()
            self.dense = nn.Linear(hidden_size, hidden_size, dtype=dtype)

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.dense(hidden_states[:, 0]))

    return PoolerMixin


def add_pooler(model: nn.Module) -> None:
    """Give `model` (built on meta, before loading) an empty ``pooler`` mixin for the file's pooler to fill."""
    words = model.transformer.word_embeddings.weight
    with torch.device("meta"):
        mixin = _pooler_mixin_class()(words.shape[1], words.dtype)
    model.add_mixin(POOLER_MIXIN, mixin)
