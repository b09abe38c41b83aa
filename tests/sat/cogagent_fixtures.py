"""Tiny HF CogAgent checkpoints (written by `adapters.sat.tiny`), their inputs, and a SAT forward from HF inputs.

* `cogagent_checkpoint`: the folder (sharded safetensors, the remote code's names) and its tensors read back;
* `cogagent_batch`: CogVLM's ``[bos, boi, patches, eoi, text]`` rows plus one high-res image per row;
* `sat_logits`: a SAT CogAgent forward, fed as CogAgent's SAT demo feeds it (``vision_*`` and ``cross_*`` inputs).
"""

from __future__ import annotations

import torch
from cogvlm_fixtures import CogVLMCheckpoint, multimodal_batch
from safetensors.torch import load_file

from adapters.sat.models import sat_inputs_from_token_types
from adapters.sat.tiny import TinyCogAgent, write_tiny_cogagent

SIZES = TinyCogAgent()


def cogagent_checkpoint(path, sizes: TinyCogAgent = SIZES, **kwargs) -> CogVLMCheckpoint:
    import json

    folder = write_tiny_cogagent(path, sizes, **kwargs)
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        tensors |= load_file(shard)
    return CogVLMCheckpoint(folder, json.loads((folder / "config.json").read_text()), tensors)


def cogagent_batch(sizes: TinyCogAgent = SIZES, text: int = 5, batch: int = 2, seed: int = 0):
    """``input_ids``, ``token_type_ids`` (HF), low-res ``images``, high-res ``cross_images``."""
    ids, types, images = multimodal_batch(sizes, text=text, batch=batch, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    cross = torch.randn(batch, 3, sizes.cross_image_size, sizes.cross_image_size, generator=generator)
    return ids, types, images, cross


def sat_logits(model, input_ids, token_type_ids=None, images=None, cross_images=None):
    """A SAT CogAgent forward (causal) for HF-convention inputs; no ``cross_images`` → no cross-attention."""
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    inputs = sat_inputs_from_token_types(token_type_ids)
    length = input_ids.shape[1]
    if images is not None:
        batch = images.shape[0]
        inputs |= dict(vision_image=images, vision_input_ids=torch.zeros(batch, 1, dtype=torch.long),
                       vision_position_ids=None, vision_attention_mask=torch.ones(1, 1))  # fmt: skip
    if cross_images is not None:
        batch = cross_images.shape[0]
        inputs |= dict(cross_image=cross_images, cross_input_ids=torch.zeros(batch, 1, dtype=torch.long),
                       cross_position_ids=None, cross_attention_mask=torch.ones(1, 1, dtype=torch.long))  # fmt: skip
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=torch.ones(1, 1, length, length).tril(), **inputs)[0]
