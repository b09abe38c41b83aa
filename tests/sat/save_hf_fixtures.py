"""Helpers for the `save_hf` tests: SAT's lora2 LoRA on a loaded model, a few training steps, two-rank SAT folders."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from sat.model.finetune.lora2 import LoraMixin

from adapters.core import empty_weights
from adapters.sat.partition import sat_partitions

# What a conversion script records in model_config.json (as tests/sat/sat_checkpoint.py), for the two-rank folders.
ARCH_FIELDS = (
    "num_layers", "vocab_size", "hidden_size", "num_attention_heads", "num_multi_query_heads",
    "hidden_size_per_attention_head", "inner_hidden_size", "max_sequence_length", "layernorm_epsilon",
    "use_bias", "layernorm_order", "is_rotary_emb", "is_gated_mlp", "bos_token_id", "eos_token_id",
)  # fmt: skip


def add_lora(model: torch.nn.Module, layers: int, r: int = 4, alpha: float = 8.0) -> torch.nn.Module:
    """SAT's `LoraMixin` (lora2) on every layer's attention; only its matrices stay trainable."""
    model.add_mixin("lora", LoraMixin(layers, r=r, lora_alpha=alpha), reinit=True)
    for name, param in model.named_parameters():
        param.requires_grad_(".matrix_" in name)
    return model


def lora_matrices(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {k: v for k, v in model.named_parameters() if ".matrix_" in k}


def train_steps(model: torch.nn.Module, forward, vocab: int, steps: int = 3, lr: float = 0.5, seed: int = 0) -> list:
    """`steps` of SGD on next-token loss over random tokens; ``forward(model, ids)`` gives logits with grad.

    SAT starts every ``matrix_B`` at zero; after the first step they are not, so the LoRA update counts.
    """
    ids = torch.randint(0, vocab, (2, 9), generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        logits = forward(model, ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def causal_forward(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """`sat_forward.causal_logits` with gradients."""
    length = ids.shape[1]
    mask = torch.ones(1, 1, length, length).tril()
    return model(input_ids=ids, position_ids=torch.arange(length).expand_as(ids), attention_mask=mask)[0]


def two_rank_folder(model: torch.nn.Module, args: argparse.Namespace, folder: Path) -> dict:
    """`model` saved as a SAT checkpoint folder of two model-parallel ranks, each tensor cut as SAT cuts it.

    Returns SAT's partitions of the model (the tensors that were cut)."""
    with empty_weights():
        meta = type(model)(argparse.Namespace(**{**vars(args), "model_parallel_size": 1}))
    parts = sat_partitions(meta)
    ranks: list[dict] = [{}, {}]
    for key, full in model.state_dict().items():
        for rank, state in enumerate(ranks):
            state[key] = full.clone() if key not in parts else parts[key].take(full, rank, 2).clone()
    (folder / "1").mkdir(parents=True)
    (folder / "latest").write_text("1")
    config = {"model_class": type(model).__name__, "model_parallel_size": 2}
    config |= {k: getattr(args, k) for k in ARCH_FIELDS if hasattr(args, k)}
    (folder / "model_config.json").write_text(json.dumps(config))
    for rank, state in enumerate(ranks):
        torch.save({"module": state, "iteration": 1}, folder / "1" / f"mp_rank_{rank:02d}_model_states.pt")
    return parts
