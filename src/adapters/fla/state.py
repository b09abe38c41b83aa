"""RWKV-7 RNN state interop: BlinkDL's `rwkv` package state <-> FLA `Cache`, and BlinkDL state-tuning files.

Layouts (L layers, C hidden, H heads of size N; checked against rwkv 0.8.32 `RWKV_x070` and FLA 0.6.0)::

    rwkv package state: a list, unbatched            FLA Cache, layer i: a dict, batch B = 1
    state[3i]      attention token shift [C]    <->  conv_state       [1, C]
    state[3i + 1]  WKV state [H, N_v, N_k] fp32 <->  recurrent_state  [1, H, N_k, N_v] fp32   (transposed)
    state[3i + 2]  FFN token shift [C]          <->  ffn_state        [1, C]

The token shifts hold the last token's normalised layer input (BlinkDL's ``ln1``/``ln2`` output, FLA's
``attn_norm``/``ffn_norm`` output). BlinkDL updates ``S = S diag(w) + S a b^T + v k^T`` and reads ``S r``, so its
rows are values; FLA keeps the transpose (FLA issue #351 was this confusion). Both keep it in float32.

The `rwkv` package has no batch dimension, so the FLA side is batch 1 here; ``cache.batch_repeat_interleave(n)``
makes n copies for a batch.

A BlinkDL state-tuning file (RWKV-PEFT's state tuning trains only these) holds one ``blocks.{i}.att.time_state``
``[H, N_v, N_k]`` per layer: a trained initial WKV state in the `rwkv` package's layout, token shifts zero.
RWKV-Runner uses it as is for RWKV-7 (``backend-python/utils/rwkv.py`` at 64269f0; v5/v6 files are transposed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..core import StateError, open_source, summarize_keys

__all__ = ["blinkdl_state_to_cache", "cache_to_blinkdl_state", "load_state_tuning"]

_PARTS = ("att token shift", "WKV state", "ffn token shift")
_HINT = "  hint: a state belongs to one model; pass the list rwkv's forward() returned for a model of this shape"


@dataclass(frozen=True, slots=True)
class _Shapes:
    """The per-layer state shapes of one RWKV-7 model, BlinkDL side (unbatched)."""

    layers: int
    hidden: int
    heads: int
    key_dim: int
    value_dims: tuple[int, ...]  # per layer; equal to key_dim in every BlinkDL model

    @classmethod
    def of(cls, model_or_config) -> _Shapes:
        config = getattr(model_or_config, "config", model_or_config)
        if getattr(config, "model_type", None) != "rwkv7":
            raise StateError(
                f"{type(model_or_config).__name__} is not an FLA RWKV-7 model or config\n"
                "  hint: pass the RWKV7ForCausalLM (or its config) the state is for"
            )
        heads = config.hidden_size // config.head_dim
        values = tuple(v // heads for v in config.value_dim)
        return cls(config.num_hidden_layers, config.hidden_size, heads, config.head_dim, values)

    def blinkdl(self, layer: int) -> tuple[tuple[int, ...], ...]:
        return (self.hidden,), (self.heads, self.value_dims[layer], self.key_dim), (self.hidden,)


def _model_dtype_device(model_or_config) -> tuple[torch.dtype | None, torch.device | None]:
    param = next(model_or_config.parameters(), None) if hasattr(model_or_config, "parameters") else None
    return (param.dtype, param.device) if param is not None else (None, None)


def blinkdl_state_to_cache(
    state: list[torch.Tensor],
    model_or_config,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    seen_tokens: int = 0,
):
    """An FLA `Cache` (batch 1) holding an `rwkv` package RWKV-7 state; decoding with it continues that state.

    Args:
        state: the list of 3 tensors per layer that rwkv's ``forward(tokens, state)`` returns (not modified).
        model_or_config: the FLA `RWKV7ForCausalLM` (or its config) that will continue; shapes are checked against it.
        dtype: dtype of the token shifts (default: the model's, else the state's). The WKV state stays float32
            (float64 for a float64 model), as both implementations keep it.
        device: where the cache lives (default: the model's, else the state's).
        seen_tokens: how many tokens the state has consumed (the cache's length; only generation utilities read it).

    Returns:
        `fla.models.cache_utils.Cache`, one layer dict per layer: ``conv_state [1, C]``,
        ``recurrent_state [1, H, N_k, N_v]``, ``ffn_state [1, C]``, each a copy.

    Example::

        _, state = rwkv_model.forward(prompt_ids, None)            # BlinkDL's rwkv package
        cache = blinkdl_state_to_cache(state, fla_model)
        out = fla_model(torch.tensor([more_ids]), past_key_values=cache, use_cache=True)
    """
    from fla.models.cache_utils import Cache

    shapes = _Shapes.of(model_or_config)
    _check_blinkdl_state(state, shapes)
    model_dtype, model_device = _model_dtype_device(model_or_config)
    shift_dtype = dtype or model_dtype or state[0].dtype
    wkv_dtype = torch.promote_types(shift_dtype, torch.float32)
    device = device or model_device or state[0].device
    layers = []
    for i in range(shapes.layers):
        att, wkv, ffn = state[3 * i : 3 * i + 3]
        layers.append({
            "conv_state": att.to(device, shift_dtype, copy=True).unsqueeze(0),
            "recurrent_state": wkv.to(device, wkv_dtype, copy=True).transpose(-1, -2).contiguous().unsqueeze(0),
            "ffn_state": ffn.to(device, shift_dtype, copy=True).unsqueeze(0),
        })  # fmt: skip
    return Cache.from_legacy_cache(layers, seen_tokens=seen_tokens)


def _check_blinkdl_state(state: list[torch.Tensor], shapes: _Shapes) -> None:
    if len(state) != 3 * shapes.layers:
        raise StateError(
            f"rwkv state has {len(state)} tensors; a {shapes.layers}-layer RWKV-7 needs {3 * shapes.layers} "
            "(per layer: att token shift, WKV state, ffn token shift)\n" + _HINT
        )
    for i in range(shapes.layers):
        for j, (part, want) in enumerate(zip(_PARTS, shapes.blinkdl(i))):
            got = tuple(state[3 * i + j].shape)
            if got != want:
                layout = " ([H, N_v, N_k])" if j == 1 else " (unbatched)"
                raise StateError(
                    f"rwkv state[{3 * i + j}] (layer {i} {part}) is {list(got)}; the model needs {list(want)}{layout}\n"
                    + _HINT
                )


def cache_to_blinkdl_state(cache, *, dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """The `rwkv` package state equivalent to an FLA RWKV-7 `Cache` of batch 1; rwkv's forward continues from it.

    Args:
        cache: ``out.past_key_values`` of an `RWKV7ForCausalLM` run with ``use_cache=True`` (not modified).
        dtype: dtype of the token shifts (default: the cache's); use the dtype of the rwkv strategy
            (float32 for ``"cpu fp32"``, bfloat16 for ``"cpu bf16"``). The WKV state is float32 (float64 from
            a float64 model).

    Returns:
        A list of 3 CPU tensors per layer: att token shift ``[C]``, WKV state ``[H, N_v, N_k]``, ffn token shift
        ``[C]`` (copies).

    Example::

        out = fla_model(torch.tensor([prompt_ids]), use_cache=True)
        state = cache_to_blinkdl_state(out.past_key_values)
        logits, state = rwkv_model.forward(more_ids, state)
    """
    layers = list(cache)
    if not layers:
        raise StateError(
            "cache is empty: it holds no layer state\n"
            "  hint: run the model with use_cache=True and pass out.past_key_values"
        )
    state: list[torch.Tensor] = []
    for i, layer in enumerate(layers):
        parts = _cache_layer(layer, i)
        shift_dtype = dtype or parts[0].dtype
        att, wkv, ffn = (p[0].detach().to("cpu", copy=True) for p in parts)
        wkv = wkv.to(torch.promote_types(wkv.dtype, torch.float32)).transpose(-1, -2).contiguous()
        state += [att.to(shift_dtype), wkv, ffn.to(shift_dtype)]
    return state


def _cache_layer(layer, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    names = ("conv_state", "recurrent_state", "ffn_state")
    parts = tuple(layer.get(n) if isinstance(layer, dict) else None for n in names)
    absent = [n for n, p in zip(names, parts) if not isinstance(p, torch.Tensor)]
    if absent:
        raise StateError(
            f"cache layer {i} has no {', '.join(absent)}: it was not filled by an RWKV-7 forward\n"
            "  hint: run the model with use_cache=True and pass out.past_key_values"
        )
    att, wkv, ffn = parts
    shifts_ok = att.dim() == 2 and ffn.shape == att.shape  # [B, C] each
    wkv_ok = (
        shifts_ok and wkv.dim() == 4 and wkv.shape[0] == att.shape[0] and wkv.shape[1] * wkv.shape[2] == att.shape[1]
    )
    if not wkv_ok:
        raise StateError(
            f"cache layer {i} does not hold an RWKV-7 state: conv_state {list(att.shape)}, recurrent_state "
            f"{list(wkv.shape)}, ffn_state {list(ffn.shape)}\n"
            "  expected: conv_state and ffn_state [B, C], recurrent_state [B, H, N_k, N_v] with H * N_k = C\n"
            "  hint: pass the cache of an RWKV7ForCausalLM"
        )
    if att.shape[0] != 1:
        raise StateError(
            f"cache layer {i} holds a batch of {att.shape[0]}; the rwkv package's state is unbatched (batch 1)\n"
            "  hint: keep one sequence first: cache.batch_select_indices(torch.tensor([index]))"
        )
    return att, wkv, ffn


def load_state_tuning(
    path: str | os.PathLike,
    model_or_config,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
):
    """A BlinkDL state-tuning file (``blocks.{i}.att.time_state [H, N_v, N_k]`` per layer) as an FLA `Cache`.

    The file is read through the same safe, lazy reader as checkpoints; token shifts start at zero, as in
    RWKV-Runner. Decoding from the returned cache equals the `rwkv` package starting from that state.

    Args:
        path: the ``.pth`` (or ``.safetensors``) state file.
        model_or_config: the FLA `RWKV7ForCausalLM` (or its config) the state was tuned for.
        dtype, device: as for `blinkdl_state_to_cache`.

    Returns:
        `fla.models.cache_utils.Cache` of batch 1 (see `blinkdl_state_to_cache`).

    Example::

        cache = load_state_tuning("rwkv7-g1-0.4b-state.pth", model)
        out = model(torch.tensor([prompt_ids]), past_key_values=cache, use_cache=True)
    """
    shapes = _Shapes.of(model_or_config)
    want = [f"blocks.{i}.att.time_state" for i in range(shapes.layers)]
    with open_source(path) as reader:
        table = reader.table()
        missing, unused = [k for k in want if k not in table], [k for k in table if k not in want]
        if missing or unused:
            raise StateError(
                f"{reader.path} is not a state-tuning file for a {shapes.layers}-layer RWKV-7\n"
                + (f"  missing:   {summarize_keys(missing)}\n" if missing else "")
                + (f"  unexpected: {summarize_keys(unused)}\n" if unused else "")
                + "  hint: a state-tuning file holds exactly one blocks.{i}.att.time_state per layer of its model"
            )
        for i, key in enumerate(want):
            if tuple(table[key].shape) != shapes.blinkdl(i)[1]:
                raise StateError(
                    f"{reader.path}: {key} is {list(table[key].shape)}; the model needs "
                    f"{list(shapes.blinkdl(i)[1])} ([H, N_v, N_k])\n"
                    "  hint: the state was tuned for another model size; load it with that model"
                )
        time_states = [reader.read(k).float() for k in want]
    model_dtype, _ = _model_dtype_device(model_or_config)
    shift = torch.zeros(shapes.hidden, dtype=dtype or model_dtype or torch.float32)
    state = [t for ts in time_states for t in (shift, ts, shift)]
    return blinkdl_state_to_cache(state, model_or_config, dtype=dtype, device=device)
