"""Running SAT models the way SAT's inference scripts do, for parity tests against transformers."""

from __future__ import annotations

import torch


def causal_logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Logits of a SAT decoder (LLaMA-style) for `ids` (batch, seq): positions 0.., a lower-triangular mask."""
    length = ids.shape[1]
    position_ids = torch.arange(length).expand_as(ids)
    mask = torch.ones(1, 1, length, length).tril()
    with torch.no_grad():
        return model(input_ids=ids, position_ids=position_ids, attention_mask=mask)[0]


def token_ids(vocab: int, length: int = 12, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
