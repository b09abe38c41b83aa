"""RoPE settings SAT hard-codes: set them on the built model from the HF config.

SAT's `FastRotaryEmbedding` takes its base at construction and the model classes never pass one (LLaMA 10000,
Mixtral 1e6, ChatGLM4 10000), so a checkpoint trained with another base (Llama-3 5e5, GLM-4 ``rope_ratio``)
would load and run with wrong angles. The base only enters through the ``inv_freq`` buffer and the cos/sin cache,
so setting both after construction is exact.
"""

from __future__ import annotations

from torch import nn

__all__ = ["set_rotary_base"]


def set_rotary_base(model: nn.Module, base: float, *, dim: int | None = None) -> int:
    """Give every `FastRotaryEmbedding` in `model` the RoPE base `base` (and rotary `dim` when given).

    Returns how many modules were changed, so callers can insist on at least one.
    """
    from sat.model.position_embedding.triton_rotary_embeddings import FastRotaryEmbedding

    changed = 0
    for module in model.modules():
        if isinstance(module, FastRotaryEmbedding):
            module.base = base
            if dim is not None:
                module.dim = dim
            module.inv_freq = module._compute_inv_freq(module.inv_freq.device)
            module._seq_len_cached = 0  # the cos/sin cache was built from the old frequencies
            changed += 1
    return changed
