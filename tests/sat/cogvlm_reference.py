"""An independent HF CogVLM forward (``CogVLMForCausalLM`` of THUDM's remote code), from its documented semantics.

Written on the HF tensor names and pure torch plus transformers' LLaMA building blocks (`LlamaRMSNorm`,
`apply_rotary_pos_emb`); it uses none of `adapters.sat`. Semantics, as the remote code's ``modeling_cogvlm.py`` and
``visual.py`` define them:

* inputs: ``input_ids`` ``[B, L]``, ``token_type_ids`` (0 language, 1 vision: ``boi``, the patches, ``eoi``), one
  image per row ``[B, 3, S, S]``; the vision tokens' embeddings are replaced by the tower's output, in order;
* position ids (``build_position_ids``): ``boi``/``eoi`` count as language; each language token advances the position
  by one, a run of patches shares one position, advanced at its first patch;
* expert mask (``get_expert_mask``): a vision token followed by a vision token uses the vision expert (so ``eoi``
  does not); each expert is a LLaMA attention (fused qkv, rows ``[Q; K; V]``, RoPE base 10000, rotate-half) and a
  LLaMA MLP; attention is causal over all tokens;
* tower: conv patches, CLS prepended, position table added, layers ``x + LN1(attn(x))``, ``x + LN2(mlp(x))``
  (exact gelu, attention scale ``head_dim ** -0.5``, no mask), CLS dropped, GLU
  ``down(silu(gate(y)) * up(y))`` with ``y = gelu(LayerNorm(linear_proj(x)))``, then ``[boi, ..., eoi]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

LANGUAGE, VISION = 0, 1


def build_position_ids(token_type_ids: torch.Tensor) -> torch.Tensor:
    types = token_type_ids.clone()
    vision = types == VISION
    edge = torch.zeros_like(vision)
    edge[:, 1:] |= vision[:, 1:] & ~vision[:, :-1]  # the first vision token of a run: boi
    edge[:, :-1] |= vision[:, :-1] & ~vision[:, 1:]  # the last one: eoi
    edge[:, 0] |= vision[:, 0]
    edge[:, -1] |= vision[:, -1]
    types[edge] = LANGUAGE
    step = torch.zeros_like(types)
    step[:, 1:] = ((types[:, 1:] == LANGUAGE) | ((types[:, 1:] == VISION) & (types[:, :-1] == LANGUAGE))).long()
    return step.cumsum(-1)


def vision_expert_mask(token_type_ids: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros_like(token_type_ids, dtype=torch.bool)
    mask[:, :-1] = (token_type_ids[:, :-1] == VISION) & (token_type_ids[:, 1:] == VISION)
    return mask


class CogVLMReference:
    """Logits of an HF CogVLM checkpoint given as ``{name: tensor}`` and its ``config.json`` dict (float32)."""

    def __init__(self, tensors: dict[str, torch.Tensor], config: dict):
        self.t = {k: v.float() for k, v in tensors.items()}
        self.config = config
        self.vision_config = config["vision_config"]

    # -- vision tower ---------------------------------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        t, vc, p = self.t, self.vision_config, "model.vision."
        x = F.conv2d(images, t[p + "patch_embedding.proj.weight"], t[p + "patch_embedding.proj.bias"],
                     stride=vc["patch_size"]).flatten(2).transpose(1, 2)  # fmt: skip
        cls = t[p + "patch_embedding.cls_embedding"].expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + t[p + "patch_embedding.position_embedding.weight"][None]
        for layer in range(vc["num_hidden_layers"]):
            x = self._vision_layer(x, f"{p}transformer.layers.{layer}.")
        x = x[:, 1:]
        q = p + "linear_proj."
        y = F.linear(x, t[q + "linear_proj.weight"])
        y = F.gelu(F.layer_norm(y, y.shape[-1:], t[q + "norm1.weight"], t[q + "norm1.bias"], eps=1e-5))
        y = F.linear(F.silu(F.linear(y, t[q + "gate_proj.weight"])) * F.linear(y, t[q + "dense_h_to_4h.weight"]),
                     t[q + "dense_4h_to_h.weight"])  # fmt: skip
        batch = y.shape[0]
        return torch.cat((t[p + "boi"].expand(batch, -1, -1), y, t[p + "eoi"].expand(batch, -1, -1)), dim=1)

    def _vision_layer(self, x: torch.Tensor, p: str) -> torch.Tensor:
        t, vc = self.t, self.vision_config
        eps, heads = vc["layer_norm_eps"], vc["num_heads"]
        batch, length, width = x.shape
        qkv = F.linear(x, t[p + "attention.query_key_value.weight"], t[p + "attention.query_key_value.bias"])
        q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        scores = (q * (width // heads) ** -0.5) @ k.transpose(-1, -2)
        attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, width)
        attn = F.linear(attn, t[p + "attention.dense.weight"], t[p + "attention.dense.bias"])
        x = x + F.layer_norm(attn, (width,), t[p + "input_layernorm.weight"], t[p + "input_layernorm.bias"], eps)
        mlp = F.linear(F.gelu(F.linear(x, t[p + "mlp.fc1.weight"], t[p + "mlp.fc1.bias"])),
                       t[p + "mlp.fc2.weight"], t[p + "mlp.fc2.bias"])  # fmt: skip
        ln2 = (t[p + "post_attention_layernorm.weight"], t[p + "post_attention_layernorm.bias"])
        return x + F.layer_norm(mlp, (width,), *ln2, eps)

    # -- language model -------------------------------------------------------------------------------------------
    def _norm(self, name: str) -> LlamaRMSNorm:
        norm = LlamaRMSNorm(self.config["hidden_size"], eps=self.config["rms_norm_eps"])
        norm.weight.data = self.t[name]
        return norm

    def _rope(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        head_dim = self.config["hidden_size"] // self.config["num_attention_heads"]
        inv_freq = 1.0 / 10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim)
        angles = position_ids[..., None].float() * inv_freq
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()

    @staticmethod
    def _experts(x: torch.Tensor, vision: torch.Tensor, language_fn, vision_fn) -> torch.Tensor:
        return torch.where(vision[..., None], vision_fn(x), language_fn(x))

    def _attention(self, x, p, vision, cos, sin):
        t, heads = self.t, self.config["num_attention_heads"]
        batch, length, width = x.shape
        qkv = self._experts(x, vision, lambda h: F.linear(h, t[p + "language_expert_query_key_value.weight"]),
                            lambda h: F.linear(h, t[p + "vision_expert_query_key_value.weight"]))  # fmt: skip
        q, k, v = (part.view(batch, length, heads, -1).transpose(1, 2) for part in qkv.split(width, dim=-1))
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(batch, length, width)
        return self._experts(out, vision, lambda h: F.linear(h, t[p + "language_expert_dense.weight"]),
                             lambda h: F.linear(h, t[p + "vision_expert_dense.weight"]))  # fmt: skip

    def _mlp(self, x, p, vision):
        def mlp(expert):
            w = lambda n: self.t[f"{p}{expert}_mlp.{n}.weight"]  # noqa: E731
            return lambda h: F.linear(F.silu(F.linear(h, w("gate_proj"))) * F.linear(h, w("up_proj")), w("down_proj"))

        return self._experts(x, vision, mlp("language"), mlp("vision"))

    def logits(self, input_ids, token_type_ids=None, images=None, *, all_vision_experts: bool = False):
        """``[B, L, vocab]``; `all_vision_experts` sends every token through the vision experts (no image)."""
        if token_type_ids is None:
            token_type_ids = torch.full_like(input_ids, LANGUAGE)
        x = self.t["model.embed_tokens.weight"][input_ids]
        if images is not None:
            features = self.encode_images(images)
            x = x.index_put((token_type_ids == VISION,), features.reshape(-1, features.shape[-1]))
        cos, sin = self._rope(build_position_ids(token_type_ids))
        vision = vision_expert_mask(token_type_ids)
        if all_vision_experts:
            vision = torch.ones_like(vision)
        for layer in range(self.config["num_hidden_layers"]):
            p = f"model.layers.{layer}."
            x = x + self._attention(self._norm(p + "input_layernorm.weight")(x), p + "self_attn.", vision, cos, sin)
            x = x + self._mlp(self._norm(p + "post_attention_layernorm.weight")(x), p + "mlp.", vision)
        return F.linear(self._norm("model.norm.weight")(x), self.t["lm_head.weight"])
