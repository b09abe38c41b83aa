"""HF BERT (``BertForMaskedLM``/``BertForPreTraining`` files, or a bare ``BertModel``) → SAT `BertModel` (post-LN).

The encoder table and the MLM head are shared with RoBERTa (`_encoder`: the q/k/v merge, the LayerNorms shifted by
one layer, the tied decoder, headless files). BERT adds the token-type table, which SAT keeps in the ``bert-type``
mixin: SAT's forward then needs ``token_type_ids`` (zeros for single-segment input, as HF's default). Files may carry
the ``bert.`` prefix or not, and TensorFlow-converted ones name LayerNorm parameters ``gamma``/``beta``; both are
read from the key set. The pooler is kept in a ``pooler`` mixin (`adapters.sat.pooler`); the next-sentence head
has no SAT home and is dropped with a reason.
"""

from __future__ import annotations

from torch import nn

from ...core import ignore
from ..family import Family
from ..hf_checkpoint import HFCheckpoint
from ._encoder import Encoder, encoder_args, encoder_finish, encoder_hf_config, encoder_prepare, encoder_spec

BERT = Encoder(
    name="hf-bert->sat-bert",
    class_name="BertModel",
    prefix="bert.",
    head="cls.predictions.",
    head_dense="cls.predictions.transform.dense",
    head_norm="cls.predictions.transform.LayerNorm",
    head_decoder="cls.predictions.decoder",
    head_bias="cls.predictions.bias",
    type_target="mixins.bert-type.type_embeddings.weight",
    ignore=(
        ignore("cls.seq_relationship.weight", "the next-sentence head; SAT's BertModel has none"),
        ignore("cls.seq_relationship.bias", "the next-sentence head; SAT's BertModel has none"),
    ),
)


def bert_spec(ckpt: HFCheckpoint, keys: frozenset[str]):
    return encoder_spec(BERT, ckpt, keys)


def bert_args(ckpt: HFCheckpoint) -> dict:
    return {**encoder_args(ckpt, BERT.class_name), "num_types": ckpt.get("type_vocab_size", 2)}


def bert_prepare(model: nn.Module, ckpt: HFCheckpoint, keys: frozenset[str]) -> None:
    encoder_prepare(BERT, model, ckpt, keys)


def bert_hf_config(model: nn.Module, args, recorded: dict | None):
    classes = ("BertForMaskedLM", "BertModel")
    return encoder_hf_config(
        BERT, model, args, recorded, model_type="bert", classes=classes, type_vocab_size=args.num_types
    )


FAMILY = Family(
    name="bert",
    model_types=("bert",),
    sat_class="sat.model.official.bert_model.BertModel",
    args=bert_args,
    spec=bert_spec,
    prepare=bert_prepare,
    finish=encoder_finish,
    hf_config=bert_hf_config,
)
