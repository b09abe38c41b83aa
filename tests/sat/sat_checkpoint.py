"""Write a SAT checkpoint folder the way SAT's trainer lays it out, for tests of SAT's own loading path."""

from __future__ import annotations

import json
from pathlib import Path

import torch

# What a conversion script records in model_config.json: every architecture field from_hf translated.
ARCH_FIELDS = (
    "num_layers", "vocab_size", "hidden_size", "num_attention_heads", "num_multi_query_heads",
    "hidden_size_per_attention_head", "inner_hidden_size", "max_sequence_length", "layernorm_epsilon",
    "use_bias", "layernorm_order", "is_rotary_emb", "is_gated_mlp", "bos_token_id", "eos_token_id", "pad_token_id",
)  # fmt: skip


def save_sat_checkpoint(model: torch.nn.Module, args, folder: Path, iteration: int = 1) -> Path:
    """``folder/{latest, model_config.json, <iteration>/mp_rank_00_model_states.pt}``, model-parallel size 1."""
    folder = Path(folder)
    (folder / str(iteration)).mkdir(parents=True)
    (folder / "latest").write_text(str(iteration))
    config = {"model_class": type(model).__name__, "model_parallel_size": 1}
    config |= {k: getattr(args, k) for k in ARCH_FIELDS if hasattr(args, k)}
    (folder / "model_config.json").write_text(json.dumps(config, indent=2))
    torch.save(
        {"module": model.state_dict(), "iteration": iteration}, folder / str(iteration) / "mp_rank_00_model_states.pt"
    )
    return folder
