"""Mission demo, SAT part: a tiny HF LLaMA checkpoint loaded into SAT through SAT's own drop-in
``AutoModel.from_pretrained`` after ``import adapters.sat``, one generation step, compared with transformers.

transformers builds and saves the checkpoint itself and is the reference: the same files, the same prompt.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

__all__ = ["PROMPT", "run_sat", "sat_logits", "write_tiny_llama"]

PROMPT = (1, 17, 42, 5, 99, 7, 64, 3)


def write_tiny_llama(folder: Path, max_shard_size: str | None = None) -> nn.Module:
    """Save a random fp32 `LlamaForCausalLM` (vocab 128, hidden 64, 2 layers, GQA 4/2, rope θ 5e5) to `folder`,
    in shards of at most `max_shard_size` when given (``examples/sat_inference_from_hf.py`` uses this too).

    Returns the transformers model itself, in eval mode: the reference the SAT model is compared with.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         rope_theta=5e5, tie_word_embeddings=False)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        # HF's init (std 0.02) leaves logits near zero, where any two models agree and the greedy token is a tie;
        # larger weights give logits of order one, so the comparison and the next token mean something.
        for param in model.parameters():
            param.normal_(0, 0.15) if param.dim() > 1 else param.normal_(1.0, 0.1)
    model.save_pretrained(folder, **({} if max_shard_size is None else {"max_shard_size": max_shard_size}))
    return model


def load_into_sat(folder: Path) -> nn.Module:
    """What a SAT inference script does, on the HF folder: ``AutoModel.from_pretrained(folder, args)``, CPU, fp32."""
    # Before SAT's first import: it quiets SAT's import-time notices, and says how to install SAT if it is missing.
    import adapters.sat  # noqa: F401  (the one added line: SAT's from_pretrained now also takes HF checkpoints)
    from sat import AutoModel

    args = argparse.Namespace(mode="inference", fp16=False, bf16=False, skip_init=True, device="cpu")
    model, _ = AutoModel.from_pretrained(str(folder), args)
    return model.eval()


def sat_logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Logits ``[batch, seq, vocab]`` of a SAT decoder called as SAT's generation loop calls it: positions 0..T-1
    and a lower-triangular attention mask."""
    length = ids.shape[1]
    mask = torch.ones(1, 1, length, length).tril()
    with torch.no_grad():
        return model(input_ids=ids, position_ids=torch.arange(length).expand_as(ids), attention_mask=mask)[0]


def run_sat(workdir: Path) -> float:
    """Build, load, step, compare and print; returns the max abs logit difference between SAT and transformers."""
    folder = workdir / "tiny-hf-llama"
    reference = write_tiny_llama(folder)
    files = ", ".join(sorted(p.name for p in folder.iterdir() if p.suffix in (".json", ".safetensors")))
    c = reference.config
    dims = f"vocab {c.vocab_size}, hidden {c.hidden_size}, {c.num_hidden_layers} layers"
    heads = f"GQA {c.num_attention_heads}/{c.num_key_value_heads} heads"
    print(f"built a tiny HF LLaMA checkpoint with transformers ({dims}, {heads}, fp32)")
    print(f"  {folder.name}/: {files}")
    model = load_into_sat(folder)
    print(f"import adapters.sat; sat.AutoModel.from_pretrained(folder, args) -> {type(model).__name__}")
    print(model.adapters_load_report)

    # One generation step: the logits of every prompt position, then the greedy token after the last one.
    ids = torch.tensor([PROMPT])
    ours = sat_logits(model, ids)
    with torch.no_grad():
        expected = reference(ids).logits
    diff = (ours - expected).abs().max().item()
    token, reference_token = int(ours[0, -1].argmax()), int(expected[0, -1].argmax())
    agree = "agree" if token == reference_token else "DISAGREE"
    print(f"one generation step on prompt {list(PROMPT)}: "
          f"next token SAT {token}, transformers {reference_token} ({agree})")  # fmt: skip
    # The size of the logits themselves, so that a small difference reads as agreement, not as two near-zero outputs.
    print(f"SAT vs transformers logits {list(ours.shape)} (max |logit| {expected.abs().max().item():.2f}): "
          f"max abs diff {diff:.2e}")  # fmt: skip
    return diff
