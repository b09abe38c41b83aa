"""HF LLaMA (``LlamaForCausalLM`` files, MHA and GQA, any rope θ) → SAT `LLaMAModel` (gated MLP, rotary layout).

SAT keeps q, k and v in one ``query_key_value`` whose rows are ``[Q (heads·head_dim); K (kv_heads·head_dim);
V (kv_heads·head_dim)]``, both ``[out, in]`` like HF's ``nn.Linear``. HF's q/k rows are already in the NeoX
(rotate-half) order SAT's `FastRotaryEmbedding` uses, so there is no permutation. SAT's gated MLP computes
``silu(dense_h_to_4h_gate(x)) * dense_h_to_4h(x)``: gate → ``dense_h_to_4h_gate``, up → ``dense_h_to_4h``.
SAT's rope base is fixed at 10000, its rotary dim at hidden/heads and its frequencies unscaled; `finish` installs
RoPE as transformers computes it from the config (`rope.read_rope`: default, linear, llama3, yarn).
"""

from __future__ import annotations

from ...core import Concat, HookError, Spec, ignore, rule
from ...core.ops import Duplicate
from ..family import Family
from ..hf_checkpoint import HFCheckpoint
from ..hf_config import HFLayout, first, keep, rope_of, start, tied, write_rope_parameters
from ..rope import Rope, install_rope, read_rope

_H, _S = "model.layers.{layer}.", "transformer.layers.{layer}."

# fmt: off
RULES = (
    #    source (HF LlamaForCausalLM, on disk)                    target (SAT LLaMAModel)                         op
    rule("model.embed_tokens.weight",                              "transformer.word_embeddings.weight"),
    rule(_H + "input_layernorm.weight",                            _S + "input_layernorm.weight"),
    rule([_H + "self_attn.q_proj.weight",
          _H + "self_attn.k_proj.weight",
          _H + "self_attn.v_proj.weight"],                         _S + "attention.query_key_value.weight",
                                                                   Concat(0, sizes=("q_dim", "kv_dim", "kv_dim"))),
    rule(_H + "self_attn.o_proj.weight",                           _S + "attention.dense.weight"),
    rule(_H + "post_attention_layernorm.weight",                   _S + "post_attention_layernorm.weight"),
    rule(_H + "mlp.gate_proj.weight",                              _S + "mlp.dense_h_to_4h_gate.weight"),
    rule(_H + "mlp.up_proj.weight",                                _S + "mlp.dense_h_to_4h.weight"),
    rule(_H + "mlp.down_proj.weight",                              _S + "mlp.dense_4h_to_h.weight"),
    rule("model.norm.weight",                                      "transformer.final_layernorm.weight"),
)
HEAD = rule("lm_head.weight",                                      "mixins.lm.lm_head.weight")
# A tied checkpoint stores the embedding once; SAT's lm_head is its own parameter and gets a copy.
TIED = rule("model.embed_tokens.weight",                          ["transformer.word_embeddings.weight",
                                                                    "mixins.lm.lm_head.weight"], Duplicate(2))
IGNORE = (
    ignore(_H + "self_attn.rotary_emb.inv_freq", "old files save the RoPE frequencies; SAT recomputes them"),
)
KEEP = (
    ignore("transformer.position_embeddings.inv_freq", "RoPE frequencies: computed from the config, not loaded"),
)
# fmt: on


def llama_spec(ckpt: HFCheckpoint, keys: frozenset[str], name: str = "hf-llama->sat-llama") -> Spec:
    """The rules, with the embedding copied into the head when the file has no ``lm_head.weight``."""
    if "lm_head.weight" in keys:
        return Spec(name, (*RULES, HEAD), IGNORE, KEEP)
    rules = tuple(r for r in RULES if r.sources[0].text != "model.embed_tokens.weight")
    return Spec(name, (TIED, *rules), IGNORE, KEEP)


def head_dim(ckpt: HFCheckpoint) -> int:
    heads = ckpt.require("num_attention_heads")
    return int(ckpt.get("head_dim") or ckpt.require("hidden_size") // heads)


def llama_dims(ckpt: HFCheckpoint) -> dict[str, int]:
    heads = ckpt.require("num_attention_heads")
    kv_heads = ckpt.get("num_key_value_heads") or heads
    return {"q_dim": heads * head_dim(ckpt), "kv_dim": kv_heads * head_dim(ckpt)}


def refuse_unsupported(ckpt: HFCheckpoint, unsupported: dict[str, tuple[bool, str]], sat_class: str) -> None:
    """Raise for the first config field whose check is true: ``field -> (bad, what it asks for)``."""
    for field, (bad, what) in unsupported.items():
        if bad:
            raise HookError(
                f"{ckpt.path / 'config.json'}: {field} asks for {what}, which SAT's {sat_class} does not compute\n"
                f"  hint: SAT's {sat_class} has no such option; loading would give wrong outputs, so it is refused"
            )


def decoder_args(ckpt: HFCheckpoint, *, max_length: int, eps: float) -> dict:
    """The SAT args every HF LLaMA-style decoder config translates the same way (defaults: the family's own)."""
    heads = ckpt.require("num_attention_heads")
    kv_heads = ckpt.get("num_key_value_heads") or heads
    return {
        "num_layers": ckpt.require("num_hidden_layers"),
        "vocab_size": ckpt.require("vocab_size"),
        "hidden_size": ckpt.require("hidden_size"),
        "num_attention_heads": heads,
        "num_multi_query_heads": 0 if kv_heads == heads else kv_heads,
        "hidden_size_per_attention_head": head_dim(ckpt),
        "inner_hidden_size": ckpt.require("intermediate_size"),
        "max_sequence_length": ckpt.get("max_position_embeddings", max_length),
        "layernorm_epsilon": ckpt.get("rms_norm_eps", eps),
        "use_bias": False,
        "layernorm_order": "pre",
        "is_gated_mlp": True,
        "bos_token_id": ckpt.get("bos_token_id") if ckpt.get("bos_token_id") is not None else 1,
        "eos_token_id": _first(ckpt.get("eos_token_id"), 2),
    }


def llama_args(ckpt: HFCheckpoint) -> dict:
    """SAT `LLaMAModel` args from a ``LlamaConfig``; refuses what SAT's LLaMA cannot compute."""
    refuse_unsupported(ckpt, {
        "hidden_act": (ckpt.get("hidden_act", "silu") != "silu", "an activation other than silu"),
        "attention_bias": (bool(ckpt.get("attention_bias")), "q/k/v/o biases"),
        "mlp_bias": (bool(ckpt.get("mlp_bias")), "MLP biases"),
    }, "LLaMAModel")  # fmt: skip
    llama_rope(ckpt.config, ckpt.path)
    pad = ckpt.get("pad_token_id")
    return decoder_args(ckpt, max_length=2048, eps=1e-6) | {
        "is_rotary_emb": True,
        "pad_token_id": pad if pad is not None else -1,
    }


def _first(value, default):
    if isinstance(value, list):
        return value[0] if value else default
    return default if value is None else value


def llama_rope(config: dict, path, sat_class: str = "LLaMAModel") -> Rope:
    """RoPE as ``LlamaConfig`` standardises it (default base 1e4, 2048 positions); refuses what SAT cannot compute."""
    return read_rope(config, path, sat_class, default_theta=10000.0, max_positions=2048)


def llama_finish(model, ckpt: HFCheckpoint) -> None:
    install_rope(model, llama_rope(ckpt.config, ckpt.path), dim=head_dim(ckpt))


def decoder_config(args, recorded: dict | None, *, model_type: str, architecture: str) -> dict:
    """`decoder_args` backwards: the HF fields every LLaMA-style decoder config shares, recorded fields kept."""
    heads = args.num_attention_heads
    config = start(recorded, model_type=model_type, architectures=[architecture])
    config.update(
        num_hidden_layers=args.num_layers,
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_attention_heads=heads,
        num_key_value_heads=args.num_multi_query_heads or heads,
        head_dim=args.hidden_size_per_attention_head or args.hidden_size // heads,
        intermediate_size=args.inner_hidden_size,
        max_position_embeddings=args.max_sequence_length,
        rms_norm_eps=args.layernorm_epsilon,
        hidden_act="silu",
    )
    for name in ("bos_token_id", "eos_token_id"):
        if getattr(args, name, None) is not None:
            config[name] = keep(recorded, name, getattr(args, name), first)
    return config


def llama_hf_config(model, args, recorded: dict | None) -> HFLayout:
    """`llama_args` backwards: a ``LlamaConfig`` with the model's RoPE; the head tied only where it was."""
    is_tied = tied(model, "transformer.word_embeddings.weight", "mixins.lm.lm_head.weight", recorded, default=False)
    config = decoder_config(args, recorded, model_type="llama", architecture="LlamaForCausalLM")
    pad = getattr(args, "pad_token_id", -1)
    config.update(attention_bias=False, mlp_bias=False, tie_word_embeddings=is_tied,
                  pad_token_id=None if pad is None or pad < 0 else pad)  # fmt: skip
    write_rope_parameters(config, rope_of(model), lambda c: llama_rope(c, "."))
    return HFLayout(config, frozenset() if is_tied else frozenset({"lm_head.weight"}))


FAMILY = Family(
    name="llama",
    model_types=("llama",),
    sat_class="sat.model.official.llama_model.LLaMAModel",
    args=llama_args,
    spec=llama_spec,
    dims=llama_dims,
    finish=llama_finish,
    hf_config=llama_hf_config,
)
