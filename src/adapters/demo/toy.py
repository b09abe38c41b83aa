"""A toy target model and its foreign checkpoint format: the engine's embedded default and test subject.

The foreign ("HF-like") file stores what real checkpoints store, and the toy model wants what SAT/FLA want:

    foreign key                                       toy key                         op
    model.embed_tokens.weight       [V, H]            embed.weight                    rename
    model.layers.{l}.input_norm.weight [H]            layers.{l}.norm1.weight         rename
    model.layers.{l}.self_attn.{q,k,v}_proj.weight    layers.{l}.attn.qkv.weight      Concat(0): [Q; K; V], GQA sizes
    model.layers.{l}.self_attn.o_proj.weight [in,out] layers.{l}.attn.out.weight      Transpose (Conv1D layout)
    model.layers.{l}.mlp.gate_up_proj.weight [2I, H]  layers.{l}.mlp.{gate,up}.weight Split(0) into halves
    model.layers.{l}.mlp.down_proj.weight             layers.{l}.mlp.down.weight      rename
    model.layers.{l}.mix            [1, 1, H]         layers.{l}.mix  [H]             Reshape
    model.layers.{l}.self_attn.rotary_emb.inv_freq    -                               ignored (recomputed)
    model.norm.weight / lm_head.weight                norm.weight / head.weight       rename
    -                                                 layers.{l}.attn.inv_freq        kept (buffer the model computes)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..core import Concat, Reshape, Spec, Split, Transpose, ignore, rule

__all__ = ["ToyConfig", "ToyModel", "TOY_SPEC", "toy_dims", "toy_foreign_state", "write_toy_checkpoint", "FORMATS"]


@dataclass(frozen=True)
class ToyConfig:
    vocab: int = 96
    hidden: int = 32
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    inner: int = 48

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


class ToyAttention(nn.Module):
    def __init__(self, c: ToyConfig) -> None:
        super().__init__()
        self.c = c
        self.qkv = nn.Linear(c.hidden, (c.heads + 2 * c.kv_heads) * c.head_dim, bias=False)
        self.out = nn.Linear(c.hidden, c.hidden, bias=False)
        self.register_buffer("inv_freq", 1.0 / 10000 ** (torch.arange(0, c.head_dim, 2).float() / c.head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, (b, t, _) = self.c, x.shape
        q, k, v = self.qkv(x).split([c.heads * c.head_dim, c.kv_heads * c.head_dim, c.kv_heads * c.head_dim], -1)
        q = q.view(b, t, c.heads, c.head_dim).transpose(1, 2)
        k = k.view(b, t, c.kv_heads, c.head_dim).transpose(1, 2).repeat_interleave(c.heads // c.kv_heads, 1)
        v = v.view(b, t, c.kv_heads, c.head_dim).transpose(1, 2).repeat_interleave(c.heads // c.kv_heads, 1)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, c.hidden))


class ToyMLP(nn.Module):
    def __init__(self, c: ToyConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(c.hidden, c.inner, bias=False)
        self.up = nn.Linear(c.hidden, c.inner, bias=False)
        self.down = nn.Linear(c.inner, c.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(nn.functional.silu(self.gate(x)) * self.up(x))


class ToyLayer(nn.Module):
    def __init__(self, c: ToyConfig) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(c.hidden)
        self.attn = ToyAttention(c)
        self.norm2 = nn.RMSNorm(c.hidden)
        self.mlp = ToyMLP(c)
        self.mix = nn.Parameter(torch.ones(c.hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x)) * self.mix
        return x + self.mlp(self.norm2(x))


class ToyModel(nn.Module):
    def __init__(self, c: ToyConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(c.vocab, c.hidden)
        self.layers = nn.ModuleList(ToyLayer(c) for _ in range(c.layers))
        self.norm = nn.RMSNorm(c.hidden)
        self.head = nn.Linear(c.hidden, c.vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))


def toy_dims(c: ToyConfig) -> dict[str, int]:
    """The named sizes TOY_SPEC's ops use."""
    return {"q_dim": c.heads * c.head_dim, "kv_dim": c.kv_heads * c.head_dim}


# fmt: off
TOY_SPEC = Spec(
    name="toy-hf->toy",
    rules=(
        #    source (foreign file)                                      target (ToyModel)                       op
        rule("model.embed_tokens.weight",                               "embed.weight"),
        rule("model.layers.{layer}.input_norm.weight",                  "layers.{layer}.norm1.weight"),
        rule("model.layers.{layer}.post_norm.weight",                   "layers.{layer}.norm2.weight"),
        rule(["model.layers.{layer}.self_attn.q_proj.weight",
              "model.layers.{layer}.self_attn.k_proj.weight",
              "model.layers.{layer}.self_attn.v_proj.weight"],          "layers.{layer}.attn.qkv.weight",       Concat(0, sizes=("q_dim", "kv_dim", "kv_dim"))),
        rule("model.layers.{layer}.self_attn.o_proj.weight",            "layers.{layer}.attn.out.weight",       Transpose(0, 1)),
        rule("model.layers.{layer}.mlp.gate_up_proj.weight",            ["layers.{layer}.mlp.gate.weight",
                                                                         "layers.{layer}.mlp.up.weight"],       Split(0)),
        rule("model.layers.{layer}.mlp.down_proj.weight",               "layers.{layer}.mlp.down.weight"),
        rule("model.layers.{layer}.mix",                                "layers.{layer}.mix",                   Reshape((1, 1, -1), (-1,))),
        rule("model.norm.weight",                                       "norm.weight"),
        rule("lm_head.weight",                                          "head.weight"),
    ),
    ignore=(ignore("model.layers.{layer}.self_attn.rotary_emb.inv_freq", "recomputed by the model from its config"),),
    keep=(ignore("layers.{layer}.attn.inv_freq", "a buffer the model computes in __init__"),),
)
# fmt: on


def toy_foreign_state(c: ToyConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A random foreign state dict with distinct values everywhere (so any mix-up of order shows)."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 0.2).to(dtype)

    hd = c.head_dim
    sd = {"model.embed_tokens.weight": t(c.vocab, c.hidden)}
    for i in range(c.layers):
        p = f"model.layers.{i}."
        sd |= {
            p + "input_norm.weight": 1 + t(c.hidden),
            p + "post_norm.weight": 1 + t(c.hidden),
            p + "self_attn.q_proj.weight": t(c.heads * hd, c.hidden),
            p + "self_attn.k_proj.weight": t(c.kv_heads * hd, c.hidden),
            p + "self_attn.v_proj.weight": t(c.kv_heads * hd, c.hidden),
            p + "self_attn.o_proj.weight": t(c.hidden, c.hidden),
            p + "self_attn.rotary_emb.inv_freq": torch.rand(hd // 2, generator=g),
            p + "mlp.gate_up_proj.weight": t(2 * c.inner, c.hidden),
            p + "mlp.down_proj.weight": t(c.hidden, c.inner),
            p + "mix": 1 + t(1, 1, c.hidden),
        }
    sd |= {"model.norm.weight": 1 + t(c.hidden), "lm_head.weight": t(c.vocab, c.hidden)}
    return sd


FORMATS = ("safetensors", "sharded", "bin", "sharded-bin", "pth")


def _shard_of(key: str, i: int) -> int:
    # q, k and v of one layer always land in three different shards: merges must read across files.
    for n, part in enumerate(("q_proj", "k_proj", "v_proj")):
        if part in key:
            return n
    return i % 3


def write_toy_checkpoint(folder: str | os.PathLike, state: dict[str, torch.Tensor], fmt: str) -> Path:
    """Write `state` to `folder` in one of FORMATS; returns the path to load (file or index)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        save_file(state, folder / "model.safetensors")
        return folder / "model.safetensors"
    if fmt == "bin":
        torch.save(state, folder / "pytorch_model.bin")
        return folder / "pytorch_model.bin"
    if fmt == "pth":
        torch.save(state, folder / "toy.pth")
        return folder / "toy.pth"
    if fmt not in ("sharded", "sharded-bin"):
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
    ext, stem = (".safetensors", "model") if fmt == "sharded" else (".bin", "pytorch_model")
    names = [f"{stem}-{n + 1:05d}-of-00003{ext}" for n in range(3)]
    shards: list[dict[str, torch.Tensor]] = [{}, {}, {}]
    for i, (k, v) in enumerate(state.items()):
        shards[_shard_of(k, i)][k] = v
    for name, shard in zip(names, shards):
        save_file(shard, folder / name) if ext == ".safetensors" else torch.save(shard, folder / name)
    weight_map = {k: names[n] for n, shard in enumerate(shards) for k in shard}
    index = folder / f"{stem}{ext}.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    return index
