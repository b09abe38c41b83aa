"""Where SAT 0.4.12 model classes cannot be built as SAT ships them: CLIP, and GLM4VModel from ``get_args()``.

**CLIP.** Constructible SAT 0.4.12 CLIP: the same modules and forward code as ``sat.model.official.clip_model.CLIP``.

SAT 0.4.12's `CLIP` cannot be built. Its encoders pass ``layernorm_epsilon=`` as a keyword to `BaseModel`, which
also passes every ``ARGS_DEFAULT`` field of args (``layernorm_epsilon`` among them) to `BaseTransformer`::

    TypeError: sat.model.transformer.BaseTransformer() got multiple values for keyword argument 'layernorm_epsilon'

and past that, `ImageEncoder` reads ``self.property``, which `ViTModel` no longer sets (it keeps
``self.transformer.property``). The subclasses here replace construction only: they build SAT's own mixins
(``ImageMixin``, ``PatchMixin``, ``TextMixin``, QuickGELU) in SAT's order, with the LayerNorm eps taken from
``args.layernorm_epsilon`` and the patch geometry from the transformer. Every forward hook is SAT's, unchanged.
The CLIP shim patches no SAT module.

The text tower's args follow SAT's CLIP rule: a copy of args where each ``text_<name>`` that is set replaces
``<name>`` (vocab, layers, width, heads, LN order, length, MLP width, head width).

**GLM4VModel.** SAT's `GLM4VModel` is built as SAT ships it (no subclass: ``GLM4VModel.from_hf`` must stay SAT's
class), but its ``ImageMixin`` builds the EVA tower's args with ``override_dist_dtype_device_args``, which reads
run fields of SAT's full training namespace (``mode``, ``world_size``, ``rank``, ``local_rank``, ``deepspeed``,
``fp16``, ``bf16``; in a training mode also ``checkpoint_activations``, ``checkpoint_num_layers``).
``GLM4VModel.get_args()``, the namespace `from_hf` and model-only users start from, defines none of them::

    AttributeError: 'Namespace' object has no attribute 'mode'

`install_glm4v_run_args` wraps that one module function: a namespace that lacks a run field gets a copy with the
model-only value (``mode="inference"``, one process, no DeepSpeed, float32) before SAT's function runs; a namespace that has
them all goes through untouched. It runs when this module is imported, which `from_hf` does through the family's
``sat_class`` (`GLM4VModel` below is SAT's class itself, re-exported). With ``mode="inference"`` SAT leaves the EVA
tower's dropout at its parser default (0.1, active in ``train()`` only); pass SAT's training namespace
(``mode="finetune"``) to get SAT's training behaviour, dropout 0 in the tower.
"""

from __future__ import annotations

import argparse

import torch
from sat.model.base_model import BaseModel
from sat.model.official import clip_model, glm4v_model
from sat.model.official.vit_model import ViTModel
from torch import nn

__all__ = ["CLIP", "CLIPImageEncoder", "CLIPTextEncoder", "GLM4VModel", "install_glm4v_run_args", "text_args"]

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


# The run fields SAT's ``override_dist_dtype_device_args`` reads, with their values for a model built on its own.
_GLM4V_RUN_DEFAULTS = {"mode": "inference", "world_size": 1, "rank": 0, "local_rank": 0, "deepspeed": False,
                       "fp16": False, "bf16": False, "checkpoint_activations": False, "checkpoint_num_layers": 1}  # fmt: skip
_MARK = "_adapters_glm4v_run_args"


def install_glm4v_run_args() -> None:
    """Let SAT's `GLM4VModel` be built from ``GLM4VModel.get_args()`` (idempotent; see the module docstring)."""
    current = glm4v_model.override_dist_dtype_device_args
    if getattr(current, _MARK, False):
        return

    def override_dist_dtype_device_args(args: argparse.Namespace, b: dict | None = None) -> argparse.Namespace:
        missing = {k: v for k, v in _GLM4V_RUN_DEFAULTS.items() if not hasattr(args, k)}
        if missing:
            args = argparse.Namespace(**missing, **vars(args))  # a copy: the caller's namespace stays as it was
        return current(args, {} if b is None else b)

    override_dist_dtype_device_args.__doc__ = current.__doc__
    setattr(override_dist_dtype_device_args, _MARK, True)
    glm4v_model.override_dist_dtype_device_args = override_dist_dtype_device_args


install_glm4v_run_args()
GLM4VModel = glm4v_model.GLM4VModel  # SAT's class itself; importing it from here makes it buildable from get_args()
