"""Tiny HF CogVLM checkpoints (written by `adapters.sat.tiny`), their inputs, and the two ways to run them.

* `cogvlm_checkpoint`: the folder (sharded safetensors, the remote code's names) and its tensors read back;
* `llama_from_experts`: transformers' `LlamaForCausalLM` holding one expert's weights (plus the shared embedding,
  norms and head), the reference for the language-only and vision-expert-only paths;
* `multimodal_batch`: ``[bos, boi, patches, eoi, text]`` rows with HF ``token_type_ids`` and random images;
* `sat_logits`: a SAT CogVLM forward from those HF inputs, the way CogVLM's SAT scripts feed it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from adapters.sat.models import sat_inputs_from_token_types
from adapters.sat.tiny import INDEX_FILE, TinyCogVLM, write_tiny_cogvlm

SIZES = TinyCogVLM()


@dataclass(frozen=True)
class CogVLMCheckpoint:
    path: Path
    config: dict
    tensors: dict[str, torch.Tensor]

    def shards(self) -> set[str]:
        return set(json.loads((self.path / INDEX_FILE).read_text())["weight_map"].values())


def cogvlm_checkpoint(path: Path, sizes: TinyCogVLM = SIZES, **kwargs) -> CogVLMCheckpoint:
    folder = write_tiny_cogvlm(path, sizes, **kwargs)
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        tensors |= load_file(shard)
    return CogVLMCheckpoint(folder, json.loads((folder / "config.json").read_text()), tensors)


def llama_from_experts(ckpt: CogVLMCheckpoint, expert: str) -> LlamaForCausalLM:
    """A `LlamaForCausalLM` with the ``expert`` ("language" or "vision") attention and MLP of every layer."""
    c = ckpt.config
    config = LlamaConfig(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
                         intermediate_size=c["intermediate_size"], num_hidden_layers=c["num_hidden_layers"],
                         num_attention_heads=c["num_attention_heads"], num_key_value_heads=c["num_attention_heads"],
                         rms_norm_eps=c["rms_norm_eps"], rope_theta=10000.0, max_position_embeddings=256,
                         tie_word_embeddings=False)  # fmt: skip
    t = ckpt.tensors
    state = {"model.embed_tokens.weight": t["model.embed_tokens.weight"], "model.norm.weight": t["model.norm.weight"],
             "lm_head.weight": t["lm_head.weight"]}  # fmt: skip
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        q, k, v = t[f"{p}self_attn.{expert}_expert_query_key_value.weight"].chunk(3, dim=0)
        state |= {
            p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k, p + "self_attn.v_proj.weight": v,
            p + "self_attn.o_proj.weight": t[f"{p}self_attn.{expert}_expert_dense.weight"],
            p + "input_layernorm.weight": t[p + "input_layernorm.weight"],
            p + "post_attention_layernorm.weight": t[p + "post_attention_layernorm.weight"],
        }  # fmt: skip
        for name in ("gate_proj", "up_proj", "down_proj"):
            state[f"{p}mlp.{name}.weight"] = t[f"{p}mlp.{expert}_mlp.{name}.weight"]
    model = LlamaForCausalLM(config).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary_emb" in k for k in missing), (missing, unexpected)
    return model


def multimodal_batch(sizes: TinyCogVLM = SIZES, text: int = 5, batch: int = 2, seed: int = 0):
    """``input_ids``, ``token_type_ids`` (HF), ``images`` for rows ``[bos, boi, patches, eoi, text...]``."""
    generator = torch.Generator().manual_seed(seed)
    vision = sizes.patches + 2
    ids = torch.randint(3, sizes.vocab_size, (batch, 1 + vision + text), generator=generator)
    ids[:, 0] = 1
    ids[:, 1 : 1 + vision] = 0  # the remote code pads the image slots with pad_token_id
    types = torch.zeros_like(ids)
    types[:, 1 : 1 + vision] = 1
    images = torch.randn(batch, 3, sizes.image_size, sizes.image_size, generator=generator)
    return ids, types, images


def sat_logits(model, input_ids, token_type_ids=None, images=None, *, vision_expert_mask=None):
    """A SAT CogVLM forward (causal) for HF-convention inputs; `vision_expert_mask` overrides the derived one."""
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    inputs = sat_inputs_from_token_types(token_type_ids)
    if vision_expert_mask is not None:
        inputs["vision_expert_mask"] = vision_expert_mask
    length = input_ids.shape[1]
    kwargs = {}
    if images is not None:
        batch = images.shape[0]
        kwargs = dict(vision_image=images, vision_input_ids=torch.zeros(batch, 1, dtype=torch.long),
                      vision_position_ids=None, vision_attention_mask=torch.ones(1, 1))  # fmt: skip
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=torch.ones(1, 1, length, length).tril(), **inputs, **kwargs)[0]


def cli_demo_args(path: str | Path, **overrides) -> argparse.Namespace:
    """The namespace CogVLM's ``basic_demo/cli_demo_sat.py`` passes to ``AutoModel.from_pretrained`` (one process)."""
    script = dict(max_length=2048, top_p=0.4, top_k=1, temperature=0.8, chinese=False, version="chat", quant=None,
                  from_pretrained=str(path), local_tokenizer="lmsys/vicuna-7b-v1.5", fp16=False, bf16=False,
                  stream_chat=False)  # fmt: skip
    run = dict(deepspeed=None, local_rank=0, rank=0, world_size=1, model_parallel_size=1, mode="inference",
               skip_init=True, use_gpu_initialization=False, device="cpu")  # fmt: skip
    return argparse.Namespace(**(run | script | overrides))
