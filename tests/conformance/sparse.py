"""Full-size checkpoints whose tensor data are holes: real headers, real names, shapes, dtypes and shards, no bytes.

`write_sparse_hf` writes an HF folder the way the hub holds one::

    OUT/config.json                               the published config, byte for byte
    OUT/model.safetensors.index.json              {"metadata": {"total_size": N}, "weight_map": {key: shard}}
    OUT/model-00001-of-0000K.safetensors ...      8-byte header length, JSON header, then data (a hole)

Each shard's data region is made with `os.truncate` past the header, so a 16 GB checkpoint takes a few KB of disk
and no memory; reading it would return zeros. A reader that reads nothing never notices, which is what the
conformance tests check (with the readers' byte counters).

`write_blinkdl_zeros` writes a BlinkDL RWKV-7 ``.pth`` for real (torch's zip format has per-record CRCs, so it cannot
be left sparse without rewriting torch's writer): keep it to the 0.1B size (~380 MB bf16).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch

__all__ = ["SHARD_BYTES", "Tensor", "write_blinkdl_zeros", "write_sparse_hf", "write_sparse_safetensors"]

Tensor = tuple[str, tuple[int, ...], torch.dtype]  # (name, shape, dtype)

SHARD_BYTES = 5 * 1024**3  # transformers' save_pretrained default before v4.47 ("5GB"), what most hub repos hold
INDEX_FILE = "model.safetensors.index.json"

_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
              torch.int32: "I32", torch.bool: "BOOL", torch.uint8: "U8"}  # fmt: skip


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count * dtype.itemsize


def write_sparse_safetensors(path: Path, tensors: Iterable[Tensor]) -> int:
    """One safetensors file with a real header and a hole for its data; returns the data size in bytes."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, dtype in tensors:
        size = _nbytes(shape, dtype)
        header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
    os.truncate(path, 8 + len(text) + offset)  # the data: a hole, no blocks, reads as zeros
    return offset


def _shards(tensors: list[Tensor], shard_bytes: int) -> list[list[Tensor]]:
    """Greedy in file order, as transformers shards: a shard closes when the next tensor would overflow it."""
    shards: list[list[Tensor]] = [[]]
    size = 0
    for tensor in tensors:
        nbytes = _nbytes(tensor[1], tensor[2])
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += nbytes
    return shards


def write_sparse_hf(out: Path, config_file: Path, tensors: list[Tensor], shard_bytes: int = SHARD_BYTES) -> Path:
    """An HF folder: `config_file` copied as is, `tensors` as sparse shards plus the index; returns `out`."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config_file, out / "config.json")
    shards = _shards(tensors, shard_bytes)
    weight_map: dict[str, str] = {}
    total = 0
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        total += write_sparse_safetensors(out / name, shard)
        weight_map.update(dict.fromkeys((t[0] for t in shard), name))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2))
    return out


def write_blinkdl_zeros(path: Path, tensors: list[Tensor]) -> Path:
    """A BlinkDL ``.pth`` (torch zip) of zero tensors with the given names, shapes and dtypes, written for real."""
    torch.save({name: torch.zeros(shape, dtype=dtype) for name, shape, dtype in tensors}, path)
    return path
