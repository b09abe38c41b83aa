"""Tiny random GPT-2, BERT and RoBERTa checkpoints written by transformers' own classes, and the file variants
real checkpoints come in (no ``transformer.`` prefix with mask buffers, legacy ``gamma``/``beta`` names).

Checkpoints are saved with `save_pretrained` as sharded safetensors; for BERT and RoBERTa the shard size puts each
layer's query, key and value in three different files, so the q/k/v merge always reads across shards. Variants are
made by rewriting those shards with safetensors (keys renamed, shards and index kept), never by hand-built state
dicts. Weights come from `randomize_` (O(1) logits, norms away from 1).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from hf_fixtures import INDEX_FILE, HFCheckpoint, randomize_
from safetensors.torch import load_file, save_file
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    RobertaConfig,
    RobertaForMaskedLM,
)

# 8 KiB: with hidden 64 in float32, query, key and value (16 KiB each) are each larger than a shard.
SHARD_SIZE = 8 * 1024
VOCAB = 128


def tiny_bert_config(**overrides) -> BertConfig:
    """BERT with hidden 64, 4 heads, 2 layers, vocab 128, two token types, tied decoder; `overrides` win."""
    fields = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12)  # fmt: skip
    return BertConfig(**{**fields, **overrides})


def tiny_roberta_config(**overrides) -> RobertaConfig:
    """RoBERTa as roberta-base is configured (one token type, pad 1, eps 1e-5, positions from pad+1), tiny."""
    fields = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=66, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1)  # fmt: skip
    return RobertaConfig(**{**fields, **overrides})


def tiny_gpt2_config(**overrides) -> GPT2Config:
    """GPT-2 with hidden 64, 4 heads, 2 layers, vocab 128, 64 positions, tied head; `overrides` win."""
    fields = dict(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)
    return GPT2Config(**{**fields, **overrides})


def _weight_map(path: Path) -> dict[str, str]:
    return json.loads((path / INDEX_FILE).read_text())["weight_map"]


def save_sharded(model: PreTrainedModel, path: Path, merged: tuple[str, ...] = ()) -> Path:
    """`save_pretrained` in shards; each pattern of `merged` (``{layer}`` in it) must sit in distinct shards."""
    path = Path(path)
    model.save_pretrained(path, max_shard_size=SHARD_SIZE)
    if not (path / INDEX_FILE).is_file():
        raise RuntimeError(f"save_pretrained wrote no {INDEX_FILE} in {path}; max_shard_size={SHARD_SIZE} is too large")
    weight_map = _weight_map(path)
    for layer in range(model.config.num_hidden_layers):
        shards = [weight_map[p.format(layer=layer)] for p in merged]
        if len(set(shards)) != len(shards):
            raise RuntimeError(f"layer {layer}: {merged} share shards {shards}; lower SHARD_SIZE")
    return path


def rewrite_shards(path: Path, rename: Callable[[str], str], extra: Mapping[str, torch.Tensor] | None = None) -> None:
    """Rename every key of every shard in place (index too); `extra` tensors join the first shard."""
    path = Path(path)
    weight_map: dict[str, str] = {}
    for n, shard in enumerate(sorted(set(_weight_map(path).values()))):
        tensors = {rename(k): v for k, v in load_file(path / shard).items()}
        if n == 0:
            tensors.update(extra or {})
        save_file(tensors, path / shard, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard))
    index = json.loads((path / INDEX_FILE).read_text())
    index["weight_map"] = weight_map
    (path / INDEX_FILE).write_text(json.dumps(index, indent=2))


def legacy_norm_names(key: str) -> str:
    """What TensorFlow-converted BERT files call LayerNorm parameters."""
    return key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")


def bert_checkpoint(path: Path, cls: type = BertForMaskedLM, *, seed: int = 0, **overrides) -> HFCheckpoint:
    """A tiny random BERT (`cls`: BertForMaskedLM, BertForPreTraining, BertModel, ...) saved under `path`."""
    torch.manual_seed(seed)
    model = randomize_(cls(tiny_bert_config(**overrides)), seed=seed).eval()
    prefix = "" if cls.__name__ == "BertModel" else "bert."
    qkv = tuple(f"{prefix}encoder.layer.{{layer}}.attention.self.{n}.weight" for n in ("query", "key", "value"))
    save_sharded(model, path, qkv)
    return HFCheckpoint(path=Path(path), model=model)


def roberta_checkpoint(
    path: Path, cls: type = RobertaForMaskedLM, *, seed: int = 0, zero_token_types: bool = True, **overrides
) -> HFCheckpoint:
    """A tiny random RoBERTa saved under `path`; token types zeroed as in converted fairseq files unless told."""
    torch.manual_seed(seed)
    model = randomize_(cls(tiny_roberta_config(**overrides)), seed=seed).eval()
    base = model if cls.__name__ == "RobertaModel" else model.roberta
    if zero_token_types:
        with torch.no_grad():
            base.embeddings.token_type_embeddings.weight.zero_()
    prefix = "" if base is model else "roberta."
    qkv = tuple(f"{prefix}encoder.layer.{{layer}}.attention.self.{n}.weight" for n in ("query", "key", "value"))
    save_sharded(model, path, qkv)
    return HFCheckpoint(path=Path(path), model=model)


def gpt2_checkpoint(path: Path, *, prefixed: bool = True, seed: int = 0, **overrides) -> HFCheckpoint:
    """A tiny random `GPT2LMHeadModel` saved under `path`.

    With ``prefixed=False`` the file is rewritten the way ``openai-community/gpt2`` stores it: no ``transformer.``
    prefix, and each layer's causal-mask buffers ``h.{i}.attn.bias`` / ``h.{i}.attn.masked_bias`` included.
    """
    config = tiny_gpt2_config(**overrides)
    torch.manual_seed(seed)
    model = randomize_(GPT2LMHeadModel(config), seed=seed).eval()
    save_sharded(model, path)
    if not prefixed:
        n = config.n_positions
        buffers = {}
        for layer in range(config.n_layer):
            buffers[f"h.{layer}.attn.bias"] = torch.ones(n, n, dtype=torch.bool).tril().view(1, 1, n, n)
            buffers[f"h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
        rewrite_shards(path, lambda k: k.removeprefix("transformer."), buffers)
    return HFCheckpoint(path=Path(path), model=model)


def encoder_forward(model: torch.nn.Module, ids: torch.Tensor, position_ids: torch.Tensor, **kw) -> list:
    """SAT encoder outputs for `ids` (batch, seq) with full attention: ``[logits or hidden states, per-layer...]``."""
    length = ids.shape[1]
    with torch.no_grad():
        return model(input_ids=ids, position_ids=position_ids, attention_mask=torch.ones(1, 1, length, length), **kw)
