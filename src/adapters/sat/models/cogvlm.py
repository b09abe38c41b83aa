"""SAT `CogVLMModel`: LLaMA with vision experts, an EVA2-CLIP-E tower and a GLU projector.

The class has the CogVLM repository's (``utils/models/cogvlm_model.py``) mixins, parameter names and forward, so
its SAT checkpoints load into it and its scripts run it unchanged. State-dict layout, beyond `LLaMAModel`'s
``transformer.*`` and ``mixins.lm.lm_head`` (``Hv`` the tower width, ``H`` the LM width, ``I`` the MLP width)::

    mixins.eva.vit_model.*                         the EVA2-CLIP-E tower (see `.eva_clip`)
    mixins.eva.linear_proj.linear_proj.weight      [H, Hv]    GLU projector:  x = linear_proj(patches)
    mixins.eva.linear_proj.norm1.{weight,bias}     [H]                        x = gelu(norm1(x))   (eps 1e-5)
    mixins.eva.linear_proj.gate_proj.weight        [I, H]                     x = silu(gate_proj(x)) * dense_h_to_4h(x)
    mixins.eva.linear_proj.dense_h_to_4h.weight    [I, H]
    mixins.eva.linear_proj.dense_4h_to_h.weight    [H, I]                     out = dense_4h_to_h(x)
    mixins.eva.boi, mixins.eva.eoi                 [1, 1, H]  the embeddings that open and close an image
    mixins.mlp.*, mixins.rotary.*                  the vision experts (see `.mixins`)

Inputs, besides ``input_ids``, ``position_ids`` and ``attention_mask``: ``image_embed_mask`` ``[B, L]`` marks
``boi, image_length patches, eoi`` (their embeddings replace the token embeddings there, in that order);
``vision_expert_mask`` ``[B, L]`` marks ``boi`` and the patches (``eoi`` is a language token); and the tower's inputs
with a ``vision_`` prefix (``vision_image`` ``[B, 3, S, S]``, ``vision_input_ids`` ``[B, 1]`` zeros,
``vision_position_ids``, ``vision_attention_mask``). Position ids give ``boi`` one position, every patch the next
one, ``eoi`` the one after (`sat_inputs_from_token_types` builds all three from HF ``token_type_ids``). A forward on
one token (cached generation) uses neither image nor masks.

Model parallel: as in the repository, the GLU projector and ``boi``/``eoi`` are plain modules that every rank holds
whole; the tower is a SAT model, cut like any (`.eva_clip`), and the vision experts like the layers (`.mixins`).

For CogAgent: `ImageMixin.encode_image` is the hook for features added before the projector, and
`CogVLMModel.image_mixin_class` the one for another image mixin.
"""

from __future__ import annotations

import argparse
import json

import torch
from sat.model.base_model import BaseMixin
from sat.model.official.llama_model import LLaMAModel
from sat.model.registry import model_registry
from torch import nn

from .eva_clip import EVA2CLIPModel, tower_args
from .mixins import LlamaVisionExpertAttnMixin, LlamaVisionExpertFCMixin

__all__ = ["GLU", "CogVLMModel", "ImageMixin", "sat_inputs_from_token_types"]

LANGUAGE_TOKEN_TYPE, VISION_TOKEN_TYPE = 0, 1  # HF CogVLM's token_type_ids
VISION_EXPERT_LAYERS = 32  # CogVLM gives layers 0..31 a vision expert, whatever the depth


class GLU(nn.Module):
    """Tower features ``[..., in_features]`` → LM embeddings ``[..., hidden_size]`` (layout in the module docstring)."""

    def __init__(self, args: argparse.Namespace, in_features: int, params_dtype: torch.dtype = torch.float):
        super().__init__()
        hidden, inner = args.hidden_size, args.inner_hidden_size or 4 * args.hidden_size
        self.linear_proj = nn.Linear(in_features, hidden, bias=False, dtype=params_dtype)
        self.norm1 = nn.LayerNorm(hidden, dtype=params_dtype)
        self.act1 = nn.GELU()
        self.act2 = nn.functional.silu
        self.dense_h_to_4h = nn.Linear(hidden, inner, bias=False, dtype=params_dtype)
        self.gate_proj = nn.Linear(hidden, inner, bias=False, dtype=params_dtype)
        self.dense_4h_to_h = nn.Linear(inner, hidden, bias=False, dtype=params_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.norm1(self.linear_proj(x)))
        return self.dense_4h_to_h(self.act2(self.gate_proj(x)) * self.dense_h_to_4h(x))


class ImageMixin(BaseMixin):
    """The ``eva`` mixin: the tower, the projector, ``boi``/``eoi``, and the word-embedding hook that places them."""

    def __init__(self, args: argparse.Namespace, params_dtype: torch.dtype = torch.float):
        super().__init__()
        self.vit_model = EVA2CLIPModel(tower_args(args), params_dtype=params_dtype)
        self.in_features = args.eva_args["hidden_size"]  # 1792 in every CogVLM release
        self.linear_proj = GLU(args, self.in_features, params_dtype=params_dtype)
        self.image_length = args.image_length
        self.boi = nn.Parameter(torch.zeros(1, 1, args.hidden_size, dtype=params_dtype))
        self.eoi = nn.Parameter(torch.zeros(1, 1, args.hidden_size, dtype=params_dtype))

    def encode_image(self, vision_inputs: dict) -> torch.Tensor:
        """Tower output ``[B, N, Hv]`` (CLS row dropped) for the ``vision_*`` inputs with the prefix removed."""
        return self.vit_model(**vision_inputs)[0]

    def image_embeddings(self, vision_inputs: dict) -> torch.Tensor:
        """``[B, 2 + N, H]``: ``boi``, the projected patches, ``eoi``."""
        patches = self.linear_proj(self.encode_image(vision_inputs))
        batch = patches.shape[0]
        return torch.cat((self.boi.expand(batch, -1, -1), patches, self.eoi.expand(batch, -1, -1)), dim=1)

    def word_embedding_forward(self, input_ids: torch.Tensor, output_cross_layer: dict, **kw_args) -> torch.Tensor:
        vision_inputs = {k[len("vision_"):]: v for k, v in kw_args.items()
                         if k.startswith("vision_") and k != "vision_expert_mask"}  # fmt: skip
        embeddings = self.transformer.word_embeddings(input_ids)
        if input_ids.shape[1] == 1 or not vision_inputs:
            return embeddings
        image = self.image_embeddings(vision_inputs)
        embeddings = embeddings.clone()
        embeddings[kw_args["image_embed_mask"].bool()] = image.reshape(-1, image.shape[-1]).to(embeddings.dtype)
        return embeddings.contiguous()


# SAT registers every model class by name when it is defined; a CogVLMModel imported earlier (the user's own, from
# the CogVLM repository) keeps the name, so SAT checkpoints build the class the user chose.
_EARLIER = model_registry.member.get("CogVLMModel")


class CogVLMModel(LLaMAModel):
    """CogVLM on SAT: ``LLaMAModel`` (RoPE and gated MLP as mixins) with the ``eva``, ``mlp`` and ``rotary`` mixins.

    Build it as SAT builds models (``CogVLMModel(args)``, ``get_model(args, CogVLMModel)``, SAT checkpoints with
    ``model_class: CogVLMModel``), or from an HF CogVLM checkpoint with ``CogVLMModel.from_hf(path)`` /
    ``sat.AutoModel.from_pretrained(path, args)``. Args beyond LLaMA's: ``image_length`` (patches per image) and
    ``eva_args`` (the tower's architecture: ``num_layers``, ``hidden_size``, ``image_size``, ``patch_size``, ...).
    """

    image_mixin_class: type[ImageMixin] = ImageMixin
    vision_expert_layers: int = VISION_EXPERT_LAYERS

    def __init__(self, args: argparse.Namespace, transformer=None, params_dtype: torch.dtype = torch.float, **kwargs):
        super().__init__(args, transformer=transformer, params_dtype=params_dtype, **kwargs)
        self.image_length = args.image_length
        hidden, heads, layers = args.hidden_size, args.num_attention_heads, args.num_layers
        inner = args.inner_hidden_size or 4 * hidden
        device = self.transformer.word_embeddings.weight.device
        self.add_mixin("eva", self.image_mixin_class(args, params_dtype=params_dtype))
        self.del_mixin("mlp")
        self.add_mixin("mlp", LlamaVisionExpertFCMixin(hidden, inner, layers, self.vision_expert_layers,
                                                       params_dtype=params_dtype, device=device))  # fmt: skip
        self.del_mixin("rotary")
        self.add_mixin("rotary", LlamaVisionExpertAttnMixin(hidden, heads, layers, self.vision_expert_layers,
                                                            params_dtype=params_dtype, device=device))  # fmt: skip

    @classmethod
    def add_model_specific_args(cls, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        group = parser.add_argument_group("CogVLM", "CogVLM Configurations")
        group.add_argument("--image_length", type=int, default=256)
        group.add_argument("--eva_args", type=json.loads, default={})
        return super().add_model_specific_args(parser)

    def forward(self, input_ids: torch.Tensor, vision_expert_mask: torch.Tensor, image_embed_mask: torch.Tensor,
                **kwargs):  # fmt: skip
        if input_ids.shape[1] > 1:
            return super().forward(input_ids=input_ids, vision_expert_mask=vision_expert_mask,
                                   image_embed_mask=image_embed_mask, **kwargs)  # fmt: skip
        return super().forward(input_ids=input_ids, **kwargs)


if _EARLIER is not None:
    model_registry.register(_EARLIER)


def sat_inputs_from_token_types(token_type_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """HF CogVLM's ``token_type_ids`` ``[B, L]`` (0 language, 1 vision) → the SAT inputs that compute the same.

    HF marks ``boi, patches, eoi`` as vision. Returned, all ``[B, L]``:

    * ``image_embed_mask``: the vision tokens (where the image embeddings go);
    * ``vision_expert_mask``: vision tokens followed by a vision token (``boi`` and the patches; HF's expert mask);
    * ``position_ids``: +1 per token, except that a run of patches shares one position (HF's
      ``build_position_ids``, ``boi``/``eoi`` counted as language). Rows are taken as unpadded.
    """
    vision = token_type_ids == VISION_TOKEN_TYPE
    before, after = torch.zeros_like(vision), torch.zeros_like(vision)
    before[:, 1:], after[:, :-1] = vision[:, :-1], vision[:, 1:]
    expert = vision & after
    patch = expert & before  # a vision token between two vision tokens: neither boi nor eoi
    patch_before = torch.zeros_like(patch)
    patch_before[:, 1:] = patch[:, :-1]
    steps = ~(patch & patch_before)  # every token moves on, except a patch that follows a patch
    steps[:, 0] = False
    return {
        "image_embed_mask": vision.long(),
        "vision_expert_mask": expert.long(),
        "position_ids": steps.long().cumsum(dim=-1),
    }
