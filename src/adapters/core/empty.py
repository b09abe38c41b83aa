"""`empty_weights()`: build a target model with no memory and no initialisation, ready for `load`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch.nn.init
from accelerate import init_empty_weights

__all__ = ["empty_weights", "no_init"]

# Every public initialiser of torch.nn.init (modules look them up there at call time: `init.normal_(...)`).
_INITS = tuple(n for n in dir(torch.nn.init) if not n.startswith("_") and n not in ("calculate_gain",)
               and callable(getattr(torch.nn.init, n)) and n.islower())  # fmt: skip


@contextmanager
def no_init() -> Iterator[None]:
    """`torch.nn.init` functions do nothing inside the block (weights are about to be overwritten by a load).

    transformers has the same switch (`no_init_weights`), but importing it pulls in `transformers.modeling_utils`:
    4.3 s on a 2-core machine, more than loading a small checkpoint. Not thread-safe, like theirs.
    """
    saved = {n: getattr(torch.nn.init, n) for n in _INITS}
    for name in saved:
        setattr(torch.nn.init, name, _skip)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def _skip(tensor=None, *args, **kwargs):
    return tensor


@contextmanager
def empty_weights() -> Iterator[None]:
    """Parameters go to `meta` (accelerate's `init_empty_weights`) and are not initialised (`no_init`).

    Initialising a meta tensor computes nothing, yet the first `normal_` on `meta` makes torch import its
    reference-op machinery: 2.8 s and about 250 MB of RSS on a 2-core machine, for weights the load overwrites.

    Example:
        >>> with empty_weights():
        ...     model = MyModel(config)
    """
    with init_empty_weights(), no_init():
        yield
