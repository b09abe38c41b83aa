"""An independent HF CogAgent forward (``CogAgentForCausalLM`` of THUDM's remote code), from its documented semantics.

Built on `cogvlm_reference.CogVLMReference` (the LM's experts, RoPE, position ids and the low-res tower's layers,
all on HF tensor names) and pure torch; it uses none of `adapters.sat`. What CogAgent adds, as
``modeling_cogagent.py``, ``visual.py`` and ``cross_visual.py`` define it:

* low-res tower: CogVLM's, with ``model.vision.pos_embed`` ``[N, Hv]`` added to the patches (CLS dropped) before
  the GLU projector;
* layer: ``h += self_attn(RMS_in(h)); h += cross_attn(RMS_cross(h), enc); h += mlp(RMS_post(h))``; cross-attention
  has the LM's head count, head width ``cross_compute_hidden_size / heads``, ``key_value`` rows ``[K; V]``, no
  mask (HF's default ``cross_attention_mask`` is all zeros, additive), scale ``1/sqrt(head width)``;
* high-res tower (``Eva2LargeEncoder``): conv patches, CLS prepended, ``pos_embed`` added; pre-LN blocks
  ``x + attn(norm1(x))``, ``x + mlp(norm2(x))`` over **all blocks but the last**; attention with separate q/k/v
  (biases ``q_bias``, none, ``v_bias``), 2-D RoPE on every token but CLS, LayerNorm ``inner_attn_ln`` on the
  context before ``proj``; SwiGLU ``w3(ffn_ln(silu(w1 x) * w2 x))``; LayerNorm eps 1e-6; CLS dropped, then
  ``model.cross_vision.pos_embed`` added.
* RoPE (``VisionRotaryEmbeddingFast``, ``rope=True, intp_freq=True, pt_hw_seq_len=16``): per head, the first half of
  the channels turns by the patch's row, the second half by its column; within a half, channel pairs
  ``(2i, 2i+1)`` share frequency ``10000 ** (-2i / (head_dim / 2))``; the position of row ``r`` is
  ``r / G * 16`` (``G`` patches per side); ``x' = x cos + rot(x) sin`` with ``rot(a, b) = (-b, a)`` per pair.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from cogvlm_reference import CogVLMReference, build_position_ids, vision_expert_mask

VISION = 1
EVA_L = {"hidden_size": 1024, "num_hidden_layers": 24, "num_heads": 16, "patch_size": 14}
CROSS_EPS = 1e-6


def rope_angles(grid: int, head_dim: int, trained_grid: int = 16) -> torch.Tensor:
    """``[grid * grid, head_dim]`` angles, patches in row-major order."""
    half = head_dim // 2
    angles = torch.empty(grid, grid, head_dim)
    for j in range(half // 2):
        frequency = 10000.0 ** (-2 * j / half)
        for r in range(grid):
            angles[r, :, 2 * j : 2 * j + 2] = r / grid * trained_grid * frequency
        for c in range(grid):
            angles[:, c, half + 2 * j : half + 2 * j + 2] = c / grid * trained_grid * frequency
    return angles.reshape(grid * grid, head_dim)


def rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    a, b = x[..., 0::2], x[..., 1::2]
    turned = torch.empty_like(x)
    turned[..., 0::2], turned[..., 1::2] = -b, a
    return x * angles.cos() + turned * angles.sin()


class CogAgentReference(CogVLMReference):
    """Logits of an HF CogAgent checkpoint ``{name: tensor}`` + ``config.json`` dict (float32)."""

    def __init__(self, tensors: dict[str, torch.Tensor], config: dict):
        super().__init__(tensors, config)
        self.cross = EVA_L | (config.get("cross_vision_config") or {})

    # -- low-res tower: CogVLM's plus pos_embed before the projector ------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        t, vc, p = self.t, self.vision_config, "model.vision."
        x = F.conv2d(images, t[p + "patch_embedding.proj.weight"], t[p + "patch_embedding.proj.bias"],
                     stride=vc["patch_size"]).flatten(2).transpose(1, 2)  # fmt: skip
        cls = t[p + "patch_embedding.cls_embedding"].expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + t[p + "patch_embedding.position_embedding.weight"][None]
        for layer in range(vc["num_hidden_layers"]):
            x = self._vision_layer(x, f"{p}transformer.layers.{layer}.")
        x = x[:, 1:] + t[p + "pos_embed"][None]
        q = p + "linear_proj."
        y = F.linear(x, t[q + "linear_proj.weight"])
        y = F.gelu(F.layer_norm(y, y.shape[-1:], t[q + "norm1.weight"], t[q + "norm1.bias"], eps=1e-5))
        y = F.linear(F.silu(F.linear(y, t[q + "gate_proj.weight"])) * F.linear(y, t[q + "dense_h_to_4h.weight"]),
                     t[q + "dense_4h_to_h.weight"])  # fmt: skip
        batch = y.shape[0]
        return torch.cat((t[p + "boi"].expand(batch, -1, -1), y, t[p + "eoi"].expand(batch, -1, -1)), dim=1)

    # -- high-res tower -------------------------------------------------------------------------------------------
    def _ln(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.t[name + ".weight"], self.t[name + ".bias"], CROSS_EPS)

    def _cross_block(self, x: torch.Tensor, p: str, angles: torch.Tensor) -> torch.Tensor:
        t, heads = self.t, self.cross["num_heads"]
        batch, length, width = x.shape
        h = self._ln(x, p + "norm1")
        q = h @ t[p + "attn.q_proj.weight"].T + t[p + "attn.q_bias"]
        k = h @ t[p + "attn.k_proj.weight"].T
        v = h @ t[p + "attn.v_proj.weight"].T + t[p + "attn.v_bias"]
        q, k, v = (z.reshape(batch, length, heads, width // heads).permute(0, 2, 1, 3) for z in (q, k, v))
        q = torch.cat((q[:, :, :1], rotate(q[:, :, 1:], angles)), dim=2)
        k = torch.cat((k[:, :, :1], rotate(k[:, :, 1:], angles)), dim=2)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
        context = (weights @ v).permute(0, 2, 1, 3).reshape(batch, length, width)
        x = x + F.linear(
            self._ln(context, p + "attn.inner_attn_ln"), t[p + "attn.proj.weight"], t[p + "attn.proj.bias"]
        )
        h = self._ln(x, p + "norm2")
        gated = F.silu(F.linear(h, t[p + "mlp.w1.weight"], t[p + "mlp.w1.bias"])) * F.linear(
            h, t[p + "mlp.w2.weight"], t[p + "mlp.w2.bias"]
        )
        return x + F.linear(self._ln(gated, p + "mlp.ffn_ln"), t[p + "mlp.w3.weight"], t[p + "mlp.w3.bias"])

    def encode_cross_images(self, images: torch.Tensor) -> torch.Tensor:
        t, c, p = self.t, self.cross, "model.cross_vision.vit.model."
        grid = images.shape[-1] // c["patch_size"]
        x = F.conv2d(images, t[p + "patch_embed.proj.weight"], t[p + "patch_embed.proj.bias"], stride=c["patch_size"])
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat((t[p + "cls_token"].expand(x.shape[0], -1, -1), x), dim=1) + t[p + "pos_embed"]
        angles = rope_angles(grid, c["hidden_size"] // c["num_heads"])
        for block in range(c["num_hidden_layers"] - 1):  # the last block is not run
            x = self._cross_block(x, f"{p}blocks.{block}.", angles)
        return x[:, 1:] + t["model.cross_vision.pos_embed"][None]

    # -- language model -------------------------------------------------------------------------------------------
    def _cross_attention(self, x: torch.Tensor, p: str, encoded: torch.Tensor) -> torch.Tensor:
        t, heads = self.t, self.config["num_attention_heads"]
        compute = self.config["cross_compute_hidden_size"]
        batch, length, _ = x.shape
        q = F.linear(x, t[p + "query.weight"]).view(batch, length, heads, -1).transpose(1, 2)
        k, v = F.linear(encoded, t[p + "key_value.weight"]).split(compute, dim=-1)
        k, v = (z.view(batch, z.shape[1], heads, -1).transpose(1, 2) for z in (k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(compute // heads)
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, compute)
        return F.linear(context, t[p + "dense.weight"])

    def logits(self, input_ids, token_type_ids, images, cross_images):
        """``[B, L, vocab]`` for rows with one image each: low-res `images`, high-res `cross_images`."""
        x = self.t["model.embed_tokens.weight"][input_ids]
        features = self.encode_images(images)
        x = x.index_put((token_type_ids == VISION,), features.reshape(-1, features.shape[-1]))
        encoded = self.encode_cross_images(cross_images)
        cos, sin = self._rope(build_position_ids(token_type_ids))
        vision = vision_expert_mask(token_type_ids)
        for layer in range(self.config["num_hidden_layers"]):
            p = f"model.layers.{layer}."
            x = x + self._attention(self._norm(p + "input_layernorm.weight")(x), p + "self_attn.", vision, cos, sin)
            x = x + self._cross_attention(self._norm(p + "post_cross_attention_layernorm.weight")(x),
                                          p + "cross_attn.", encoded)  # fmt: skip
            x = x + self._mlp(self._norm(p + "post_attention_layernorm.weight")(x), p + "mlp.", vision)
        return F.linear(self._norm("model.norm.weight")(x), self.t["lm_head.weight"])
