"""BlinkDL's `ln_x` epsilon for FLA's RWKV-7 models.

BlinkDL's RWKV-7 (x070) normalises each head's output with `GroupNorm(H, C, eps=64e-5)` (`ln_x`), whatever
the head size. FLA's `RWKV7Attention` builds the same norm (`g_norm`) with `eps = head_dim * norm_eps`, which
is 64e-5 only for head size 64 with the default `norm_eps=1e-5`. For any other head size a BlinkDL checkpoint
loaded into FLA is off: on a head-16 model the logits move by about 6e-2.

`RWKV7Config` has no field for this epsilon, so the fix is applied to the built model and is not saved: a
model written with `save_pretrained` and loaded again gets FLA's value back and needs the call again.
"""

from __future__ import annotations

from torch import nn

__all__ = ["BLINKDL_LN_X_EPS", "set_blinkdl_gnorm_eps"]

# BlinkDL RWKV-7 `ln_x` (FLA `attn.g_norm`) epsilon, hard-coded for every head size.
BLINKDL_LN_X_EPS = 64e-5


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
