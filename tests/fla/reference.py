"""BlinkDL's `rwkv` pip package (0.8.32) as the reference for RWKV-7 checkpoints, on CPU in float32.

Constraints of that package, which this module handles:

* RWKV-7 exists only if `RWKV_V7_ON=1` is set before `rwkv.model` is first imported (the class `RWKV_x070`
  is defined inside an `if` on that variable). We set it here, with `RWKV_JIT_ON=1` and `RWKV_CUDA_ON=0`.
  Importing `rwkv.model` also disables TorchScript autocast process-wide; harmless in tests.
* The model is given the checkpoint path without `.pth` (it appends the suffix) and a strategy that must be
  `"cpu fp32"` / `"cpu bf16"` / `"cpu fp16"` (no layer splitting for v7).
* It reads H and N from `blocks.0.att.r_k`, requires `blocks.0.ln0.*` (folded into `emb`), overwrites
  `blocks.0.att.v0/v1/v2` with empty tensors (so files with or without them both load) and hard-codes the
  `ln_x` GroupNorm eps to 64e-5 for every head size.
* `forward(tokens, state, full_output=True)` takes the sequence path for more than one token (logits `[T, V]`)
  and the RNN path for one (logits `[V]`). It mutates and returns `state`: a list of 3 tensors per layer i,
  `state[3i]` attention token-shift `[C]`, `state[3i+1]` WKV state `[H, N_v, N_k]` float32 (FLA's
  `recurrent_state` is its transpose, `[B, H, K, V]`), `state[3i+2]` FFN token-shift `[C]`.
  `adapters.fla.state` converts it to and from an FLA `Cache`.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import torch

__all__ = ["load_rwkv", "rwkv_logits"]


def _rwkv_x070():
    if "rwkv.model" in sys.modules and not hasattr(sys.modules["rwkv.model"], "RWKV_x070"):
        raise RuntimeError("rwkv.model was imported without RWKV_V7_ON=1; RWKV-7 is unavailable in this process")
    os.environ["RWKV_V7_ON"] = "1"
    os.environ.setdefault("RWKV_JIT_ON", "1")
    os.environ["RWKV_CUDA_ON"] = "0"
    import rwkv.model

    return rwkv.model.RWKV_x070


@functools.lru_cache(maxsize=8)
def load_rwkv(path: str | Path, strategy: str = "cpu fp32"):
    """Load a BlinkDL `.pth` with the `rwkv` package (cached per path and strategy)."""
    path = Path(path)
    if path.suffix != ".pth":
        raise ValueError(f"expected a .pth checkpoint, got {path}")
    return _rwkv_x070()(str(path.with_suffix("")), strategy)


def rwkv_logits(
    path: str | Path,
    tokens: list[int],
    *,
    token_by_token: bool = False,
    state: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run `tokens` through the `rwkv` package on CPU in float32.

    Args:
        path: the `.pth` file.
        tokens: token ids, T >= 1.
        token_by_token: feed one token at a time (the RNN path) instead of the whole sequence at once.
        state: a state to start from (it is copied, not mutated); `None` starts from zeros.

    Returns:
        `(logits, state)`: logits `[T, V]` float32, and the state after the last token (see module docstring).
    """
    model = load_rwkv(str(path))
    state = [s.clone() for s in state] if state is not None else None
    with torch.no_grad():
        if token_by_token:
            rows = []
            for token in tokens:
                out, state = model.forward([token], state)
                rows.append(out)
            logits = torch.stack(rows)
        else:
            logits, state = model.forward(list(tokens), state, full_output=True)
            logits = logits.reshape(len(tokens), -1)
    return logits.float(), [s.clone() for s in state]
