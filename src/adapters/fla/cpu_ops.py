"""Pure-torch stand-ins for the Triton kernels on FLA's RWKV-7 path, so `RWKV7ForCausalLM` runs on CPU.

`install_cpu_fallbacks()` rebinds, in FLA's own modules, the names that the RWKV-7 code looks up when it runs.
Each new binding is a dispatcher: a CPU tensor goes to the torch function in this file (the DPLR recurrence is
in `_dplr_torch.py`, the losses in `_loss_torch.py`), any other device to FLA's original kernel, so CUDA
behaviour is unchanged. The call is idempotent; `uninstall_cpu_fallbacks()` puts FLA's originals back.
Nothing outside FLA's module attributes is touched.

What is rebound, and why there (checked against flash-linear-attention 0.6.0):

| module                           | name                        | who looks it up                            |
|----------------------------------|-----------------------------|--------------------------------------------|
| `fla.layers.rwkv7`               | `token_shift`               | `RWKV7Attention.forward`                   |
|                                  | `fused_addcmul_rwkv7`       |                                            |
|                                  | `fused_k_rwkv7`             |                                            |
|                                  | `l2_norm`                   | (only with `fuse_norm=True`)               |
|                                  | `chunk_rwkv7`               | training, grad enabled, or T >= 64         |
|                                  | `fused_mul_recurrent_rwkv7` | otherwise (no-grad inference, decoding)    |
|                                  | `gate_output_correction`    |                                            |
| `fla.models.rwkv7.modeling_rwkv7`| `token_shift`               | `RWKV7FeedForward.forward`                 |
| `fla.modules.norm.layernorm`     | `layer_norm`, `group_norm`  | `LayerNorm.forward`, `GroupNorm.forward`   |
|                                  |                             | (the `fuse_norm=True` norms)               |
| `fla.modules.activations.ops`    | `sqrelu_fwd`, `sqrelu_bwd`  | `SquaredReLUFunction` (`ACT2FN['sqrelu']`, |
|                                  |                             | whose originals are `@torch.compile`d)     |
| `fla.models.modeling_utils`      | `FusedCrossEntropyLoss`     | `_compute_logits_and_loss` (the loss when  |
|                                  | `FusedLinearCrossEntropyLoss` | `labels` are given); replaced by         |
|                                  |                             | subclasses (`_loss_torch.py`) whose        |
|                                  |                             | `forward` dispatches on the device         |

The norm and activation functions are rebound in their defining modules because the module classes and
`ACT2FN` hold references to FLA's classes, so this also reaches models built before the install. The loss
classes are subclassed rather than replaced with a config flag (`fuse_cross_entropy=False`) so that a
checkpoint's config can stay as written and the same model still trains with FLA's fused loss on CUDA.

Layout conventions (FLA's): activations `[B, T, C]`; per-head tensors `[B, T, H, D]`; recurrent state
`[N, H, K, V]` (BlinkDL's is the transpose, `[H, V, K]`); token-shift cache `[N, C]`. With packed
variable-length input (`cu_seqlens` of shape `[N + 1]`) the batch size is 1 and N is the number of sequences.
Half-precision inputs are computed in float32 and rounded once, as the kernels do.
"""

from __future__ import annotations

import functools
import importlib

import torch
import torch.nn.functional as F

from ..core.errors import FallbackError, UnsupportedOnCPUError
from ._dplr_torch import dplr_chunk, dplr_recurrent
from ._loss_torch import cpu_aware_cross_entropy_loss, cpu_aware_linear_cross_entropy_loss, cross_entropy

_HINT = "\n  hint: this is a call into adapters' CPU fallback from FLA; check the model config, or report it with the shapes"

__all__ = [
    "chunk_rwkv7",
    "cross_entropy",
    "fused_addcmul_rwkv7",
    "fused_k_rwkv7",
    "fused_mul_recurrent_rwkv7",
    "gate_output_correction",
    "group_norm",
    "install_cpu_fallbacks",
    "l2_norm",
    "layer_norm",
    "sqrelu_bwd",
    "sqrelu_fwd",
    "token_shift",
    "uninstall_cpu_fallbacks",
]

# Marks the callables we install; its value is FLA's original, which uninstall puts back.
_MARK = "_adapters_cpu_fallback_of"


def token_shift(
    x: torch.Tensor,
    cu_seqlens: torch.Tensor | None = None,
    cache: torch.Tensor | None = None,
    output_cache: bool = False,
    chunk_indices: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Return `delta[t] = x[t-1] - x[t]`, where the token before each sequence is `cache` (or zero).

    Layouts: `x` is `[B, T, C]` (`[1, total, C]` with `cu_seqlens` `[N + 1]`); `cache` is `[N, C]` with
    N = B or the number of packed sequences. With `output_cache=True` also returns the new cache `[N, C]`:
    each sequence's last token (for an empty sequence, its incoming cache, or zeros). `chunk_indices` only
    tunes FLA's kernel and is ignored.
    """
    if cu_seqlens is None:
        first = cache.unsqueeze(1).to(x.dtype) if cache is not None else x.new_zeros(x.shape[0], 1, x.shape[2])
        delta = torch.cat([first, x[:, :-1]], dim=1) - x
        new_cache = x[:, -1] if x.shape[1] else first[:, 0]
        return (delta, new_cache) if output_cache else delta

    if x.dim() != 3 or x.shape[0] != 1:
        raise FallbackError(f"token_shift: with cu_seqlens, x must be [1, total, C], got {list(x.shape)}" + _HINT)
    cu_seqlens = cu_seqlens.to(device=x.device, dtype=torch.long)
    starts, ends = cu_seqlens[:-1], cu_seqlens[1:]
    num_seqs = len(starts)
    first = cache.to(x.dtype) if cache is not None else x.new_zeros(num_seqs, x.shape[2])
    nonempty = ends > starts
    previous = torch.cat([x.new_zeros(1, 1, x.shape[2]), x[:, :-1]], dim=1)
    previous = previous.index_put((torch.zeros_like(starts[nonempty]), starts[nonempty]), first[nonempty])
    delta = previous - x
    if not output_cache:
        return delta
    last = x[0, (ends - 1).clamp(min=0)]
    return delta, torch.where(nonempty.unsqueeze(-1), last, first)


def fused_addcmul_rwkv7(
    hidden_states: torch.Tensor,
    delta: torch.Tensor,
    xr: torch.Tensor,
    xw: torch.Tensor,
    xk: torch.Tensor,
    xv: torch.Tensor,
    xa: torch.Tensor,
    xg: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Return `hidden_states + delta * x_` for each of the six mixing vectors (`xg=None` gives `None` last).

    Layouts: `hidden_states`, `delta` `[B, T, C]`; mixing vectors `[1, 1, C]` (anything broadcastable).
    """
    outputs = tuple(torch.addcmul(hidden_states, delta, mix) for mix in (xr, xw, xk, xv, xa))
    return outputs + ((torch.addcmul(hidden_states, delta, xg) if xg is not None else None),)


def fused_k_rwkv7(
    k: torch.Tensor,
    a: torch.Tensor,
    ka: torch.Tensor,
    cu_seqlens: torch.Tensor | None = None,
    cu_seqlens_cpu: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return `k * (1 + (a - 1) * ka)`, written as FLA's reference writes it (`k.addcmul(k * (a - 1), ka)`).

    Layouts: `k`, `a` `[B, T, C]`; `ka` `[C]`. The elementwise op needs no sequence boundaries, so the
    `cu_seqlens` arguments are ignored.
    """
    return k.addcmul(k * (a - 1), ka)


def gate_output_correction(
    o: torch.Tensor,
    r: torch.Tensor,
    k: torch.Tensor,
    r_k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
) -> torch.Tensor:
    """Return `(o + (r * k * r_k).sum(-1, keepdim=True) * v) * g`, the RWKV-7 bonus term and output gate.

    Layouts: `o`, `g` `[B, T, H * D]`; `r`, `k`, `v` `[B, T, H, D]`; `r_k` `[H, D]`. Computed in float32
    (float64 stays float64) and returned in `o.dtype`.
    """
    dtype = torch.promote_types(o.dtype, torch.float32)
    bonus = (r.to(dtype) * k.to(dtype) * r_k.to(dtype)).sum(-1, keepdim=True) * v.to(dtype)
    return ((o.to(dtype) + bonus.reshape(o.shape)) * g.to(dtype)).to(o.dtype)


def l2_norm(x: torch.Tensor, eps: float = 1e-6, output_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Return `x / sqrt(sum(x**2, -1) + eps)` over the last axis, FLA's l2norm (eps inside the root).

    `F.normalize`, used with `fuse_norm=False`, clamps the norm at 1e-12 instead; the two differ by ~1e-7.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    x32 = x.to(dtype)
    y = x32 * torch.rsqrt(x32.square().sum(-1, keepdim=True) + eps)
    return y.to(output_dtype or x.dtype)


def group_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None = None,
    eps: float = 1e-5,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    is_rms_norm: bool = False,
    num_groups: int = 1,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Normalise `x (+ residual)` over each of `num_groups` equal slices of the last axis; FLA's fused norm.

    Layouts: `x`, `residual` `[..., C]`; `weight`, `bias` `[C]`. The sum `x + residual` is formed in float32
    and is what gets normalised. With `prenorm=True` returns `(y, sum)`, the sum rounded to `residual`'s dtype
    (float32 with `residual_in_fp32`, else `x`'s), which is what FLA's pre-norm blocks carry as the residual.
    `y` has `x`'s dtype. `is_rms_norm` drops the mean.
    """
    if x.shape[-1] % num_groups:
        raise FallbackError(f"group_norm: {x.shape[-1]} channels do not split into {num_groups} groups" + _HINT)
    dtype = torch.promote_types(x.dtype, torch.float32)
    summed = x.to(dtype)
    if residual is not None:
        summed = summed + residual.to(dtype)
    grouped = summed.unflatten(-1, (num_groups, -1))
    if not is_rms_norm:
        grouped = grouped - grouped.mean(-1, keepdim=True)
    y = (grouped * torch.rsqrt(grouped.square().mean(-1, keepdim=True) + eps)).flatten(-2)
    if weight is not None:
        y = y * weight.to(dtype)
    if bias is not None:
        y = y + bias.to(dtype)
    y = y.to(x.dtype)
    if not prenorm:
        return y
    residual_dtype = residual.dtype if residual is not None else (torch.float32 if residual_in_fp32 else x.dtype)
    return y, summed.to(residual_dtype)


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None = None,
    eps: float = 1e-5,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    is_rms_norm: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """`group_norm` with one group: FLA's fused LayerNorm (or RMSNorm) with optional residual add."""
    return group_norm(x, weight, bias, residual, eps, prenorm, residual_in_fp32, is_rms_norm, num_groups=1)


def sqrelu_fwd(x: torch.Tensor) -> torch.Tensor:
    """Return `relu(x) ** 2`, computed in float32 and returned in `x.dtype`."""
    relu = F.relu(x.to(torch.promote_types(x.dtype, torch.float32)))
    return (relu * relu).to(x.dtype)


def sqrelu_bwd(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Return the gradient of `sqrelu_fwd` at `x` times the incoming gradient `g`, in `x.dtype`."""
    return (2.0 * g * F.relu(x.to(torch.promote_types(x.dtype, torch.float32)))).to(x.dtype)


def chunk_rwkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    cu_seqlens_cpu: torch.Tensor | None = None,
    safe_gate: bool = False,
    chunk_size: int | None = None,
    disable_recompute: bool = False,
    cp_context: object | None = None,
    lower_bound: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The RWKV-7 state update in FLA's chunk-kernel form, `S_t = diag(e^{w_t}) S + b_t (a_t^T S) + k_t v_t^T`.

    Layouts: `r`, `w` (log decay), `k`, `a`, `b` `[B, T, H, K]`; `v` `[B, T, H, V]`; `initial_state` and the
    returned final state `[N, H, K, V]`; returns `o` `[B, T, H, V]` with `o_t = S_t^T (scale * r_t)`.
    `RWKV7Attention` passes `a = -kk` and `b = kk * a`. `safe_gate`, `chunk_size`, `lower_bound`,
    `disable_recompute` and `cu_seqlens_cpu` tune FLA's kernel and do not change the result; they are
    ignored. Context parallelism (`cp_context`) is not supported on CPU.
    """
    if cp_context is not None:
        raise UnsupportedOnCPUError(
            "chunk_rwkv7: context parallelism (cp_context) has no CPU implementation\n"
            "  hint: run context-parallel training on GPUs, where FLA's kernel supports it"
        )
    return dplr_chunk(r, k, v, a, b, w, scale, initial_state, output_final_state, cu_seqlens)


def fused_mul_recurrent_rwkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kk: torch.Tensor,
    a: torch.Tensor,
    scale: float | None = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The RWKV-7 state update in FLA's inference-kernel form: `chunk_rwkv7` with `a = -kk`, `b = kk * a`.

    Layouts: `r`, `w` (log decay), `k`, `kk` (the l2-normalised key), `a` (in-context rate) `[B, T, H, K]`;
    `v` `[B, T, H, V]`; state `[N, H, K, V]`. `scale=None` means `K ** -0.5`. The products are formed after
    the float32 upcast, as the kernel forms them.
    """
    if scale is None:
        scale = r.shape[-1] ** -0.5
    dtype = torch.promote_types(kk.dtype, torch.float32)
    kk, a = kk.to(dtype), a.to(dtype)
    return dplr_recurrent(r, k, v, -kk, kk * a, w, scale, initial_state, output_final_state, reverse, cu_seqlens)


def install_cpu_fallbacks() -> None:
    """Make FLA's RWKV-7 model run on CPU tensors; CUDA tensors keep FLA's Triton kernels.

    Rebinds the module attributes listed in this module's docstring to device dispatchers. Calling it
    again is a no-op. Works for models built before or after the call; inference (both kernel paths),
    training (autograd through plain torch) and cached decoding all go through the torch versions.

    Example:
        >>> from adapters.fla.cpu_ops import install_cpu_fallbacks
        >>> install_cpu_fallbacks()
        >>> from fla.models import RWKV7Config, RWKV7ForCausalLM
        >>> model = RWKV7ForCausalLM(RWKV7Config(hidden_size=128, num_hidden_layers=2, vocab_size=300))
        >>> model(torch.tensor([[1, 2, 3]])).logits.shape
        torch.Size([1, 3, 300])
    """
    for module_name, name, fallback in _function_patches():
        module = importlib.import_module(module_name)
        current = getattr(module, name)
        if not hasattr(current, _MARK):
            setattr(module, name, _dispatcher(fallback, current))
    modeling_utils = importlib.import_module("fla.models.modeling_utils")
    for name, make in (
        ("FusedCrossEntropyLoss", cpu_aware_cross_entropy_loss),
        ("FusedLinearCrossEntropyLoss", cpu_aware_linear_cross_entropy_loss),
    ):
        current = getattr(modeling_utils, name)
        if _MARK not in vars(current):
            subclass = make(current)
            setattr(subclass, _MARK, current)
            setattr(modeling_utils, name, subclass)


def uninstall_cpu_fallbacks() -> None:
    """Put back every FLA attribute that `install_cpu_fallbacks()` rebound. A no-op if none is installed."""
    targets = [(m, n) for m, n, _ in _function_patches()]
    targets += [("fla.models.modeling_utils", "FusedCrossEntropyLoss")]
    targets += [("fla.models.modeling_utils", "FusedLinearCrossEntropyLoss")]
    for module_name, name in targets:
        module = importlib.import_module(module_name)
        current = getattr(module, name)
        original = vars(current).get(_MARK) if isinstance(current, type) else getattr(current, _MARK, None)
        if original is not None:
            setattr(module, name, original)


def _function_patches() -> tuple[tuple[str, str, object], ...]:
    layer, model = "fla.layers.rwkv7", "fla.models.rwkv7.modeling_rwkv7"
    # fmt: off
    return (
        (layer,                          "token_shift",               token_shift),
        (layer,                          "fused_addcmul_rwkv7",       fused_addcmul_rwkv7),
        (layer,                          "fused_k_rwkv7",             fused_k_rwkv7),
        (layer,                          "l2_norm",                   l2_norm),
        (layer,                          "chunk_rwkv7",               chunk_rwkv7),
        (layer,                          "fused_mul_recurrent_rwkv7", fused_mul_recurrent_rwkv7),
        (layer,                          "gate_output_correction",    gate_output_correction),
        (model,                          "token_shift",               token_shift),
        ("fla.modules.norm.layernorm",   "layer_norm",                layer_norm),
        ("fla.modules.norm.layernorm",   "group_norm",                group_norm),
        ("fla.modules.activations.ops",  "sqrelu_fwd",                sqrelu_fwd),
        ("fla.modules.activations.ops",  "sqrelu_bwd",                sqrelu_bwd),
    )
    # fmt: on


def _dispatcher(fallback, original):
    @functools.wraps(original)
    def dispatch(*args, **kwargs):
        if _on_cpu(args, kwargs):
            return fallback(*args, **kwargs)
        return original(*args, **kwargs)

    setattr(dispatch, _MARK, original)
    return dispatch


def _on_cpu(args, kwargs) -> bool:
    """Whether the first tensor argument (positional first, then keyword order) lives on the CPU."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device.type == "cpu"
    return False
