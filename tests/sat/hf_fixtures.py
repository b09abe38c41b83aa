"""Tiny random HF checkpoints written by transformers' own classes, for SAT load tests.

Every checkpoint is saved with `save_pretrained` as sharded safetensors, with a shard size small enough that
`q_proj`, `k_proj` and `v_proj` of one layer land in three different files; `save_sharded` checks that against
`model.safetensors.index.json`, so a merge rule is always exercised across shards. Weights are drawn from a seeded
generator at a scale that gives O(1) logits (HF's own init, std 0.02, makes every model look alike), and norm
weights are perturbed away from 1 so that swapped norms show.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

INDEX_FILE = "model.safetensors.index.json"

# 8 KiB: with hidden 64 in float32, q_proj (16 KiB) is larger than a shard and gets one to itself, while
# k_proj and v_proj (8 KiB each, in GQA and MHA alike) cannot share one.
SHARD_SIZE = 8 * 1024

LLAMA_VARIANTS: dict[str, dict] = {
    "mha": dict(num_key_value_heads=4),
    "gqa": dict(num_key_value_heads=2),
    "gqa-rope5e5": dict(num_key_value_heads=2, rope_theta=5e5),
}


@dataclass(frozen=True)
class HFCheckpoint:
    """A saved checkpoint and the in-memory model it was saved from (float32, eval mode)."""

    path: Path
    model: PreTrainedModel

    @property
    def config(self):
        return self.model.config

    def weight_map(self) -> dict[str, str]:
        """On-disk key -> shard file name, from the index."""
        return json.loads((self.path / INDEX_FILE).read_text())["weight_map"]


def tiny_llama_config(**overrides) -> LlamaConfig:
    """LLaMA with hidden 64, 4 heads of 16, 2 layers, vocab 128, untied head; `overrides` win."""
    fields = dict(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    fields.update(overrides)
    return LlamaConfig(**fields)


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.15) -> torch.nn.Module:
    """Overwrite every parameter in place: matrices ~ N(0, std), vectors (norm weights) ~ 1 + N(0, 0.1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            param.copy_(1.0 + 0.1 * noise if param.dim() == 1 else std * noise)
    return model


def save_sharded(model: PreTrainedModel, path: Path, max_shard_size: int = SHARD_SIZE) -> Path:
    """`save_pretrained` as safetensors shards, then check that each layer's q/k/v sit in three distinct shards."""
    path = Path(path)
    model.save_pretrained(path, max_shard_size=max_shard_size)
    index = path / INDEX_FILE
    if not index.is_file():
        raise RuntimeError(
            f"save_pretrained wrote no {INDEX_FILE} in {path}; max_shard_size={max_shard_size} is too large"
        )
    weight_map = json.loads(index.read_text())["weight_map"]
    for layer in range(model.config.num_hidden_layers):
        prefix = f"model.layers.{layer}.self_attn"
        shards = [weight_map[f"{prefix}.{name}.weight"] for name in ("q_proj", "k_proj", "v_proj")]
        if len(set(shards)) != 3:
            raise RuntimeError(
                f"layer {layer}: q/k/v share shards {shards} in {index}\n"
                f"  hint: lower max_shard_size (now {max_shard_size} bytes) below the size of k_proj"
            )
    return path


def llama_checkpoint(path: Path, variant: str = "mha", *, seed: int = 0, **overrides) -> HFCheckpoint:
    """A tiny random `LlamaForCausalLM` saved under `path`; `variant` is a key of `LLAMA_VARIANTS`."""
    config = tiny_llama_config(**{**LLAMA_VARIANTS[variant], **overrides})
    torch.manual_seed(seed)  # HF init draws from the global generator before randomize_ replaces it all
    model = randomize_(LlamaForCausalLM(config), seed=seed).eval()
    save_sharded(model, path)
    return HFCheckpoint(path=Path(path), model=model)
