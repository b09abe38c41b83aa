"""HF Mixtral (``MixtralForCausalLM`` files) → SAT `MixtralModel` (gated experts, rotary mixin).

Attention, norms and embeddings are LLaMA's (see `llama`): ``query_key_value = cat([q, k, v])``, no rotary
permutation. The MoE block maps expert by expert, as the files store it (transformers 5 fuses experts only in
memory; `save_pretrained` writes ``block_sparse_moe.experts.{e}.w1/w2/w3``)::

    block_sparse_moe.gate          [E, H]  → mixins.mlp.gates.{layer}           (a plain nn.Linear per layer)
    experts.{e}.w1 (gate)          [I, H]  → mlp.dense_h_to_4h_gate{sfx}
    experts.{e}.w3 (up)            [I, H]  → mlp.dense_h_to_4h{sfx}
    experts.{e}.w2 (down)          [H, I]  → mlp.dense_4h_to_h{sfx}

where SAT's ``transformer.MLP`` names expert 0 without a suffix and expert e ≥ 1 with ``_e``: one rule for expert
0 and one for ``{expert+1}`` (the rest). Routing is the same computation on both sides: softmax over all experts in
float32, top-k, renormalise the k weights to sum 1 (SAT ``MixtralMlpMixin.routing_forward``, HF
``MixtralTopKRouter``). SAT builds its rotary embedding with base 1e6, dim hidden/heads and no frequency scaling;
`finish` installs RoPE as transformers computes it from the config (as for LLaMA: default, linear, llama3, yarn).
"""

from __future__ import annotations

from ...core import Concat, Spec, ignore, rule
from ..family import Family
from ..hf_checkpoint import HFCheckpoint
from ..hf_config import HFLayout, rope_of, tied, write_rope_parameters
from ..rope import Rope, install_rope, read_rope
from .llama import HEAD, TIED, decoder_args, decoder_config, head_dim, llama_dims, refuse_unsupported

_H, _S = "model.layers.{layer}.", "transformer.layers.{layer}."
_E0 = _H + "block_sparse_moe.experts.0."
_EN = _H + "block_sparse_moe.experts.{expert+1}."

# fmt: off
RULES = (
    #    source (HF MixtralForCausalLM, on disk)                  target (SAT MixtralModel)                       op
    rule("model.embed_tokens.weight",                              "transformer.word_embeddings.weight"),
    rule(_H + "input_layernorm.weight",                            _S + "input_layernorm.weight"),
    rule([_H + "self_attn.q_proj.weight",
          _H + "self_attn.k_proj.weight",
          _H + "self_attn.v_proj.weight"],                         _S + "attention.query_key_value.weight",
                                                                   Concat(0, sizes=("q_dim", "kv_dim", "kv_dim"))),
    rule(_H + "self_attn.o_proj.weight",                           _S + "attention.dense.weight"),
    rule(_H + "post_attention_layernorm.weight",                   _S + "post_attention_layernorm.weight"),
    rule(_H + "block_sparse_moe.gate.weight",                      "mixins.mlp.gates.{layer}.weight"),
    rule(_E0 + "w1.weight",                                        _S + "mlp.dense_h_to_4h_gate.weight"),
    rule(_E0 + "w3.weight",                                        _S + "mlp.dense_h_to_4h.weight"),
    rule(_E0 + "w2.weight",                                        _S + "mlp.dense_4h_to_h.weight"),
    rule(_EN + "w1.weight",                                        _S + "mlp.dense_h_to_4h_gate_{expert+1}.weight"),
    rule(_EN + "w3.weight",                                        _S + "mlp.dense_h_to_4h_{expert+1}.weight"),
    rule(_EN + "w2.weight",                                        _S + "mlp.dense_4h_to_h_{expert+1}.weight"),
    rule("model.norm.weight",                                      "transformer.final_layernorm.weight"),
)
IGNORE = (
    ignore(_H + "self_attn.rotary_emb.inv_freq", "old files save the RoPE frequencies; SAT recomputes them"),
)
KEEP = (
    ignore("mixins.rotary.rotary_emb.inv_freq", "RoPE frequencies: computed from the config, not loaded"),
)
# fmt: on


def mixtral_spec(ckpt: HFCheckpoint, keys: frozenset[str]) -> Spec:
    """The rules, with the embedding copied into the head when the file has no ``lm_head.weight``."""
    name = "hf-mixtral->sat-mixtral"
    if "lm_head.weight" in keys:
        return Spec(name, (*RULES, HEAD), IGNORE, KEEP)
    rules = tuple(r for r in RULES if r.sources[0].text != "model.embed_tokens.weight")
    return Spec(name, (TIED, *rules), IGNORE, KEEP)


def mixtral_args(ckpt: HFCheckpoint) -> dict:
    """SAT `MixtralModel` args from a ``MixtralConfig``; refuses what SAT's Mixtral cannot compute."""
    window = ckpt.get("sliding_window")
    refuse_unsupported(ckpt, {
        "hidden_act": (ckpt.get("hidden_act", "silu") != "silu", "an activation other than silu"),
        "sliding_window": (window is not None, f"attention limited to the last {window} tokens"),
    }, "MixtralModel")  # fmt: skip
    mixtral_rope(ckpt.config, ckpt.path)
    return decoder_args(ckpt, max_length=4096, eps=1e-5) | {
        "num_experts": ckpt.require("num_local_experts"),
        "num_experts_per_tok": ckpt.require("num_experts_per_tok"),
    }


def mixtral_rope(config: dict, path) -> Rope:
    """RoPE as ``MixtralConfig`` standardises it: its defaults are base 1e6 (SAT's too) and 4096 × 32 positions."""
    return read_rope(config, path, "MixtralModel", default_theta=1e6, max_positions=4096 * 32)


def mixtral_finish(model, ckpt: HFCheckpoint) -> None:
    install_rope(model, mixtral_rope(ckpt.config, ckpt.path), dim=head_dim(ckpt))


def mixtral_hf_config(model, args, recorded: dict | None) -> HFLayout:
    """`mixtral_args` backwards: a ``MixtralConfig`` (full attention) with the model's RoPE."""
    is_tied = tied(model, "transformer.word_embeddings.weight", "mixins.lm.lm_head.weight", recorded, default=False)
    config = decoder_config(args, recorded, model_type="mixtral", architecture="MixtralForCausalLM")
    config.update(num_local_experts=args.num_experts, num_experts_per_tok=args.num_experts_per_tok,
                  sliding_window=None, tie_word_embeddings=is_tied)  # fmt: skip
    write_rope_parameters(config, rope_of(model), lambda c: mixtral_rope(c, "."))
    return HFLayout(config, frozenset() if is_tied else frozenset({"lm_head.weight"}))


FAMILY = Family(
    name="mixtral",
    model_types=("mixtral",),
    sat_class="sat.model.official.mixtral_model.MixtralModel",
    args=mixtral_args,
    spec=mixtral_spec,
    dims=llama_dims,
    finish=mixtral_finish,
    hf_config=mixtral_hf_config,
)
