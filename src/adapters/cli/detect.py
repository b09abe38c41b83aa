"""What a path is: an HF checkpoint folder (SAT families), an FLA RWKV-7 folder, a BlinkDL ``.pth``, or a plain file.

Decided from names and ``config.json`` alone; whether a ``.pth`` really is BlinkDL RWKV-7 (and which generation)
is told by its keys, later (`adapters.fla.variants`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..core import SourceNotFoundError

__all__ = ["Source", "detect"]

FLA_MODEL_TYPES = ("rwkv7",)


@dataclass(frozen=True)
class Source:
    """A path and its kind: ``"hf"``, ``"fla"``, ``"blinkdl"`` or ``"file"``; `weights` is what readers open."""

    path: Path
    kind: str
    weights: Path
    model_type: str | None = None


def detect(path: str | os.PathLike) -> Source:
    path = Path(path)
    if not path.exists():
        raise SourceNotFoundError(
            f"{path} does not exist\n  hint: pass a checkpoint file, an HF/FLA folder, or a BlinkDL .pth"
        )
    if path.is_dir():
        config = path / "config.json"
        if config.is_file():
            try:
                model_type = json.loads(config.read_text()).get("model_type")
            except (OSError, ValueError, AttributeError):
                model_type = None
            return Source(path, "fla" if model_type in FLA_MODEL_TYPES else "hf", path, model_type)
        found = sorted(path.glob("*.pth"))
        if len(found) == 1:
            return Source(path, "blinkdl", found[0])
        return Source(path, "file", path)
    return Source(path, "blinkdl" if path.suffix == ".pth" else "file", path)
