"""HF CLIP (``CLIPModel`` files) → SAT `CLIP` (built through `adapters.sat.shims.CLIP`: SAT 0.4.12's cannot be).

Two pre-LN towers with QuickGELU; both keep q, k, v in one ``query_key_value`` whose rows are ``[Q; K; V]``.

* Vision (``image_encoder``, a SAT `ViTModel`): ``class_embedding`` ``[H]`` → ``word_embeddings.weight`` ``[1, H]``;
  ``position_embedding`` ``[1+N, H]`` (CLS first) unchanged; the bias-free patch conv → ``patch_embedding.proj``;
  ``pre_layrnorm`` (sic) → ``image_enc.pre_layernorm``, applied before layer 0 on both sides; ``post_layernorm`` →
  ``final_layernorm`` (SAT normalises every token, HF only the pooled CLS token: the CLS row is the same);
  ``visual_projection`` → ``image_enc.visual_projection`` of token 0.
* Text (``text_encoder``): token and position tables unchanged, ``final_layer_norm`` → ``final_layernorm``,
  ``text_projection`` → ``text_enc.text_projection``; ``logit_scale`` → ``logit_scale``.

Pooling differs: SAT projects the text tower's **last** position, HF the position of the first EOS token
(``eos_token_id``; for the legacy id 2, the largest id). The embeddings agree for inputs that end in their EOS
with no right padding, which is how SAT's CLIP must be fed. SAT's text mixin turns a given attention mask causal;
pass a full ``[1, 1, L, L]`` mask of ones (``None`` stays bidirectional).
"""

from __future__ import annotations

from ...core import Concat, HookError, Reshape, Rule, Spec, ignore, rule
from ..family import Family
from ..hf_checkpoint import HFCheckpoint
from ..hf_config import HFLayout, start
from .vit import hf_image_size, linear_rules

_V, _T = "vision_model.", "text_model."
_IMAGE, _TEXT = "image_encoder.", "text_encoder."


# fmt: off
def _layers(source: str, target: str, hidden: str) -> tuple[Rule, ...]:
    """One tower's ``encoder.layers`` (the same `CLIPEncoderLayer` in both) → its SAT ``transformer.layers``."""
    L, S = source + "encoder.layers.{layer}.", target + "transformer.layers.{layer}."
    A, qkv = L + "self_attn.", Concat(0, sizes=(hidden,) * 3)
    return (
        *linear_rules(L + "layer_norm1",            S + "input_layernorm"),
        rule([A + "q_proj.weight", A + "k_proj.weight",
              A + "v_proj.weight"],                 S + "attention.query_key_value.weight",  qkv),
        rule([A + "q_proj.bias", A + "k_proj.bias",
              A + "v_proj.bias"],                   S + "attention.query_key_value.bias",    qkv),
        *linear_rules(A + "out_proj",               S + "attention.dense"),
        *linear_rules(L + "layer_norm2",            S + "post_attention_layernorm"),
        *linear_rules(L + "mlp.fc1",                S + "mlp.dense_h_to_4h"),
        *linear_rules(L + "mlp.fc2",                S + "mlp.dense_4h_to_h"),
    )


RULES = (
    #    source (HF CLIPModel, on disk)                   target (SAT CLIP)                          op
    rule(_V + "embeddings.class_embedding",               _IMAGE + "transformer.word_embeddings.weight",
                                                          Reshape(("vision_hidden",), (1, "vision_hidden"))),
    rule(_V + "embeddings.patch_embedding.weight",        _IMAGE + "mixins.patch_embedding.proj.weight"),
    rule(_V + "embeddings.position_embedding.weight",     _IMAGE + "transformer.position_embeddings.weight"),
    *linear_rules(_V + "pre_layrnorm",                    _IMAGE + "mixins.image_enc.pre_layernorm"),
    *_layers(_V,                                          _IMAGE,                                    "vision_hidden"),
    *linear_rules(_V + "post_layernorm",                  _IMAGE + "transformer.final_layernorm"),
    rule("visual_projection.weight",                      _IMAGE + "mixins.image_enc.visual_projection.weight"),
    rule(_T + "embeddings.token_embedding.weight",        _TEXT + "transformer.word_embeddings.weight"),
    rule(_T + "embeddings.position_embedding.weight",     _TEXT + "transformer.position_embeddings.weight"),
    *_layers(_T,                                          _TEXT,                                     "text_hidden"),
    *linear_rules(_T + "final_layer_norm",                _TEXT + "transformer.final_layernorm"),
    rule("text_projection.weight",                        _TEXT + "mixins.text_enc.text_projection.weight"),
    rule("logit_scale",                                   "logit_scale"),
)
IGNORE = (
    ignore(_V + "embeddings.position_ids", "HF's position-index buffer (older files); SAT uses its whole table"),
    ignore(_T + "embeddings.position_ids", "HF's position-index buffer (older files); SAT takes position_ids as input"),
)
# fmt: on


def clip_spec(ckpt: HFCheckpoint, keys: frozenset[str]) -> Spec:
    return Spec("hf-clip->sat-clip", RULES, IGNORE)


def _tower(ckpt: HFCheckpoint, name: str) -> dict:
    tower = ckpt.get(name)
    if not isinstance(tower, dict):
        raise HookError(
            f"{ckpt.path / 'config.json'}: field {name!r} is missing (model_type {ckpt.model_type!r})\n"
            "  hint: the config does not look like one transformers saved for this architecture"
        )
    return tower


def _field(ckpt: HFCheckpoint, tower: str, key: str):
    value = _tower(ckpt, tower).get(key)
    if value is None:
        raise HookError(
            f"{ckpt.path / 'config.json'}: field '{tower}.{key}' is missing (model_type {ckpt.model_type!r})\n"
            "  hint: the config does not look like one transformers saved for this architecture"
        )
    return value


def _refuse(ckpt: HFCheckpoint, field: str, what: str) -> HookError:
    return HookError(
        f"{ckpt.path / 'config.json'}: {field} asks for {what}, which SAT's CLIP does not compute\n"
        "  hint: SAT's CLIP has no such option; loading would give wrong outputs, so it is refused"
    )


def _square(ckpt: HFCheckpoint, key: str) -> int:
    value = _field(ckpt, "vision_config", key)
    if not isinstance(value, int):
        raise _refuse(ckpt, f"vision_config.{key}", f"a non-square {key} {value!r}")
    return value


def clip_args(ckpt: HFCheckpoint) -> dict:
    """SAT `CLIP` args (vision as the main model, text as ``text_*``) from a ``CLIPConfig``."""
    for tower in ("vision_config", "text_config"):
        act = _tower(ckpt, tower).get("hidden_act", "quick_gelu")
        if act != "quick_gelu":
            raise _refuse(ckpt, f"{tower}.hidden_act", f"the activation {act!r} (SAT's is QuickGELU)")
    eps = {t: _tower(ckpt, t).get("layer_norm_eps", 1e-5) for t in ("vision_config", "text_config")}
    if eps["vision_config"] != eps["text_config"]:
        what = f"{eps['vision_config']} (vision) and {eps['text_config']} (text) (SAT's towers share one)"
        raise _refuse(ckpt, "layer_norm_eps", f"two LayerNorm eps, {what}")
    image, patch = _square(ckpt, "image_size"), _square(ckpt, "patch_size")
    v = lambda key: _field(ckpt, "vision_config", key)  # noqa: E731
    t = lambda key: _field(ckpt, "text_config", key)  # noqa: E731
    return dict(
        num_layers=v("num_hidden_layers"),
        hidden_size=v("hidden_size"),
        num_attention_heads=v("num_attention_heads"),
        inner_hidden_size=v("intermediate_size"),
        vocab_size=1,  # the CLS token
        image_size=[image, image],
        patch_size=patch,
        pre_len=1,
        post_len=0,
        in_channels=_tower(ckpt, "vision_config").get("num_channels", 3),
        layernorm_epsilon=eps["vision_config"],
        layernorm_order="pre",
        projection_dim=ckpt.require("projection_dim"),
        logit_scale_init_value=ckpt.get("logit_scale_init_value", 2.6592),
        text_num_layers=t("num_hidden_layers"),
        text_hidden_size=t("hidden_size"),
        text_num_attention_heads=t("num_attention_heads"),
        text_inner_hidden_size=t("intermediate_size"),
        text_vocab_size=t("vocab_size"),
        text_max_sequence_length=t("max_position_embeddings"),
    )


def clip_dims(ckpt: HFCheckpoint) -> dict[str, int]:
    return {
        "vision_hidden": _field(ckpt, "vision_config", "hidden_size"),
        "text_hidden": _field(ckpt, "text_config", "hidden_size"),
    }


def clip_hf_config(model, args, recorded: dict | None) -> HFLayout:
    """`clip_args` backwards: a ``CLIPModel`` config, both towers QuickGELU with the one LayerNorm eps."""
    recorded = recorded or {}
    shared = {"hidden_act": "quick_gelu", "layer_norm_eps": args.layernorm_epsilon}
    vision = start(recorded.get("vision_config"))
    vision.update(shared, num_hidden_layers=args.num_layers, hidden_size=args.hidden_size,
                  num_attention_heads=args.num_attention_heads, intermediate_size=args.inner_hidden_size,
                  image_size=hf_image_size(args.image_size), patch_size=args.patch_size, num_channels=args.in_channels)  # fmt: skip
    text = start(recorded.get("text_config"))
    text.update(shared, num_hidden_layers=args.text_num_layers, hidden_size=args.text_hidden_size,
                num_attention_heads=args.text_num_attention_heads, intermediate_size=args.text_inner_hidden_size,
                vocab_size=args.text_vocab_size, max_position_embeddings=args.text_max_sequence_length)  # fmt: skip
    config = start(recorded, model_type="clip", architectures=["CLIPModel"])
    config.update(projection_dim=args.projection_dim, logit_scale_init_value=args.logit_scale_init_value,
                  vision_config=vision, text_config=text)  # fmt: skip
    return HFLayout(config)


FAMILY = Family(
    name="clip",
    model_types=("clip",),
    sat_class="adapters.sat.shims.CLIP",
    args=clip_args,
    spec=clip_spec,
    dims=clip_dims,
    hf_config=clip_hf_config,
)
