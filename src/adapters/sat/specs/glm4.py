"""GLM-4 → SAT `ChatGLM4Model`, from two file layouts:

* THUDM remote code (``glm-4-9b``, ``glm-4-9b-chat``; ``model_type: chatglm``): ChatGLM2's names and table
  (see `.chatglm2`), base = ``10000 * rope_ratio`` (``glm-4-9b-chat``: 500, so 5e6);
* transformers' native `GlmForCausalLM` (``glm-4-9b-chat-hf``; ``model_type: glm``): separate q/k/v with bias,
  ``mlp.gate_up_proj = [gate; up]``, base = ``rope_theta``, rotary width = ``head_dim * partial_rotary_factor``.

Both rotate interleaved (GPT-J) pairs in the first `rotary_dim` channels of each head; SAT's ChatGLM4 rotates
half-split (GPT-NeoX) pairs. So the q and k rows, weight and bias, are permuted per head from
``[x0 y0 x1 y1 ... | pass]`` to ``[x0 x1 ... y0 y1 ... | pass]``; v rows keep their order. SAT's ChatGLM4
computes ``silu(dense_h_to_4h(x)) * w2(x)``: gate → ``dense_h_to_4h``, up → ``mixins.mlp.w2.{layer}``. SAT hard-codes
base 10000 and a rotary width of hidden/heads/2; `finish` sets both from the config.
"""

from __future__ import annotations

from ...core import Concat, Spec, Split, ignore, rule
from ...core.ops import Duplicate
from ..family import Family
from ..hf_checkpoint import HFCheckpoint
from ..hf_config import HFLayout, rotary, start, tied, write_rope
from ._glm import (
    QKV_SIZES,
    ROPE_TO_HALF,
    SAT_MLP_IN,
    SAT_MLP_W2,
    refuse_unsupported,
    released_as,
    rope_ratio,
    set_rope,
    thudm_args,
    thudm_dims,
    thudm_hf_config,
    thudm_spec,
)
from .chatglm3 import require_base_scaling

CLASS = "ChatGLM4Model"
SAT_CLASS = "sat.model.official.chatglm4_model.ChatGLM4Model"

# The fused qkv rows are cut into [Q; K; V], the rotary permutation runs on Q and K, and the parts are joined again.
THUDM_QKV = (Split(0, sizes=QKV_SIZES), ROPE_TO_HALF, Concat(0, sizes=QKV_SIZES))


def glm4_spec(ckpt: HFCheckpoint, keys: frozenset[str]) -> Spec:
    return thudm_spec(ckpt, "hf-glm4->sat-chatglm4", gate=SAT_MLP_IN, up=SAT_MLP_W2, qkv=THUDM_QKV)


def glm4_args(ckpt: HFCheckpoint) -> dict:
    args = thudm_args(ckpt, CLASS)
    require_base_scaling(ckpt, CLASS)
    return args


def glm4_finish(model, ckpt: HFCheckpoint) -> None:
    set_rope(model, ckpt, 10000.0 * rope_ratio(ckpt), thudm_dims(ckpt)["rotary_dim"])


def glm4_hf_config(model, args, recorded: dict | None):
    return thudm_hf_config(model, args, recorded, "glm4")


FAMILY = Family(
    name="glm4",
    model_types=("chatglm",),
    sat_class=SAT_CLASS,
    args=glm4_args,
    spec=glm4_spec,
    dims=thudm_dims,
    accepts=released_as("glm4"),
    finish=glm4_finish,
    hf_config=glm4_hf_config,
)


_H, _S = "model.layers.{layer}.", "transformer.layers.{layer}."

# fmt: off
HF_RULES = (
    #    source (transformers GlmForCausalLM, on disk)          target (SAT ChatGLM4Model)                     op
    rule("model.embed_tokens.weight",                           "transformer.word_embeddings.weight"),
    rule(_H + "input_layernorm.weight",                         _S + "input_layernorm.weight"),
    rule([_H + "self_attn.q_proj.weight",
          _H + "self_attn.k_proj.weight",
          _H + "self_attn.v_proj.weight"],                      _S + "attention.query_key_value.weight",
                                                                ROPE_TO_HALF, Concat(0, sizes=QKV_SIZES)),
    rule([_H + "self_attn.q_proj.bias",
          _H + "self_attn.k_proj.bias",
          _H + "self_attn.v_proj.bias"],                        _S + "attention.query_key_value.bias",
                                                                ROPE_TO_HALF, Concat(0, sizes=QKV_SIZES)),
    rule(_H + "self_attn.o_proj.weight",                        _S + "attention.dense.weight"),
    rule(_H + "post_attention_layernorm.weight",                _S + "post_attention_layernorm.weight"),
    rule(_H + "mlp.gate_up_proj.weight",                        [SAT_MLP_IN, SAT_MLP_W2],                      Split(0, parts=2)),
    rule(_H + "mlp.down_proj.weight",                           _S + "mlp.dense_4h_to_h.weight"),
    rule("model.norm.weight",                                   "transformer.final_layernorm.weight"),
)
HF_HEAD = rule("lm_head.weight",                                "mixins.chatglm-final.lm_head.weight")
# A tied checkpoint stores the embedding once; SAT's lm_head is its own parameter and gets a copy.
HF_TIED = rule("model.embed_tokens.weight",                     ["transformer.word_embeddings.weight",
                                                                 "mixins.chatglm-final.lm_head.weight"], Duplicate(2))
HF_KEEP = (
    ignore("mixins.attn.rotary_pos_emb.inv_freq", "RoPE frequencies: computed from the config, not loaded"),
)
# fmt: on


def glm_hf_spec(ckpt: HFCheckpoint, keys: frozenset[str]) -> Spec:
    """The rules; without ``attention_bias`` there are no q/k/v biases, without ``lm_head.weight`` the head is tied."""
    biased = ckpt.get("attention_bias", True)
    rules = tuple(r for r in HF_RULES if biased or not r.sources[0].text.endswith("q_proj.bias"))
    if "lm_head.weight" in keys:
        return Spec("hf-glm->sat-chatglm4", (*rules, HF_HEAD), (), HF_KEEP)
    rules = tuple(r for r in rules if r.sources[0].text != "model.embed_tokens.weight")
    return Spec("hf-glm->sat-chatglm4", (HF_TIED, *rules), (), HF_KEEP)


def _hf_head_dim(ckpt: HFCheckpoint) -> int:
    return int(ckpt.get("head_dim") or ckpt.require("hidden_size") // ckpt.require("num_attention_heads"))


def _hf_rotary_dim(ckpt: HFCheckpoint) -> int:
    params = ckpt.get("rope_parameters") or {}
    factor = params.get("partial_rotary_factor", ckpt.get("partial_rotary_factor", 0.5))
    return int(_hf_head_dim(ckpt) * factor)


def glm_hf_dims(ckpt: HFCheckpoint) -> dict[str, int]:
    heads, hd = ckpt.require("num_attention_heads"), _hf_head_dim(ckpt)
    kv_heads = ckpt.get("num_key_value_heads") or heads
    return {"head_dim": hd, "rotary_dim": _hf_rotary_dim(ckpt), "q_dim": heads * hd, "kv_dim": kv_heads * hd}


def glm_hf_args(ckpt: HFCheckpoint) -> dict:
    """SAT `ChatGLM4Model` args from a ``GlmConfig``; refuses what SAT's ChatGLM4 cannot compute."""
    rotary_dim = _hf_rotary_dim(ckpt)
    refuse_unsupported(ckpt, CLASS, {
        "hidden_act": (ckpt.get("hidden_act", "silu") != "silu", "an activation other than silu"),
        "rope_parameters": (ckpt.rope_type() != "default", f"rope type {ckpt.rope_type()!r} (scaled RoPE)"),
        "partial_rotary_factor": (rotary_dim <= 0 or rotary_dim % 2 != 0,
                                  f"a rotary width of {rotary_dim} channels (SAT rotates an even number)"),
    })  # fmt: skip
    heads = ckpt.require("num_attention_heads")
    kv_heads = ckpt.get("num_key_value_heads") or heads
    return dict(
        num_layers=ckpt.require("num_hidden_layers"),
        vocab_size=ckpt.require("vocab_size"),
        hidden_size=ckpt.require("hidden_size"),
        num_attention_heads=heads,
        num_multi_query_heads=0 if kv_heads == heads else kv_heads,
        hidden_size_per_attention_head=_hf_head_dim(ckpt),
        inner_hidden_size=ckpt.require("intermediate_size"),
        max_sequence_length=ckpt.get("max_position_embeddings", 2048),
        layernorm_epsilon=ckpt.get("rms_norm_eps", 1e-6),
        use_bias=False,
        use_qkv_bias=bool(ckpt.get("attention_bias", True)),
        layernorm_order="pre",
        is_gated_mlp=False,
    )


def glm_hf_finish(model, ckpt: HFCheckpoint) -> None:
    set_rope(model, ckpt, ckpt.rope_theta(), _hf_rotary_dim(ckpt))


def glm_hf_config(model, args, recorded: dict | None) -> HFLayout:
    """`glm_hf_args` backwards: a ``GlmConfig`` with the model's RoPE base and rotary width."""
    base, rotary_dim = rotary(model)
    heads = args.num_attention_heads
    hd = args.hidden_size_per_attention_head or args.hidden_size // heads
    is_tied = tied(model, "transformer.word_embeddings.weight", "mixins.chatglm-final.lm_head.weight", recorded, False)
    config = start(recorded, model_type="glm", architectures=["GlmForCausalLM"], hidden_act="silu", pad_token_id=None)
    config.update(num_hidden_layers=args.num_layers, vocab_size=args.vocab_size, hidden_size=args.hidden_size,
                  num_attention_heads=heads, num_key_value_heads=args.num_multi_query_heads or heads, head_dim=hd,
                  intermediate_size=args.inner_hidden_size, max_position_embeddings=args.max_sequence_length,
                  rms_norm_eps=args.layernorm_epsilon, attention_bias=bool(getattr(args, "use_qkv_bias", False)),
                  tie_word_embeddings=is_tied)  # fmt: skip
    config.pop("partial_rotary_factor", None)
    write_rope(config, base, partial_rotary_factor=rotary_dim / hd)
    return HFLayout(config, frozenset() if is_tied else frozenset({"lm_head.weight"}))


HF_FAMILY = Family(
    name="glm",
    model_types=("glm",),
    sat_class=SAT_CLASS,
    args=glm_hf_args,
    spec=glm_hf_spec,
    dims=glm_hf_dims,
    finish=glm_hf_finish,
    hf_config=glm_hf_config,
)
