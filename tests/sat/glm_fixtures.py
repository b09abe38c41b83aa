"""Tiny random GLM-family checkpoints for the SAT ChatGLM/GLM-4 tests.

* `glm_checkpoint`: transformers' own `GlmForCausalLM` (the GLM-4 math: interleaved RoPE on half of each head,
  RMSNorm, SwiGLU with a merged ``gate_up_proj``, GQA with q/k/v biases), saved natively by `save_pretrained`.
* `thudm_checkpoint`: the same weights under the names and ``config.json`` fields of THUDM's remote code
  (``chatglm2-6b``, ``chatglm3-6b``, ``glm-4-9b-chat``). There is no transformers class for those files, so the
  native Glm model that holds the weights is the reference; its rope base is set to what the release computes.
* `chatglm6b_checkpoint`: ChatGLM-6B (v1) files, random tensors with THUDM's names and per-head qkv rows.

THUDM files are written as two shards plus an index, ``.bin`` for ChatGLM-6B/2/3 and ``.safetensors`` for GLM-4,
as the releases ship them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from hf_fixtures import HFCheckpoint, randomize_, save_sharded
from safetensors.torch import save_file
from transformers import GlmConfig, GlmForCausalLM

GLM_VARIANTS: dict[str, dict] = {
    "gqa": dict(num_key_value_heads=2),
    "mha": dict(num_key_value_heads=4),
    "wide-heads": dict(num_key_value_heads=2, head_dim=32),  # head_dim != hidden/heads (THUDM: kv_channels)
    "quarter-rotary": dict(num_key_value_heads=2, partial_rotary_factor=0.25),  # 4 of 16 channels rotate
}

# Fields every THUDM ChatGLM2/3/GLM-4 config.json carries, with the released values where size does not matter.
_THUDM_FIELDS = dict(
    add_bias_linear=False,
    add_qkv_bias=True,
    apply_query_key_layer_scaling=True,
    apply_residual_connection_post_layernorm=False,
    architectures=["ChatGLMModel"],
    attention_dropout=0.0,
    attention_softmax_in_fp32=True,
    auto_map={
        "AutoConfig": "configuration_chatglm.ChatGLMConfig",
        "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
        "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
        "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
    },
    bias_dropout_fusion=True,
    fp32_residual_connection=False,
    hidden_dropout=0.0,
    model_type="chatglm",
    original_rope=True,
    post_layer_norm=True,
    rmsnorm=True,
    tie_word_embeddings=False,
    use_cache=True,
)
# What differs between the releases' config.json files (besides sizes).
THUDM_RELEASES: dict[str, dict] = {
    "chatglm2": dict(_name_or_path="THUDM/chatglm2-6b", layernorm_epsilon=1e-05, seq_length=32768,
                     torch_dtype="float16", transformers_version="4.27.1", eos_token_id=2, pad_token_id=0),
    "chatglm3": dict(_name_or_path="THUDM/chatglm3-6b", layernorm_epsilon=1e-05, seq_length=8192,
                     torch_dtype="float16", transformers_version="4.30.2"),
    "glm4": dict(_name_or_path="THUDM/glm-4-9b-chat", layernorm_epsilon=1.5625e-07, seq_length=131072,
                 rope_ratio=500, torch_dtype="bfloat16", transformers_version="4.42.4",
                 eos_token_id=[151329, 151336, 151338], pad_token_id=151329, attn_implementation="sdpa"),
}  # fmt: skip


def tiny_glm_config(**overrides) -> GlmConfig:
    """GLM with hidden 64, 4 heads of 16 (2 KV groups), 2 layers, vocab 128, untied head; `overrides` win.

    ``rope_theta`` and ``partial_rotary_factor`` go into ``rope_parameters``, as transformers v5 writes them.
    """
    rope = dict(rope_type="default", rope_theta=overrides.pop("rope_theta", 10000.0),
                partial_rotary_factor=overrides.pop("partial_rotary_factor", 0.5))  # fmt: skip
    fields = dict(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_parameters=rope,
        attention_bias=True,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
    )
    fields.update(overrides)
    return GlmConfig(**fields)


def glm_model(*, seed: int = 0, **overrides) -> GlmForCausalLM:
    """A tiny `GlmForCausalLM` with O(1) random weights, float32, eval mode."""
    torch.manual_seed(seed)
    return randomize_(GlmForCausalLM(tiny_glm_config(**overrides)), seed=seed).eval()


def glm_checkpoint(path: Path, variant: str = "gqa", *, seed: int = 0, **overrides) -> HFCheckpoint:
    """A tiny Glm saved natively under `path` (q/k/v of a layer in three shards); `variant` keys `GLM_VARIANTS`."""
    model = glm_model(seed=seed, **{**GLM_VARIANTS[variant], **overrides})
    save_sharded(model, path)
    return HFCheckpoint(path=Path(path), model=model)


def release_rope_theta(release: str, rope_ratio: float = 1.0) -> float:
    """The RoPE base the release's remote code computes (ChatGLM2 ignores rope_ratio in the base)."""
    return 10000.0 if release == "chatglm2" else 10000.0 * rope_ratio


@dataclass(frozen=True)
class ThudmCheckpoint:
    """THUDM files at `path`, holding the weights of `model` (the transformers reference)."""

    path: Path
    model: GlmForCausalLM
    config: dict
    tensors: dict[str, torch.Tensor]


def thudm_checkpoint(
    path: Path, release: str, *, model: GlmForCausalLM | None = None, per_head_qkv: bool = False, **config
) -> ThudmCheckpoint:
    """`model` (default: a fresh tiny Glm with the release's rope base) under the names of THUDM's remote code.

    Args:
        release: a key of `THUDM_RELEASES`: the release whose config.json fields are written.
        per_head_qkv: write ``multi_query_attention: false`` and qkv rows per head (MHA models only).
        config: config.json fields that win over the release's (``rope_ratio``, ...); None leaves a field out.
    """
    fields = {k: v for k, v in {**_THUDM_FIELDS, **THUDM_RELEASES[release], **config}.items() if v is not None}
    if model is None:
        kv_heads = 4 if per_head_qkv else 2
        model = glm_model(num_key_value_heads=kv_heads, rms_norm_eps=fields["layernorm_epsilon"],
                          rope_theta=release_rope_theta(release, fields.get("rope_ratio") or 1.0))  # fmt: skip
    c = model.config
    fields.update(
        num_layers=c.num_hidden_layers,
        padded_vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        ffn_hidden_size=c.intermediate_size,
        kv_channels=c.head_dim,
        num_attention_heads=c.num_attention_heads,
        multi_query_attention=not per_head_qkv,
        multi_query_group_num=c.num_key_value_heads,
    )
    if release == "glm4":
        fields["num_hidden_layers"] = c.num_hidden_layers  # glm-4-9b-chat's config.json writes both
    tensors = thudm_tensors(model, per_head_qkv=per_head_qkv)
    save_shards(path, tensors, fields, fmt="safetensors" if release == "glm4" else "bin")
    return ThudmCheckpoint(Path(path), model, fields, tensors)


def thudm_tensors(model: GlmForCausalLM, *, per_head_qkv: bool = False) -> dict[str, torch.Tensor]:
    """The Glm weights under THUDM's ChatGLM2/3/GLM-4 names (``transformer.encoder.layers.{i}...``)."""
    c, sd = model.config, model.state_dict()
    heads, hd = c.num_attention_heads, c.head_dim
    out = {"transformer.embedding.word_embeddings.weight": sd["model.embed_tokens.weight"]}
    for i in range(c.num_hidden_layers):
        hf, th = f"model.layers.{i}.", f"transformer.encoder.layers.{i}."
        for kind in ("weight", "bias"):
            qkv = torch.cat([sd[f"{hf}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            if per_head_qkv:  # global [Q; K; V] -> rows per head [h: q k v]
                qkv = qkv.reshape(3, heads, hd, *qkv.shape[1:]).transpose(0, 1).reshape(qkv.shape)
            out[f"{th}self_attention.query_key_value.{kind}"] = qkv
        out[f"{th}input_layernorm.weight"] = sd[f"{hf}input_layernorm.weight"]
        out[f"{th}self_attention.dense.weight"] = sd[f"{hf}self_attn.o_proj.weight"]
        out[f"{th}post_attention_layernorm.weight"] = sd[f"{hf}post_attention_layernorm.weight"]
        out[f"{th}mlp.dense_h_to_4h.weight"] = sd[f"{hf}mlp.gate_up_proj.weight"]
        out[f"{th}mlp.dense_4h_to_h.weight"] = sd[f"{hf}mlp.down_proj.weight"]
    out["transformer.encoder.final_layernorm.weight"] = sd["model.norm.weight"]
    out["transformer.output_layer.weight"] = sd["lm_head.weight"]
    rotary = hd // 2  # the remote code's RotaryEmbedding(kv_channels // 2) buffer, saved in the released files
    out["transformer.rotary_pos_emb.inv_freq"] = 1.0 / 10000 ** (torch.arange(0, rotary, 2).float() / rotary)
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


# ChatGLM-6B (v1): hidden 64, 4 heads of 16, 2 layers, vocab 160, as THUDM's config.json spells it.
CHATGLM6B_CONFIG = dict(
    _name_or_path="THUDM/chatglm-6b",
    architectures=["ChatGLMModel"],
    auto_map={
        "AutoConfig": "configuration_chatglm.ChatGLMConfig",
        "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
        "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
    },
    bos_token_id=150,
    eos_token_id=151,
    mask_token_id=152,
    gmask_token_id=153,
    pad_token_id=3,
    hidden_size=64,
    inner_hidden_size=256,
    layernorm_epsilon=1e-05,
    max_sequence_length=64,
    model_type="chatglm",
    num_attention_heads=4,
    num_layers=2,
    position_encoding_2d=True,
    torch_dtype="float16",
    transformers_version="4.23.1",
    use_cache=True,
    vocab_size=160,
)


def chatglm6b_tensors(config: dict, *, seed: int = 0, tied: bool = False) -> dict[str, torch.Tensor]:
    """Random ChatGLM-6B weights (O(1) activations) under THUDM's names; qkv rows per head ``[h: q k v]``."""
    generator = torch.Generator().manual_seed(seed)
    hidden, inner, vocab = config["hidden_size"], config["inner_hidden_size"], config["vocab_size"]
    heads = config["num_attention_heads"]

    def matrix(*shape, std=0.15):
        return std * torch.randn(shape, generator=generator)

    def norm(n):
        return 1.0 + 0.1 * torch.randn(n, generator=generator)

    out = {"transformer.word_embeddings.weight": matrix(vocab, hidden, std=1.0)}
    for i in range(config["num_layers"]):
        p = f"transformer.layers.{i}."
        out.update({
            p + "input_layernorm.weight": norm(hidden), p + "input_layernorm.bias": matrix(hidden),
            p + "attention.query_key_value.weight": matrix(3 * hidden, hidden),
            p + "attention.query_key_value.bias": matrix(3 * hidden),
            p + "attention.dense.weight": matrix(hidden, hidden), p + "attention.dense.bias": matrix(hidden),
            p + "post_attention_layernorm.weight": norm(hidden), p + "post_attention_layernorm.bias": matrix(hidden),
            p + "mlp.dense_h_to_4h.weight": matrix(inner, hidden), p + "mlp.dense_h_to_4h.bias": matrix(inner),
            p + "mlp.dense_4h_to_h.weight": matrix(hidden, inner, std=0.08), p + "mlp.dense_4h_to_h.bias": matrix(hidden),
            p + "attention.rotary_emb.inv_freq": 1.0 / 10000 ** (torch.arange(0, hidden // heads // 2, 2).float()
                                                                  / (hidden // heads // 2)),
        })  # fmt: skip
    out["transformer.final_layernorm.weight"] = norm(hidden)
    out["transformer.final_layernorm.bias"] = matrix(hidden)
    if not tied:
        out["lm_head.weight"] = out["transformer.word_embeddings.weight"].clone()  # equal, as the release's tie
    return out


def chatglm6b_checkpoint(path: Path, *, seed: int = 0, tied: bool = False, **config) -> tuple[dict, dict]:
    """ChatGLM-6B files under `path` (``.bin`` shards); returns (config, tensors). `tied` leaves out lm_head."""
    fields = {**CHATGLM6B_CONFIG, **config}
    tensors = chatglm6b_tensors(fields, seed=seed, tied=tied)
    save_shards(path, tensors, fields, fmt="bin")
    return fields, tensors


def save_shards(path: Path, tensors: dict[str, torch.Tensor], config: dict, *, fmt: str) -> None:
    """`config` as config.json and `tensors` as two shards (layer 0 / the rest) plus the transformers index.

    `fmt` is ``"safetensors"`` or ``"bin"`` (``torch.save``), named as transformers names its shards.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    names = [f"{stem}-0000{i}-of-00002.{fmt}" for i in (1, 2)]
    shards: list[dict[str, torch.Tensor]] = [{}, {}]
    for key, tensor in tensors.items():
        shards[0 if ".layers.0." in key else 1][key] = tensor
    for name, shard in zip(names, shards):
        if fmt == "safetensors":
            save_file(shard, str(path / name), metadata={"format": "pt"})
        else:
            torch.save(shard, path / name)
    weight_map = {k: names[s] for s, shard in enumerate(shards) for k in shard}
    (path / f"{stem}.{fmt}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))
