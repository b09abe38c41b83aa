"""Constructible SAT 0.4.12 CLIP: the same modules and forward code as ``sat.model.official.clip_model.CLIP``.

SAT 0.4.12's `CLIP` cannot be built. Its encoders pass ``layernorm_epsilon=`` as a keyword to `BaseModel`, which
also passes every ``ARGS_DEFAULT`` field of args (``layernorm_epsilon`` among them) to `BaseTransformer`::

    TypeError: sat.model.transformer.BaseTransformer() got multiple values for keyword argument 'layernorm_epsilon'

and past that, `ImageEncoder` reads ``self.property``, which `ViTModel` no longer sets (it keeps
``self.transformer.property``). The subclasses here replace construction only: they build SAT's own mixins
(``ImageMixin``, ``PatchMixin``, ``TextMixin``, QuickGELU) in SAT's order, with the LayerNorm eps taken from
``args.layernorm_epsilon`` and the patch geometry from the transformer. Every forward hook is SAT's, unchanged.
No SAT module is patched.

The text tower's args follow SAT's CLIP rule: a copy of args where each ``text_<name>`` that is set replaces
``<name>`` (vocab, layers, width, heads, LN order, length, MLP width, head width).
"""

from __future__ import annotations

import argparse

import torch
from sat.model.base_model import BaseModel
from sat.model.official import clip_model
from sat.model.official.vit_model import ViTModel
from torch import nn

__all__ = ["CLIP", "CLIPImageEncoder", "CLIPTextEncoder", "text_args"]

_TEXT_OVERRIDES = ("vocab_size", "num_layers", "hidden_size", "num_attention_heads", "layernorm_order",
                   "max_sequence_length", "inner_hidden_size", "hidden_size_per_attention_head")  # fmt: skip


class CLIPImageEncoder(clip_model.ImageEncoder):
    """SAT's CLIP `ImageEncoder`: a `ViTModel` without the ``cls`` head, with ``image_enc`` (pre-LN before layer 0,
    projection of token 0) and a bias-free ``patch_embedding``."""

    def __init__(self, args: argparse.Namespace, params_dtype: torch.dtype = torch.float, **kwargs):
        ViTModel.__init__(
            self, args, params_dtype=params_dtype, activation_func=clip_model.QuickGELUActivation(), **kwargs
        )
        self.del_mixin("cls")
        self.add_mixin(
            "image_enc", clip_model.ImageMixin(args.hidden_size, args.projection_dim, args.layernorm_epsilon)
        )
        self.del_mixin("patch_embedding")
        patch = clip_model.PatchMixin(args.in_channels, args.hidden_size, self.transformer.property)
        self.add_mixin("patch_embedding", patch)


class CLIPTextEncoder(clip_model.TextEncoder):
    """SAT's CLIP `TextEncoder`: causal layers, projection of the *last* position (``TextMixin``)."""

    def __init__(self, args: argparse.Namespace, params_dtype: torch.dtype = torch.float, **kwargs):
        BaseModel.__init__(
            self, args, params_dtype=params_dtype, activation_func=clip_model.QuickGELUActivation(), **kwargs
        )
        self.add_mixin("text_enc", clip_model.TextMixin(args.hidden_size, args.projection_dim))


def text_args(args: argparse.Namespace) -> argparse.Namespace:
    """The text tower's args: a copy of `args` with each set ``text_<name>`` in place of ``<name>``."""
    text = argparse.Namespace(**vars(args))
    for name in _TEXT_OVERRIDES:
        value = getattr(args, "text_" + name, None)
        if value is not None:
            setattr(text, name, value)
    return text


class CLIP(clip_model.CLIP):
    """SAT's `CLIP` (``image_encoder``, ``text_encoder``, ``logit_scale``; SAT's encode/forward), constructible.

    Build it as any SAT model: ``CLIP(args, params_dtype=...)``, ``get_model(args, CLIP)``, or from an HF
    ``CLIPModel`` checkpoint with ``CLIP.from_hf(path)`` / ``sat.AutoModel.from_hf(path)``.
    """

    def __init__(self, args: argparse.Namespace, params_dtype: torch.dtype = torch.float, **kwargs):
        nn.Module.__init__(self)
        self.image_encoder = CLIPImageEncoder(args, params_dtype=params_dtype, **kwargs)
        self.text_encoder = CLIPTextEncoder(text_args(args), params_dtype=params_dtype, **kwargs)
        self.logit_scale = nn.Parameter(torch.full((), float(args.logit_scale_init_value), dtype=params_dtype))

    @classmethod
    def list_avail_args(cls, print: bool = False) -> argparse.ArgumentParser:
        """SAT's model args plus the image-encoder (ViT, projection) and CLIP (``text_*``, logit scale) groups."""
        parser = BaseModel.list_avail_args(print=False)
        CLIPImageEncoder.add_model_specific_args(parser)
        clip_model.CLIP.add_model_specific_args(parser)
        return parser

    get_args = classmethod(BaseModel.get_args.__func__)  # SAT's, run against this class's parser

    @classmethod
    def from_hf(cls, name_or_path, args=None, **kwargs):
        """Build this class from an HF ``CLIPModel`` checkpoint; returns ``(model, args)``. See `from_hf`."""
        from .from_hf import from_hf

        return from_hf(cls, name_or_path, args, **kwargs)
