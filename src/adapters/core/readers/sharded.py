"""Sharded checkpoints: an ``*.index.json`` whose ``weight_map`` names the shard file of every key."""

from __future__ import annotations

import json
import os

import torch

from ..errors import CorruptFileError, ReadError, SourceNotFoundError
from ..keys import summarize_keys
from ..table import TensorInfo
from .base import Reader

__all__ = ["ShardedReader"]


def _no_repeats(pairs: list[tuple[str, object]], twice: list[tuple[str, object, object]]) -> dict:
    """A JSON object as a dict, recording keys it repeats (json.load would silently keep the last value)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            twice.append((key, out[key], value))
        out[key] = value
    return out


class ShardedReader(Reader):
    """Opens every shard's header (not its data) and checks the index against them.

    Each shard is opened once and read only for the keys asked for, so a merge whose parts sit in different shards
    reads those parts alone, never a whole shard.
    """

    def __init__(self, index_path: str, open_file) -> None:
        self.path = str(index_path)
        self.bytes_read = 0
        self.tensors_read = 0
        weight_map = self._weight_map()
        folder = os.path.dirname(self.path)
        shards = list(dict.fromkeys(weight_map.values()))
        missing = [s for s in shards if not os.path.isfile(os.path.join(folder, s))]
        if missing:
            keys = [k for k, s in weight_map.items() if s in missing]
            raise SourceNotFoundError(
                f"{self.path} names {len(missing)} shard file(s) that do not exist: {', '.join(missing)}\n"
                f"  keys in them: {summarize_keys(keys)}\n"
                "  hint: the download is incomplete; fetch the missing shards (the index lists every file)"
            )
        self._shards: dict[str, Reader] = {s: open_file(os.path.join(folder, s)) for s in shards}
        self._owner: dict[str, Reader] = {}
        for name, shard in self._shards.items():
            listed = {k for k, s in weight_map.items() if s == name}
            held = set(shard.keys())
            if listed != held:
                raise CorruptFileError(
                    f"{self.path} does not match shard {name}\n"
                    + (f"  listed but absent: {summarize_keys(listed - held)}\n" if listed - held else "")
                    + (f"  present but not listed: {summarize_keys(held - listed)}\n" if held - listed else "")
                    + "  hint: the index and the shards come from different saves; download them together again"
                )
            for key in shard.keys():
                self._owner[key] = shard

    def _weight_map(self) -> dict[str, str]:
        twice: list[tuple[str, object, object]] = []
        try:
            with open(self.path, encoding="utf-8") as f:
                index = json.load(f, object_pairs_hook=lambda pairs: _no_repeats(pairs, twice))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CorruptFileError(f"{self.path} is not valid JSON: {e}\n  hint: download the index again") from e
        except FileNotFoundError as e:
            raise SourceNotFoundError(f"{self.path} does not exist") from e
        except OSError as e:
            raise ReadError(
                f"{self.path} cannot be read: {e.strerror or e}\n  hint: check the file's permissions"
            ) from e
        if twice:
            key, first, second = twice[0]
            raise CorruptFileError(
                f"{self.path} lists {key!r} more than once ({first!r} and {second!r})\n"
                "  hint: the index is damaged; download it again"
            )
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v and os.path.basename(v) == v for k, v in weight_map.items()
        ):
            raise CorruptFileError(
                f'{self.path} has no valid "weight_map" (a mapping of tensor key to shard file name in the same folder)\n'
                "  hint: download the index again"
            )
        return weight_map

    def keys(self) -> list[str]:
        return [k for shard in self._shards.values() for k in shard.keys()]

    def info(self, key: str) -> TensorInfo:
        return self._owner[key].info(key)

    def _read(self, key: str) -> torch.Tensor:
        return self._owner[key]._read(key)

    def _read_slice(self, key: str, index: tuple[slice, ...]) -> torch.Tensor:
        return self._owner[key]._read_slice(key, index)

    def view(self, key: str) -> torch.Tensor | None:
        self._check(key)
        shard = self._owner[key]
        before_bytes, before_reads = shard.bytes_read, shard.tensors_read
        tensor = shard.view(key)
        if tensor is not None:
            self.bytes_read += shard.bytes_read - before_bytes
            self.tensors_read += shard.tensors_read - before_reads
        return tensor

    def release(self, key: str, view: torch.Tensor) -> None:
        self._owner[key].release(key, view)

    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()
