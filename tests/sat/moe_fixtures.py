"""Tiny random HF Mixtral checkpoints written by transformers' own `MixtralForCausalLM`, for SAT load tests.

Saved with `save_pretrained` as sharded safetensors (q/k/v of a layer in three files, each expert matrix in its
own), so the files hold transformers 5's on-disk form ``block_sparse_moe.experts.{e}.w1/w2/w3``, not the fused
in-memory ``mlp.experts.gate_up_proj``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hf_fixtures import HFCheckpoint, randomize_, save_sharded
from transformers import MixtralConfig, MixtralForCausalLM


def tiny_mixtral_config(**overrides) -> MixtralConfig:
    """Mixtral with hidden 64, 4 heads of 16 (2 KV heads), 2 layers, 4 experts of width 96, top-2, vocab 128."""
    fields = dict(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=1e6,
        tie_word_embeddings=False,
    )
    fields.update(overrides)
    return MixtralConfig(**fields)


def mixtral_checkpoint(path: Path, *, seed: int = 0, **overrides) -> HFCheckpoint:
    """A tiny random `MixtralForCausalLM` saved under `path`."""
    torch.manual_seed(seed)
    model = randomize_(MixtralForCausalLM(tiny_mixtral_config(**overrides)), seed=seed).eval()
    save_sharded(model, path)
    return HFCheckpoint(path=Path(path), model=model)
