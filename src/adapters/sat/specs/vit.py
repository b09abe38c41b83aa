"""HF ViT (``ViTForImageClassification`` or ``ViTModel`` files) → SAT `ViTModel` (pre-LN, exact gelu, CLS head).

Layouts, HF on disk → SAT:

* ``embeddings.cls_token`` ``[1, 1, H]`` → ``transformer.word_embeddings.weight`` ``[1, H]`` (SAT's vocabulary of
  one token, ``pre_len=1``); ``embeddings.position_embeddings`` ``[1, 1+N, H]`` → ``[1+N, H]``, rows in the same
  order (CLS, then patches row by row), N = (image/patch)².
* q, k, v (``[H, H]`` and ``[H]``) → ``attention.query_key_value`` ``[3H, H]``, rows ``[Q; K; V]``.
* ``layernorm_before`` / ``layernorm_after`` are pre-LN on both sides → ``input_layernorm`` /
  ``post_attention_layernorm``; ``vit.layernorm`` → ``final_layernorm``; ``classifier`` → ``mixins.cls.classifier``,
  applied to token 0 on both sides.
* ``ViTForImageClassification`` files carry the ``vit.`` prefix; ``ViTModel`` files have none, no classifier and a
  pooler. Those load without SAT's ``cls`` mixin: the forward returns the last hidden states ``[B, 1+N, H]``.

SAT's LayerNorm eps comes from args (HF ViT uses 1e-12, SAT's default is 1e-5).
"""

from __future__ import annotations

from torch import nn

from ...core import Concat, HookError, Reshape, Rule, Spec, ignore, rule
from ..family import Family
from ..headless import drop_head
from ..hf_checkpoint import HFCheckpoint
from ..hf_config import HFLayout, start

HEAD_MIXIN = "cls"  # SAT ViTModel's classifier mixin
QKV = ("hidden",) * 3  # q, k and v rows of query_key_value


def linear_rules(source: str, target: str) -> tuple[Rule, Rule]:
    """A module's weight and bias, renamed."""
    return rule(f"{source}.weight", f"{target}.weight"), rule(f"{source}.bias", f"{target}.bias")


def _prefix(keys: frozenset[str]) -> str:
    return "vit." if "vit.embeddings.cls_token" in keys else ""


def vit_spec(ckpt: HFCheckpoint, keys: frozenset[str]) -> Spec:
    """The table for this file: ``vit.``-prefixed with a classifier, or bare without one."""
    p = _prefix(keys)
    E, L, S = p + "embeddings.", p + "encoder.layer.{layer}.", "transformer.layers.{layer}."
    A = L + "attention.attention."
    # fmt: off
    rules: list[Rule] = [
        #    source (HF ViT, on disk)                     target (SAT ViTModel)                   op
        rule(E + "cls_token",                             "transformer.word_embeddings.weight",
                                                          Reshape((1, 1, "hidden"), (1, "hidden"))),
        rule(E + "position_embeddings",                   "transformer.position_embeddings.weight",
                                                          Reshape((1, "positions", "hidden"), ("positions", "hidden"))),
        *linear_rules(E + "patch_embeddings.projection",  "mixins.patch_embedding.proj"),
        *linear_rules(L + "layernorm_before",             S + "input_layernorm"),
        rule([A + "query.weight", A + "key.weight",
              A + "value.weight"],                        S + "attention.query_key_value.weight", Concat(0, sizes=QKV)),
        rule([A + "query.bias", A + "key.bias",
              A + "value.bias"],                          S + "attention.query_key_value.bias",   Concat(0, sizes=QKV)),
        *linear_rules(L + "attention.output.dense",       S + "attention.dense"),
        *linear_rules(L + "layernorm_after",              S + "post_attention_layernorm"),
        *linear_rules(L + "intermediate.dense",           S + "mlp.dense_h_to_4h"),
        *linear_rules(L + "output.dense",                 S + "mlp.dense_4h_to_h"),
        *linear_rules(p + "layernorm",                    "transformer.final_layernorm"),
    ]
    ignores = (
        ignore(p + "pooler.dense.weight", "the pooler (tanh projection of the CLS token); SAT's ViTModel has none"),
        ignore(p + "pooler.dense.bias",   "the pooler (tanh projection of the CLS token); SAT's ViTModel has none"),
    )
    # fmt: on
    if "classifier.weight" not in keys:
        return Spec("hf-vit->sat-vit (headless)", tuple(rules), ignores)
    return Spec("hf-vit->sat-vit", (*rules, *linear_rules("classifier", "mixins.cls.classifier")), ignores)


def _pair(value, field: str, ckpt: HFCheckpoint) -> list[int]:
    if isinstance(value, int):
        return [value, value]
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return list(value)
    raise HookError(f"{ckpt.path / 'config.json'}: {field} is {value!r}; expected an int or a pair of ints")


def _grid(ckpt: HFCheckpoint) -> tuple[list[int], int]:
    """``image_size`` as SAT's ``[H, W]`` and the square patch side SAT's ``nn.Conv2d(kernel_size=patch)`` takes."""
    image = _pair(ckpt.require("image_size"), "image_size", ckpt)
    patch = _pair(ckpt.require("patch_size"), "patch_size", ckpt)
    if patch[0] != patch[1]:
        raise HookError(
            f"{ckpt.path / 'config.json'}: patch_size asks for {patch[0]}x{patch[1]} patches, which SAT's ViTModel "
            "does not compute\n  hint: SAT's patch embedding takes one square patch size; loading is refused"
        )
    return image, patch[0]


def vit_args(ckpt: HFCheckpoint) -> dict:
    """SAT `ViTModel` args from a ``ViTConfig``; refuses what SAT's ViT cannot compute."""
    act = ckpt.get("hidden_act", "gelu")
    unsupported = {
        "hidden_act": (act != "gelu", f"the activation {act!r} (SAT's is exact gelu)"),
        "qkv_bias": (ckpt.get("qkv_bias", True) is False, "q/k/v without biases (SAT's always has them)"),
    }
    for field, (bad, what) in unsupported.items():
        if bad:
            raise HookError(
                f"{ckpt.path / 'config.json'}: {field} asks for {what}, which SAT's ViTModel does not compute\n"
                "  hint: SAT's ViTModel has no such option; loading would give wrong outputs, so it is refused"
            )
    image_size, patch_size = _grid(ckpt)
    return dict(
        num_layers=ckpt.require("num_hidden_layers"),
        hidden_size=ckpt.require("hidden_size"),
        num_attention_heads=ckpt.require("num_attention_heads"),
        inner_hidden_size=ckpt.require("intermediate_size"),
        layernorm_epsilon=ckpt.get("layer_norm_eps", 1e-12),
        layernorm_order="pre",
        vocab_size=1,  # the CLS token
        image_size=image_size,
        patch_size=patch_size,
        pre_len=1,
        post_len=0,
        in_channels=ckpt.get("num_channels", 3),
        num_classes=len(ckpt.get("id2label") or {}) or ckpt.get("num_labels", 2),
    )


def vit_dims(ckpt: HFCheckpoint) -> dict[str, int]:
    (height, width), patch = _grid(ckpt)
    return {"hidden": ckpt.require("hidden_size"), "positions": 1 + (height // patch) * (width // patch)}


def vit_prepare(model: nn.Module, ckpt: HFCheckpoint, keys: frozenset[str]) -> None:
    """A file without ``classifier``: SAT's ``cls`` head gives way to the hidden-states mixin (model on meta)."""
    if "classifier.weight" not in keys:
        drop_head(model, HEAD_MIXIN)


def hf_image_size(size) -> int | list[int]:
    """SAT's ``image_size`` (``[H, W]``, or one int) as HF writes it: one int for a square image."""
    size = list(size) if isinstance(size, (list, tuple)) else [size] * 2
    return size[0] if size[0] == size[1] else size


def labels(recorded: dict | None, classes: int) -> dict:
    """``id2label``/``label2id`` for `classes` classes: the recorded names when they are as many."""
    names = (recorded or {}).get("id2label") or {}
    if len(names) != classes:
        names = {str(i): f"LABEL_{i}" for i in range(classes)}
    return {"id2label": dict(names), "label2id": {v: int(k) for k, v in names.items()}}


def vit_hf_config(model: nn.Module, args, recorded: dict | None) -> HFLayout:
    """`vit_args` backwards: ``ViTForImageClassification`` (``vit.`` prefix) with SAT's ``cls`` head, else ``ViTModel``."""
    has_head = HEAD_MIXIN in model.mixins
    config = start(recorded, model_type="vit", hidden_act="gelu", qkv_bias=True)
    config.update(architectures=["ViTForImageClassification" if has_head else "ViTModel"],
                  num_hidden_layers=args.num_layers, hidden_size=args.hidden_size,
                  num_attention_heads=args.num_attention_heads, intermediate_size=args.inner_hidden_size,
                  layer_norm_eps=args.layernorm_epsilon, image_size=hf_image_size(args.image_size), patch_size=args.patch_size,
                  num_channels=args.in_channels)  # fmt: skip
    if has_head:
        config.update(labels(recorded, args.num_classes))
    keys = {"vit.embeddings.cls_token", "classifier.weight"} if has_head else set()
    return HFLayout(config, frozenset(keys))


FAMILY = Family(
    name="vit",
    model_types=("vit",),
    sat_class="sat.model.official.vit_model.ViTModel",
    args=vit_args,
    spec=vit_spec,
    dims=vit_dims,
    prepare=vit_prepare,
    hf_config=vit_hf_config,
)
