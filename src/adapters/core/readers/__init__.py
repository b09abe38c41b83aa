"""Lazy checkpoint readers: safetensors, sharded indexes, zip-format torch files, live models, renamed views."""

from .base import Reader
from .module import ModuleReader
from .open import find_checkpoint, open_file, open_source
from .renamed import RenamedReader
from .safetensors_file import SafetensorsReader
from .sharded import ShardedReader
from .torch_file import TorchReader

__all__ = [
    "Reader",
    "ModuleReader",
    "RenamedReader",
    "SafetensorsReader",
    "ShardedReader",
    "TorchReader",
    "find_checkpoint",
    "open_file",
    "open_source",
]
