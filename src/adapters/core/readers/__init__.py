"""Checkpoint readers: safetensors, sharded indexes, zip-format torch files (lazy), legacy torch pickles (read whole),
live models, renamed views."""

from .base import Reader
from .legacy_torch_file import LegacyTorchReader
from .module import ModuleReader
from .open import find_checkpoint, open_file, open_source
from .renamed import RenamedReader
from .safetensors_file import SafetensorsReader
from .sharded import ShardedReader
from .torch_file import TorchReader

__all__ = [
    "Reader",
    "LegacyTorchReader",
    "ModuleReader",
    "RenamedReader",
    "SafetensorsReader",
    "ShardedReader",
    "TorchReader",
    "find_checkpoint",
    "open_file",
    "open_source",
]
