"""BlinkDL's `ln_x` epsilon for FLA's RWKV-7 models.

BlinkDL's RWKV-7 (x070) normalises each head's output with `GroupNorm(H, C, eps=64e-5)` (`ln_x`), whatever
the head size. FLA's `RWKV7Attention` builds the same norm (`g_norm`) with `eps = head_dim * norm_eps`, which
is 64e-5 only for head size 64 with the default `norm_eps=1e-5`. For any other head size a BlinkDL checkpoint
loaded into FLA is off: on a head-16 model the logits move by about 6e-2.

`RWKV7Config` has no field for this epsilon alone (`norm_eps` also sets every LayerNorm's, which BlinkDL keeps at
1e-5), so adapters records it in an extra config field, `adapters_ln_x_eps`, which `save_pretrained` writes to
config.json and `from_pretrained` reads back as a plain attribute. `install_ln_x_eps_hook()` (run by
``import adapters.fla``) wraps `RWKV7Block.__init__`, the one place that holds both the config and the layer's
`RWKV7Attention`, so every construction honours the field: `from_blinkdl`, FLA's and transformers'
`from_pretrained` / `from_config`, and ``RWKV7ForCausalLM(config)``. A config without the field builds as FLA
wrote it. Without ``import adapters.fla`` FLA ignores the field: such a folder loads with FLA's eps, which is
BlinkDL's only for head size 64.
"""

from __future__ import annotations

import functools
import math

from torch import nn

from ..core import HookError

__all__ = [
    "BLINKDL_LN_X_EPS",
    "LN_X_EPS_FIELD",
    "install_ln_x_eps_hook",
    "ln_x_eps_of",
    "plain_fla_note",
    "set_blinkdl_gnorm_eps",
]

# BlinkDL RWKV-7 `ln_x` (FLA `attn.g_norm`) epsilon, hard-coded for every head size.
BLINKDL_LN_X_EPS = 64e-5
# The `RWKV7Config` (config.json) field that carries it; FLA itself does not know it.
LN_X_EPS_FIELD = "adapters_ln_x_eps"
# Marks our wrapper of `RWKV7Block.__init__`; its value is FLA's original.
_MARK = "_adapters_ln_x_eps_of"


def set_blinkdl_gnorm_eps(model: nn.Module, eps: float = BLINKDL_LN_X_EPS) -> int:
    """Set `g_norm.eps` of every FLA `RWKV7Attention` in `model` to BlinkDL's value.

    Works for both `fuse_norm` settings (FLA's `GroupNorm` and `nn.GroupNorm` both read `.eps` at call time).

    Args:
        model (`nn.Module`): an FLA model, e.g. `RWKV7ForCausalLM`, or any module containing RWKV-7 layers.
        eps (`float`, *optional*, defaults to `64e-5`): the epsilon to set.

    Returns:
        The number of attention layers changed (0 if `model` has no RWKV-7 attention).

    Example:
        >>> model = RWKV7ForCausalLM(RWKV7Config(hidden_size=64, head_dim=16, num_hidden_layers=2))
        >>> set_blinkdl_gnorm_eps(model)
        2
        >>> model.model.layers[0].attn.g_norm.eps
        0.00064
    """
    from fla.layers.rwkv7 import RWKV7Attention

    layers = [m for m in model.modules() if isinstance(m, RWKV7Attention)]
    for layer in layers:
        layer.g_norm.eps = eps
    return len(layers)


def ln_x_eps_of(config: object) -> float | None:
    """The `adapters_ln_x_eps` of an `RWKV7Config`, or None when it has none (or null).

    Raises:
        HookError: the field holds anything but a positive finite number.
    """
    value = getattr(config, LN_X_EPS_FIELD, None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise HookError(
            f"RWKV7Config field {LN_X_EPS_FIELD} is {value!r}; expected a positive finite float\n"
            f"  hint: it is BlinkDL's ln_x eps ({BLINKDL_LN_X_EPS:g}) that `adapters convert --to fla` writes; "
            "fix config.json, or delete the field to use FLA's head_dim * norm_eps"
        )
    return float(value)


def install_ln_x_eps_hook() -> None:
    """Make every FLA `RWKV7Block` built from a config with `adapters_ln_x_eps` use it as `attn.g_norm.eps`.

    Idempotent. The field is checked before FLA builds anything, so a bad value leaves no half-built block.
    """
    from fla.models.rwkv7.modeling_rwkv7 import RWKV7Block

    original = RWKV7Block.__init__
    if getattr(original, _MARK, None) is not None:
        return

    @functools.wraps(original)
    def __init__(self, config, layer_idx, *args, **kwargs):
        eps = ln_x_eps_of(config)
        original(self, config, layer_idx, *args, **kwargs)
        if eps is not None:
            set_blinkdl_gnorm_eps(self, eps)  # a hybrid layer (`config.attn`) has no RWKV-7 attention: 0 changed

    setattr(__init__, _MARK, original)
    RWKV7Block.__init__ = __init__


def plain_fla_note(config: object) -> str | None:
    """What a folder saved from `config` loses in FLA without ``import adapters.fla``, or None when nothing.

    FLA alone builds `g_norm` with ``head_dim * norm_eps``; that equals the recorded ``adapters_ln_x_eps`` only
    for head size 64 (with ``norm_eps=1e-5``).
    """
    eps = ln_x_eps_of(config)
    fla_eps = config.head_dim * config.norm_eps
    if eps is None or math.isclose(eps, fla_eps, rel_tol=1e-9):
        return None
    return (
        f"note: head size {config.head_dim}: plain FLA builds ln_x (attn.g_norm) with eps head_dim * norm_eps = "
        f"{fla_eps:g}, BlinkDL with {eps:g}; config.json records {eps:g} as {LN_X_EPS_FIELD}, which FLA honours "
        "only after `import adapters.fla` (which also lets RWKV-7 run on CPU)"
    )
