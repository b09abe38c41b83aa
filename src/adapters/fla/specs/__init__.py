"""FLA specs, one file per family."""

from . import rwkv7

SPECS = (rwkv7.SPEC,)
