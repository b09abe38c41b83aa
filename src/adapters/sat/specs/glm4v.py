"""GLM-4V (``glm-4v-9b``; THUDM remote code, ``model_type: chatglm`` with a ``vision_config``) → SAT `GLM4VModel`.

SAT's `GLM4VModel` is `ChatGLM4Model` plus an ``eva`` mixin (``ImageMixin``); the files are GLM-4's plus a vision
tower under ``transformer.vision.``. So the table is the GLM-4 table (`.glm4`: q/k rotary permutation, SwiGLU
halves, base ``10000 * rope_ratio`` set by `finish`) followed by the vision rows below.

The vision tower, in both codes (HF ``visual.py``, SAT ``ImageMixin.word_embedding_forward``)::

    image [B, C, S, S] -> patch conv (stride p) -> [CLS; g*g patches] + position table     g = S // p
      -> blocks: x = x + LN1(attn(x)); x = x + LN2(mlp(x))   (post-sublayer norms, exact GELU, qkv rows [Q; K; V])
      -> drop CLS -> [B, Hv, g, g] -> conv 2x2 stride 2 -> (g//2)^2 tokens of width H
      -> GLU: dense_4h_to_h(silu(gate_proj(y)) * dense_h_to_4h(y)),  y = gelu(norm1(linear_proj(x)))
      -> [boi; tokens; eoi]  (HF then divides all of it by vision_config.scaling_factor; SAT does not)

Every name matches one to one except the EVA tower's own (``patch_embedding.cls_embedding`` is SAT's one-row word
table, ``mlp.fc1``/``fc2`` its ``dense_h_to_4h``/``dense_4h_to_h``). The ``/ scaling_factor`` is folded into the
three tensors that make the output: ``linear_proj.dense_4h_to_h`` (the GLU's last map, no bias), ``boi`` and ``eoi``
are multiplied by ``1 / scaling_factor``. For a power of two (glm-4v-9b: 8) that is exact, bit for bit, and so is
the inverse (export multiplies back). For another factor it rounds each weight once instead of each output once:
a difference of an ulp, and the inverse round trip is exact to an ulp, not bitwise.

Position ids are the caller's, as in SAT's demo: boi gets ``p``, every image token ``p + 1``, eoi ``p + 2``, and the
text goes on from there (HF's ``ChatGLMModel.forward`` builds the same). ``image_embed_mask`` marks boi..eoi.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ...core import Scale, Spec, rule
from ..family import Family
from ..hf_checkpoint import HFCheckpoint
from ..hf_config import HFLayout, start
from ._glm import config_error, refuse_unsupported, released_as, thudm_args, thudm_dims, thudm_hf_config
from .chatglm3 import require_base_scaling
from .glm4 import glm4_finish, glm4_spec
from .vit import hf_image_size, linear_rules

__all__ = [
    "CLASS",
    "FAMILY",
    "glm4v_args",
    "glm4v_hf_config",
    "glm4v_spec",
    "language_part",
    "scaling_factor",
    "vision_rules",
]

CLASS = "GLM4VModel"

_V = "transformer.vision."  # HF EVA2CLIPModel
_E = "mixins.eva."  # SAT ImageMixin
_T = _E + "vit_model."  # SAT EVA2CLIPModel
_B, _SB = _V + "transformer.layers.{block}.", _T + "transformer.layers.{block}."


def vision_rules(scale: float):
    """The ``transformer.vision.`` table; `scale` (``1 / scaling_factor``) is folded into the tower's output."""
    fold = Scale(scale)
    # fmt: off
    return (
        #    source (THUDM glm-4v visual.py, on disk)          target (SAT GLM4VModel, mixins.eva)                   op
        *linear_rules(_V + "patch_embedding.proj",             _T + "mixins.patch_embedding.proj"),
        rule(_V + "patch_embedding.cls_embedding",             _T + "transformer.word_embeddings.weight"),
        rule(_V + "patch_embedding.position_embedding.weight", _T + "transformer.position_embeddings.weight"),
        *linear_rules(_B + "input_layernorm",                  _SB + "input_layernorm"),
        *linear_rules(_B + "attention.query_key_value",        _SB + "attention.query_key_value"),
        *linear_rules(_B + "attention.dense",                  _SB + "attention.dense"),
        *linear_rules(_B + "post_attention_layernorm",         _SB + "post_attention_layernorm"),
        *linear_rules(_B + "mlp.fc1",                          _SB + "mlp.dense_h_to_4h"),
        *linear_rules(_B + "mlp.fc2",                          _SB + "mlp.dense_4h_to_h"),
        *linear_rules(_V + "conv",                             _E + "conv"),
        rule(_V + "linear_proj.linear_proj.weight",            _E + "linear_proj.linear_proj.weight"),
        *linear_rules(_V + "linear_proj.norm1",                _E + "linear_proj.norm1"),
        rule(_V + "linear_proj.dense_h_to_4h.weight",          _E + "linear_proj.dense_h_to_4h.weight"),
        rule(_V + "linear_proj.gate_proj.weight",              _E + "linear_proj.gate_proj.weight"),
        rule(_V + "linear_proj.dense_4h_to_h.weight",          _E + "linear_proj.dense_4h_to_h.weight",  fold),
        rule(_V + "boi",                                       _E + "boi",                               fold),
        rule(_V + "eoi",                                       _E + "eoi",                               fold),
    )
    # fmt: on


def language_part(ckpt: HFCheckpoint) -> HFCheckpoint:
    """The checkpoint as GLM-4 sees it: the same files and config without ``vision_config``."""
    return replace(ckpt, config={k: v for k, v in ckpt.config.items() if k != "vision_config"})


def glm4v_spec(ckpt: HFCheckpoint, keys: frozenset[str]) -> Spec:
    text = glm4_spec(language_part(ckpt), keys)
    rules = (*text.rules, *vision_rules(1.0 / scaling_factor(ckpt)))
    return Spec("hf-glm4v->sat-glm4v", rules, text.ignore, text.keep)


def _vision(ckpt: HFCheckpoint) -> dict:
    vision = ckpt.get("vision_config")
    if not isinstance(vision, dict):
        raise config_error(
            ckpt,
            "there is no vision_config, so this is not a GLM-4V config, which SAT's GLM4VModel is built from",
            "call sat.AutoModel.from_hf(...) to pick the class",
        )
    return vision


def _field(ckpt: HFCheckpoint, key: str):
    value = _vision(ckpt).get(key)
    if value is None:
        raise config_error(
            ckpt,
            f"field 'vision_config.{key}' is missing (model_type {ckpt.model_type!r})",
            "the config does not look like one THUDM's GLM-4V remote code reads",
        )
    return value


def scaling_factor(ckpt: HFCheckpoint) -> float:
    """``vision_config.scaling_factor``: visual.py divides by it unconditionally, so it is required."""
    value = _field(ckpt, "scaling_factor")
    number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    refuse_unsupported(ckpt, CLASS, {
        "vision_config.scaling_factor": (not math.isfinite(number) or number == 0,
                                         f"dividing the image embeddings by {value!r}"),
    })  # fmt: skip
    return number


def glm4v_args(ckpt: HFCheckpoint) -> dict:
    """SAT `GLM4VModel` args: GLM-4's from the language fields, plus the EVA tower's as ``eva_args``.

    ``eva_args`` must not be empty: SAT's ``ImageMixin`` then loads a pretrained tower from ``$SAT_HOME``.
    """
    vision = _vision(ckpt)
    text = language_part(ckpt)
    args = thudm_args(text, CLASS)
    require_base_scaling(text, CLASS)
    image, patch = _field(ckpt, "image_size"), _field(ckpt, "patch_size")
    act = vision.get("hidden_act", "gelu")
    refuse_unsupported(ckpt, CLASS, {
        "vision_config.hidden_act": (act != "gelu", f"the vision activation {act!r} (SAT's EVA tower uses exact GELU)"),
        "vision_config.image_size": (not isinstance(image, int), f"a non-square image_size {image!r}"),
        "vision_config.patch_size": (not isinstance(patch, int), f"a non-square patch_size {patch!r}"),
    })  # fmt: skip
    scaling_factor(ckpt)  # refused here, before anything is built, when it cannot be folded
    grid = image // patch
    eva_args = dict(
        num_layers=_field(ckpt, "num_hidden_layers"),
        hidden_size=_field(ckpt, "hidden_size"),
        num_attention_heads=_field(ckpt, "num_heads"),
        inner_hidden_size=_field(ckpt, "intermediate_size"),
        image_size=[image, image],
        patch_size=patch,
        in_channels=vision.get("in_channels", 3),
        layernorm_epsilon=vision.get("layer_norm_eps", 1e-6),
        vocab_size=1,  # the CLS token
        pre_len=1,
        post_len=0,
        use_bias=True,
        num_multi_query_heads=0,
        use_final_layernorm=False,
        row_parallel_linear_final_bias=False,
        layernorm_order="post",
    )
    # The 2x2 stride-2 conv floors an odd grid, as HF's ``(image_size // patch_size // 2) ** 2`` does.
    return {**args, "image_length": (grid // 2) ** 2, "eva_args": eva_args, "proj_hidden_size": None}


RELEASED_SCALING = 8  # glm-4v-9b's vision_config.scaling_factor, for a model from no config (exact: a power of 2)


def glm4v_hf_config(model, args, recorded: dict | None) -> HFLayout:
    """`glm4v_args` backwards: GLM-4's remote-code config plus glm-4v-9b's ``vision_config`` from ``eva_args``.

    SAT's tower does not divide by ``scaling_factor``; the export multiplies the folded tensors back by it, so any
    factor is exact for the SAT model: the recorded one, else the release's.
    """
    layout = thudm_hf_config(model, args, recorded, "glm4v")
    eva = args.eva_args
    image = hf_image_size(eva["image_size"])
    vision = start((recorded or {}).get("vision_config"), dropout_prob=0.0, scaling_factor=RELEASED_SCALING)
    vision.update(hidden_act="gelu", num_hidden_layers=eva["num_layers"], hidden_size=eva["hidden_size"],
                  num_heads=eva["num_attention_heads"], intermediate_size=eva["inner_hidden_size"], image_size=image,
                  patch_size=eva["patch_size"], in_channels=eva.get("in_channels", 3),
                  layer_norm_eps=eva["layernorm_epsilon"], num_positions=(image // eva["patch_size"]) ** 2 + 1)  # fmt: skip
    return HFLayout({**layout.config, "vision_config": vision}, layout.keys, layout.extra)


FAMILY = Family(
    name="glm4v",
    model_types=("chatglm",),
    sat_class="adapters.sat.shims.GLM4VModel",  # SAT's class; the shims module makes it buildable from get_args()
    args=glm4v_args,
    spec=glm4v_spec,
    dims=thudm_dims,
    accepts=released_as("glm4v"),  # a ChatGLM2/3/4 config with a vision_config (see `._glm.release`)
    finish=glm4_finish,
    hf_config=glm4v_hf_config,
)
