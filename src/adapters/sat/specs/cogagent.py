"""HF CogAgent (THUDM remote code: ``cogagent-chat-hf``, ``cogagent-vqa-hf``) → SAT `CogAgentModel`
(`adapters.sat.models`, the CogVLM repository's parameter names).

The config names no ``model_type`` (the family is found by ``architectures: ["CogAgentForCausalLM"]``, or
``model_type: "cogagent"``). Every tensor is a rename, no values change:

* everything CogVLM has, under CogVLM's rules (`specs.cogvlm`): the LM with its vision experts, the low-resolution
  EVA2-CLIP-E tower (224 px, 256 patches) and the GLU projector;
* the low-res tower's ``pos_embed`` (added before the projector) → ``mixins.eva.pos_embed``;
* per layer, cross-attention (``query`` ``[C, H]``, ``key_value`` ``[2C, D]`` rows ``[K; V]``, ``dense``) and its
  RMSNorm: SAT's decoder-layer ``cross_attention`` and ``post_cross_attention_layernorm``, same layouts;
* the high-resolution tower ``model.cross_vision.vit.model.*`` → ``mixins.encoder.vit.model.*`` (the same module
  tree, `models.cross_vision`) and its output ``pos_embed`` → ``mixins.encoder.pos_embed``. The RoPE tables the
  remote code saves are recomputed.

Config → args: CogVLM's (`specs.cogvlm.cogvlm_args`), plus ``is_decoder=True``, ``cross_attn_hidden_size`` (the
cross tower's width, HF ``cross_hidden_size``), ``cross_hidden_size_per_attention_head``
(``cross_compute_hidden_size / num_attention_heads``) and ``cross_image_pix`` (HF ``cross_image_size``), the
fields CogAgent's SAT scripts read. The prompt versions are the SAT scripts' own names (HF's CogAgent code uses
the same four). The remote code hard-codes the cross tower as EVA-02-CLIP-L; a ``cross_vision_config`` field
(written by `adapters.sat.tiny.write_tiny_cogagent` for small test towers, absent from THUDM's releases) becomes
``cross_eva_args``.
"""

from __future__ import annotations

from ...core import HookError, Spec, ignore, rule
from ..family import Family
from ..hf_checkpoint import CONFIG, HFCheckpoint
from ..hf_config import HFLayout, tensor
from .cogvlm import VISION_EXPERT_LAYERS, cogvlm_args, cogvlm_hf_config, cogvlm_spec
from .vit import linear_rules

CLASS = "CogAgentModel"
PROMPT_VERSIONS = ("base", "chat", "chat_old", "vqa")  # HF CogAgent's template names = the SAT scripts'
EVA_L_WIDTH = 1024  # the cross tower's width in every release (models.cross_vision.EVA_L; not imported: no SAT here)
# HF ``cross_vision_config`` field → SAT ``cross_eva_args`` key.
CROSS_FIELDS = {"hidden_size": "hidden_size", "num_hidden_layers": "num_layers", "num_heads": "num_heads",
                "intermediate_size": "mlp_hidden_size", "patch_size": "patch_size", "head_size": "head_size"}  # fmt: skip

_H, _S = "model.layers.{layer}.", "transformer.layers.{layer}."
_X, _E = "model.cross_vision.vit.model.", "mixins.encoder.vit.model."
_XB, _EB = _X + "blocks.{block}.", _E + "blocks.{block}."

# fmt: off
RULES = (
    #    source (HF CogAgentForCausalLM, on disk)               target (SAT CogAgentModel)                            op
    rule("model.vision.pos_embed",                              "mixins.eva.pos_embed"),
    rule(_H + "cross_attn.query.weight",                        _S + "cross_attention.query.weight"),
    rule(_H + "cross_attn.key_value.weight",                    _S + "cross_attention.key_value.weight"),
    rule(_H + "cross_attn.dense.weight",                        _S + "cross_attention.dense.weight"),
    rule(_H + "post_cross_attention_layernorm.weight",          _S + "post_cross_attention_layernorm.weight"),
    rule(_X + "cls_token",                                      _E + "cls_token"),
    rule(_X + "pos_embed",                                      _E + "pos_embed"),
    *linear_rules(_X + "patch_embed.proj",                      _E + "patch_embed.proj"),
    *linear_rules(_XB + "norm1",                                _EB + "norm1"),
    rule(_XB + "attn.q_proj.weight",                            _EB + "attn.q_proj.weight"),
    rule(_XB + "attn.k_proj.weight",                            _EB + "attn.k_proj.weight"),
    rule(_XB + "attn.v_proj.weight",                            _EB + "attn.v_proj.weight"),
    rule(_XB + "attn.q_bias",                                   _EB + "attn.q_bias"),
    rule(_XB + "attn.v_bias",                                   _EB + "attn.v_bias"),
    *linear_rules(_XB + "attn.inner_attn_ln",                   _EB + "attn.inner_attn_ln"),
    *linear_rules(_XB + "attn.proj",                            _EB + "attn.proj"),
    *linear_rules(_XB + "norm2",                                _EB + "norm2"),
    *linear_rules(_XB + "mlp.w1",                               _EB + "mlp.w1"),
    *linear_rules(_XB + "mlp.w2",                               _EB + "mlp.w2"),
    *linear_rules(_XB + "mlp.ffn_ln",                           _EB + "mlp.ffn_ln"),
    *linear_rules(_XB + "mlp.w3",                               _EB + "mlp.w3"),
    *linear_rules(_X + "norm",                                  _E + "norm"),
    *linear_rules(_X + "head",                                  _E + "head"),
    rule("model.cross_vision.pos_embed",                        "mixins.encoder.pos_embed"),
)
_ROPE = "the cross tower's RoPE tables: the remote code saves them; SAT's tower computes them"
IGNORE = tuple(ignore(prefix + f"rope.freqs_{part}", _ROPE)
               for prefix in (_X, _XB + "attn.") for part in ("cos", "sin"))
KEEP = tuple(ignore(prefix + f"rope.freqs_{part}", "computed at construction (one module, registered in every block)")
             for prefix in (_E, _EB + "attn.") for part in ("cos", "sin"))
# fmt: on


def cogagent_spec(ckpt: HFCheckpoint, keys: frozenset[str]) -> Spec:
    """CogVLM's table (with its tied-head variant) plus the rows above."""
    base = cogvlm_spec(ckpt, keys)
    return Spec("hf-cogagent->sat-cogagent", (*base.rules, *RULES), (*base.ignore, *IGNORE), (*base.keep, *KEEP))


def _refuse(ckpt: HFCheckpoint, field: str, what: str) -> HookError:
    return HookError(
        f"{ckpt.path / CONFIG}: {field} asks for {what}, which SAT's {CLASS} does not compute\n"
        f"  hint: SAT's {CLASS} has no such option; loading would give wrong outputs, so it is refused"
    )


def _check_cogvlm_part(ckpt: HFCheckpoint) -> None:
    """CogVLM's refusals, named for CogAgent (cogvlm_args would name CogVLMModel)."""
    vision = ckpt.require("vision_config")
    for key in ("num_hidden_layers", "hidden_size", "num_heads", "intermediate_size", "layer_norm_eps",
                "image_size", "patch_size", "hidden_act"):  # fmt: skip
        if not isinstance(vision, dict) or vision.get(key) is None:
            raise HookError(
                f"{ckpt.path / CONFIG}: field 'vision_config.{key}' is missing (architectures: CogAgentForCausalLM)\n"
                "  hint: the config does not look like one THUDM's CogAgent remote code saved"
            )
    layers = ckpt.require("num_hidden_layers")
    if layers > VISION_EXPERT_LAYERS:
        raise _refuse(ckpt, "num_hidden_layers", f"vision experts in all {layers} layers (SAT's gives them to the "
                                                 f"first {VISION_EXPERT_LAYERS} only)")  # fmt: skip
    if ckpt.get("hidden_act", "silu") != "silu":
        raise _refuse(ckpt, "hidden_act", "an activation other than silu")
    if vision["hidden_act"] != "gelu":
        raise _refuse(ckpt, "vision_config.hidden_act", "a tower activation other than gelu")


def _cross_eva_args(ckpt: HFCheckpoint) -> dict:
    """``cross_eva_args`` from ``cross_vision_config`` (our field); ``{}`` (EVA-02-CLIP-L) without one."""
    cross = ckpt.get("cross_vision_config") or {}
    unknown = sorted(set(cross) - set(CROSS_FIELDS))
    if unknown:
        raise _refuse(ckpt, "cross_vision_config", f"fields {unknown} beyond {sorted(CROSS_FIELDS)}")
    return {CROSS_FIELDS[k]: v for k, v in cross.items()}


def cogagent_args(ckpt: HFCheckpoint) -> dict:
    """SAT `CogAgentModel` args (and the fields CogAgent's SAT scripts read) from a CogAgent ``config.json``."""
    _check_cogvlm_part(ckpt)
    args = cogvlm_args(ckpt)
    heads = args["num_attention_heads"]
    width = ckpt.get("cross_hidden_size", EVA_L_WIDTH)
    compute = ckpt.get("cross_compute_hidden_size", EVA_L_WIDTH)
    cross_eva_args = _cross_eva_args(ckpt)
    tower = cross_eva_args.get("hidden_size", EVA_L_WIDTH)
    if compute != width or compute % heads:
        # The remote code reshapes the context [heads x compute/heads] to cross_hidden_size: only equal widths run.
        raise _refuse(ckpt, "cross_compute_hidden_size", f"a cross-attention width of {compute} with "
                                                         f"cross_hidden_size={width} and {heads} heads")  # fmt: skip
    if tower != width:
        raise _refuse(ckpt, "cross_hidden_size", f"cross-attention keys of width {width} from a {tower}-wide tower")
    args.update(
        is_decoder=True,
        cross_attn_hidden_size=width,
        cross_hidden_size_per_attention_head=compute // heads,
        cross_image_pix=ckpt.get("cross_image_size", 1120),
        cross_eva_args=cross_eva_args,
    )
    args.pop("text_processor_version", None)
    template = ckpt.get("template_version", "chat_old")
    if template in PROMPT_VERSIONS:  # otherwise CogAgent's scripts fall back to their --version
        args["text_processor_version"] = template
    return args


AUTO_MAP = {"AutoConfig": "configuration_cogagent.CogAgentConfig",
            "AutoModelForCausalLM": "modeling_cogagent.CogAgentForCausalLM"}  # fmt: skip


def cogagent_hf_config(model, args, recorded: dict | None) -> HFLayout:
    """`cogagent_args` backwards: CogVLM's config plus the ``cross_*`` fields; the cross tower's RoPE tables, which
    the remote code saves, are written from the SAT tower's (computed the same way at construction)."""
    layout = cogvlm_hf_config(model, args, recorded, architecture="CogAgentForCausalLM", auto_map=AUTO_MAP)
    config = dict(layout.config)
    heads = args.num_attention_heads
    config.update(cross_image_size=args.cross_image_pix, cross_hidden_size=args.cross_attn_hidden_size,
                  cross_compute_hidden_size=args.cross_hidden_size_per_attention_head * heads)  # fmt: skip
    cross = {hf: args.cross_eva_args[sat] for hf, sat in CROSS_FIELDS.items() if sat in (args.cross_eva_args or {})}
    config.pop("cross_vision_config", None)
    if cross:
        config["cross_vision_config"] = cross
    template = getattr(args, "text_processor_version", None)
    if template in PROMPT_VERSIONS:
        config["template_version"] = template
    extra = {_X + f"rope.freqs_{part}": tensor(model, _E + f"rope.freqs_{part}") for part in ("cos", "sin")}
    return HFLayout(config, layout.keys, extra)


FAMILY = Family(
    name="cogagent",
    model_types=("cogagent",),
    architectures=("CogAgentForCausalLM",),
    sat_class="adapters.sat.models.cogagent.CogAgentModel",
    compatible_class_names=(CLASS,),
    args=cogagent_args,
    spec=cogagent_spec,
    hf_config=cogagent_hf_config,
)
