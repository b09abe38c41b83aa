"""adapters: load foreign checkpoints into SwissArmyTransformer and flash-linear-attention models at runtime.

The engine (`adapters.core`) is re-exported here. Host integrations are imported explicitly and install their
load hooks on import: ``import adapters.sat``, ``import adapters.fla``.
"""

from .core import *  # noqa: F403
from .core import __all__ as __all__

__version__ = "0.1.0"
