"""HF GPT-2 (``GPT2LMHeadModel``/``GPT2Model`` files, with or without the ``transformer.`` prefix) → SAT `GPT2Model`.

HF GPT-2 builds its linear layers from `Conv1D`, whose weight is ``[in, out]``; SAT's are ``nn.Linear``, ``[out,
in]``, so every matrix is transposed and biases are copied. ``c_attn``'s output columns are already ``[Q; K; V]``
(H each, heads contiguous), which is the row order of SAT's ``query_key_value`` after the transpose. Pre-LN: the
norms map one to one. GPT-2 ties its head to ``wte`` and files rarely store ``lm_head.weight``; SAT's
``gpt2-final`` head is its own parameter and gets a copy. Files that ``GPT2Model`` wrote (and the original
``openai-community/gpt2``) have no prefix and may hold the causal-mask buffers ``h.{i}.attn.bias``/``masked_bias``.
SAT's activation is transformers' own ``gelu_new``.
"""

from __future__ import annotations

from ...core import HookError, Ignore, Rule, Spec, Transpose, ignore, rule
from ...core.ops import Duplicate
from ..family import Family
from ..hf_checkpoint import HFCheckpoint
from ..hf_config import HFLayout, start, tied

PREFIX = "transformer."
# gelu_pytorch_tanh is gelu_new's formula computed by torch's kernel; the two differ by rounding only.
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")


def gpt2_rules(p: str) -> tuple[Rule, ...]:
    """The table for sources under prefix `p` (``"transformer."`` or ``""``)."""
    H, S = p + "h.{layer}.", "transformer.layers.{layer}."
    # fmt: off
    return (
        #    source (HF GPT-2, on disk)        target (SAT GPT2Model)                       op
        rule(p + "wpe.weight",                 "transformer.position_embeddings.weight"),
        rule(H + "ln_1.weight",                S + "input_layernorm.weight"),
        rule(H + "ln_1.bias",                  S + "input_layernorm.bias"),
        rule(H + "attn.c_attn.weight",         S + "attention.query_key_value.weight",    Transpose()),
        rule(H + "attn.c_attn.bias",           S + "attention.query_key_value.bias"),
        rule(H + "attn.c_proj.weight",         S + "attention.dense.weight",              Transpose()),
        rule(H + "attn.c_proj.bias",           S + "attention.dense.bias"),
        rule(H + "ln_2.weight",                S + "post_attention_layernorm.weight"),
        rule(H + "ln_2.bias",                  S + "post_attention_layernorm.bias"),
        rule(H + "mlp.c_fc.weight",            S + "mlp.dense_h_to_4h.weight",            Transpose()),
        rule(H + "mlp.c_fc.bias",              S + "mlp.dense_h_to_4h.bias"),
        rule(H + "mlp.c_proj.weight",          S + "mlp.dense_4h_to_h.weight",            Transpose()),
        rule(H + "mlp.c_proj.bias",            S + "mlp.dense_4h_to_h.bias"),
        rule(p + "ln_f.weight",                "transformer.final_layernorm.weight"),
        rule(p + "ln_f.bias",                  "transformer.final_layernorm.bias"),
    )
    # fmt: on


def gpt2_ignore(p: str) -> tuple[Ignore, ...]:
    # fmt: off
    return (
        ignore(p + "h.{layer}.attn.bias",        "the causal mask: a buffer older transformers saved; SAT takes masks as input"),
        ignore(p + "h.{layer}.attn.masked_bias", "the masking constant: a buffer older transformers saved"),
    )
    # fmt: on


def gpt2_spec(ckpt: HFCheckpoint, keys: frozenset[str], name: str = "hf-gpt2->sat-gpt2") -> Spec:
    """The rules for this file's prefix, with ``wte`` copied into the head when the file has no ``lm_head.weight``."""
    p = PREFIX if any(k.startswith(PREFIX) for k in keys) else ""
    wte, word, head = p + "wte.weight", "transformer.word_embeddings.weight", "mixins.gpt2-final.lm_head.weight"
    if "lm_head.weight" in keys:
        embeddings = (rule(wte, word), rule("lm_head.weight", head))
    elif ckpt.get("tie_word_embeddings", True):
        # A tied checkpoint stores the embedding once; SAT's head is its own parameter and gets a copy.
        embeddings = (rule(wte, [word, head], Duplicate(2)),)
    else:
        raise HookError(
            f"{ckpt.path}: lm_head.weight is not in the checkpoint and tie_word_embeddings is false, so "
            "GPT2Model's head has no source\n"
            "  hint: from_hf never initialises a head at random; save the model with its head (GPT2LMHeadModel)"
        )
    return Spec(name, (*embeddings, *gpt2_rules(p)), gpt2_ignore(p))


def gpt2_args(ckpt: HFCheckpoint) -> dict:
    """SAT `GPT2Model` args from a ``GPT2Config``; refuses what SAT's GPT-2 cannot compute."""
    act = ckpt.get("activation_function", "gelu_new")
    unsupported = {
        "activation_function": (act not in ACTIVATIONS, f"the activation {act!r} (SAT's is gelu_new)"),
        "scale_attn_weights": (ckpt.get("scale_attn_weights", True) is False, "unscaled attention scores"),
        "scale_attn_by_inverse_layer_idx": (
            bool(ckpt.get("scale_attn_by_inverse_layer_idx")),
            "scores scaled by 1/(layer+1)",
        ),
        "add_cross_attention": (bool(ckpt.get("add_cross_attention")), "cross-attention layers"),
    }
    for field, (bad, what) in unsupported.items():
        if bad:
            raise HookError(
                f"{ckpt.path / 'config.json'}: {field} asks for {what}, which SAT's GPT2Model does not compute\n"
                "  hint: SAT's GPT2Model has no such option; loading would give wrong outputs, so it is refused"
            )
    return dict(
        num_layers=ckpt.require("n_layer"),
        vocab_size=ckpt.require("vocab_size"),
        hidden_size=ckpt.require("n_embd"),
        num_attention_heads=ckpt.require("n_head"),
        inner_hidden_size=ckpt.get("n_inner"),  # None: SAT's default 4 * hidden, as HF's
        max_sequence_length=ckpt.require("n_positions"),
        layernorm_epsilon=ckpt.get("layer_norm_epsilon", 1e-5),
        layernorm_order="pre",
    )


def gpt2_hf_config(model, args, recorded: dict | None) -> HFLayout:
    """`gpt2_args` backwards: a ``GPT2LMHeadModel`` config; ``transformer.``-prefixed, the head tied where equal."""
    is_tied = tied(model, "transformer.word_embeddings.weight", "mixins.gpt2-final.lm_head.weight", recorded, True)
    config = start(recorded, model_type="gpt2", architectures=["GPT2LMHeadModel"], activation_function="gelu_new")
    config.update(n_layer=args.num_layers, vocab_size=args.vocab_size, n_embd=args.hidden_size,
                  n_head=args.num_attention_heads, n_inner=args.inner_hidden_size, n_positions=args.max_sequence_length,
                  layer_norm_epsilon=args.layernorm_epsilon, tie_word_embeddings=is_tied)  # fmt: skip
    keys = {PREFIX + "wte.weight"} | (set() if is_tied else {"lm_head.weight"})
    return HFLayout(config, frozenset(keys))


FAMILY = Family(
    name="gpt2",
    model_types=("gpt2",),
    sat_class="sat.model.official.gpt2_model.GPT2Model",
    args=gpt2_args,
    spec=gpt2_spec,
    hf_config=gpt2_hf_config,
)
