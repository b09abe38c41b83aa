"""Pure-torch stand-ins for the two places where SAT 0.4.12 goes wrong on CPU.

`install_cpu_fallbacks()` patches both; it is idempotent and leaves every CUDA code path as SAT wrote it.

**Rotary embedding.** `FastRotaryEmbedding` (the RoPE of LLaMA, Mixtral, ChatGLM2/3/4, GLM-4V, CogVLM) runs its
q/k rotation through `ApplyRotaryEmb`, a `torch.autograd.Function` in
`sat.model.position_embedding.triton_rotary_embeddings`. Both its `forward` and its `backward` (the latter with
`conjugate=True`) call the module global `apply_rotary`, which is the Triton kernel imported from `triton_rotary`.
On a CPU tensor that kernel fails before launching (`torch.cuda.device(None)` raises `TypeError`). We rebind
that module global to a dispatcher: CUDA tensors go to SAT's kernel, every other device to `apply_rotary` below.
Rebinding the global (and not `triton_rotary.apply_rotary`) is what reaches the calls, because
`triton_rotary_embeddings` imported the name into its own namespace. Autograd keeps going through SAT's
`ApplyRotaryEmb`, so gradients are the kernel's formula on either device. SAT rotates q and k in place, and
the kernel's writes are invisible to autograd; the dispatcher keeps them invisible on CPU too (see below), which
is what lets a backward pass through SAT's attention work at all.

**LayerNorm.** Without apex, `sat.ops.layernorm.LayerNorm` computes fp16/bf16 inputs on CPU in float32 but calls
`F.layer_norm` without `self.eps`, so such inputs always get eps=1e-5 whatever the config says (BERT: 1e-12).
That is not a rounding detail: for activations with std 0.02 (the scale of embedding outputs) the bf16 output is
off by 7e-2, against 1.4e-2 from bf16 rounding alone, and by 0.7 at std 0.005. A fallback is therefore needed,
and we patch `LayerNorm.forward` to pass `self.eps` (and to accept `bias=None`). When apex is installed SAT's
`LayerNorm` is apex's `FusedLayerNorm`, which already passes eps on CPU, and we leave it alone. SAT's `RMSNorm`
(used by the LLaMA family) keeps its eps and needs nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.errors import FallbackError

_HINT = "\n  hint: this is a call into adapters' CPU fallback from SAT; check the model config, or report it with the shapes"

__all__ = ["apply_rotary", "install_cpu_fallbacks"]

# Marks the callables we install, so that a second install_cpu_fallbacks() recognises them.
_MARK = "_adapters_cpu_fallback"


def apply_rotary(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    position_ids: torch.Tensor,
    seqlen_offsets: int | torch.Tensor = 0,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | torch.Tensor | None = None,
    interleaved: bool = False,
    inplace: bool = False,
    conjugate: bool = False,
) -> torch.Tensor:
    """Rotate the first `rotary_dim` channels of every head; same contract as SAT's `triton_rotary.apply_rotary`.

    Layouts:
        x:            (batch, nheads, seqlen, headdim); any strides, views included.
        cos, sin:     (seqlen_ro, rotary_dim / 2), same dtype as `x`; row p holds the angles of position p.
        position_ids: (batch, seqlen), integer.
        seqlen_offsets: int, or integer tensor (batch,) added to every position of that row.

    With `rotary_dim = 2 * cos.shape[1]` and `c, s = cos[p], sin[p]` for `p = position_ids + seqlen_offsets`,
    channels `[0, rotary_dim)` are rotated pairwise and channels `[rotary_dim, headdim)` pass through:

        interleaved=False (GPT-NeoX):  pairs (j, j + rotary_dim/2)
            out[j]                = x[j] * c[j] - x[j + rotary_dim/2] * s[j]
            out[j + rotary_dim/2] = x[j] * s[j] + x[j + rotary_dim/2] * c[j]
        interleaved=True (GPT-J):      pairs (2j, 2j + 1)
            out[2j]     = x[2j] * c[j] - x[2j + 1] * s[j]
            out[2j + 1] = x[2j] * s[j] + x[2j + 1] * c[j]

    `conjugate=True` negates `s`, which is the inverse rotation (what SAT's backward uses). A position at or past
    `seqlen_ro` is left unrotated, as the kernel's masked loads (cos=1, sin=0) do; so is a negative one, which
    the kernel would read out of bounds. `cu_seqlens` and `max_seqlen` are accepted and unused: SAT's kernel
    launch hard-codes `IS_VARLEN=False`, and `max_seqlen` only feeds its bound assertions. Half-precision inputs
    are rotated in float32 and rounded once. Unlike the kernel, this function is differentiable and its in-place
    write is seen by autograd; the dispatcher that `install_cpu_fallbacks` installs hides it again where SAT
    relies on that.

    Returns:
        `x` itself, written in place, when `inplace=True`; otherwise a new tensor shaped like `x`.
    """
    if x.dim() != 4:
        raise FallbackError(
            f"apply_rotary: x must be (batch, nheads, seqlen, headdim), got shape {tuple(x.shape)}" + _HINT
        )
    batch, _, seqlen, headdim = x.shape
    if cos.dim() != 2 or sin.shape != cos.shape:
        raise FallbackError(
            f"apply_rotary: cos and sin must both be (seqlen_ro, rotary_dim / 2), "
            f"got {tuple(cos.shape)} and {tuple(sin.shape)}" + _HINT
        )
    seqlen_ro, half = cos.shape
    rotary_dim = 2 * half
    if rotary_dim > headdim:
        raise FallbackError(
            f"apply_rotary: rotary_dim {rotary_dim} (2 * cos.shape[1]) exceeds headdim {headdim}" + _HINT
        )
    if tuple(position_ids.shape) != (batch, seqlen):
        raise FallbackError(
            f"apply_rotary: position_ids must be (batch, seqlen) = {(batch, seqlen)}, got {tuple(position_ids.shape)}"
            + _HINT
        )
    if not (x.dtype == cos.dtype == sin.dtype):
        raise FallbackError(
            f"apply_rotary: x, cos and sin must share a dtype, got {x.dtype}, {cos.dtype} and {sin.dtype}\n"
            "  hint: FastRotaryEmbedding caches cos/sin in the dtype of its first call; after changing the model's "
            "dtype set `_seq_len_cached = 0` on each rotary module so the cache is rebuilt"
        )

    positions = position_ids.long()
    if isinstance(seqlen_offsets, torch.Tensor):
        if tuple(seqlen_offsets.shape) != (batch,):
            raise FallbackError(
                f"apply_rotary: a tensor seqlen_offsets must be (batch,) = ({batch},), "
                f"got {tuple(seqlen_offsets.shape)}" + _HINT
            )
        positions = positions + seqlen_offsets.long().to(positions.device)[:, None]
    else:
        positions = positions + int(seqlen_offsets)

    # Gather the angles of each (row, position); out-of-table positions get the identity rotation.
    inside = ((positions >= 0) & (positions < seqlen_ro))[..., None]
    rows = positions.clamp(0, seqlen_ro - 1)
    compute = torch.promote_types(x.dtype, torch.float32)
    c = torch.where(inside, cos[rows].to(compute), 1.0)[:, None]  # (batch, 1, seqlen, half)
    s = torch.where(inside, sin[rows].to(compute), 0.0)[:, None]
    if conjugate:
        s = -s

    xr = x[..., :rotary_dim].to(compute)
    if interleaved:
        x0, x1 = xr[..., 0::2], xr[..., 1::2]
        rotated = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)
    else:
        x0, x1 = xr[..., :half], xr[..., half:]
        rotated = torch.cat((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    rotated = rotated.to(x.dtype)

    if inplace:
        # Through the slice view, so a q/k that is itself a view of SAT's fused qkv output is updated there too.
        x[..., :rotary_dim].copy_(rotated)
        return x
    if rotary_dim == headdim:
        return rotated
    return torch.cat((rotated, x[..., rotary_dim:]), dim=-1)


def install_cpu_fallbacks() -> None:
    """Make SAT's rotary embedding and LayerNorm correct on CPU; CUDA paths are unchanged.

    Patches, once per process (calling again is a no-op):

    * `sat.model.position_embedding.triton_rotary_embeddings.apply_rotary` becomes a dispatcher: CUDA tensors
      go to SAT's Triton kernel, all others to `adapters.sat.cpu.apply_rotary`.
    * `sat.ops.layernorm.LayerNorm.forward` (only SAT's own non-apex class) passes `eps` on its CPU fp16/bf16 path.

    Call it before the first forward pass; models built earlier are covered too, since both patches are looked
    up at call time.

    Example:
        >>> from adapters.sat.cpu import install_cpu_fallbacks
        >>> install_cpu_fallbacks()
        >>> from sat.model import LLaMAModel   # forward and backward now run on CPU
    """
    _install_rotary_dispatch()
    _install_layernorm_eps()


def _install_rotary_dispatch() -> None:
    import sat.model.position_embedding.triton_rotary_embeddings as rotary_module

    current = rotary_module.apply_rotary
    if getattr(current, _MARK, None) is True:
        return
    triton_apply_rotary = current

    def apply_rotary_dispatch(
        x,
        cos,
        sin,
        position_ids,
        seqlen_offsets=0,
        cu_seqlens=None,
        max_seqlen=None,
        interleaved=False,
        inplace=False,
        conjugate=False,
    ):
        kwargs = {
            "seqlen_offsets": seqlen_offsets,
            "cu_seqlens": cu_seqlens,
            "max_seqlen": max_seqlen,
            "interleaved": interleaved,
            "inplace": inplace,
            "conjugate": conjugate,
        }
        if x.is_cuda:
            return triton_apply_rotary(x, cos, sin, position_ids, **kwargs)
        if inplace:
            # The kernel writes through a raw pointer that autograd never sees, and SAT depends on that: q and k
            # are sibling views of one split of the fused qkv output, so a tracked in-place write to q would
            # bump the shared version counter and make autograd refuse k. `x.data` aliases the storage with a
            # version counter of its own, which reproduces the kernel's invisible write.
            apply_rotary(x.data, cos, sin, position_ids, **kwargs)
            return x
        return apply_rotary(x, cos, sin, position_ids, **kwargs)

    apply_rotary_dispatch.__doc__ = "CUDA -> SAT's Triton kernel; any other device -> adapters.sat.cpu.apply_rotary."
    apply_rotary_dispatch.triton_apply_rotary = triton_apply_rotary
    setattr(apply_rotary_dispatch, _MARK, True)
    rotary_module.apply_rotary = apply_rotary_dispatch


def _install_layernorm_eps() -> None:
    import sat.ops.layernorm as layernorm_module

    cls = layernorm_module.LayerNorm
    # With apex, SAT's LayerNorm is a FusedLayerNorm subclass that handles CPU correctly; only the fallback
    # class (a direct torch.nn.LayerNorm subclass) carries the bug.
    if cls.__bases__ != (torch.nn.LayerNorm,) or getattr(cls.forward, _MARK, None) is True:
        return

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
            # The same float32 round trip as SAT's own forward; the one change is that eps is passed.
            weight = None if self.weight is None else self.weight.float()
            bias = None if self.bias is None else self.bias.float()
            return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)
        return torch.nn.LayerNorm.forward(self, x)

    setattr(forward, _MARK, True)
    cls.forward = forward
