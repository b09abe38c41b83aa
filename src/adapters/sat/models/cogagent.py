"""SAT `CogAgentModel`: CogVLM plus a high-resolution vision tower read by cross-attention in every layer.

The class has the CogVLM repository's (``utils/models/cogagent_model.py``) mixins, parameter names and forward.
Beyond `CogVLMModel`'s layout (``D`` the cross tower's width, ``Hv`` the low-resolution tower's, ``H`` the LM's,
``C = num_attention_heads * cross_hidden_size_per_attention_head``)::

    mixins.eva.pos_embed                                  [image_length, Hv]  added to the low-res patches before the GLU
    mixins.encoder.*                                      the cross tower (see `.cross_vision`)
    transformer.layers.{l}.cross_attention.query.weight       [C, H]
    transformer.layers.{l}.cross_attention.key_value.weight   [2C, D]   rows [K; V]
    transformer.layers.{l}.cross_attention.dense.weight       [H, C]
    transformer.layers.{l}.post_cross_attention_layernorm.weight  [H]

A layer computes ``h += attn(LN_in(h)); h += cross_attn(LN_cross(h), tower); h += mlp(LN_post(h))`` (SAT's
pre-LN decoder layer, ``is_decoder=True``); cross-attention has no mask (every token sees every high-res patch)
and the LM's head count. Build args: ``is_decoder=True``, ``cross_attn_hidden_size=D`` (1024),
``cross_hidden_size_per_attention_head`` (32), ``cross_image_pix`` (1120), ``image_length`` (256).

Inputs: CogVLM's, plus the cross tower's with a ``cross_`` prefix (``cross_image`` ``[B, 3, S, S]``,
``cross_input_ids``, ``cross_position_ids``, ``cross_attention_mask`` (also the cross-attention's mask; a full
mask when absent)). Differences from the repository, none of which changes an output it computes:

* without ``cross_image`` the layers skip cross-attention (SAT's decoder layer does so for ``encoder_outputs=None``)
  and the model is CogVLM; the repository raises a ``KeyError`` there, HF's remote code a ``TypeError``;
* in SAT's cached generation (``filling_sequence`` with ``CachedAutoregressiveMixin``) the per-layer cross keys and
  values of the first step are reused, where the repository runs the 1120-px tower again at every token.
"""

from __future__ import annotations

import argparse
import json

import torch
from sat.model.registry import model_registry
from torch import nn

from ...core import HookError
from .cogvlm import CogVLMModel, ImageMixin
from .cross_vision import ExternalVisionModel

__all__ = ["CogAgentImageMixin", "CogAgentModel"]

_CROSS_PREFIX = "cross_"


class CogAgentImageMixin(ImageMixin):
    """CogVLM's ``eva`` mixin with a learned ``pos_embed`` ``[image_length, Hv]`` on the tower output."""

    def __init__(self, args: argparse.Namespace, params_dtype: torch.dtype = torch.float):
        super().__init__(args, params_dtype=params_dtype)
        self.pos_embed = nn.Parameter(torch.zeros(self.image_length, self.in_features, dtype=params_dtype))

    def encode_image(self, vision_inputs: dict) -> torch.Tensor:
        return super().encode_image(vision_inputs) + self.pos_embed.unsqueeze(0)


# As for CogVLMModel: a CogAgentModel imported earlier (the repository's own) keeps the name in SAT's registry.
_EARLIER = model_registry.member.get("CogAgentModel")


class CogAgentModel(CogVLMModel):
    """CogAgent on SAT: `CogVLMModel` with ``eva.pos_embed``, cross-attention layers and the ``encoder`` mixin.

    Build it as SAT builds models, from SAT CogAgent checkpoints (``model_class: CogAgentModel``), or from an HF
    CogAgent checkpoint (``CogAgentModel.from_hf(path)``, ``sat.AutoModel.from_pretrained(path, args)``). Args
    beyond CogVLM's: ``cross_image_pix`` (the high-res image side) and the cross-attention args in the module
    docstring (their defaults here are CogAgent's); ``cross_eva_args`` (ours, default ``{}``) shrinks the cross
    tower below EVA-02-CLIP-L (`adapters.sat.models.cross_vision.EVA_L`), for small test models.
    """

    image_mixin_class: type[ImageMixin] = CogAgentImageMixin

    def __init__(self, args: argparse.Namespace, transformer=None, params_dtype: torch.dtype = torch.float, **kwargs):
        if not getattr(args, "is_decoder", False) or not getattr(args, "cross_attn_hidden_size", None):
            raise HookError(
                "CogAgentModel needs args.is_decoder=True and args.cross_attn_hidden_size (the cross tower's width) "
                f"to build its cross-attention layers; got is_decoder={getattr(args, 'is_decoder', None)!r}, "
                f"cross_attn_hidden_size={getattr(args, 'cross_attn_hidden_size', None)!r}\n"
                "  hint: build args with CogAgentModel.get_args(...), whose defaults are CogAgent's"
            )
        super().__init__(args, transformer=transformer, params_dtype=params_dtype, **kwargs)
        self.cross_image_pix = args.cross_image_pix
        self.add_mixin("encoder", ExternalVisionModel(args, params_dtype=params_dtype))

    @classmethod
    def add_model_specific_args(cls, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        group = parser.add_argument_group("CogAgent", "CogAgent Configurations")
        group.add_argument("--cross_image_pix", type=int, default=1120)
        group.add_argument("--cross_eva_args", type=json.loads, default={})
        parser.set_defaults(is_decoder=True, cross_attn_hidden_size=1024, cross_hidden_size_per_attention_head=32)
        return super().add_model_specific_args(parser)

    def forward(self, input_ids: torch.Tensor, vision_expert_mask: torch.Tensor, image_embed_mask: torch.Tensor,
                **kwargs):  # fmt: skip
        cross = {k[len(_CROSS_PREFIX) :]: v for k, v in kwargs.items() if k.startswith(_CROSS_PREFIX)}
        # filling_sequence hands back each layer's cross (key, value) after its first step: reuse them, don't rerun.
        if not isinstance(kwargs.get("encoder_outputs"), (list, tuple)):
            image = cross.get("image")
            kwargs["encoder_outputs"] = None if image is None else self.get_mixin("encoder")(**cross)
        if kwargs.get("cross_attention_mask") is None:
            kwargs["cross_attention_mask"] = torch.ones(1, 1, device=input_ids.device)
        return super().forward(input_ids, vision_expert_mask, image_embed_mask, **kwargs)


if _EARLIER is not None:
    model_registry.register(_EARLIER)
