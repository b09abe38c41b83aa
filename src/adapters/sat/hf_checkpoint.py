"""HF checkpoints on disk or on the hub: find the folder, read its ``config.json`` as plain data.

An HF checkpoint here is a folder with a ``config.json`` that names a ``model_type`` and weights transformers
would load (``model.safetensors``, a sharded ``*.safetensors.index.json``, or ``pytorch_model*.bin``). A hub id
(``"org/name"``) is fetched with huggingface_hub, config and weight files only; ``HF_HUB_OFFLINE=1`` or
``local_files_only=True`` resolves it from the local cache without any network access.

The config is read as JSON, not through transformers' `AutoConfig`: the THUDM families (ChatGLM, CogVLM) ship
remote code that `AutoConfig` would want to run, and every field we need is plain data.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import HookError, SourceNotFoundError

__all__ = ["HFCheckpoint", "is_hf_checkpoint", "looks_like_hub_id", "resolve_hf"]

CONFIG = "config.json"
SAT_CONFIG = "model_config.json"  # what marks a SAT checkpoint folder
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHTS = ("*.safetensors", "*.safetensors.index.json")
_BIN_WEIGHTS = ("pytorch_model*.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class HFCheckpoint:
    """A resolved HF checkpoint: its local folder and its config as a dict."""

    path: Path
    config: dict[str, Any] = field(repr=False)
    name: str = ""  # what the user passed (hub id or path), for messages

    @property
    def model_type(self) -> str | None:
        return self.config.get("model_type")

    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)

    def require(self, key: str) -> Any:
        """The config field `key`; a `HookError` naming the file when it is absent."""
        if key not in self.config or self.config[key] is None:
            raise HookError(
                f"{self.path / CONFIG}: field {key!r} is missing (model_type {self.model_type!r})\n"
                "  hint: the config does not look like one transformers saved for this architecture"
            )
        return self.config[key]

    def rope_theta(self, default: float = 10000.0) -> float:
        """RoPE base: transformers v5 writes ``rope_parameters.rope_theta``, older files a top-level ``rope_theta``."""
        params = self.config.get("rope_parameters") or {}
        return float(params.get("rope_theta", self.config.get("rope_theta", default)))

    def rope_type(self) -> str:
        """The RoPE type transformers 5 computes: a legacy ``rope_scaling`` replaces ``rope_parameters`` whole."""
        params = self.config.get("rope_scaling") or self.config.get("rope_parameters") or {}
        return str(params.get("rope_type", params.get("type", "default")))


def looks_like_hub_id(name: object) -> bool:
    """``org/name`` with no local file or folder of that name."""
    return isinstance(name, str) and bool(_HUB_ID.match(name)) and not os.path.exists(name)


def is_hf_checkpoint(name_or_path: object) -> bool:
    """True for a local HF checkpoint folder (``config.json``, no SAT ``model_config.json``) or a hub id."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        return False
    path = Path(name_or_path)
    if path.is_dir():
        return (path / CONFIG).is_file() and not (path / SAT_CONFIG).is_file()
    return looks_like_hub_id(str(name_or_path))


def resolve_hf(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
) -> HFCheckpoint:
    """The local folder and config of an HF checkpoint given as a folder or a hub id.

    Raises:
        SourceNotFoundError: no such folder, or the hub id is neither cached nor downloadable.
        HookError: the folder is not an HF checkpoint (no ``config.json``, or a SAT checkpoint).
    """
    path = Path(name_or_path)
    if not path.exists() and looks_like_hub_id(str(name_or_path)):
        path = _download(str(name_or_path), revision=revision, cache_dir=cache_dir,
                         local_files_only=local_files_only, token=token)  # fmt: skip
    elif not path.exists():
        raise SourceNotFoundError(
            f"{name_or_path}: no such file or folder\n"
            '  hint: pass an HF checkpoint folder (with config.json) or a hub id such as "org/name"'
        )
    if not path.is_dir():
        raise HookError(
            f"{path} is a file; an HF checkpoint is a folder with config.json and weights\n"
            "  hint: pass the folder that holds the file"
        )
    if (path / SAT_CONFIG).is_file():
        raise HookError(
            f"{path} is a SAT checkpoint ({SAT_CONFIG}), not an HF one\n"
            "  hint: load it with SAT's from_pretrained; from_hf takes HF checkpoints"
        )
    config_file = path / CONFIG
    if not config_file.is_file():
        raise HookError(
            f"{path} has no {CONFIG}\n  hint: an HF checkpoint folder holds config.json next to its weights"
        )
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HookError(f"{config_file} is not readable JSON: {e}\n  hint: the download may be incomplete") from e
    if not isinstance(config, dict):
        raise HookError(f"{config_file} holds {type(config).__name__}, not a JSON object")
    return HFCheckpoint(path=path, config=config, name=str(name_or_path))


def _download(repo_id: str, **kwargs: Any) -> Path:
    """Fetch config and weights of `repo_id` (safetensors, else .bin) into the HF cache; nothing else."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = kwargs.pop("local_files_only", None)
    try:
        folder = Path(
            snapshot_download(repo_id, allow_patterns=[CONFIG, *_WEIGHTS], local_files_only=bool(offline), **kwargs)
        )
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, allow_patterns=[CONFIG, *_BIN_WEIGHTS],
                                            local_files_only=bool(offline), **kwargs))  # fmt: skip
    except LocalEntryNotFoundError as e:
        raise SourceNotFoundError(
            f"{repo_id}: not in the local HF cache and the hub cannot be reached (offline)\n"
            "  hint: download it once with network access (huggingface-cli download), or pass a local folder"
        ) from e
    except RepositoryNotFoundError as e:
        raise SourceNotFoundError(
            f"{repo_id}: no such repository on the hub\n  hint: check the id and your token"
        ) from e
    except HfHubHTTPError as e:
        raise SourceNotFoundError(
            f"{repo_id}: the hub refused the download: {e}\n  hint: check the id and your token"
        ) from e
    return folder
