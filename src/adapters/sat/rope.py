"""RoPE as transformers computes it, installed into SAT's rotary embeddings.

SAT's `FastRotaryEmbedding` takes its base at construction and the model classes never pass one (LLaMA 10000,
Mixtral 1e6, ChatGLM4 10000), and it knows no frequency scaling; so a checkpoint trained with another base (Llama-3
5e5, GLM-4 ``rope_ratio``) or with scaled RoPE (Llama 3.1+: ``llama3``) would load and run with wrong angles. The
frequencies only enter through the ``inv_freq`` buffer, the method that recomputes it (`_compute_inv_freq`, called
again when the buffer is not float32) and the cos/sin cache; setting all three after construction is exact.

Reading the config (`read_rope`) follows transformers 5 (``RotaryEmbeddingConfigMixin``): a legacy ``rope_scaling``
replaces ``rope_parameters`` whole; ``rope_theta`` comes from that dict, else the top-level ``rope_theta``, else the
model's default; ``type`` is the old spelling of ``rope_type``; ``llama3`` and ``yarn`` take
``original_max_position_embeddings`` from the top level when the config has one there, else from the dict, else
``max_position_embeddings``. A file holding both dicts, standardised to different parameters, is refused: which one
the author meant is a guess (transformers silently takes ``rope_scaling``, and with it loses a ``rope_theta`` that only
``rope_parameters`` holds).

What is computed (``inv_freq`` bit for bit as transformers' ``ROPE_INIT_FUNCTIONS``, the same float32 ops)::

    default  θ^(-2i/d)
    linear   default / factor
    llama3   per wavelength λ = 2π/f:  λ < L/high_freq_factor: f;  λ > L/low_freq_factor: f/factor;
             between: (1-s)·f/factor + s·f,  s = (L/λ - low_freq_factor) / (high_freq_factor - low_freq_factor)
             (L = original_max_position_embeddings)
    yarn     a ramp between f (extrapolation) and f/factor (interpolation) over the dims found from beta_fast,
             beta_slow; cos and sin are multiplied by the attention factor (so q·k by its square)

``dynamic``, ``longrope`` and the rest recompute frequencies from the running sequence length, which SAT's fixed
buffer cannot do: refused by name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import HookError

__all__ = ["SUPPORTED", "Rope", "install_rope", "read_rope", "runtime_rope", "set_rotary_base"]

SUPPORTED = ("default", "linear", "llama3", "yarn")
_NEEDS = {"default": (), "linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor"),
          "yarn": ("factor",)}  # fmt: skip
_WITH_ORIGINAL = ("llama3", "yarn", "longrope")  # transformers fills original_max_position_embeddings for these


@dataclass(frozen=True)
class Rope:
    """RoPE for one config: ``parameters`` are transformers' standardised ``rope_parameters`` (``rope_type``,
    ``rope_theta`` and the type's fields: ``factor``, ...), with a yarn ``factor`` of null resolved."""

    parameters: Mapping[str, Any]

    @classmethod
    def default(cls, theta: float) -> Rope:
        return cls({"rope_type": "default", "rope_theta": float(theta)})

    @property
    def rope_type(self) -> str:
        return str(self.parameters["rope_type"])

    @property
    def theta(self) -> float:
        return float(self.parameters["rope_theta"])

    def inv_freq(self, dim: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The ``dim // 2`` inverse frequencies, float32, as transformers computes them for this rope type."""
        base = 1.0 / (self.theta ** (torch.arange(0, dim, 2, dtype=torch.int64).to(device, torch.float) / dim))
        if self.rope_type == "linear":
            return base / self.parameters["factor"]
        if self.rope_type == "llama3":
            return _llama3(base, self.parameters)
        if self.rope_type == "yarn":
            return _yarn(self.theta, dim, self.parameters, device)
        return base

    def attention_factor(self) -> float:
        """What cos and sin are multiplied by: 1, except yarn's ``attention_factor`` (given or from its formula)."""
        if self.rope_type != "yarn":
            return 1.0
        given, factor = self.parameters.get("attention_factor"), self.parameters["factor"]
        if given is not None:
            return float(given)
        mscale, mscale_all_dim = self.parameters.get("mscale"), self.parameters.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            return float(_mscale(factor, mscale) / _mscale(factor, mscale_all_dim))
        return _mscale(factor)


def _llama3(inv_freq: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    """transformers' ``_compute_llama3_parameters``, op for op (the three wavelength bands)."""
    factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
    old_context_len = p["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old_context_len / low, old_context_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def _yarn(base: float, dim: int, p: Mapping[str, Any], device) -> torch.Tensor:
    """transformers' ``_compute_yarn_parameters`` frequencies, op for op."""
    factor = p["factor"]
    beta_fast, beta_slow = p.get("beta_fast") or 32, p.get("beta_slow") or 1
    original = p["original_max_position_embeddings"]

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2).to(device=device, dtype=torch.float) / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    extrapolation_factor = 1 - ramp.to(device=device, dtype=torch.float)
    return interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor


def _mscale(scale: float, mscale: float = 1) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def read_rope(
    config: Mapping[str, Any], path: Path | str, sat_class: str, *, default_theta: float, max_positions: int
) -> Rope:
    """The RoPE transformers 5 builds from `config` (a ``config.json`` read at `path`), if SAT can compute it.

    `default_theta` and `max_positions` are the HF config class's defaults (LLaMA 1e4 and 2048).

    Raises:
        HookError: ``rope_scaling`` and ``rope_parameters`` that disagree; a rope type outside `SUPPORTED`; a
            field the type needs missing; ``partial_rotary_factor`` with a scaled type (transformers' LLaMA
            rotates the whole head, its scaled types only part of it: it cannot run such a file).
    """
    where = Path(path) / "config.json"
    max_positions = int(config.get("max_position_embeddings") or max_positions)
    scaling, params = config.get("rope_scaling"), config.get("rope_parameters")
    chosen = _standardise(scaling or params or {}, config, default_theta, max_positions)
    if scaling and params and chosen != _standardise(params, config, default_theta, max_positions):
        raise HookError(
            f"{where}: rope_scaling and rope_parameters disagree\n"
            f"  rope_scaling:    {json.dumps(scaling, sort_keys=True)}\n"
            f"  rope_parameters: {json.dumps(params, sort_keys=True)}\n"
            "  hint: transformers 5 reads rope_scaling and ignores rope_parameters (its rope_theta too); keep the one "
            "the model was trained with and delete the other"
        )
    _check(chosen, "rope_scaling" if scaling else "rope_parameters", where, sat_class)
    return Rope(chosen)


def _standardise(given: Mapping[str, Any], config: Mapping[str, Any], theta: float, max_positions: int) -> dict:
    """transformers' ``convert_rope_params_to_dict`` + ``standardize_rope_params`` for one flat dict (``type``
    dropped: it is the old spelling of ``rope_type``, which it sets), and a yarn ``factor`` of null resolved as
    ``_compute_yarn_parameters`` resolves it (max positions / original)."""
    p = dict(given)
    p.setdefault("rope_theta", config.get("rope_theta", theta))
    if config.get("partial_rotary_factor") is not None:
        p.setdefault("partial_rotary_factor", config["partial_rotary_factor"])
    p.setdefault("rope_type", p.get("type", "default"))
    p.pop("type", None)
    if p["rope_type"] in _WITH_ORIGINAL:
        if "original_max_position_embeddings" in config:  # transformers lets the top-level field win (Phi-3)
            p["original_max_position_embeddings"] = config["original_max_position_embeddings"]
        p.setdefault("original_max_position_embeddings", max_positions)
    if p["rope_type"] == "yarn" and "factor" in p and p["factor"] is None:
        p["factor"] = max_positions / p["original_max_position_embeddings"]
    return p


def _check(p: Mapping[str, Any], source: str, where: Path, sat_class: str) -> None:
    rope_type = p["rope_type"]
    if rope_type not in SUPPORTED:
        raise HookError(
            f"{where}: {source}.rope_type is {rope_type!r}, a RoPE SAT's {sat_class} does not compute\n"
            f"  supported rope types: {', '.join(SUPPORTED)}\n"
            "  hint: this type changes the frequencies with the sequence length or per layer, which SAT's fixed "
            "rotary buffer cannot; loading would give wrong outputs, so it is refused"
        )
    missing = [name for name in _NEEDS[rope_type] if name not in p]
    factor = p.get("partial_rotary_factor", 1.0)
    if missing:
        raise HookError(
            f"{where}: {source} of rope type {rope_type!r} has no {', '.join(missing)}\n"
            "  hint: transformers cannot build this model either; the config is incomplete"
        )
    if rope_type != "default" and factor != 1.0:
        raise HookError(
            f"{where}: {source}.partial_rotary_factor is {factor!r} with rope type {rope_type!r}, which SAT's "
            f"{sat_class} does not compute\n"
            "  hint: SAT's LLaMA-style models rotate the whole head; loading would give wrong outputs, so it is refused"
        )


def install_rope(model: nn.Module, rope: Rope, *, dim: int | None = None) -> int:
    """Give every `FastRotaryEmbedding` in `model` the frequencies of `rope` (and rotary `dim` when given).

    Each module records `rope` as ``adapters_rope`` (what `save_hf` writes back). Returns how many modules were
    changed, so callers can insist on at least one.
    """
    from sat.model.position_embedding.triton_rotary_embeddings import FastRotaryEmbedding

    changed = 0
    for module in model.modules():
        if isinstance(module, FastRotaryEmbedding):
            _install(module, rope, dim)
            changed += 1
    return changed


def set_rotary_base(model: nn.Module, base: float, *, dim: int | None = None) -> int:
    """`install_rope` with plain RoPE of base `base`."""
    return install_rope(model, Rope.default(base), dim=dim)


def runtime_rope(model: nn.Module) -> list[str]:
    """What `model`'s rotary embeddings compute that SAT's own class, built from the same args, would not: one line
    per distinct change (base, scaling, rotary width), empty when SAT alone computes the same angles."""
    found = []
    for module in model.modules():
        rope, built = getattr(module, "adapters_rope", None), module.__dict__.get("adapters_built_as")
        if rope is None or built is None:
            continue
        base, dim = built
        if rope.rope_type != "default" or rope.theta != base or module.dim != dim:
            line = (f"rope type {rope.rope_type!r}, theta {rope.theta:g}, rotary dim {module.dim} "
                    f"(SAT builds theta {base:g}, rotary dim {dim}, unscaled)")  # fmt: skip
            found += [line] if line not in found else []
    return found


def _install(module: nn.Module, rope: Rope, dim: int | None) -> None:
    # What SAT built, before we change it: what SAT's own from_pretrained would build again (see runtime_rope).
    module.__dict__.setdefault("adapters_built_as", (float(module.base), int(module.dim)))
    module.base = rope.theta
    if dim is not None:
        module.dim = dim
    for name in ("_compute_inv_freq", "_update_cos_sin_cache"):  # back to SAT's own methods, then override
        module.__dict__.pop(name, None)
    if rope.rope_type != "default":
        # SAT calls this again (in place of the buffer) whenever inv_freq is not float32, e.g. after .bfloat16()
        module._compute_inv_freq = partial(_inv_freq, rope, module.dim)
    if rope.attention_factor() != 1.0:
        module._update_cos_sin_cache = partial(_scaled_cos_sin_cache, module, rope.attention_factor())
    module.inv_freq = module._compute_inv_freq(module.inv_freq.device)
    module.adapters_rope = rope
    module._seq_len_cached = 0  # the cos/sin cache was built from the old frequencies


def _inv_freq(rope: Rope, dim: int, device=None) -> torch.Tensor:
    return rope.inv_freq(dim, device)


def _scaled_cos_sin_cache(module: nn.Module, factor: float, seqlen: int, position_id=None, device=None, dtype=None):
    """SAT's ``_update_cos_sin_cache`` (float32 positions, no xPos) with cos and sin times `factor` before the cast,
    as transformers multiplies them."""
    if seqlen <= module._seq_len_cached:
        return
    module._seq_len_cached = seqlen
    inv_freq = module.inv_freq if module.inv_freq.dtype == torch.float32 else module._compute_inv_freq(device=device)
    freqs = torch.einsum("i,j->ij", torch.arange(seqlen, device=device, dtype=torch.float32), inv_freq)
    module._cos_cached = (torch.cos(freqs) * factor).to(dtype)
    module._sin_cached = (torch.sin(freqs) * factor).to(dtype)
