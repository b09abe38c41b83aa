"""HF CogVLM (THUDM remote code: ``cogvlm-chat-hf``, ``cogvlm-base-{224,490}-hf``, ``cogvlm-grounding-*-hf``) →
SAT `CogVLMModel` (`adapters.sat.models`, the CogVLM repository's parameter names).

The remote code's ``config.json`` names no ``model_type``; the family is found by ``architectures:
["CogVLMForCausalLM"]`` (or ``model_type: "cogvlm"``). Every tensor is a rename, no values change:

* The language model is LLaMA with a second (vision) expert per layer. Both experts keep q, k and v as one
  ``[3H, H]`` matrix with rows ``[Q; K; V]``, as SAT's ``query_key_value`` does, and rotate half-split (NeoX) pairs
  with base 10000, as SAT's `FastRotaryEmbedding` does. The language expert goes into the LLaMA layer itself (its
  gate into ``mixins.mlp.gate_proj``: SAT's LLaMA keeps the gate in a mixin), the vision expert into the
  ``rotary`` (attention) and ``mlp`` mixins. SAT's CogVLM has vision experts in the first 32 layers only, like every
  CogVLM release; a deeper config is refused.
* The vision tower is EVA2-CLIP-E: CLS embedding ``[1, Hv]`` → the tower's one-token vocabulary, the position table
  ``[1 + N, Hv]`` unchanged, post-sublayer LayerNorms under the same names, ``mlp.fc1``/``fc2`` →
  ``mlp.dense_h_to_4h``/``dense_4h_to_h``. The GLU projector and ``boi``/``eoi`` keep their names.

Config → args: the LLaMA fields, plus what CogVLM's SAT scripts read after loading: ``image_length`` (patches per
image), ``eva_args`` (the tower, with ``image_size`` as ``[S, S]``), ``text_processor_version`` (the prompt format
of the config's ``template_version``; HF's ``chat`` is the SAT scripts' ``chat_old``), and ``tokenizer_type``
(``lmsys/vicuna-7b-v1.5``, the tokenizer every CogVLM release uses: the HF checkpoints ship none) for the 32000-token
vocabulary. CogVLM2 shares the architecture name, but no SAT model computes it; it is refused by name.
"""

from __future__ import annotations

from ...core import HookError, Spec, ignore, rule
from ...core.ops import Duplicate
from ..family import Family
from ..hf_checkpoint import CONFIG, HFCheckpoint
from ..hf_config import HFLayout, keep, start, tied
from .vit import hf_image_size, linear_rules

CLASS = "CogVLMModel"
VISION_EXPERT_LAYERS = 32  # as adapters.sat.models.cogvlm (not imported here: listing families imports no SAT)
VICUNA_VOCAB, VICUNA = 32000, "lmsys/vicuna-7b-v1.5"
LLAMA3_VOCAB = 128256
# HF ``template_version`` → the CogVLM SAT scripts' ``text_processor_version`` with the same prompt.
PROMPT_VERSIONS = {"chat": "chat_old", "base": "base", "vqa": "vqa"}

_H, _S = "model.layers.{layer}.", "transformer.layers.{layer}."
_V, _T = "model.vision.", "mixins.eva."
_VL, _TL = _V + "transformer.layers.{layer}.", _T + "vit_model.transformer.layers.{layer}."

# fmt: off
RULES = (
    #    source (HF CogVLMForCausalLM, on disk)                  target (SAT CogVLMModel)                              op
    rule("model.embed_tokens.weight",                            "transformer.word_embeddings.weight"),
    rule(_H + "input_layernorm.weight",                          _S + "input_layernorm.weight"),
    rule(_H + "self_attn.language_expert_query_key_value.weight", _S + "attention.query_key_value.weight"),
    rule(_H + "self_attn.language_expert_dense.weight",          _S + "attention.dense.weight"),
    rule(_H + "self_attn.vision_expert_query_key_value.weight",  "mixins.rotary.vision_query_key_value_list.{layer}.weight"),
    rule(_H + "self_attn.vision_expert_dense.weight",            "mixins.rotary.vision_dense_list.{layer}.weight"),
    rule(_H + "post_attention_layernorm.weight",                 _S + "post_attention_layernorm.weight"),
    rule(_H + "mlp.language_mlp.gate_proj.weight",               "mixins.mlp.gate_proj.{layer}.weight"),
    rule(_H + "mlp.language_mlp.up_proj.weight",                 _S + "mlp.dense_h_to_4h.weight"),
    rule(_H + "mlp.language_mlp.down_proj.weight",               _S + "mlp.dense_4h_to_h.weight"),
    rule(_H + "mlp.vision_mlp.gate_proj.weight",                 "mixins.mlp.vision_gate_proj.{layer}.weight"),
    rule(_H + "mlp.vision_mlp.up_proj.weight",                   "mixins.mlp.vision_dense_h_to_4h_list.{layer}.weight"),
    rule(_H + "mlp.vision_mlp.down_proj.weight",                 "mixins.mlp.vision_dense_4h_to_h_list.{layer}.weight"),
    rule("model.norm.weight",                                    "transformer.final_layernorm.weight"),
    *linear_rules(_V + "patch_embedding.proj",                   _T + "vit_model.mixins.patch_embedding.proj"),
    rule(_V + "patch_embedding.cls_embedding",                   _T + "vit_model.transformer.word_embeddings.weight"),
    rule(_V + "patch_embedding.position_embedding.weight",       _T + "vit_model.transformer.position_embeddings.weight"),
    *linear_rules(_VL + "input_layernorm",                       _TL + "input_layernorm"),
    *linear_rules(_VL + "attention.query_key_value",             _TL + "attention.query_key_value"),
    *linear_rules(_VL + "attention.dense",                       _TL + "attention.dense"),
    *linear_rules(_VL + "post_attention_layernorm",              _TL + "post_attention_layernorm"),
    *linear_rules(_VL + "mlp.fc1",                               _TL + "mlp.dense_h_to_4h"),
    *linear_rules(_VL + "mlp.fc2",                               _TL + "mlp.dense_4h_to_h"),
    rule(_V + "linear_proj.linear_proj.weight",                  _T + "linear_proj.linear_proj.weight"),
    *linear_rules(_V + "linear_proj.norm1",                      _T + "linear_proj.norm1"),
    rule(_V + "linear_proj.gate_proj.weight",                    _T + "linear_proj.gate_proj.weight"),
    rule(_V + "linear_proj.dense_h_to_4h.weight",                _T + "linear_proj.dense_h_to_4h.weight"),
    rule(_V + "linear_proj.dense_4h_to_h.weight",                _T + "linear_proj.dense_4h_to_h.weight"),
    rule(_V + "boi",                                             _T + "boi"),
    rule(_V + "eoi",                                             _T + "eoi"),
)
HEAD = rule("lm_head.weight",                                    "mixins.lm.lm_head.weight")
# A tied checkpoint stores the embedding once; SAT's lm_head is its own parameter and gets a copy.
TIED = rule("model.embed_tokens.weight",                         ["transformer.word_embeddings.weight",
                                                                  "mixins.lm.lm_head.weight"], Duplicate(2))
IGNORE = (
    ignore(_H + "self_attn.rotary_emb.inv_freq", "the remote code saves the RoPE frequencies; SAT recomputes them"),
)
KEEP = (
    ignore("mixins.rotary.rotary_emb.inv_freq", "RoPE frequencies: computed at construction, not loaded"),
)
# fmt: on


def cogvlm_spec(ckpt: HFCheckpoint, keys: frozenset[str]) -> Spec:
    """The rules, with the embedding copied into the head when the file has no ``lm_head.weight``."""
    if "lm_head.weight" in keys:
        return Spec("hf-cogvlm->sat-cogvlm", (*RULES, HEAD), IGNORE, KEEP)
    rules = tuple(r for r in RULES if r.sources[0].text != "model.embed_tokens.weight")
    return Spec("hf-cogvlm->sat-cogvlm", (TIED, *rules), IGNORE, KEEP)


def _vision(ckpt: HFCheckpoint, key: str):
    vision = ckpt.require("vision_config")
    if not isinstance(vision, dict) or vision.get(key) is None:
        raise HookError(
            f"{ckpt.path / CONFIG}: field 'vision_config.{key}' is missing (architectures: CogVLMForCausalLM)\n"
            "  hint: the config does not look like one THUDM's CogVLM remote code saved"
        )
    return vision[key]


def _grid(ckpt: HFCheckpoint) -> tuple[int, int, int]:
    """``(image_size, patch_size, patches)``; a non-square image is refused."""
    image, patch = _vision(ckpt, "image_size"), _vision(ckpt, "patch_size")
    if not isinstance(image, int) or not isinstance(patch, int):
        raise _refuse(ckpt, "vision_config.image_size", f"a non-square image {image!r} or patch {patch!r}")
    return image, patch, (image // patch) ** 2


def _refuse(ckpt: HFCheckpoint, field: str, what: str) -> HookError:
    return HookError(
        f"{ckpt.path / CONFIG}: {field} asks for {what}, which SAT's {CLASS} does not compute\n"
        f"  hint: SAT's {CLASS} has no such option; loading would give wrong outputs, so it is refused"
    )


def cogvlm2_signs(ckpt: HFCheckpoint) -> list[str]:
    """What marks a CogVLM2 config (same architecture name as CogVLM); empty for CogVLM."""
    signs = []
    if ckpt.get("num_multi_query_heads") is not None:
        signs.append(f"num_multi_query_heads={ckpt.get('num_multi_query_heads')} (grouped-query attention)")
    vision = ckpt.get("vision_config") or {}
    image, patch, positions = vision.get("image_size"), vision.get("patch_size"), vision.get("num_positions")
    if isinstance(image, int) and isinstance(patch, int) and positions not in (None, (image // patch) ** 2 + 1):
        signs.append(f"vision_config.num_positions={positions} for {image}/{patch} patches "
                     "(a 2x2 conv downsampler after the tower)")  # fmt: skip
    if ckpt.get("vocab_size") == LLAMA3_VOCAB:
        signs.append(f"vocab_size={LLAMA3_VOCAB} (the Llama-3 tokenizer)")
    return signs


def _refuse_cogvlm2(ckpt: HFCheckpoint) -> None:
    signs = cogvlm2_signs(ckpt)
    if signs:
        raise HookError(
            f"{ckpt.path / CONFIG}: this is a CogVLM2 config ({'; '.join(signs)}), which SAT's {CLASS} cannot hold\n"
            "  missing in SAT: grouped-query vision-expert attention with a qkv bias, the tower's conv downsampler, "
            "RoPE base 500000\n"
            "  hint: no SAT model of CogVLM2 exists (THUDM released it for transformers only); load it with "
            "transformers (AutoModelForCausalLM, trust_remote_code=True)"
        )


def cogvlm_args(ckpt: HFCheckpoint) -> dict:
    """SAT `CogVLMModel` args (and the fields CogVLM's SAT scripts read) from a CogVLM ``config.json``."""
    _refuse_cogvlm2(ckpt)
    layers = ckpt.require("num_hidden_layers")
    refusals = {
        "hidden_act": (ckpt.get("hidden_act", "silu") != "silu", "an activation other than silu"),
        "vision_config.hidden_act": (_vision(ckpt, "hidden_act") != "gelu", "a tower activation other than gelu"),
        "num_hidden_layers": (layers > VISION_EXPERT_LAYERS,
                              f"vision experts in all {layers} layers (SAT's gives them to the first "
                              f"{VISION_EXPERT_LAYERS} only)"),
    }  # fmt: skip
    for field, (bad, what) in refusals.items():
        if bad:
            raise _refuse(ckpt, field, what)
    image, patch, patches = _grid(ckpt)
    args = dict(
        num_layers=layers,
        vocab_size=ckpt.require("vocab_size"),
        hidden_size=ckpt.require("hidden_size"),
        num_attention_heads=ckpt.require("num_attention_heads"),
        num_multi_query_heads=0,
        inner_hidden_size=ckpt.require("intermediate_size"),
        max_sequence_length=ckpt.get("max_position_embeddings", 2048),
        layernorm_epsilon=ckpt.get("rms_norm_eps", 1e-6),
        use_bias=False,
        layernorm_order="pre",
        is_rotary_emb=False,  # CogVLM's RoPE lives in its ``rotary`` mixin, its gate in ``mlp``: SAT's LLaMA mixins
        is_gated_mlp=False,
        bos_token_id=_or(ckpt.get("bos_token_id"), 1),
        eos_token_id=_or(ckpt.get("eos_token_id"), 2),
        pad_token_id=_or(ckpt.get("pad_token_id"), 0),
        image_length=patches,
        eva_args=dict(
            num_layers=_vision(ckpt, "num_hidden_layers"),
            hidden_size=_vision(ckpt, "hidden_size"),
            num_attention_heads=_vision(ckpt, "num_heads"),
            inner_hidden_size=_vision(ckpt, "intermediate_size"),
            vocab_size=1,  # the CLS token
            layernorm_order="post",
            layernorm_epsilon=_vision(ckpt, "layer_norm_eps"),
            use_bias=True,
            use_final_layernorm=False,
            row_parallel_linear_final_bias=False,
            image_size=[image, image],
            patch_size=patch,
            pre_len=1,
            post_len=0,
            in_channels=(ckpt.get("vision_config") or {}).get("in_channels", 3),
        ),
    )
    prompt = PROMPT_VERSIONS.get(ckpt.get("template_version", "chat"))
    if prompt is not None:  # otherwise CogVLM's scripts fall back to their --version
        args["text_processor_version"] = prompt
    if args["vocab_size"] == VICUNA_VOCAB:
        args["tokenizer_type"] = VICUNA
    return args


def _or(value, default):
    return default if value is None else value


AUTO_MAP = {
    "AutoConfig": "configuration_cogvlm.CogVLMConfig",
    "AutoModelForCausalLM": "modeling_cogvlm.CogVLMForCausalLM",
}


def vision_config(args, recorded: dict | None) -> dict:
    """``eva_args`` backwards: the remote code's ``vision_config``."""
    eva = args.eva_args
    image, patch = hf_image_size(eva["image_size"]), eva["patch_size"]
    config = start((recorded or {}).get("vision_config"), dropout_prob=0.0)
    config.update(hidden_act="gelu", in_channels=eva.get("in_channels", 3), num_hidden_layers=eva["num_layers"],
                  hidden_size=eva["hidden_size"], num_heads=eva["num_attention_heads"], patch_size=patch,
                  intermediate_size=eva["inner_hidden_size"], layer_norm_eps=eva["layernorm_epsilon"],
                  image_size=image, num_positions=(image // patch) ** 2 + 1)  # fmt: skip
    return config


def cogvlm_hf_config(model, args, recorded: dict | None, *, architecture: str = "CogVLMForCausalLM",
                     auto_map: dict = AUTO_MAP) -> HFLayout:  # fmt: skip
    """`cogvlm_args` backwards: the remote code's config.json (no ``model_type``, as THUDM's), the head stored."""
    is_tied = tied(model, "transformer.word_embeddings.weight", "mixins.lm.lm_head.weight", recorded, default=False)
    config = start(recorded, architectures=[architecture], auto_map=auto_map, hidden_act="silu")
    config.update(num_hidden_layers=args.num_layers, vocab_size=args.vocab_size, hidden_size=args.hidden_size,
                  num_attention_heads=args.num_attention_heads, intermediate_size=args.inner_hidden_size,
                  max_position_embeddings=args.max_sequence_length, rms_norm_eps=args.layernorm_epsilon,
                  tie_word_embeddings=is_tied, vision_config=vision_config(args, recorded))  # fmt: skip
    for name, default in (("bos_token_id", 1), ("eos_token_id", 2), ("pad_token_id", 0)):
        value = getattr(args, name, None)
        config[name] = keep(recorded, name, default if value is None or value < 0 else value)
    prompts = {sat: hf for hf, sat in PROMPT_VERSIONS.items()}
    template = prompts.get(getattr(args, "text_processor_version", None))
    if template is not None:
        config["template_version"] = template
    return HFLayout(config, frozenset() if is_tied else frozenset({"lm_head.weight"}))


FAMILY = Family(
    name="cogvlm",
    model_types=("cogvlm",),
    architectures=("CogVLMForCausalLM",),
    sat_class="adapters.sat.models.cogvlm.CogVLMModel",
    compatible_class_names=(CLASS,),
    args=cogvlm_args,
    spec=cogvlm_spec,
    hf_config=cogvlm_hf_config,
)
