"""HF RoBERTa (``RobertaForMaskedLM`` files, or a bare ``RobertaModel``) → SAT `RobertaModel` (post-LN).

The same encoder as BERT (`_encoder`), under the ``roberta.`` prefix, with the head at ``lm_head.{dense, layer_norm,
decoder, bias}``. SAT's RobertaModel has no token-type table; HF's (one row) is added to every token, so it is
dropped only when it is all zeros (converted fairseq files), and refused otherwise.

Positions: HF numbers tokens from ``pad_token_id + 1`` (``create_position_ids_from_input_ids``: pads keep
``pad_token_id``), and the table has ``max_position_embeddings`` rows (514 for 512 tokens). SAT takes
``position_ids`` as a forward input, so callers pass HF's numbering; ``arange`` would read the wrong rows.
"""

from __future__ import annotations

from torch import nn

from ..family import Family
from ..hf_checkpoint import HFCheckpoint
from ._encoder import Encoder, encoder_args, encoder_finish, encoder_hf_config, encoder_prepare, encoder_spec

ROBERTA = Encoder(
    name="hf-roberta->sat-roberta",
    class_name="RobertaModel",
    prefix="roberta.",
    head="lm_head.",
    head_dense="lm_head.dense",
    head_norm="lm_head.layer_norm",
    head_decoder="lm_head.decoder",
    head_bias="lm_head.bias",
    type_target=None,
)


def roberta_spec(ckpt: HFCheckpoint, keys: frozenset[str]):
    return encoder_spec(ROBERTA, ckpt, keys)


def roberta_args(ckpt: HFCheckpoint) -> dict:
    return encoder_args(ckpt, ROBERTA.class_name)


def roberta_prepare(model: nn.Module, ckpt: HFCheckpoint, keys: frozenset[str]) -> None:
    encoder_prepare(ROBERTA, model, ckpt, keys)


def roberta_hf_config(model: nn.Module, args, recorded: dict | None):
    classes = ("RobertaForMaskedLM", "RobertaModel")
    return encoder_hf_config(ROBERTA, model, args, recorded, model_type="roberta", classes=classes)


FAMILY = Family(
    name="roberta",
    model_types=("roberta",),
    sat_class="sat.model.official.roberta_model.RobertaModel",
    args=roberta_args,
    spec=roberta_spec,
    prepare=roberta_prepare,
    finish=encoder_finish,
    hf_config=roberta_hf_config,
)
