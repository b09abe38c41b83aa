"""Tiny random HF ViT and CLIP checkpoints written by transformers' own classes, and SAT vision forwards.

Checkpoints are saved with `save_pretrained` as sharded safetensors at a shard size that puts every matrix in its
own file, and `save_split_qkv` checks that the q, k and v weights and biases of each layer sit in three different
files, so the merge rules always read across shards. Weights come from `hf_fixtures.randomize_`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from hf_fixtures import INDEX_FILE, HFCheckpoint, randomize_
from transformers import CLIPConfig, CLIPModel, PreTrainedModel, ViTConfig, ViTForImageClassification, ViTModel

SHARD_SIZE = 64  # below the smallest q/k/v bias (32 float32 = 128 bytes): one tensor per file

VIT_QKV = "{prefix}encoder.layer.{layer}.attention.attention.{name}.{kind}", ("query", "key", "value")
CLIP_QKV = "{prefix}encoder.layers.{layer}.self_attn.{name}.{kind}", ("q_proj", "k_proj", "v_proj")


def save_split_qkv(
    model: PreTrainedModel, path: Path, qkv: tuple[str, tuple[str, ...]], towers: dict[str, int]
) -> Path:
    """`save_pretrained` in small shards; check that q/k/v of every layer of every tower are in distinct files.

    `qkv` is a key template and the three projection names; `towers` maps a key prefix to its number of layers.
    """
    path = Path(path)
    model.save_pretrained(path, max_shard_size=SHARD_SIZE)
    weight_map = json.loads((path / INDEX_FILE).read_text())["weight_map"]
    template, names = qkv
    for prefix, layers in towers.items():
        for layer in range(layers):
            for kind in ("weight", "bias"):
                keys = [template.format(prefix=prefix, layer=layer, name=n, kind=kind) for n in names]
                if len({weight_map[k] for k in keys}) != 3:
                    raise RuntimeError(f"{keys} share shards in {path / INDEX_FILE}; lower SHARD_SIZE")
    return path


def tiny_vit_config(**overrides) -> ViTConfig:
    """ViT with hidden 32, 4 heads, 2 layers, 32x32 images in 8x8 patches (16 + CLS tokens), 5 classes."""
    fields = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        num_labels=5,
        layer_norm_eps=1e-12,
    )
    fields.update(overrides)
    return ViTConfig(**fields)


def vit_checkpoint(path: Path, *, head: bool = True, seed: int = 0, **overrides) -> HFCheckpoint:
    """A tiny random `ViTForImageClassification` (``vit.`` prefix), or with ``head=False`` a `ViTModel` with pooler."""
    config = tiny_vit_config(**overrides)
    torch.manual_seed(seed)
    model = ViTForImageClassification(config) if head else ViTModel(config, add_pooling_layer=True)
    randomize_(model, seed=seed).eval()
    save_split_qkv(model, path, VIT_QKV, {"vit." if head else "": config.num_hidden_layers})
    return HFCheckpoint(path=Path(path), model=model)


def tiny_clip_config(**overrides) -> CLIPConfig:
    """CLIP: text hidden 32 (vocab 100, 16 positions), vision hidden 48 (32x32 images, 8x8 patches), projection 24.

    The text EOS is the last vocabulary id, so inputs can end in it without it appearing elsewhere.
    """
    text = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=16, bos_token_id=98, eos_token_id=99, pad_token_id=0)  # fmt: skip
    vision = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)  # fmt: skip
    text.update(overrides.pop("text_config", {}))
    vision.update(overrides.pop("vision_config", {}))
    return CLIPConfig(text_config=text, vision_config=vision, **{"projection_dim": 24, **overrides})


def clip_checkpoint(path: Path, *, seed: int = 0, **overrides) -> HFCheckpoint:
    """A tiny random `CLIPModel` saved under `path`."""
    config = tiny_clip_config(**overrides)
    torch.manual_seed(seed)
    model = randomize_(CLIPModel(config), seed=seed).eval()
    towers = {
        "text_model.": config.text_config.num_hidden_layers,
        "vision_model.": config.vision_config.num_hidden_layers,
    }
    save_split_qkv(model, path, CLIP_QKV, towers)
    return HFCheckpoint(path=Path(path), model=model)


def images(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def text_ids(vocab: int, eos: int, length: int = 10, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Token ids below `eos`, each row ending in `eos` (SAT's CLIP pools the last position, HF the EOS position)."""
    ids = torch.randint(1, eos, (batch, length), generator=torch.Generator().manual_seed(seed))
    ids[:, -1] = eos
    return ids


def sat_vit_forward(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """A SAT ViT-style encoder (`ViTModel`, CLIP's image encoder) on `pixels`, as SAT's ViT examples call it.

    ``input_ids`` index the pre/post tokens (CLS: id 0); the position table is used whole, in order.
    """
    batch, seq = pixels.shape[0], model.transformer.property.seq_len
    input_ids = torch.zeros(batch, 1, dtype=torch.long)
    position_ids = torch.arange(seq).expand(batch, -1)
    with torch.no_grad():
        return model(input_ids=input_ids, position_ids=position_ids, attention_mask=None, image=pixels)[0]


def sat_text_forward(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """SAT CLIP's text encoder on `ids`. The mask must be given: its ``TextMixin`` makes a *given* mask causal,
    while the default ``None`` becomes a (1, 1) all-ones mask that stays bidirectional."""
    length = ids.shape[1]
    position_ids = torch.arange(length).expand_as(ids)
    with torch.no_grad():
        return model(input_ids=ids, position_ids=position_ids, attention_mask=torch.ones(1, 1, length, length))[0]
