"""What the THUDM ChatGLM families share: the release a ``model_type: chatglm`` config belongs to, the table of the
ChatGLM2/3/GLM-4 remote-code files, their config translation, and the one op the GLM-4 rotary layout needs.

Four releases write ``model_type: "chatglm"`` and one remote-code layout each; SAT has one class per release:

    ChatGLM-6B (v1)   ChatGLMModel    own names, qkv rows per head, 2-D RoPE, post-LN, GELU
    ChatGLM2-6B       ChatGLM2Model   ┐ identical files: ``transformer.encoder.layers.{i}.*``, qkv rows global
    ChatGLM3-6B       ChatGLM3Model   │ ``[Q; K; V]``, RMSNorm, SwiGLU with ``dense_h_to_4h = [gate; up]``,
    GLM-4 (9B)        ChatGLM4Model   ┘ interleaved RoPE on the first half of each head

The three later releases compute the same function except for ``rope_ratio``: ChatGLM2-6B-32k divides positions by
it, ChatGLM3 and GLM-4 multiply the RoPE base by it. Their SAT classes differ in layout only: ChatGLM2/4 compute
``silu(dense_h_to_4h(x)) * w2(x)`` and ChatGLM3 ``silu(w2(x)) * dense_h_to_4h(x)``, so gate and up swap slots;
ChatGLM2/3 rotate interleaved pairs like the files, ChatGLM4 rotates halves, so its q/k rows are permuted.

Which release a config is (`release`), in order:
    1. no ``ffn_hidden_size``: ChatGLM-6B (v1 calls it ``inner_hidden_size``); ``vision_config``: GLM-4V;
    2. ``_name_or_path``, which THUDM's own ``config.json`` files carry (``"THUDM/chatglm3-6b"``), names the line;
    3. ``padded_vocab_size`` 151552 is the GLM-4 tokenizer (ChatGLM2/3 have 65024);
    4. otherwise ChatGLM2 and ChatGLM3 cannot be told apart: with ``rope_ratio`` 1 they compute the same function
       and ChatGLM3 is the default; with another ``rope_ratio`` no default is safe, and the caller names the
       release by calling the SAT class's ``from_hf`` (`find_family` prefers the family of that class).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ...core import BlockPermute, HookError, Op, RotaryPermute, Rule, Spec, Split, ignore, rule
from ...core.ops import OnParts
from ..hf_checkpoint import CONFIG, HFCheckpoint
from ..hf_config import HFLayout, keep, rotary, start
from ..rope import set_rotary_base

__all__ = [
    "GLM4_VOCAB",
    "PER_HEAD_TO_GLOBAL",
    "QKV_SIZES",
    "ROPE_TO_HALF",
    "SAT_MLP_IN",
    "SAT_MLP_W2",
    "config_error",
    "head_dim",
    "refuse_unsupported",
    "release",
    "released_as",
    "rope_ratio",
    "set_rope",
    "thudm_args",
    "thudm_dims",
    "thudm_hf_config",
    "thudm_spec",
]

GLM4_VOCAB = 151552  # the GLM-4 tokenizer; ChatGLM2/3 pad theirs to 65024
_RELEASE_NAMES = (  # substrings of the last part of ``_name_or_path`` → release
    ("chatglm2", "chatglm2"),
    ("codegeex2", "chatglm2"),
    ("chatglm3", "chatglm3"),
    ("codegeex4", "glm4"),
    ("glm-4", "glm4"),
    ("glm4", "glm4"),
)


QKV_SIZES = ("q_dim", "kv_dim", "kv_dim")
# Rows ``[h0: q k v | h1: q k v | ...]`` → SAT's global ``[Q; K; V]`` (ChatGLM-6B, and later releases without MQA).
PER_HEAD_TO_GLOBAL = BlockPermute(0, ("heads", 3, "head_dim"), (1, 0, 2))
# Interleaved (GPT-J) pairs in the first `rotary_dim` channels of each q/k head → SAT ChatGLM4's half-split order.
ROPE_TO_HALF = OnParts(RotaryPermute(0, "head_dim", "rotary_dim", to="half"), parts=(0, 1))

_H, _S = "transformer.encoder.layers.{layer}.", "transformer.layers.{layer}."
# The SwiGLU halves of SAT's ChatGLM2/3/4 (``SwiGLUMixin``): which one is the gate differs by class.
SAT_MLP_IN = _S + "mlp.dense_h_to_4h.weight"
SAT_MLP_W2 = "mixins.mlp.w2.{layer}.weight"


def thudm_rules(*, gate: str, up: str, qkv: tuple[Op, ...], qkv_bias: bool) -> tuple[Rule, ...]:
    """The ChatGLM2/3/GLM-4 remote-code table; `gate`/`up` are the SAT slots of ``dense_h_to_4h = [gate; up]``."""
    # fmt: off
    rules = (
        #    source (THUDM remote code, on disk)                 target (SAT ChatGLM2/3/4Model)                     op
        rule("transformer.embedding.word_embeddings.weight",     "transformer.word_embeddings.weight"),
        rule(_H + "input_layernorm.weight",                       _S + "input_layernorm.weight"),
        rule(_H + "self_attention.query_key_value.weight",        _S + "attention.query_key_value.weight",  *qkv),
        rule(_H + "self_attention.query_key_value.bias",          _S + "attention.query_key_value.bias",    *qkv),
        rule(_H + "self_attention.dense.weight",                  _S + "attention.dense.weight"),
        rule(_H + "post_attention_layernorm.weight",              _S + "post_attention_layernorm.weight"),
        rule(_H + "mlp.dense_h_to_4h.weight",                     [gate, up],                               Split(0, parts=2)),
        rule(_H + "mlp.dense_4h_to_h.weight",                     _S + "mlp.dense_4h_to_h.weight"),
        rule("transformer.encoder.final_layernorm.weight",       "transformer.final_layernorm.weight"),
        rule("transformer.output_layer.weight",                  "mixins.chatglm-final.lm_head.weight"),
    )
    # fmt: on
    return tuple(r for r in rules if qkv_bias or not r.sources[0].text.endswith("query_key_value.bias"))


_IGNORE = (ignore("transformer.rotary_pos_emb.inv_freq", "the files save the RoPE frequencies; SAT recomputes them"),)
_KEEP = (ignore("mixins.attn.rotary_pos_emb.inv_freq", "RoPE frequencies: computed from the config, not loaded"),)


def thudm_spec(ckpt: HFCheckpoint, name: str, *, gate: str, up: str, qkv: tuple[Op, ...] = ()) -> Spec:
    """The spec for ChatGLM2/3/GLM-4 files; a config without ``multi_query_attention`` stores qkv rows per head."""
    if not ckpt.get("multi_query_attention", False):
        qkv = (PER_HEAD_TO_GLOBAL, *qkv)
    rules = thudm_rules(gate=gate, up=up, qkv=qkv, qkv_bias=bool(ckpt.get("add_qkv_bias", False)))
    return Spec(name, rules, _IGNORE, _KEEP)


def release(ckpt: HFCheckpoint) -> str | None:
    """``"chatglm"`` (v1), ``"chatglm2"``, ``"chatglm3"``, ``"glm4"``, ``"glm4v"``, or None when it cannot be told."""
    if "ffn_hidden_size" not in ckpt.config:
        return "chatglm"
    if "vision_config" in ckpt.config:
        return "glm4v"
    name = str(ckpt.get("_name_or_path") or "").rstrip("/").rpartition("/")[2].lower()
    for part, found in _RELEASE_NAMES:
        if part in name:
            return found
    if ckpt.get("padded_vocab_size") == GLM4_VOCAB:
        return "glm4"
    return "chatglm3" if rope_ratio(ckpt) == 1 else None


def released_as(name: str) -> Callable[[HFCheckpoint], bool]:
    """`Family.accepts` for the release `name`."""
    return lambda ckpt: release(ckpt) == name


def rope_ratio(ckpt: HFCheckpoint) -> float:
    return float(ckpt.get("rope_ratio") or 1)


def config_error(ckpt: HFCheckpoint, what: str, hint: str) -> HookError:
    return HookError(f"{ckpt.path / CONFIG}: {what}\n  hint: {hint}")


def refuse_unsupported(ckpt: HFCheckpoint, class_name: str, unsupported: dict[str, tuple[bool, str]]) -> None:
    """Raise for the first config field that asks for something SAT's `class_name` does not compute."""
    for field, (bad, what) in unsupported.items():
        if bad:
            raise config_error(
                ckpt,
                f"{field} asks for {what}, which SAT's {class_name} does not compute",
                f"SAT's {class_name} has no such option; loading would give wrong outputs, so it is refused",
            )


_GENERATIONS = {
    "chatglm": "a ChatGLM-6B (v1) config (no ffn_hidden_size)",
    "glm4v": "a GLM-4V config (vision_config)",
}


def thudm_args(ckpt: HFCheckpoint, class_name: str) -> dict:
    """SAT args of ChatGLM2/3/4Model from a ChatGLM2/3/GLM-4 ``config.json``; refuses what those classes lack."""
    found = release(ckpt)
    if found in _GENERATIONS:
        raise config_error(
            ckpt,
            f"this is {_GENERATIONS[found]}, which SAT's {class_name} cannot hold",
            "call sat.AutoModel.from_hf(...) to pick the class",
        )
    refuse_unsupported(ckpt, class_name, {
        "add_bias_linear": (bool(ckpt.get("add_bias_linear")), "biases on the dense and MLP layers"),
        "rmsnorm": (ckpt.get("rmsnorm", True) is False, "LayerNorm in place of RMSNorm"),
        "apply_residual_connection_post_layernorm": (
            bool(ckpt.get("apply_residual_connection_post_layernorm")), "residuals taken after the layer norm"),
        "post_layer_norm": (ckpt.get("post_layer_norm", True) is False, "no final layer norm"),
        "quantization_bit": (bool(ckpt.get("quantization_bit")), "int4/int8 weights"),
        "pre_seq_len": (ckpt.get("pre_seq_len") is not None, "a P-tuning prefix encoder"),
    })  # fmt: skip
    heads = ckpt.require("num_attention_heads")
    groups = ckpt.require("multi_query_group_num") if ckpt.get("multi_query_attention", False) else heads
    return dict(
        num_layers=ckpt.require("num_layers"),
        vocab_size=ckpt.require("padded_vocab_size"),
        hidden_size=ckpt.require("hidden_size"),
        num_attention_heads=heads,
        num_multi_query_heads=0 if groups == heads else groups,
        hidden_size_per_attention_head=head_dim(ckpt),
        inner_hidden_size=ckpt.require("ffn_hidden_size"),
        max_sequence_length=ckpt.get("seq_length", 2048),
        layernorm_epsilon=ckpt.get("layernorm_epsilon", 1e-5),
        use_bias=False,
        use_qkv_bias=bool(ckpt.get("add_qkv_bias", False)),
        layernorm_order="pre",
        is_gated_mlp=False,  # ChatGLM2/4: keep SAT's SwiGLUMixin layout (``mixins.mlp.w2``), the one SAT ships
    )


def head_dim(ckpt: HFCheckpoint) -> int:
    return int(ckpt.get("kv_channels") or ckpt.require("hidden_size") // ckpt.require("num_attention_heads"))


def thudm_dims(ckpt: HFCheckpoint) -> dict[str, int]:
    """Named sizes of the ChatGLM2/3/GLM-4 rules; the remote code rotates the first half of each head."""
    heads, hd = ckpt.require("num_attention_heads"), head_dim(ckpt)
    groups = ckpt.require("multi_query_group_num") if ckpt.get("multi_query_attention", False) else heads
    return {"heads": heads, "head_dim": hd, "rotary_dim": hd // 2, "q_dim": heads * hd, "kv_dim": groups * hd}


def set_rope(model: nn.Module, ckpt: HFCheckpoint, base: float, rotary_dim: int) -> None:
    """Give the model's rotary embedding `base` and `rotary_dim` (SAT derives its dim from hidden/heads)."""
    if set_rotary_base(model, base, dim=rotary_dim) != 1:
        raise HookError(
            f"{ckpt.path}: {type(model).__name__} has no single FastRotaryEmbedding to set the RoPE base on\n"
            "  hint: the SAT class is not one of the ChatGLM2/3/4 models this mapping targets"
        )


# The remote code of ChatGLM2/3/GLM-4 (``modeling_chatglm.py``): what a config.json names, as THUDM's releases do.
THUDM_AUTO_MAP = {
    "AutoConfig": "configuration_chatglm.ChatGLMConfig",
    "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
    "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
    "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
}
THUDM_REPOS = {"chatglm2": "THUDM/chatglm2-6b", "chatglm3": "THUDM/chatglm3-6b", "glm4": "THUDM/glm-4-9b-chat",
               "glm4v": "THUDM/glm-4v-9b"}  # fmt: skip


def inv_freq(rotary_dim: int) -> torch.Tensor:
    """The ``inv_freq`` buffer THUDM's ``RotaryEmbedding(rotary_dim)`` saves (base 10000, whatever rope_ratio)."""
    return 1.0 / 10000 ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim)


def thudm_hf_config(model: nn.Module, args, recorded: dict | None, release: str) -> HFLayout:
    """`thudm_args` backwards: a ChatGLM2/3/GLM-4 remote-code config.json, and the ``inv_freq`` buffer it saves.

    ``rope_ratio`` is the model's RoPE base over 10000 (ChatGLM2: 1). A config from no release gets the release's
    ``_name_or_path``, which is how `release` tells ChatGLM2 from ChatGLM3 when it is read back.
    """
    heads = args.num_attention_heads
    hd = args.hidden_size_per_attention_head or args.hidden_size // heads
    groups = args.num_multi_query_heads or heads
    config = start(recorded, model_type="chatglm", architectures=["ChatGLMModel"], auto_map=THUDM_AUTO_MAP,
                   _name_or_path=THUDM_REPOS[release], multi_query_attention=True, rmsnorm=True,
                   add_bias_linear=False, post_layer_norm=True, apply_residual_connection_post_layernorm=False,
                   original_rope=True, tie_word_embeddings=False)  # fmt: skip
    config.update(num_layers=args.num_layers, padded_vocab_size=args.vocab_size, hidden_size=args.hidden_size,
                  num_attention_heads=heads, kv_channels=hd, ffn_hidden_size=args.inner_hidden_size,
                  seq_length=args.max_sequence_length, layernorm_epsilon=args.layernorm_epsilon,
                  add_qkv_bias=bool(getattr(args, "use_qkv_bias", False)), multi_query_group_num=groups)  # fmt: skip
    if groups != heads:
        config["multi_query_attention"] = True
    ratio = 1.0 if release == "chatglm2" else rotary(model)[0] / 10000.0
    if ratio != 1 or "rope_ratio" in config:
        config["rope_ratio"] = keep(recorded, "rope_ratio", ratio, lambda v: float(v or 1))
    if "num_hidden_layers" in config:  # glm-4-9b-chat's config.json writes both
        config["num_hidden_layers"] = args.num_layers
    return HFLayout(config, extra={"transformer.rotary_pos_emb.inv_freq": inv_freq(hd // 2)})
