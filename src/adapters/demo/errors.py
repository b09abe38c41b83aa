"""The demo's one error, for what only the demo needs: BlinkDL's `rwkv` package, the FLA part's reference.

SAT and FLA themselves are the hosts' business: ``import adapters.sat`` / ``import adapters.fla`` say how to
install them when they are missing.
"""

from __future__ import annotations

from ..core import AdapterError

__all__ = ["DemoError"]


class DemoError(AdapterError):
    """The mission demo cannot run here: its reference package is missing, or was imported in a mode it cannot use."""
