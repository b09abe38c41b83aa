"""Pure-torch DPLR delta rule: the recurrence inside FLA's RWKV-7 kernels, for CPU tensors.

Per sequence and head, with a state `S` of shape [K, V] (FLA's layout; BlinkDL keeps the transpose, [V, K]):

    S_t = diag(exp(gk_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T
    o_t = S_t^T (scale * q_t)

`gk` is the log decay (RWKV-7 passes w = -exp(-0.5) * sigmoid(.), so gk is in (-0.607, 0)). Both the decay and
`a^T S` act on the previous state, as in FLA's fused_recurrent kernel and its `naive.dplr_recurrence`.

Two formulations, both plain differentiable torch:

* `dplr_recurrent`: one step per token. It backs `fused_mul_recurrent_rwkv7` (FLA's inference kernel).
* `dplr_chunk`: the same recurrence in chunks of C tokens. Inside a chunk, with start state S_0, inclusive
  cumulative log decay g_t, exclusive g'_t = g_t - gk_t and u_t = S_{t-1}^T a_t, unrolling gives

      S_t = e^{g_t} * S_0 + sum_{s<=t} e^{g_t - g_s} * (b_s u_s^T + k_s v_s^T)
      (I - A_ab) U = (a * e^{g'}) S_0 + A_ak V,   A_xy[t, s] = sum_j x_t[j] e^{g'_t[j] - g_s[j]} y_s[j]  (s < t)

  so one unit-triangular solve per chunk yields U, then the outputs and the next S_0 are matmuls. The
  decay ratios are factorised around the middle of each chunk's log-decay range, so no factor exceeds
  e^{span/2}; a chunk whose range passes `_MAX_LOG_SPAN` (impossible for RWKV-7: at most 0.607 * C) makes
  the call fall back to the token scan instead of overflowing. It backs `chunk_rwkv7` (FLA's training kernel).

Both compute in float32 (float64 inputs stay float64), return `o` in `v`'s dtype and the final state in the
compute dtype, as FLA's kernels return float32 states.

Layouts: q, k, a, b, gk [B, T, H, K]; v [B, T, H, V]; initial and final state [N, H, K, V], where N = B, or
N = len(cu_seqlens) - 1 for packed variable-length input, which must then have B == 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.errors import FallbackError

_HINT = "\n  hint: this is a call into adapters' CPU fallback from FLA; check the model config, or report it with the shapes"

__all__ = ["CHUNK_SIZE", "dplr_chunk", "dplr_recurrent"]

# Tokens per chunk in `dplr_chunk`. FLA's own `chunk_size` argument tunes its GPU kernel and is not used here.
CHUNK_SIZE = 16

# Largest log-decay range inside one chunk that the factorised decay ratios accept (e^30 each side).
_MAX_LOG_SPAN = 60.0


def dplr_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the DPLR delta rule token by token (see the module docstring for the recurrence and layouts).

    Args:
        q, k, a, b, gk: `[B, T, H, K]`; `gk` is the log decay.
        v: `[B, T, H, V]`.
        scale: multiplies `q`.
        initial_state: `[N, H, K, V]`, or `None` for zeros.
        output_final_state: return the state after the last token of each sequence.
        reverse: run every sequence from its last token to its first.
        cu_seqlens: `[N + 1]` cumulative lengths of sequences packed along T (then B must be 1).

    Returns:
        `(o, final_state)`: `o` is `[B, T, H, V]` in `v.dtype`; `final_state` is `[N, H, K, V]` in float32
        (float64 for float64 inputs), or `None` unless `output_final_state`.
    """
    return _run(_scan, q, k, v, a, b, gk, scale, initial_state, output_final_state, reverse, cu_seqlens)


def dplr_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the DPLR delta rule in chunks of `chunk_size` tokens; same contract as `dplr_recurrent`.

    The result equals `dplr_recurrent`'s up to float rounding; the chunked form does T / chunk_size steps of
    batched matmuls instead of T steps of small ones, which is what makes CPU training bearable.
    """
    if chunk_size < 1:
        raise FallbackError(f"dplr_chunk: chunk_size must be >= 1, got {chunk_size}" + _HINT)

    def core(q, k, v, a, b, gk, state):
        result = _chunked(q, k, v, a, b, gk, state, chunk_size)
        return _scan(q, k, v, a, b, gk, state) if result is None else result

    return _run(core, q, k, v, a, b, gk, scale, initial_state, output_final_state, False, cu_seqlens)


def _run(core, q, k, v, a, b, gk, scale, initial_state, output_final_state, reverse, cu_seqlens):
    batch, _, heads, key_dim = q.shape
    value_dim = v.shape[-1]
    num_seqs = batch
    if cu_seqlens is not None:
        if batch != 1:
            raise FallbackError(
                f"DPLR delta rule: with cu_seqlens the batch size must be 1, got {batch}; "
                "pack the sequences along the time axis" + _HINT
            )
        num_seqs = len(cu_seqlens) - 1
    if initial_state is not None and tuple(initial_state.shape) != (num_seqs, heads, key_dim, value_dim):
        raise FallbackError(
            f"DPLR delta rule: initial_state must be [N, H, K, V] = {[num_seqs, heads, key_dim, value_dim]}, "
            f"got {list(initial_state.shape)}" + _HINT
        )

    inputs = (q, k, v, a, b, gk) + ((initial_state,) if initial_state is not None else ())
    dtype = torch.float64 if any(x.dtype == torch.float64 for x in inputs) else torch.float32
    q, k, v, a, b, gk = (x.to(dtype) for x in (q, k, v, a, b, gk))
    q = q * scale
    if cu_seqlens is not None:
        q, k, v, a, b, gk = (_to_padded(x, cu_seqlens) for x in (q, k, v, a, b, gk))
    if reverse:
        q, k, v, a, b, gk = (x.flip(1) for x in (q, k, v, a, b, gk))
    if initial_state is None:
        state = q.new_zeros(num_seqs, heads, key_dim, value_dim)
    else:
        state = initial_state.to(dtype)

    o, state = core(q, k, v, a, b, gk, state)

    if reverse:
        o = o.flip(1)
    if cu_seqlens is not None:
        o = _from_padded(o, cu_seqlens)
    return o.to(inputs[2].dtype), (state if output_final_state else None)


def _scan(q, k, v, a, b, gk, state):
    decay = gk.exp()
    outputs = []
    for t in range(q.shape[1]):
        sa = a[:, t].unsqueeze(-2) @ state  # a_t^T S_{t-1}: [B, H, 1, V]
        state = (
            decay[:, t].unsqueeze(-1) * state
            + b[:, t].unsqueeze(-1) * sa
            + k[:, t].unsqueeze(-1) * v[:, t].unsqueeze(-2)
        )
        outputs.append((q[:, t].unsqueeze(-2) @ state).squeeze(-2))
    if not outputs:
        return v.new_zeros(v.shape), state
    return torch.stack(outputs, dim=1), state


def _chunked(q, k, v, a, b, gk, state, chunk_size):
    batch, length, heads, key_dim = q.shape
    value_dim = v.shape[-1]
    pad = (-length) % chunk_size
    if pad:
        # Zero tokens with zero log decay leave the state exactly as it was.
        q, k, v, a, b, gk = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v, a, b, gk))
    num_chunks = (length + pad) // chunk_size

    def chunks(x):  # [B, T, H, D] -> [B, H, NC, C, D]
        return x.reshape(batch, num_chunks, chunk_size, heads, -1).permute(0, 3, 1, 2, 4)

    q, k, v, a, b, gk = (chunks(x) for x in (q, k, v, a, b, gk))
    g = gk.cumsum(-2)
    g_prev = g - gk
    both = torch.cat([g, g_prev], dim=-2)
    high, low = both.amax(-2, keepdim=True), both.amin(-2, keepdim=True)
    if bool((high - low).max() > _MAX_LOG_SPAN):
        return None
    mid = (high + low) / 2

    q_in, a_in = q * (g - mid).exp(), a * (g_prev - mid).exp()
    k_out, b_out = k * (mid - g).exp(), b * (mid - g).exp()
    ones = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device)
    upper_incl, upper_strict = ~ones.tril(), ~ones.tril(-1)
    a_qk = (q_in @ k_out.mT).masked_fill(upper_incl, 0)
    a_qb = (q_in @ b_out.mT).masked_fill(upper_incl, 0)
    a_ak = (a_in @ k_out.mT).masked_fill(upper_strict, 0)
    a_ab = (a_in @ b_out.mT).masked_fill(upper_strict, 0)

    eye = torch.eye(chunk_size, dtype=q.dtype, device=q.device)
    rhs = torch.cat([a * g_prev.exp(), a_ak @ v], dim=-1)
    solved = torch.linalg.solve_triangular(eye - a_ab, rhs, upper=False, unitriangular=True)
    u_from_state, u_from_values = solved.split([key_dim, value_dim], dim=-1)

    q_from_state = q * g.exp()
    g_last = g[..., -1:, :]
    to_end = (g_last - g).exp()
    k_end, b_end = k * to_end, b * to_end
    chunk_decay = g_last.exp().mT  # [B, H, NC, K, 1]

    outputs = []
    for n in range(num_chunks):
        u = u_from_state[:, :, n] @ state + u_from_values[:, :, n]
        outputs.append(q_from_state[:, :, n] @ state + a_qb[:, :, n] @ u + a_qk[:, :, n] @ v[:, :, n])
        state = chunk_decay[:, :, n] * state + b_end[:, :, n].mT @ u + k_end[:, :, n].mT @ v[:, :, n]
    o = torch.stack(outputs, dim=2).permute(0, 2, 3, 1, 4).reshape(batch, num_chunks * chunk_size, heads, value_dim)
    return o[:, :length], state


def _varlen_index(cu_seqlens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    cu_seqlens = cu_seqlens.to(torch.long)
    lengths = cu_seqlens.diff()
    seq = torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), lengths)
    pos = torch.arange(int(cu_seqlens[-1]), device=cu_seqlens.device) - cu_seqlens[seq]
    return seq, pos, int(lengths.max()) if len(lengths) else 0


def _to_padded(x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """`[1, total, ...]` packed -> `[N, max_len, ...]`, zero-filled after each sequence's end."""
    seq, pos, max_len = _varlen_index(cu_seqlens.to(x.device))
    padded = x.new_zeros(len(cu_seqlens) - 1, max_len, *x.shape[2:])
    return padded.index_put((seq, pos), x[0, : len(seq)])


def _from_padded(x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Inverse of `_to_padded`: `[N, max_len, ...]` -> `[1, total, ...]`."""
    seq, pos, _ = _varlen_index(cu_seqlens.to(x.device))
    return x[seq, pos].unsqueeze(0)
