"""The sparse writer: headers safetensors reads back exactly, shards and index like transformers', and no disk."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open

from sparse import write_sparse_hf

TENSORS = [("a.weight", (1024, 512), torch.bfloat16), ("b.weight", (512,), torch.float32),
           ("c.weight", (256, 1024), torch.float16), ("d.ids", (7,), torch.int64)]  # fmt: skip


def test_headers_read_back_and_data_are_holes(tmp_path):
    config = tmp_path / "published.json"
    config.write_text('{"model_type": "llama"}')
    out = write_sparse_hf(tmp_path / "ckpt", config, TENSORS, shard_bytes=1024 * 1024)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert index["metadata"]["total_size"] == 1024 * 512 * 2 + 512 * 4 + 256 * 1024 * 2 + 7 * 8
    assert (out / "config.json").read_bytes() == config.read_bytes()
    found = {}
    for shard in shards:
        with safe_open(str(out / shard), "pt") as f:
            for key in f.keys():
                part = f.get_slice(key)
                found[key] = (tuple(part.get_shape()), part.get_dtype(), index["weight_map"][key] == shard)
    assert found == {
        "a.weight": ((1024, 512), "BF16", True), "b.weight": ((512,), "F32", True),
        "c.weight": ((256, 1024), "F16", True), "d.ids": ((7,), "I64", True),
    }  # fmt: skip
    blocks = sum((out / shard).stat().st_blocks for shard in shards) * 512
    assert blocks < 64 * 1024, f"{blocks} bytes on disk for {index['metadata']['total_size']} bytes of tensors"


def test_a_hole_reads_as_zeros(tmp_path):
    config = tmp_path / "published.json"
    config.write_text("{}")
    out = write_sparse_hf(tmp_path / "ckpt", config, TENSORS[:1])
    with safe_open(str(out / "model-00001-of-00001.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor("a.weight"), torch.zeros(1024, 512, dtype=torch.bfloat16))
