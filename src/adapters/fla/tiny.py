"""Random RWKV-7 (x070) checkpoints in BlinkDL's ``.pth`` format: for examples, tests and benchmarks.

Keys and shapes are exactly what BlinkDL's trainer writes (C = hidden, H = C / N heads of size N, F = FFN size,
D_w/D_a/D_v/D_g = LoRA ranks, V = vocab)::

    emb.weight [V, C]
    blocks.0.ln0.{weight,bias} [C]                       (layer 0 only)
    blocks.{i}.ln1.{weight,bias}, blocks.{i}.ln2.{weight,bias} [C]
    blocks.{i}.att.x_{r,w,k,v,a,g} [1, 1, C]
    blocks.{i}.att.w0 [1, 1, C], w1 [C, D_w], w2 [D_w, C]    (likewise a0/a1/a2 with D_a, v0/v1/v2 with D_v)
    blocks.{i}.att.g1 [C, D_g], g2 [D_g, C]
    blocks.{i}.att.k_k, k_a [1, 1, C];  r_k [H, N]
    blocks.{i}.att.{receptance,key,value,output}.weight [C, C]
    blocks.{i}.att.ln_x.{weight,bias} [C]
    blocks.{i}.ffn.x_k [1, 1, C];  ffn.key.weight [F, C];  ffn.value.weight [C, F]
    ln_out.{weight,bias} [C];  head.weight [V, C]

``blocks.0.att.v0/v1/v2`` exist in the files RWKV-LM writes (G1 series) but are never used; `with_block0_v`
controls whether they are present.

Values follow BlinkDL's x070 initialisation for the per-channel vectors (token-shift mixes in [0, 1], the decay
bias w0 spanning about [-5.5, 3] so that per-token decays exp(-e^-0.5 sigmoid(.)) range from 0.997 to 0.56, a0
near -0.2, v0 near 0.7, k_k near 0.7, k_a near 1, ln_x weight ((i+1)/L)^0.7), plus noise. Matrices that are zero
or near zero at initialisation (o_proj, LoRA down-projections, FFN value) are random instead, scaled like a
trained model's, so that every parameter influences the output: the recurrence then keeps state over hundreds
of tokens on slow channels and forgets within a few on fast ones, without blowing up (a is in (0, 1) and kk is
unit-norm, so the transition never expands the state).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..core.atomic import write_atomically
from ..core.errors import SpecError

__all__ = ["tiny_blinkdl_rwkv7", "write_tiny_blinkdl"]


def tiny_blinkdl_rwkv7(
    *,
    vocab_size: int = 300,
    hidden_size: int = 128,
    num_layers: int = 2,
    head_size: int = 64,
    ffn_size: int | None = None,
    lora_ranks: tuple[int, int, int, int] = (24, 20, 16, 40),
    dtype: torch.dtype = torch.float32,
    with_block0_v: bool = True,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A random BlinkDL RWKV-7 x070 state dict.

    Args:
        vocab_size, hidden_size, num_layers, head_size: V, C, L, N (C must be a multiple of N).
        ffn_size: F; defaults to 4 * C as in every released model.
        lora_ranks: (D_w, D_a, D_v, D_g). Keep them distinct so that a swapped mapping cannot go unnoticed.
        dtype: dtype of every tensor (BlinkDL releases are bf16).
        with_block0_v: include the unused ``blocks.0.att.v0/v1/v2``.
        seed: seed of the private generator; equal arguments give identical tensors.

    Returns:
        An ordered `dict` of key -> tensor, in BlinkDL's key order.

    Example::

        sd = tiny_blinkdl_rwkv7(vocab_size=256, dtype=torch.bfloat16)
        sd["blocks.0.att.r_k"].shape  # torch.Size([2, 64])
    """
    if hidden_size % head_size:
        raise SpecError(
            f"hidden_size {hidden_size} is not a multiple of head_size {head_size}\n"
            "  hint: RWKV-7 splits the hidden size into heads of head_size channels (64 in every released model)"
        )
    gen = torch.Generator().manual_seed(seed)
    C, N, L, V = hidden_size, head_size, num_layers, vocab_size
    H, F = C // N, ffn_size or 4 * C
    d_w, d_a, d_v, d_g = lora_ranks

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=gen) * std

    def vec(values):  # [C] -> BlinkDL's [1, 1, C]
        return values.reshape(1, 1, C)

    n = torch.arange(C, dtype=torch.float32)
    linear = n / (C - 1) - 0.5
    zigzag = ((n % N) - (N - 1) / 2) / ((N - 1) / 2)
    zigzag = zigzag * zigzag.abs()
    ddd = n / C

    sd: dict[str, torch.Tensor] = {"emb.weight": randn(V, C)}
    for i in range(L):
        p = f"blocks.{i}."
        ratio_0_to_1 = i / (L - 1) if L > 1 else 0.0
        ratio_1_to_0 = 1.0 - i / L
        if i == 0:
            sd[p + "ln0.weight"], sd[p + "ln0.bias"] = 1 + randn(C, std=0.1), randn(C, std=0.1)
        sd[p + "ln1.weight"], sd[p + "ln1.bias"] = 1 + randn(C, std=0.1), randn(C, std=0.1)
        sd[p + "ln2.weight"], sd[p + "ln2.bias"] = 1 + randn(C, std=0.1), randn(C, std=0.1)

        for name, power in (("x_r", 0.2), ("x_w", 0.9), ("x_k", 0.7), ("x_v", 0.7), ("x_a", 0.9), ("x_g", 0.2)):
            sd[p + "att." + name] = vec((1 - ddd ** (power * ratio_1_to_0) + randn(C, std=0.05)).clamp(0, 1))
        www = -6 + 6 * (n / (C - 1)) ** (1 + ratio_0_to_1**0.3)
        sd[p + "att.w0"] = vec(www + 0.5 + 2.5 * zigzag + randn(C, std=0.3))
        sd[p + "att.w1"], sd[p + "att.w2"] = randn(C, d_w, std=C**-0.5), randn(d_w, C, std=d_w**-0.5)
        sd[p + "att.a0"] = vec(-0.19 + 0.3 * zigzag + 0.4 * linear + randn(C, std=0.1))
        sd[p + "att.a1"], sd[p + "att.a2"] = randn(C, d_a, std=C**-0.5), randn(d_a, C, std=d_a**-0.5)
        if i > 0 or with_block0_v:
            sd[p + "att.v0"] = vec(0.73 - 0.4 * linear + randn(C, std=0.1))
            sd[p + "att.v1"], sd[p + "att.v2"] = randn(C, d_v, std=C**-0.5), randn(d_v, C, std=d_v**-0.5)
        sd[p + "att.g1"], sd[p + "att.g2"] = randn(C, d_g, std=C**-0.5), randn(d_g, C, std=d_g**-0.5)
        sd[p + "att.k_k"] = vec(0.71 - 0.1 * linear + randn(C, std=0.05))
        sd[p + "att.k_a"] = vec(1.02 + randn(C, std=0.1))
        sd[p + "att.r_k"] = -0.04 + randn(H, N, std=0.1)
        for name in ("receptance", "key", "value"):
            sd[p + f"att.{name}.weight"] = randn(C, C, std=C**-0.5)
        sd[p + "att.output.weight"] = randn(C, C, std=0.5 * C**-0.5)
        sd[p + "att.ln_x.weight"] = ((i + 1) / L) ** 0.7 + randn(C, std=0.05)
        sd[p + "att.ln_x.bias"] = randn(C, std=0.05)

        sd[p + "ffn.x_k"] = vec((1 - ddd ** (ratio_1_to_0**4) + randn(C, std=0.05)).clamp(0, 1))
        sd[p + "ffn.key.weight"] = randn(F, C, std=C**-0.5)
        sd[p + "ffn.value.weight"] = randn(C, F, std=0.5 * F**-0.5)

    sd["ln_out.weight"], sd["ln_out.bias"] = 1 + randn(C, std=0.1), randn(C, std=0.1)
    sd["head.weight"] = randn(V, C, std=2 * C**-0.5)
    return {key: value.to(dtype).contiguous() for key, value in sd.items()}


def write_tiny_blinkdl(
    path: str | os.PathLike, *, dtype: torch.dtype = torch.bfloat16, overwrite: bool = False, **dims
) -> Path:
    """Write a random x070 checkpoint to `path` (a ``.pth``, bf16 by default like the released files), atomically.

    Args:
        path: destination; BlinkDL's `rwkv` package is given it without the ``.pth`` suffix.
        dtype: dtype of every tensor in the file.
        overwrite: replace an existing file.
        dims: `tiny_blinkdl_rwkv7` arguments (``vocab_size``, ``hidden_size``, ``num_layers``, ``seed``, ...).

    Returns:
        The path written.

    Example::

        path = write_tiny_blinkdl("/tmp/tiny.pth", vocab_size=256)
        model = RWKV7ForCausalLM.from_pretrained(path)  # after ``import adapters.fla``
    """
    state = tiny_blinkdl_rwkv7(dtype=dtype, **dims)
    return write_atomically(path, lambda tmp: torch.save(state, tmp), overwrite=overwrite)
