"""SAT models' outputs in transformers' terms, for comparing with transformers on the same input.

Each function runs a SAT model as SAT's own scripts call it (full attention for encoders, the position table whole
for ViT) and names its outputs as transformers names them:

* encoders (BERT, RoBERTa): ``last_hidden_state`` ``[B, S, H]`` = the last layer's output through
  ``final_layernorm`` (HF's layer ends with the LayerNorm SAT's post-LN model runs next), ``logits`` with the MLM
  head, ``pooler_output`` with the pooler mixin (`adapters.sat.pooler`).
* ViT: ``last_hidden_state`` ``[B, 1+N, H]`` (through ``final_layernorm``, HF's ``layernorm``), ``logits`` with
  SAT's ``cls`` head.
* CLIP (`adapters.sat.shims.CLIP`): ``image_embeds`` and ``text_embeds`` ``[B, P]``, the projected features. SAT's
  text tower pools the *last* position, HF's the first EOS: they agree for ids that end in their one EOS.
"""

from __future__ import annotations

import torch
from torch import nn

from .pooler import POOLER_MIXIN

__all__ = ["clip_embeddings", "encoder_outputs", "vit_outputs"]


def _last_hidden(model: nn.Module, outputs: tuple) -> torch.Tensor:
    """The last layer's output (``output_hidden_states=True``) through ``final_layernorm``."""
    return model.transformer.final_layernorm(outputs[-1]["hidden_states"])


def encoder_outputs(
    model: nn.Module, ids: torch.Tensor, position_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """A SAT BertModel/RobertaModel on `ids` ``[B, S]`` with full attention; `token_type_ids` for BERT's types."""
    length = ids.shape[1]
    kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
    with torch.no_grad():
        outputs = model(input_ids=ids, position_ids=position_ids, attention_mask=torch.ones(1, 1, length, length),
                        output_hidden_states=True, **kw)  # fmt: skip
        found = {"last_hidden_state": _last_hidden(model, outputs)}
        if "bert-final" in model.mixins:
            found["logits"] = outputs[0]
        if POOLER_MIXIN in model.mixins:
            found["pooler_output"] = model.mixins[POOLER_MIXIN](found["last_hidden_state"])
    return found


def _vit_forward(model: nn.Module, pixels: torch.Tensor, **kw) -> tuple:
    """SAT's ViT-style call: ``input_ids`` index the pre tokens (CLS: id 0), the position table whole, in order."""
    batch, seq = pixels.shape[0], model.transformer.property.seq_len
    input_ids = torch.zeros(batch, 1, dtype=torch.long, device=pixels.device)
    position_ids = torch.arange(seq, device=pixels.device).expand(batch, -1)
    return model(input_ids=input_ids, position_ids=position_ids, attention_mask=None, image=pixels, **kw)


def vit_outputs(model: nn.Module, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """A SAT ViTModel on `pixels` ``[B, C, H, W]``."""
    with torch.no_grad():
        outputs = _vit_forward(model, pixels, output_hidden_states=True)
        found = {"last_hidden_state": _last_hidden(model, outputs)}
        if "cls" in model.mixins:
            found["logits"] = outputs[0]
    return found


def clip_embeddings(model: nn.Module, pixels: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """SAT CLIP's two towers: `pixels` ``[B, C, H, W]`` and `ids` ``[B, S]`` (ending in EOS) → projected features.

    The text mask must be given: SAT's ``TextMixin`` makes a *given* mask causal, while the default ``None``
    becomes a (1, 1) all-ones mask that stays bidirectional.
    """
    length = ids.shape[1]
    with torch.no_grad():
        image = _vit_forward(model.image_encoder, pixels)[0]
        text = model.text_encoder(input_ids=ids, position_ids=torch.arange(length).expand_as(ids),
                                  attention_mask=torch.ones(1, 1, length, length))[0]  # fmt: skip
    return {"image_embeds": image, "text_embeds": text}
