"""CogAgent's high-resolution ("cross") vision tower: an EVA-02-CLIP-L-style ViT, as the SAT mixin ``encoder``.

The CogVLM repository builds it from ``utils/models/eva_clip_L_hf.py`` (timm + xformers + apex); this file writes
the same modules under the same names on plain torch: attention is ``scaled_dot_product_attention`` (the
repository's ``xformers.ops.memory_efficient_attention`` with scale ``head_dim ** -0.5`` and no mask computes the
same), LayerNorms are ``nn.LayerNorm`` (apex's fused one has the same parameters), and nothing from timm is needed
at inference (drop-path and patch dropout are 0 in every CogAgent).

Layout (state-dict names under the host's ``mixins.encoder.``), ``D`` the tower width, ``G = image / patch`` the
grid side, ``d = D / heads``, ``I`` the SwiGLU width::

    pos_embed                                      [G*G, D]      added to the tower output (after the CLS row is dropped)
    vit.model.patch_embed.proj.{weight [D, 3, p, p], bias [D]}
    vit.model.cls_token                            [1, 1, D]
    vit.model.pos_embed                            [1, 1 + G*G, D]   CLS first, then patches row by row
    vit.model.rope.freqs_{cos,sin}                 [G*G, d]      2-D RoPE tables (buffers, computed, not loaded)
    vit.model.blocks.{k}.attn.rope.freqs_{cos,sin}               the same module, registered in every block
    vit.model.blocks.{k}.norm1.{weight,bias}       [D]           x = x + attn(norm1(x))
    vit.model.blocks.{k}.attn.{q,k,v}_proj.weight  [D, D]        no bias modules: q gets q_bias, v gets v_bias, k none
    vit.model.blocks.{k}.attn.{q_bias,v_bias}      [D]
    vit.model.blocks.{k}.attn.inner_attn_ln.{weight,bias}  [D]   LayerNorm on the attention context, before proj
    vit.model.blocks.{k}.attn.proj.{weight [D, D], bias}
    vit.model.blocks.{k}.norm2.{weight,bias}       [D]           x = x + mlp(norm2(x))
    vit.model.blocks.{k}.mlp.{w1,w2}.{weight [I, D], bias}       mlp = w3(ffn_ln(silu(w1(x)) * w2(x)))
    vit.model.blocks.{k}.mlp.ffn_ln.{weight,bias}  [I]
    vit.model.blocks.{k}.mlp.w3.{weight [D, I], bias}
    vit.model.norm.{weight,bias}, vit.model.head.{weight [out, D], bias}   held, never run (CLIP's pooled head)

Two facts of the original that look like slips but are its semantics: the **last block is held but never run**
(the tower is used "drop-last-layer"), and RoPE rotates every token but the CLS one, on interleaved pairs
``(2i, 2i+1)``, with the first ``d/2`` channels rotated by the patch's row and the last ``d/2`` by its column, at
positions ``arange(G) / G * pt_hw_seq_len`` (frequencies ``10000 ** (-2j / (d/2))``).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from sat.model.base_model import BaseMixin
from torch import nn

__all__ = ["EVA_L", "Eva2LargeEncoder", "EVAVisionTransformer", "ExternalVisionModel", "cross_tower_sizes"]

# EVA-02-CLIP-L/14 as every CogAgent release builds it (the repository hard-codes these; only the image size varies).
EVA_L = {
    "hidden_size": 1024,
    "num_layers": 24,
    "num_heads": 16,
    "mlp_hidden_size": 2730,  # int(1024 * 2.6667)
    "patch_size": 14,
    "head_size": 768,  # CLIP's embedding width: the unused head's output
    "pt_hw_seq_len": 16,  # the grid side the RoPE positions are scaled to (224 / 14)
    "layernorm_epsilon": 1e-6,
}


def cross_tower_sizes(args: argparse.Namespace) -> dict:
    """`EVA_L`, with what ``args.cross_eva_args`` overrides (an extension of ours, for small test towers)."""
    return EVA_L | dict(getattr(args, "cross_eva_args", None) or {})


class VisionRotaryEmbeddingFast(nn.Module):
    """2-D RoPE on interleaved pairs: ``x * cos + rotate_pairs(x) * sin`` over ``[..., G*G, d]`` (table in the docstring above)."""

    def __init__(self, dim: int, pt_seq_len: int, ft_seq_len: int, theta: float = 10000.0):
        super().__init__()
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2).float() / dim)
        positions = torch.arange(ft_seq_len).float() / ft_seq_len * pt_seq_len
        axis = torch.outer(positions, freqs).repeat_interleave(2, dim=-1)  # [G, dim]: each angle for a pair
        grid = ft_seq_len
        table = torch.cat((axis[:, None].expand(grid, grid, dim), axis[None].expand(grid, grid, dim)), dim=-1)
        table = table.reshape(grid * grid, 2 * dim)
        self.register_buffer("freqs_cos", table.cos())
        self.register_buffer("freqs_sin", table.sin())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pairs = x.unflatten(-1, (-1, 2))
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return x * self.freqs_cos + rotated * self.freqs_sin


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int, dtype: torch.dtype):
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch, dtype=dtype)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.proj(image).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Self-attention over ``[B, 1 + G*G, D]`` with split q/k/v, q and v biases, RoPE on the patches, sub-LN."""

    def __init__(self, width: int, heads: int, rope: VisionRotaryEmbeddingFast, eps: float, dtype: torch.dtype):
        super().__init__()
        self.num_heads = heads
        self.q_proj = nn.Linear(width, width, bias=False, dtype=dtype)
        self.k_proj = nn.Linear(width, width, bias=False, dtype=dtype)
        self.v_proj = nn.Linear(width, width, bias=False, dtype=dtype)
        self.q_bias = nn.Parameter(torch.zeros(width, dtype=dtype))
        self.v_bias = nn.Parameter(torch.zeros(width, dtype=dtype))
        self.inner_attn_ln = nn.LayerNorm(width, eps=eps, dtype=dtype)
        self.proj = nn.Linear(width, width, dtype=dtype)
        self.rope = rope

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x[:, :, :1], self.rope(x[:, :, 1:]).type_as(x)), dim=2)  # the CLS token is not rotated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._rotate(self._heads(F.linear(x, self.q_proj.weight, self.q_bias)))
        k = self._rotate(self._heads(self.k_proj(x)))
        v = self._heads(F.linear(x, self.v_proj.weight, self.v_bias))
        context = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return self.proj(self.inner_attn_ln(context))


class SwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int, eps: float, dtype: torch.dtype):
        super().__init__()
        self.w1 = nn.Linear(width, hidden, dtype=dtype)
        self.w2 = nn.Linear(width, hidden, dtype=dtype)
        self.ffn_ln = nn.LayerNorm(hidden, eps=eps, dtype=dtype)
        self.w3 = nn.Linear(hidden, width, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


class Block(nn.Module):
    def __init__(self, sizes: dict, rope: VisionRotaryEmbeddingFast, dtype: torch.dtype):
        super().__init__()
        width, eps = sizes["hidden_size"], sizes["layernorm_epsilon"]
        self.norm1 = nn.LayerNorm(width, eps=eps, dtype=dtype)
        self.attn = Attention(width, sizes["num_heads"], rope, eps, dtype)
        self.norm2 = nn.LayerNorm(width, eps=eps, dtype=dtype)
        self.mlp = SwiGLU(width, sizes["mlp_hidden_size"], eps, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class EVAVisionTransformer(nn.Module):
    """The tower: image ``[B, 3, S, S]`` → every token's features ``[B, 1 + G*G, D]`` (CLS first), no final norm."""

    def __init__(self, image_size: int, sizes: dict, dtype: torch.dtype = torch.float):
        super().__init__()
        width, patch, heads = sizes["hidden_size"], sizes["patch_size"], sizes["num_heads"]
        grid = image_size // patch
        self.patch_embed = PatchEmbed(patch, width, dtype)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width, dtype=dtype))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, width, dtype=dtype))
        self.rope = VisionRotaryEmbeddingFast(width // heads // 2, sizes["pt_hw_seq_len"], grid)
        self.blocks = nn.ModuleList(Block(sizes, self.rope, dtype) for _ in range(sizes["num_layers"]))
        self.norm = nn.LayerNorm(width, eps=sizes["layernorm_epsilon"], dtype=dtype)
        self.head = nn.Linear(width, sizes["head_size"], dtype=dtype)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(image.to(self.cls_token.dtype))
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        for block in self.blocks[:-1]:  # the last block is held, never run (see the module docstring)
            x = block(x)
        return x


class Eva2LargeEncoder(nn.Module):
    """``model`` (the tower) run on one image batch; returns the patch features ``[B, G*G, D]`` (CLS dropped)."""

    def __init__(self, image_size: int, sizes: dict, dtype: torch.dtype = torch.float):
        super().__init__()
        self.model = EVAVisionTransformer(image_size, sizes, dtype)

    def forward(self, image: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.model(image)[:, 1:]


class ExternalVisionModel(BaseMixin):
    """The ``encoder`` mixin: the high-resolution tower plus a learned ``pos_embed`` ``[G*G, D]`` on its output.

    Called with the ``cross_*`` inputs, prefix removed (``image`` ``[B, 3, S, S]``; ``input_ids``,
    ``position_ids``, ``attention_mask`` are accepted and unused, as CogAgent's SAT demo passes them).
    """

    def __init__(self, args: argparse.Namespace, params_dtype: torch.dtype = torch.float):
        super().__init__()
        sizes = cross_tower_sizes(args)
        self.vit = Eva2LargeEncoder(args.cross_image_pix, sizes, params_dtype)
        patches = (args.cross_image_pix // sizes["patch_size"]) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(patches, sizes["hidden_size"], dtype=params_dtype))

    def forward(self, *args, **kw_args) -> torch.Tensor:
        return self.vit(*args, **kw_args) + self.pos_embed.unsqueeze(0)
