"""THUDM ChatGLM-6B (v1) remote-code files (``model_type: chatglm``) → SAT `ChatGLMModel`.

Names match one to one; the qkv layout does not. The files cut ``query_key_value`` per head, rows
``[h0: q k v | h1: q k v | ...]``, while SAT splits it globally, ``[Q (all heads); K; V]``; weight and bias rows
are reordered. Both sides use post-LN with ``alpha = sqrt(2 * num_layers)``, GELU (tanh form) and 2-D RoPE over
halves of each head (positions, block positions) with base 10000. The head is ``lm_head.weight``, tied to the
embedding in the released files; a file that stores only the embedding gets a copy in SAT's head.
"""

from __future__ import annotations

from ...core import Spec, ignore, rule
from ...core.ops import Duplicate
from ..family import Family
from ..hf_checkpoint import HFCheckpoint
from ..hf_config import HFLayout, keep, start
from ._glm import PER_HEAD_TO_GLOBAL, config_error, inv_freq, refuse_unsupported, release, released_as

CLASS = "ChatGLMModel"
_L = "transformer.layers.{layer}."

# fmt: off
RULES = (
    #    source (THUDM chatglm-6b, on disk)              target (SAT ChatGLMModel)                     op
    rule("transformer.word_embeddings.weight",           "transformer.word_embeddings.weight"),
    rule(_L + "input_layernorm.weight",                  _L + "input_layernorm.weight"),
    rule(_L + "input_layernorm.bias",                    _L + "input_layernorm.bias"),
    rule(_L + "attention.query_key_value.weight",        _L + "attention.query_key_value.weight",   PER_HEAD_TO_GLOBAL),
    rule(_L + "attention.query_key_value.bias",          _L + "attention.query_key_value.bias",     PER_HEAD_TO_GLOBAL),
    rule(_L + "attention.dense.weight",                  _L + "attention.dense.weight"),
    rule(_L + "attention.dense.bias",                    _L + "attention.dense.bias"),
    rule(_L + "post_attention_layernorm.weight",         _L + "post_attention_layernorm.weight"),
    rule(_L + "post_attention_layernorm.bias",           _L + "post_attention_layernorm.bias"),
    rule(_L + "mlp.dense_h_to_4h.weight",                _L + "mlp.dense_h_to_4h.weight"),
    rule(_L + "mlp.dense_h_to_4h.bias",                  _L + "mlp.dense_h_to_4h.bias"),
    rule(_L + "mlp.dense_4h_to_h.weight",                _L + "mlp.dense_4h_to_h.weight"),
    rule(_L + "mlp.dense_4h_to_h.bias",                  _L + "mlp.dense_4h_to_h.bias"),
    rule("transformer.final_layernorm.weight",           "transformer.final_layernorm.weight"),
    rule("transformer.final_layernorm.bias",             "transformer.final_layernorm.bias"),
)
HEAD = rule("lm_head.weight",                            "mixins.chatglm-final.lm_head.weight")
TIED = rule("transformer.word_embeddings.weight",        ["transformer.word_embeddings.weight",
                                                          "mixins.chatglm-final.lm_head.weight"],  Duplicate(2))
IGNORE = (
    ignore(_L + "attention.rotary_emb.inv_freq", "the files save the RoPE frequencies; SAT recomputes them"),
)
KEEP = (
    ignore("mixins.chatglm-attn.rotary_emb.inv_freq", "RoPE frequencies: computed by SAT, never loaded"),
)
# fmt: on


def chatglm_spec(ckpt: HFCheckpoint, keys: frozenset[str]) -> Spec:
    if "lm_head.weight" in keys:
        return Spec("hf-chatglm->sat-chatglm", (*RULES, HEAD), IGNORE, KEEP)
    rules = tuple(r for r in RULES if r.sources[0].text != "transformer.word_embeddings.weight")
    return Spec("hf-chatglm->sat-chatglm", (TIED, *rules), IGNORE, KEEP)


def chatglm_dims(ckpt: HFCheckpoint) -> dict[str, int]:
    heads = ckpt.require("num_attention_heads")
    return {"heads": heads, "head_dim": ckpt.require("hidden_size") // heads}


def chatglm_args(ckpt: HFCheckpoint) -> dict:
    """SAT `ChatGLMModel` args from a ChatGLM-6B ``config.json``; refuses what SAT's ChatGLM cannot compute."""
    if release(ckpt) != "chatglm":
        raise config_error(
            ckpt,
            f"this is a ChatGLM2/ChatGLM3/GLM-4 config (ffn_hidden_size), which SAT's {CLASS} (ChatGLM-6B v1) cannot hold",
            "call sat.AutoModel.from_hf(...) to pick the class",
        )
    refuse_unsupported(ckpt, CLASS, {
        "position_encoding_2d": (ckpt.get("position_encoding_2d", True) is False, "1-D rotary positions"),
        "quantization_bit": (bool(ckpt.get("quantization_bit")), "int4/int8 weights"),
        "pre_seq_len": (ckpt.get("pre_seq_len") is not None, "a P-tuning prefix encoder"),
    })  # fmt: skip
    hidden = ckpt.require("hidden_size")
    return dict(
        num_layers=ckpt.require("num_layers"),
        vocab_size=ckpt.require("vocab_size"),
        hidden_size=hidden,
        num_attention_heads=ckpt.require("num_attention_heads"),
        inner_hidden_size=ckpt.get("inner_hidden_size") or 4 * hidden,
        max_sequence_length=ckpt.get("max_sequence_length", 2048),
        layernorm_epsilon=ckpt.get("layernorm_epsilon", 1e-5),
        layernorm_order="post",
        use_bias=True,
        bos_token_id=ckpt.get("bos_token_id", 130004),
        mask_token_id=ckpt.get("mask_token_id", 130000),
        gmask_token_id=ckpt.get("gmask_token_id", 130001),
        pad_token_id=ckpt.get("pad_token_id", 3),
    )


AUTO_MAP = {
    "AutoConfig": "configuration_chatglm.ChatGLMConfig",
    "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
    "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
}
_IDS = {"bos_token_id": 130004, "mask_token_id": 130000, "gmask_token_id": 130001, "pad_token_id": 3}


def chatglm_hf_config(model, args, recorded: dict | None) -> HFLayout:
    """`chatglm_args` backwards: chatglm-6b's config.json; the head stored as the release stores it, and the
    per-layer ``inv_freq`` the remote code saves (2-D RoPE: a quarter of each head per position kind)."""
    config = start(recorded, model_type="chatglm", architectures=["ChatGLMModel"], auto_map=AUTO_MAP,
                   _name_or_path="THUDM/chatglm-6b", position_encoding_2d=True)  # fmt: skip
    config.update(num_layers=args.num_layers, vocab_size=args.vocab_size, hidden_size=args.hidden_size,
                  num_attention_heads=args.num_attention_heads, inner_hidden_size=args.inner_hidden_size,
                  max_sequence_length=args.max_sequence_length, layernorm_epsilon=args.layernorm_epsilon)  # fmt: skip
    for name, default in _IDS.items():
        value = getattr(args, name, None)
        config[name] = keep(recorded, name, default if value is None else value)
    freq = inv_freq(args.hidden_size // args.num_attention_heads // 2)
    extra = {f"transformer.layers.{i}.attention.rotary_emb.inv_freq": freq.clone() for i in range(args.num_layers)}
    return HFLayout(config, frozenset({"lm_head.weight"}), extra)


FAMILY = Family(
    name="chatglm",
    model_types=("chatglm",),
    sat_class="sat.model.official.chatglm_model.ChatGLMModel",
    args=chatglm_args,
    spec=chatglm_spec,
    dims=chatglm_dims,
    accepts=released_as("chatglm"),
    hf_config=chatglm_hf_config,
)
