"""Tiny random HF CogVLM and CogAgent checkpoints, for examples and tests that must not download 35 GB.

`write_tiny_cogvlm` writes what ``THUDM/cogvlm-chat-hf`` ships, at any size: a ``config.json`` with the remote
code's fields (no ``model_type``; ``architectures: ["CogVLMForCausalLM"]``, ``vision_config``), and the weights
under the remote code's names as sharded safetensors with a ``model.safetensors.index.json``. Tensors are drawn
from a seeded generator and written shard by shard, so writing a large one holds one shard in memory.

Values: every matrix ``~ N(0, 1/fan_in)`` (fan-in = all dims but the first; ``boi``/``eoi`` and the CLS
embedding use their width), so activations stay O(1) at any width; LayerNorm/RMSNorm weights ``1 + N(0, 0.1)``;
biases ``N(0, 0.1)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = ["TinyCogAgent", "TinyCogVLM", "cogagent_tensor_shapes", "cogvlm_tensor_shapes", "write_tiny_cogagent",
           "write_tiny_cogvlm"]  # fmt: skip

INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True, slots=True)
class TinyCogVLM:
    """Sizes of a CogVLM checkpoint; the defaults make a 2-layer model of about 1 MB with 9 patches per image."""

    vocab_size: int = 128
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    rms_norm_eps: float = 1e-5
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_num_hidden_layers: int = 2
    vision_num_heads: int = 2
    image_size: int = 42
    patch_size: int = 14
    template_version: str = "chat"

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def config(self, model_type: str | None = None) -> dict:
        """The ``config.json`` THUDM's remote code writes; `model_type` adds that field (the release has none)."""
        config = {
            "architectures": ["CogVLMForCausalLM"],
            "auto_map": {"AutoConfig": "configuration_cogvlm.CogVLMConfig",
                         "AutoModelForCausalLM": "modeling_cogvlm.CogVLMForCausalLM"},
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu",
            "hidden_size": self.hidden_size, "initializer_range": 0.02, "intermediate_size": self.intermediate_size,
            "max_position_embeddings": 2048, "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers, "rms_norm_eps": self.rms_norm_eps,
            "template_version": self.template_version, "tie_word_embeddings": False, "torch_dtype": "float32",
            "transformers_version": "4.35.0", "use_cache": True, "vocab_size": self.vocab_size,
            "vision_config": {
                "dropout_prob": 0.0, "hidden_act": "gelu", "in_channels": 3,
                "num_hidden_layers": self.vision_num_hidden_layers, "hidden_size": self.vision_hidden_size,
                "patch_size": self.patch_size, "num_heads": self.vision_num_heads,
                "intermediate_size": self.vision_intermediate_size, "layer_norm_eps": 1e-6,
                "num_positions": self.patches + 1, "image_size": self.image_size,
            },
        }  # fmt: skip
        if model_type is not None:
            config["model_type"] = model_type
        return config


def cogvlm_tensor_shapes(sizes: TinyCogVLM) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every tensor of an HF CogVLM checkpoint, in the remote code's module order: ``(name, shape)``."""
    h, i, v = sizes.hidden_size, sizes.intermediate_size, sizes.vocab_size
    yield "model.embed_tokens.weight", (v, h)
    for layer in range(sizes.num_hidden_layers):
        p = f"model.layers.{layer}."
        for expert in ("vision", "language"):
            yield f"{p}self_attn.{expert}_expert_query_key_value.weight", (3 * h, h)
            yield f"{p}self_attn.{expert}_expert_dense.weight", (h, h)
        for expert in ("language", "vision"):
            yield f"{p}mlp.{expert}_mlp.gate_proj.weight", (i, h)
            yield f"{p}mlp.{expert}_mlp.up_proj.weight", (i, h)
            yield f"{p}mlp.{expert}_mlp.down_proj.weight", (h, i)
        yield f"{p}input_layernorm.weight", (h,)
        yield f"{p}post_attention_layernorm.weight", (h,)
    yield "model.norm.weight", (h,)
    yield from _vision_shapes(sizes)
    yield "lm_head.weight", (v, h)


def _vision_shapes(sizes: TinyCogVLM) -> Iterator[tuple[str, tuple[int, ...]]]:
    hv, iv, h, i = sizes.vision_hidden_size, sizes.vision_intermediate_size, sizes.hidden_size, sizes.intermediate_size
    p = "model.vision."
    yield p + "patch_embedding.proj.weight", (hv, 3, sizes.patch_size, sizes.patch_size)
    yield p + "patch_embedding.proj.bias", (hv,)
    yield p + "patch_embedding.cls_embedding", (1, hv)
    yield p + "patch_embedding.position_embedding.weight", (sizes.patches + 1, hv)
    for layer in range(sizes.vision_num_hidden_layers):
        q = f"{p}transformer.layers.{layer}."
        for name, shape in (("input_layernorm", (hv,)), ("attention.query_key_value", (3 * hv, hv)),
                            ("attention.dense", (hv, hv)), ("mlp.fc1", (iv, hv)), ("mlp.fc2", (hv, iv)),
                            ("post_attention_layernorm", (hv,))):  # fmt: skip
            yield f"{q}{name}.weight", shape
            yield f"{q}{name}.bias", (shape[0],)
    yield p + "linear_proj.linear_proj.weight", (h, hv)
    yield p + "linear_proj.norm1.weight", (h,)
    yield p + "linear_proj.norm1.bias", (h,)
    yield p + "linear_proj.dense_h_to_4h.weight", (i, h)
    yield p + "linear_proj.gate_proj.weight", (i, h)
    yield p + "linear_proj.dense_4h_to_h.weight", (h, i)
    yield p + "boi", (1, 1, h)
    yield p + "eoi", (1, 1, h)


def _draw(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(shape, generator=generator)
    if len(shape) > 1 or name.endswith(("boi", "eoi")):
        return noise / math.sqrt(math.prod(shape[1:]))
    if name.endswith("bias"):
        return 0.1 * noise
    return 1.0 + 0.1 * noise  # a norm weight


def _save_shard(folder: Path, shard: dict[str, torch.Tensor], weight_map: dict[str, str]) -> None:
    from safetensors.torch import save_file

    name = f"model-{len(set(weight_map.values())) + 1:05d}.safetensors"
    save_file(shard, folder / name, metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(shard, name))


def write_tiny_cogvlm(
    path: str | Path,
    sizes: TinyCogVLM = TinyCogVLM(),
    *,
    seed: int = 0,
    shard_bytes: int = 16 * 1024,
    dtype: torch.dtype = torch.float32,
    model_type: str | None = None,
) -> Path:
    """Write a random HF CogVLM checkpoint of `sizes` to the folder `path` (created); returns the folder.

    Args:
        sizes: the architecture (`TinyCogVLM`).
        seed: seeds the generator; the same seed gives the same tensors whatever `shard_bytes`.
        shard_bytes: a shard is closed once it holds at least this many bytes (a larger tensor gets its own).
        dtype: on-disk dtype of every tensor.
        model_type: also write this ``model_type`` (the released config has none).

    Example:
        >>> from adapters.sat.tiny import write_tiny_cogvlm
        >>> folder = write_tiny_cogvlm("/tmp/tiny-cogvlm")
        >>> # CogVLMModel.from_hf(folder) / sat.AutoModel.from_pretrained(str(folder), args)
    """
    generator = torch.Generator().manual_seed(seed)
    tensors = ((name, _draw(name, shape, generator)) for name, shape in cogvlm_tensor_shapes(sizes))
    return _write_checkpoint(Path(path), tensors, "tiny_cogvlm", sizes, seed, shard_bytes, dtype, model_type)


# -- CogAgent ------------------------------------------------------------------------------------------------------

# EVA-02-CLIP-L, CogAgent's high-resolution tower, in `TinyCogAgent` field names (as adapters.sat.models.cross_vision).
EVA_L_CROSS = {"cross_hidden_size": 1024, "cross_num_hidden_layers": 24, "cross_num_heads": 16,
               "cross_intermediate_size": 2730, "cross_patch_size": 14, "cross_head_size": 768}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TinyCogAgent(TinyCogVLM):
    """Sizes of a CogAgent checkpoint (``THUDM/cogagent-chat-hf``): CogVLM's, a 224-px-style low-res tower with
    ``pos_embed``, and the high-res cross tower; the defaults add a 2-layer, 56-px (16-patch) cross tower.

    THUDM's remote code hard-codes the cross tower as EVA-02-CLIP-L (1024 wide, 24 blocks); a smaller one is written
    to ``config.json`` as ``cross_vision_config`` (our field, absent from the releases, read by the spec).
    """

    template_version: str = "chat_old"
    cross_image_size: int = 56
    cross_hidden_size: int = 32
    cross_compute_hidden_size: int = 32
    cross_num_hidden_layers: int = 2
    cross_num_heads: int = 2
    cross_intermediate_size: int = 48
    cross_patch_size: int = 14
    cross_head_size: int = 16

    @property
    def cross_patches(self) -> int:
        return (self.cross_image_size // self.cross_patch_size) ** 2

    def cross_vision_config(self) -> dict | None:
        """The ``cross_vision_config`` field, or None for EVA-02-CLIP-L (what the releases hold, unwritten)."""
        ours = {name: getattr(self, name) for name in EVA_L_CROSS}
        if ours == EVA_L_CROSS:
            return None
        return {"hidden_size": self.cross_hidden_size, "num_hidden_layers": self.cross_num_hidden_layers,
                "num_heads": self.cross_num_heads, "intermediate_size": self.cross_intermediate_size,
                "patch_size": self.cross_patch_size, "head_size": self.cross_head_size}  # fmt: skip

    def config(self, model_type: str | None = None) -> dict:
        config = TinyCogVLM.config(self, model_type) | {
            "architectures": ["CogAgentForCausalLM"],
            "auto_map": {"AutoConfig": "configuration_cogagent.CogAgentConfig",
                         "AutoModelForCausalLM": "modeling_cogagent.CogAgentForCausalLM"},
            "cross_image_size": self.cross_image_size, "cross_hidden_size": self.cross_hidden_size,
            "cross_compute_hidden_size": self.cross_compute_hidden_size,
        }  # fmt: skip
        cross = self.cross_vision_config()
        if cross is not None:
            config["cross_vision_config"] = cross
        return config


def cogagent_tensor_shapes(sizes: TinyCogAgent) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every tensor of an HF CogAgent checkpoint: CogVLM's, each layer's cross-attention, both towers' extras."""
    h, c, d = sizes.hidden_size, sizes.cross_compute_hidden_size, sizes.cross_hidden_size
    for name, shape in cogvlm_tensor_shapes(sizes):
        yield name, shape
        if name.endswith("post_attention_layernorm.weight") and name.startswith("model.layers."):
            p = name.removesuffix("post_attention_layernorm.weight")
            yield p + "cross_attn.query.weight", (c, h)
            yield p + "cross_attn.key_value.weight", (2 * c, d)
            yield p + "cross_attn.dense.weight", (h, c)
            yield p + "post_cross_attention_layernorm.weight", (h,)
        if name == "model.vision.eoi":
            yield "model.vision.pos_embed", (sizes.patches, sizes.vision_hidden_size)
            yield from _cross_vision_shapes(sizes)


def _cross_vision_shapes(sizes: TinyCogAgent) -> Iterator[tuple[str, tuple[int, ...]]]:
    d, i, n = sizes.cross_hidden_size, sizes.cross_intermediate_size, sizes.cross_patches
    p = "model.cross_vision.vit.model."
    yield p + "cls_token", (1, 1, d)
    yield p + "pos_embed", (1, n + 1, d)
    yield p + "patch_embed.proj.weight", (d, 3, sizes.cross_patch_size, sizes.cross_patch_size)
    yield p + "patch_embed.proj.bias", (d,)
    # The RoPE tables are buffers the remote code saves once (safetensors drops the per-block aliases).
    yield p + "rope.freqs_cos", (n, d // sizes.cross_num_heads)
    yield p + "rope.freqs_sin", (n, d // sizes.cross_num_heads)
    for block in range(sizes.cross_num_hidden_layers):
        q = f"{p}blocks.{block}."
        yield q + "norm1.weight", (d,)
        yield q + "norm1.bias", (d,)
        yield q + "attn.q_bias", (d,)
        yield q + "attn.v_bias", (d,)
        for name in ("q_proj", "k_proj", "v_proj"):
            yield f"{q}attn.{name}.weight", (d, d)
        yield q + "attn.inner_attn_ln.weight", (d,)
        yield q + "attn.inner_attn_ln.bias", (d,)
        yield q + "attn.proj.weight", (d, d)
        yield q + "attn.proj.bias", (d,)
        yield q + "norm2.weight", (d,)
        yield q + "norm2.bias", (d,)
        for name, shape in (("w1", (i, d)), ("w2", (i, d)), ("w3", (d, i))):
            yield f"{q}mlp.{name}.weight", shape
            yield f"{q}mlp.{name}.bias", (shape[0],)
        yield q + "mlp.ffn_ln.weight", (i,)
        yield q + "mlp.ffn_ln.bias", (i,)
    yield p + "norm.weight", (d,)
    yield p + "norm.bias", (d,)
    yield p + "head.weight", (sizes.cross_head_size, d)
    yield p + "head.bias", (sizes.cross_head_size,)
    yield "model.cross_vision.pos_embed", (n, d)


def _draw_cogagent(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    if name.endswith(("q_bias", "v_bias")):
        return 0.1 * torch.randn(shape, generator=generator)  # biases, though their names do not say so
    if name.endswith("pos_embed") or name.endswith("cls_token"):
        return torch.randn(shape, generator=generator) / math.sqrt(shape[-1])
    return _draw(name, shape, generator)


def write_tiny_cogagent(
    path: str | Path,
    sizes: TinyCogAgent = TinyCogAgent(),
    *,
    seed: int = 0,
    shard_bytes: int = 16 * 1024,
    dtype: torch.dtype = torch.float32,
    model_type: str | None = None,
) -> Path:
    """Write a random HF CogAgent checkpoint of `sizes` to the folder `path` (created); returns the folder.

    Same arguments and layout as `write_tiny_cogvlm` (sharded safetensors + index, ``config.json`` with
    ``architectures: ["CogAgentForCausalLM"]`` and the ``cross_*`` fields). ``pos_embed``/``cls_token`` tensors are
    ``N(0, 1/width)``; the ``q_bias``/``v_bias`` vectors ``N(0, 0.1)``; the saved RoPE tables are random too, so a
    loader that read them instead of recomputing them would show.

    Example:
        >>> from adapters.sat.tiny import write_tiny_cogagent
        >>> folder = write_tiny_cogagent("/tmp/tiny-cogagent")
        >>> # CogAgentModel.from_hf(folder) / sat.AutoModel.from_pretrained(str(folder), args)
    """
    generator = torch.Generator().manual_seed(seed)
    tensors = ((name, _draw_cogagent(name, shape, generator)) for name, shape in cogagent_tensor_shapes(sizes))
    return _write_checkpoint(Path(path), tensors, "tiny_cogagent", sizes, seed, shard_bytes, dtype, model_type)


def _write_checkpoint(folder: Path, tensors, tag: str, sizes, seed: int, shard_bytes: int, dtype, model_type) -> Path:
    """Write `tensors` (name, tensor), in order, as shards of about `shard_bytes` + index + ``config.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    shard: dict[str, torch.Tensor] = {}
    shard_size = total = 0
    for name, tensor in tensors:
        shard[name] = tensor.to(dtype)
        shard_size += shard[name].nbytes
        if shard_size >= shard_bytes:
            _save_shard(folder, shard, weight_map)
            total += shard_size
            shard, shard_size = {}, 0
    if shard:
        _save_shard(folder, shard, weight_map)
        total += shard_size
    index = {"metadata": {"total_size": total, tag: asdict(sizes), "seed": seed}, "weight_map": weight_map}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=1))
    config = sizes.config(model_type) | {"torch_dtype": str(dtype).removeprefix("torch.")}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder
