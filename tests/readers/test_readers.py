"""Readers: headers without data, exact reads and slices, one tensor read never reads the others, bad input."""

import ctypes
import json
import mmap
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from adapters.core import (
    CorruptFileError,
    SourceNotFoundError,
    UnsafePickleError,
    UnsupportedFormatError,
    open_source,
)
from adapters.core.readers import SafetensorsReader, ShardedReader, TorchReader
from adapters.demo import write_toy_checkpoint

KINDS = {"safetensors": SafetensorsReader, "sharded": ShardedReader, "bin": TorchReader, "sharded-bin": ShardedReader,
         "pth": TorchReader}  # fmt: skip


@pytest.mark.parametrize("fmt", KINDS)
def test_headers_reads_and_slices(tmp_path, toy_state, fmt):
    toy_state["model.layers.0.mix"] = toy_state["model.layers.0.mix"].to(torch.bfloat16)
    path = write_toy_checkpoint(tmp_path, toy_state, fmt)
    with open_source(path) as reader:
        assert isinstance(reader, KINDS[fmt])
        assert sorted(reader.keys()) == sorted(toy_state)
        for k, v in toy_state.items():
            info = reader.info(k)
            assert (info.shape, info.dtype) == (tuple(v.shape), v.dtype)
        assert reader.bytes_read == 0  # headers only so far
        key = "model.layers.1.self_attn.q_proj.weight"
        assert torch.equal(reader.read(key), toy_state[key])
        part = reader.read_slice(key, (slice(8, 16), slice(None)))
        assert torch.equal(part, toy_state[key][8:16])
        assert reader.bytes_read == toy_state[key].nbytes + part.nbytes and reader.tensors_read == 2


def test_folder_resolves_standard_names(tmp_path, toy_state):
    write_toy_checkpoint(tmp_path, toy_state, "sharded")
    with open_source(tmp_path) as reader:
        assert reader.path == str(tmp_path / "model.safetensors.index.json")


def test_torch_files_flatten_nested_dicts(tmp_path):
    torch.save(
        {"state_dict": {"w": torch.ones(2)}, "epoch": 3, "module": {"a": {"b": torch.zeros(1)}}}, tmp_path / "c.pt"
    )
    with open_source(tmp_path / "c.pt") as reader:
        assert reader.keys() == ["state_dict.w", "module.a.b"] or sorted(reader.keys()) == [
            "module.a.b",
            "state_dict.w",
        ]
        assert reader.extras == {"epoch": 3}


# --- laziness: prove with the page cache that reading one tensor does not touch the others' bytes ----------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)


def resident_pages(path: str) -> list[bool]:
    """Which pages of `path` are in the page cache (mincore on a fresh mapping, which itself touches nothing)."""
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = (ctypes.c_ubyte * pages)()
        assert _libc.mincore(addr, size, vec) == 0
        _libc.munmap(addr, size)
        return [bool(b & 1) for b in vec]
    finally:
        os.close(fd)


def evict(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_reading_one_tensor_reads_no_other(tmp_path, fmt):
    # Layout a | pad | b | pad | c with 4 MiB tensors and 48 MiB pads: the kernel's read-ahead (8 MiB windows
    # here, growing on sequential reads) may pull in part of a pad around b, whoever reads; a and c, far away,
    # must stay on disk when only b is read.
    mib = 1024 * 256  # float32 elements per MiB
    sizes = {"t0_a": 4, "t1_pad": 48, "t2_b": 4, "t3_pad": 48, "t4_c": 4}
    state = {n: torch.full((m * mib,), float(i + 1)) for i, (n, m) in enumerate(sizes.items())}
    path = str(tmp_path / ("x.safetensors" if fmt == "safetensors" else "x.pth"))
    save_file(state, path) if fmt == "safetensors" else torch.save(state, path)
    with open(path, "rb") as f:
        data = f.read()
    spans = {}
    for n, t in state.items():  # locate each tensor's bytes by its distinct fill value
        start = data.find(t[:1024].numpy().tobytes())
        spans[n] = (start // mmap.PAGESIZE, (start + t.nbytes) // mmap.PAGESIZE)
    assert [n for n, _ in sorted(spans.items(), key=lambda x: x[1])] == list(sizes)
    del data
    with open_source(path) as reader:
        evict(path)
        if sum(resident_pages(path)) > 16:
            pytest.skip("this filesystem does not drop cached pages on request")
        assert torch.equal(reader.read("t2_b"), state["t2_b"])
        pages = resident_pages(path)
    frac = {n: sum(pages[s:e]) / (e - s) for n, (s, e) in spans.items()}
    assert frac["t2_b"] > 0.99, frac
    assert frac["t0_a"] == 0 and frac["t4_c"] == 0, frac
    assert frac["t1_pad"] < 0.5 and frac["t3_pad"] < 0.5, frac


# --- bad input ------------------------------------------------------------------------------------------------------


def test_truncated_safetensors(tmp_path):
    save_file({"a": torch.ones(100), "b": torch.zeros(50)}, tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[:-40])
    with pytest.raises(CorruptFileError) as e:
        open_source(tmp_path / "m.safetensors")
    assert str(e.value) == (
        f"{tmp_path}/m.safetensors is not a valid safetensors file: Error while deserializing header: "
        "incomplete metadata, file not fully covered\n"
        "  hint: the file is truncated or corrupt; download or write it again"
    )


def test_corrupt_safetensors_header(tmp_path):
    save_file({"a": torch.ones(4)}, tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data.replace(b'"dtype"', b'#dtype"', 1))
    with pytest.raises(CorruptFileError) as e:
        open_source(tmp_path / "m.safetensors")
    assert str(e.value).startswith(
        f"{tmp_path}/m.safetensors is not a valid safetensors file: Error while deserializing header: "
    )
    assert str(e.value).endswith("\n  hint: the file is truncated or corrupt; download or write it again")


def test_empty_file(tmp_path):
    (tmp_path / "m.bin").write_bytes(b"")
    with pytest.raises(CorruptFileError) as e:
        open_source(tmp_path / "m.bin")
    assert (
        str(e.value)
        == f"{tmp_path}/m.bin is empty (0 bytes)\n  hint: the download or save was interrupted; do it again"
    )


def test_index_naming_a_missing_shard(tmp_path, toy_state):
    index = write_toy_checkpoint(tmp_path, toy_state, "sharded")
    (tmp_path / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(SourceNotFoundError) as e:
        open_source(index)
    lines = str(e.value).splitlines()
    assert lines[0] == f"{index} names 1 shard file(s) that do not exist: model-00002-of-00003.safetensors"
    assert lines[1].startswith("  keys in them: ") and "model.layers.{0..2}.self_attn.k_proj.weight" in lines[1]
    assert lines[2] == "  hint: the download is incomplete; fetch the missing shards (the index lists every file)"


def test_index_disagreeing_with_its_shard(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "s1.safetensors"}}))
    save_file({"a": torch.ones(3), "z": torch.ones(1)}, tmp_path / "s1.safetensors")
    with pytest.raises(CorruptFileError) as e:
        open_source(tmp_path)
    assert str(e.value) == (
        f"{tmp_path}/model.safetensors.index.json does not match shard s1.safetensors\n"
        "  present but not listed: z\n"
        "  hint: the index and the shards come from different saves; download them together again"
    )


def test_index_that_is_not_json(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(CorruptFileError) as e:
        open_source(tmp_path)
    assert str(e.value) == (
        f"{tmp_path}/model.safetensors.index.json is not valid JSON: Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1)\n  hint: download the index again"
    )


def test_plain_pickle_is_refused_by_the_weights_only_unpickler(tmp_path):
    """Not a torch file: a plain pickle (protocol 5) goes to the legacy torch reader, whose weights-only unpickler
    refuses it. Legacy torch files themselves load: tests/readers/test_legacy_bin.py."""
    with open(tmp_path / "old.pt", "wb") as f:
        pickle.dump({"w": [1, 2]}, f)
    with pytest.raises(UnsafePickleError) as e:
        open_source(tmp_path / "old.pt")
    assert str(e.value) == (
        f"refusing to unpickle an object outside torch's weights-only allowlist in {tmp_path}/old.pt\n"
        "  hint: the file references code, not only tensors and containers; load it with "
        "torch.load(weights_only=False) only if you trust its source"
    )


class _Hostile:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_needing_code_is_refused_and_nothing_runs(tmp_path):
    hostile = _Hostile()
    hostile.marker = tmp_path / "PWNED"
    torch.save({"w": torch.ones(2), "x": hostile}, tmp_path / "evil.pth")
    with pytest.raises(UnsafePickleError) as e:
        open_source(tmp_path / "evil.pth")
    assert str(e.value) == (
        f"refusing to unpickle global '{os.system.__module__}.system' in {tmp_path}/evil.pth\n"
        "  hint: the file references code, not only tensors and containers; load it with "
        "torch.load(weights_only=False) only if you trust its source"
    )
    assert not hostile.marker.exists()


def test_truncated_torch_zip(tmp_path):
    torch.save({"w": torch.ones(1000)}, tmp_path / "m.pth")
    data = (tmp_path / "m.pth").read_bytes()
    (tmp_path / "m.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError) as e:
        open_source(tmp_path / "m.pth")
    assert str(e.value) == (
        f"{tmp_path}/m.pth is a torch zip file whose archive is incomplete (no central directory)\n"
        "  hint: the file is truncated; download or write it again"
    )


def test_unknown_bytes(tmp_path):
    (tmp_path / "m.bin").write_bytes(b"hello world, not a checkpoint")
    with pytest.raises(UnsupportedFormatError) as e:
        open_source(tmp_path / "m.bin")
    assert str(e.value) == (
        f"{tmp_path}/m.bin is neither a safetensors file nor a zip-format torch file (starts with b'hello wo')\n"
        "  hint: adapters reads .safetensors, sharded *.index.json, and torch.save files (.pth/.pt/.bin)"
    )


def test_missing_path_and_folders(tmp_path):
    with pytest.raises(SourceNotFoundError) as e:
        open_source(tmp_path / "nothere")
    assert str(e.value) == f"{tmp_path}/nothere does not exist"
    with pytest.raises(SourceNotFoundError, match="holds no checkpoint"):
        open_source(tmp_path)
    save_file({"a": torch.ones(1)}, tmp_path / "x.safetensors")
    save_file({"a": torch.ones(1)}, tmp_path / "y.safetensors")
    with pytest.raises(SourceNotFoundError) as e:
        open_source(tmp_path)
    assert str(e.value) == (
        f"{tmp_path} holds several checkpoints: x.safetensors, y.safetensors\n  hint: pass the path of the one to load"
    )
