"""What BERT and RoBERTa share on their way into SAT: the post-LN encoder table, the MLM head, files without a head.

Layouts, HF on disk → SAT:

* q, k, v: three ``[H, H]`` linear weights (and ``[H]`` biases) → one ``attention.query_key_value`` of ``[3H, H]``
  whose rows are ``[Q; K; V]``, heads contiguous inside each (SAT's MHA split).
* LayerNorms shift by one layer. HF normalises at the *end* of a block: ``embeddings.LayerNorm`` after the embedding
  sum, ``layer.i.output.LayerNorm`` after layer i. SAT's post-LN layer normalises its own *input* with
  ``input_layernorm`` and has ``final_layernorm`` after the last layer. So ``embeddings.LayerNorm`` →
  ``layers.0.input_layernorm``, ``layer.i.output.LayerNorm`` → ``layers.{i+1}.input_layernorm``, and the last
  layer's → ``final_layernorm``. ``attention.output.LayerNorm`` stays in its layer as ``post_attention_layernorm``.
* MLM head → ``mixins.bert-final.lm_head.{dense, layer_norm, decoder}``. The decoder is tied to the word embeddings
  and recent files omit it: SAT's decoder then gets its own copy. SAT builds the head's LayerNorm with eps 1e-5
  whatever the config says; `encoder_finish` sets the config's ``layer_norm_eps``.
* A file without the MLM head (``BertModel.save_pretrained``: ``embeddings.*``, ``encoder.*``, ``pooler.*``, no
  prefix) loads *without* the ``bert-final`` mixin, and the model's forward returns the last hidden states. No head
  is ever initialised at random; ``model.add_mixin("bert-final", ...)`` adds one on purpose.
* The pooler (``pooler.dense``, in base-model and pre-training files) → ``mixins.pooler.dense``
  (`adapters.sat.pooler`): SAT has none, and a trained one must survive the way back (`save_hf` writes it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...core import Concat, HookError, Ignore, KeyPattern, Rule, Spec, ignore, open_source, rule
from ...core.ops import Duplicate
from ..headless import drop_head
from ..pooler import POOLER_MIXIN, add_pooler
from ..hf_checkpoint import HFCheckpoint
from ..hf_config import HFLayout, start, tied

__all__ = [
    "Encoder",
    "FileLayout",
    "encoder_args",
    "encoder_finish",
    "encoder_hf_config",
    "encoder_prepare",
    "encoder_spec",
    "layout_of",
]

HEAD_MIXIN = "bert-final"  # the MLM head mixin SAT's BertModel and RobertaModel add
_NO_TYPES = "token types: the SAT class has no type table, and this one is all zeros (checked before loading)"


@dataclass(frozen=True)
class Encoder:
    """Where one HF encoder family keeps its weights.

    Attributes:
        name: spec name (``"hf-bert->sat-bert"``).
        class_name: the SAT class, for messages.
        prefix: the wrapper prefix of task-model files (``"bert."``); base-model files have none.
        head: the MLM head's module prefix (``"cls.predictions."``); a file with no key under it is headless.
        head_dense, head_norm, head_decoder, head_bias: the head's modules, keys without ``.weight``/``.bias``.
        type_target: the SAT key of the token-type table, or None where SAT has none (RoBERTa): the file's table is
            then dropped, and `encoder_prepare` refuses a table that is not all zeros.
        ignore: family-specific source keys that are dropped, with reasons.
    """

    name: str
    class_name: str
    prefix: str
    head: str
    head_dense: str
    head_norm: str
    head_decoder: str
    head_bias: str
    type_target: str | None
    ignore: tuple[Ignore, ...] = ()


@dataclass(frozen=True)
class FileLayout:
    """How one file spells the encoder: its wrapper prefix (``""`` or `Encoder.prefix`), whether the MLM head and
    the pooler are in."""

    prefix: str
    has_head: bool
    has_pooler: bool


def layout_of(enc: Encoder, keys: frozenset[str]) -> FileLayout:
    prefix = enc.prefix if any(k.startswith(enc.prefix) for k in keys) else ""
    return FileLayout(prefix, any(k.startswith(enc.head) for k in keys), f"{prefix}pooler.dense.weight" in keys)


def _norm(source: str, target: str, keys: frozenset[str]) -> tuple[Rule, Rule]:
    """A LayerNorm's weight and bias; files converted from TensorFlow call them ``gamma`` and ``beta``."""
    legacy = KeyPattern.parse(f"{source}.gamma")
    names = ("gamma", "beta") if any(legacy.match(k) is not None for k in keys) else ("weight", "bias")
    return tuple(rule(f"{source}.{n}", f"{target}.{t}") for n, t in zip(names, ("weight", "bias")))  # type: ignore[return-value]


def _linear(source: str, target: str) -> tuple[Rule, Rule]:
    return rule(f"{source}.weight", f"{target}.weight"), rule(f"{source}.bias", f"{target}.bias")


def _shifted_norm_targets(layers: int) -> list[str]:
    """SAT homes of ``layer.{i}.output.LayerNorm``, i = 0..layers-1 (see the module docstring).

    Written per layer because a ``{layer+1}`` pattern would also send the last layer to a ``layers.{L}`` that does
    not exist, and a pattern cannot leave out one layer.
    """
    return [f"transformer.layers.{i + 1}.input_layernorm" for i in range(layers - 1)] + ["transformer.final_layernorm"]


def encoder_spec(enc: Encoder, ckpt: HFCheckpoint, keys: frozenset[str]) -> Spec:
    """The table for this file: its prefix, its LayerNorm spelling, with or without the head, tied or not."""
    f = layout_of(enc, keys)
    p, layers = f.prefix, int(ckpt.require("num_hidden_layers"))
    E, H, S = p + "embeddings.", p + "encoder.layer.{layer}.", "transformer.layers.{layer}."
    # fmt: off
    rules: list[Rule] = [
        #    source (HF, on disk)                             target (SAT)                                       op
        rule(E + "position_embeddings.weight",                "transformer.position_embeddings.weight"),
        *_norm(E + "LayerNorm",                               "transformer.layers.0.input_layernorm", keys),
        rule([H + "attention.self.query.weight",
              H + "attention.self.key.weight",
              H + "attention.self.value.weight"],             S + "attention.query_key_value.weight",            Concat(0)),
        rule([H + "attention.self.query.bias",
              H + "attention.self.key.bias",
              H + "attention.self.value.bias"],               S + "attention.query_key_value.bias",              Concat(0)),
        *_linear(H + "attention.output.dense",                S + "attention.dense"),
        *_norm(H + "attention.output.LayerNorm",              S + "post_attention_layernorm", keys),
        *_linear(H + "intermediate.dense",                    S + "mlp.dense_h_to_4h"),
        *_linear(H + "output.dense",                          S + "mlp.dense_4h_to_h"),
    ]
    for i, target in enumerate(_shifted_norm_targets(layers)):
        rules += _norm(f"{p}encoder.layer.{i}.output.LayerNorm", target, keys)
    ignores = [
        ignore(E + "position_ids",       "HF's position-index buffer (older files save it); SAT takes position_ids as input"),
        *enc.ignore,
    ]
    # fmt: on
    if f.has_pooler:
        rules += _linear(p + "pooler.dense", f"mixins.{POOLER_MIXIN}.dense")
    if enc.type_target is not None:
        rules.append(rule(E + "token_type_embeddings.weight", enc.type_target))
    else:
        ignores.append(ignore(E + "token_type_embeddings.weight", _NO_TYPES))
    words, head = E + "word_embeddings.weight", "mixins.bert-final.lm_head."
    if not f.has_head:
        rules.insert(0, rule(words, "transformer.word_embeddings.weight"))
        return Spec(f"{enc.name} (headless)", tuple(rules), tuple(ignores))
    rules += [*_linear(enc.head_dense, head + "dense"), *_norm(enc.head_norm, head + "layer_norm", keys)]
    if f"{enc.head_decoder}.weight" in keys:
        rules += [
            rule(words, "transformer.word_embeddings.weight"),
            rule(f"{enc.head_decoder}.weight", head + "decoder.weight"),
        ]
    elif ckpt.get("tie_word_embeddings", True):
        # A tied checkpoint stores the embedding once; SAT's decoder is its own parameter and gets a copy.
        rules.append(rule(words, ["transformer.word_embeddings.weight", head + "decoder.weight"], Duplicate(2)))
    else:
        raise HookError(
            f"{ckpt.path}: {enc.head_decoder}.weight is not in the checkpoint and tie_word_embeddings is false, "
            f"so the MLM head's decoder has no source\n"
            "  hint: from_hf never initialises a head at random; save the model with its decoder weight"
        )
    # HF's forward adds the decoder's own bias. transformers ties it to `head_bias` and, when tied, saves only that;
    # transformers 4 saved both (equal), and an untied head in transformers 5 never reads `head_bias`.
    if f"{enc.head_decoder}.bias" in keys:
        rules.append(rule(f"{enc.head_decoder}.bias", head + "decoder.bias"))
        ignores.append(ignore(enc.head_bias, "HF adds the decoder's own bias; this copy equals it or is unused"))
    else:
        rules.append(rule(enc.head_bias, head + "decoder.bias"))
    return Spec(enc.name, tuple(rules), tuple(ignores))


def encoder_args(ckpt: HFCheckpoint, class_name: str) -> dict:
    """SAT args every post-LN encoder shares; refuses what SAT's encoders cannot compute."""
    act = ckpt.get("hidden_act", "gelu")
    position = ckpt.get("position_embedding_type", "absolute")  # transformers v5 dropped it; older configs carry it
    unsupported = {
        "hidden_act": (act != "gelu", f"the activation {act!r} (SAT's is exact gelu)"),
        "position_embedding_type": (position != "absolute", f"{position!r} position embeddings"),
        "add_cross_attention": (bool(ckpt.get("add_cross_attention")), "cross-attention layers"),
    }
    for field, (bad, what) in unsupported.items():
        if bad:
            raise HookError(
                f"{ckpt.path / 'config.json'}: {field} asks for {what}, which SAT's {class_name} does not compute\n"
                f"  hint: SAT's {class_name} has no such option; loading would give wrong outputs, so it is refused"
            )
    return dict(
        num_layers=ckpt.require("num_hidden_layers"),
        vocab_size=ckpt.require("vocab_size"),
        hidden_size=ckpt.require("hidden_size"),
        num_attention_heads=ckpt.require("num_attention_heads"),
        inner_hidden_size=ckpt.require("intermediate_size"),
        max_sequence_length=ckpt.require("max_position_embeddings"),
        layernorm_epsilon=ckpt.get("layer_norm_eps", 1e-12),
        layernorm_order="post",
    )


def encoder_prepare(enc: Encoder, model: nn.Module, ckpt: HFCheckpoint, keys: frozenset[str]) -> None:
    """Before loading (model on meta): refuse token types SAT would drop; swap a missing head for hidden states;
    give the file's pooler a home."""
    layout = layout_of(enc, keys)
    if enc.type_target is None:
        _refuse_nonzero_types(enc, ckpt, layout.prefix + "embeddings.token_type_embeddings.weight", keys)
    if not layout.has_head:
        drop_head(model, HEAD_MIXIN)
    if layout.has_pooler:
        add_pooler(model)


def _refuse_nonzero_types(enc: Encoder, ckpt: HFCheckpoint, key: str, keys: frozenset[str]) -> None:
    """HF adds type row 0 to every token; SAT's class has no such table, so dropping it is exact only when it is zero.

    Converted fairseq RoBERTa files store zeros; a fine-tune run in transformers may have trained them.
    """
    if key not in keys:
        return
    with open_source(ckpt.path) as reader:
        largest = reader.read(key).abs().max().item()
    if largest != 0:
        raise HookError(
            f"{ckpt.path}: {key} is not zero (max abs {largest:.3g}), and SAT's {enc.class_name} has no token-type "
            "table to hold it\n"
            "  hint: HF adds row 0 to every token; dropping it would change every output, so the checkpoint is refused"
        )


def encoder_finish(model: nn.Module, ckpt: HFCheckpoint) -> None:
    """SAT builds the head's LayerNorm with eps 1e-5; HF uses the config's ``layer_norm_eps`` (1e-12 for BERT)."""
    if HEAD_MIXIN in model.mixins:
        model.mixins[HEAD_MIXIN].lm_head.layer_norm.eps = float(ckpt.get("layer_norm_eps", 1e-12))


def encoder_hf_config(
    enc: Encoder, model: nn.Module, args, recorded: dict | None, *, model_type: str, classes: tuple[str, str], **fields
) -> HFLayout:
    """`encoder_args` backwards (plus the family's `fields`). With SAT's MLM head: the task model `classes[0]`'s
    layout (prefix, head, the decoder stored only when untied); without: the base model `classes[1]`'s. The pooler
    mixin, when the model has one, is written as the pooler. A type table SAT does not hold is written as the zeros
    it dropped."""
    has_head = HEAD_MIXIN in model.mixins
    words = "transformer.word_embeddings.weight"
    is_tied = has_head and tied(model, words, "mixins.bert-final.lm_head.decoder.weight", recorded, default=True)
    config = start(recorded, model_type=model_type, hidden_act="gelu")
    config.update(architectures=[classes[0 if has_head else 1]], num_hidden_layers=args.num_layers, vocab_size=args.vocab_size,
                  hidden_size=args.hidden_size, num_attention_heads=args.num_attention_heads,
                  intermediate_size=args.inner_hidden_size, max_position_embeddings=args.max_sequence_length,
                  layer_norm_eps=args.layernorm_epsilon, tie_word_embeddings=is_tied or not has_head, **fields)  # fmt: skip
    p = enc.prefix if has_head else ""
    keys = {p + "embeddings.word_embeddings.weight"}
    if has_head:
        keys |= {f"{enc.head_dense}.weight"} | (set() if is_tied else {f"{enc.head_decoder}.weight"})
    if POOLER_MIXIN in model.mixins:
        keys.add(p + "pooler.dense.weight")
    extra = {}
    if enc.type_target is None:
        types = config.setdefault("type_vocab_size", 1)
        extra[p + "embeddings.token_type_embeddings.weight"] = torch.zeros(types, args.hidden_size)
    return HFLayout(config, frozenset(keys), extra)
