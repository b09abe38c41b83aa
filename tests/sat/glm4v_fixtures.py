"""Tiny random GLM-4V (``glm-4v-9b``) checkpoints under the names of THUDM's remote code, for the SAT GLM4V tests.

The language model is a transformers `GlmForCausalLM` (`glm_fixtures.glm_model`: the GLM-4 math) written under the
THUDM names (`glm_fixtures.thudm_tensors`); it is the reference for text. The vision tower has no transformers
class, so its tensors are random, under the names of glm-4v-9b's ``visual.py`` (``transformer.vision.``); the test
computes its reference from them. The files are two safetensors shards plus the index, as the release ships them.

Sizes: LM hidden 64 (4 heads of 16, 2 KV groups, 2 layers, vocab 128, ffn 96); vision hidden 32 (4 heads, MLP
64, 2 blocks), 48x48 images in 8x8 patches: a 6x6 grid (36 patches + CLS), 3x3 = 9 image tokens after the conv.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from glm_fixtures import glm_model, save_shards, thudm_tensors
from transformers import GlmForCausalLM

BOI, EOI = 126, 127  # glm-4v-9b: 151339 and 151340; here the last ids of the tiny vocabulary

# glm-4v-9b's config.json, sizes aside (layer counts, widths and the vocabulary are the tiny model's).
GLM4V_CONFIG = dict(
    _name_or_path="THUDM/glm-4v-9b",
    model_type="chatglm",
    architectures=["ChatGLMModel"],
    auto_map={
        "AutoConfig": "configuration_chatglm.ChatGLMConfig",
        "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
        "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
        "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
        "AutoModelForSequenceClassification": "modeling_chatglm.ChatGLMForSequenceClassification",
    },
    add_bias_linear=False,
    add_qkv_bias=True,
    apply_query_key_layer_scaling=True,
    apply_residual_connection_post_layernorm=False,
    attention_dropout=0.0,
    attention_softmax_in_fp32=True,
    attn_implementation="sdpa",
    bias_dropout_fusion=True,
    fp32_residual_connection=False,
    hidden_dropout=0.0,
    layernorm_epsilon=1.5625e-07,
    multi_query_attention=True,
    original_rope=True,
    post_layer_norm=True,
    rmsnorm=True,
    seq_length=8192,
    use_cache=True,
    torch_dtype="bfloat16",
    tie_word_embeddings=False,
    boi_token_id=BOI,
    eoi_token_id=EOI,
    eos_token_id=[1],
    pad_token_id=0,
)
TINY_VISION = dict(
    dropout_prob=0.0,
    hidden_act="gelu",
    in_channels=3,
    num_hidden_layers=2,
    hidden_size=32,
    patch_size=8,
    num_heads=4,
    intermediate_size=64,
    layer_norm_eps=1e-06,
    num_positions=37,  # CLS + 6x6 patches
    image_size=48,
    scaling_factor=8,
)


@dataclass(frozen=True)
class Glm4vCheckpoint:
    """GLM-4V files at `path`: `model` is the LM reference, `tensors` every tensor written, by its file name."""

    path: Path
    model: GlmForCausalLM
    config: dict
    tensors: dict[str, torch.Tensor]

    @property
    def vision(self) -> dict:
        return self.config["vision_config"]

    def vision_tensor(self, name: str) -> torch.Tensor:
        return self.tensors["transformer.vision." + name]

    @property
    def image_tokens(self) -> int:
        grid = self.vision["image_size"] // self.vision["patch_size"]
        return (grid // 2) ** 2


def vision_tensors(vision: dict, hidden: int, ffn: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of glm-4v-9b's vision tower (``visual.py`` names, ``transformer.vision.`` prefix).

    Matrices ~ N(0, 0.15^2) (O(1) activations at these widths), norm weights ~ 1 + N(0, 0.1^2), boi/eoi ~ N(0, 1).
    """
    generator = torch.Generator().manual_seed(seed + 1000)
    hv, inner, patch = vision["hidden_size"], vision["intermediate_size"], vision["patch_size"]

    def matrix(*shape, std=0.15):
        return std * torch.randn(shape, generator=generator)

    def norm(n):
        return 1.0 + 0.1 * torch.randn(n, generator=generator)

    v = "transformer.vision."
    out = {
        v + "patch_embedding.proj.weight": matrix(hv, vision["in_channels"], patch, patch, std=0.1),
        v + "patch_embedding.proj.bias": matrix(hv),
        v + "patch_embedding.cls_embedding": matrix(1, hv, std=1.0),
        v + "patch_embedding.position_embedding.weight": matrix(vision["num_positions"], hv, std=0.5),
    }
    for j in range(vision["num_hidden_layers"]):
        b = f"{v}transformer.layers.{j}."
        out.update({
            b + "input_layernorm.weight": norm(hv), b + "input_layernorm.bias": matrix(hv),
            b + "attention.query_key_value.weight": matrix(3 * hv, hv), b + "attention.query_key_value.bias": matrix(3 * hv),
            b + "attention.dense.weight": matrix(hv, hv), b + "attention.dense.bias": matrix(hv),
            b + "mlp.fc1.weight": matrix(inner, hv), b + "mlp.fc1.bias": matrix(inner),
            b + "mlp.fc2.weight": matrix(hv, inner), b + "mlp.fc2.bias": matrix(hv),
            b + "post_attention_layernorm.weight": norm(hv), b + "post_attention_layernorm.bias": matrix(hv),
        })  # fmt: skip
    out.update({
        v + "conv.weight": matrix(hidden, hv, 2, 2, std=0.1), v + "conv.bias": matrix(hidden),
        v + "linear_proj.linear_proj.weight": matrix(hidden, hidden),
        v + "linear_proj.norm1.weight": norm(hidden), v + "linear_proj.norm1.bias": matrix(hidden),
        v + "linear_proj.dense_h_to_4h.weight": matrix(ffn, hidden),
        v + "linear_proj.gate_proj.weight": matrix(ffn, hidden),
        v + "linear_proj.dense_4h_to_h.weight": matrix(hidden, ffn),
        v + "boi": matrix(1, 1, hidden, std=1.0), v + "eoi": matrix(1, 1, hidden, std=1.0),
    })  # fmt: skip
    return out


def glm4v_checkpoint(path: Path, *, seed: int = 0, vision: dict | None = None, **config) -> Glm4vCheckpoint:
    """A tiny GLM-4V under `path`. `vision` fields win over `TINY_VISION`; `config` fields over `GLM4V_CONFIG`.

    The LM reference gets the RoPE base the remote code computes, ``10000 * rope_ratio`` (1 when absent).
    """
    fields = {**GLM4V_CONFIG, **config}
    fields["vision_config"] = {**TINY_VISION, **(vision or {})}
    model = glm_model(seed=seed, num_key_value_heads=2, rms_norm_eps=fields["layernorm_epsilon"],
                      rope_theta=10000.0 * (fields.get("rope_ratio") or 1))  # fmt: skip
    c = model.config
    fields.update(
        num_layers=c.num_hidden_layers,
        padded_vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        ffn_hidden_size=c.intermediate_size,
        kv_channels=c.head_dim,
        num_attention_heads=c.num_attention_heads,
        multi_query_group_num=c.num_key_value_heads,
    )
    tensors = {**thudm_tensors(model), **vision_tensors(fields["vision_config"], c.hidden_size, c.intermediate_size,
                                                       seed=seed)}  # fmt: skip
    save_shards(path, tensors, fields, fmt="safetensors")
    return Glm4vCheckpoint(Path(path), model, fields, tensors)
