"""Seed checkpoints, hypothesis strategies that damage them, and the oracle a damaged file must satisfy.

The oracle: opening the file and reading every tensor either raises an `AdapterError`, or succeeds and returns
exactly what an independent decoder finds in the file (safetensors: the header's offsets decoded by hand; torch
zip files: a plain, non-mmap ``torch.load(weights_only=True)``). Anything else escaping is a bug. Used by
`test_fuzz.py` (bounded, in CI) and ``benchmarks/fuzz_readers.py`` (long runs).
"""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
from pathlib import Path

import torch
from hypothesis import strategies as st
from safetensors.torch import save

from adapters.core import AdapterError, open_source

__all__ = ["safetensors_seed", "pth_seed", "safetensors_mutants", "pth_mutants", "check"]

_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}  # fmt: skip
_NAMES = [*_ST_DTYPES, "F33", "F4", "F8_E8M0", "C64", "", "f32"]


def safetensors_seed() -> bytes:
    return save({"a": torch.arange(12.0).reshape(3, 4), "b": torch.ones(5, dtype=torch.bfloat16),
                 "c": torch.tensor([7, -1]), "d": torch.zeros(0)}, metadata={"format": "pt"})  # fmt: skip


def pth_seed() -> bytes:
    base = torch.arange(10.0)
    buf = io.BytesIO()
    torch.save({"w": base, "view": base[2:6], "nested": {"h": torch.ones(2, 3, dtype=torch.float16)}, "step": 3}, buf)
    return buf.getvalue()


# --- mutations -----------------------------------------------------------------------------------------------------


def _flips(data: bytes, flips: list[tuple[int, int]], start: int = 0) -> bytes:
    out = bytearray(data)
    span = max(len(out) - start, 1)
    for pos, bit in flips:
        if out:
            out[start + pos % span] ^= 1 << bit
    return bytes(out)


_flip_lists = st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 7)), min_size=1, max_size=4)


def _header(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _with_header(header: dict | str, rest: bytes, length_delta: int = 0) -> bytes:
    raw = (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", max(len(raw) + length_delta, 0)) + raw + rest


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)


@st.composite
def _header_mutation(draw, seed: bytes) -> bytes:
    header, rest = _header(seed)
    key = draw(st.sampled_from(["a", "b", "c", "d"]))
    entry = header[key]
    what = draw(st.sampled_from(["dtype", "shape", "offsets", "drop_field", "extra", "any", "metadata", "twice",
                                 "length"]))  # fmt: skip
    if what == "dtype":
        entry["dtype"] = draw(st.sampled_from(_NAMES))
    elif what == "shape":
        entry["shape"] = draw(st.lists(st.integers(-2, 2**40), max_size=4))
    elif what == "offsets":
        entry["data_offsets"] = draw(st.lists(st.integers(-1, 200), min_size=2, max_size=2))
    elif what == "drop_field":
        entry.pop(draw(st.sampled_from(["dtype", "shape", "data_offsets"])))
    elif what == "extra":
        header[draw(st.text(max_size=5))] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    elif what == "any":
        header[key] = draw(_json_values)
    elif what == "metadata":
        header["__metadata__"] = draw(_json_values)
    elif what == "twice":  # the same key twice in the JSON text
        text = json.dumps(header)
        return _with_header(text[:-1] + f", {json.dumps(key)}: {json.dumps(entry)}}}", rest)
    else:
        return _with_header(header, rest, draw(st.integers(-8, 8)))
    return _with_header(header, rest)


def safetensors_mutants(seed: bytes) -> st.SearchStrategy[bytes]:
    """Byte flips anywhere, flips in the header, truncations, and JSON-level header edits."""
    n = 8 + struct.unpack("<Q", seed[:8])[0]
    return st.one_of(
        _flip_lists.map(lambda f: _flips(seed, f)),
        _flip_lists.map(lambda f: _flips(seed[:n], f) + seed[n:]),
        st.integers(0, len(seed) - 1).map(lambda k: seed[:k]),
        _header_mutation(seed),
    )


def _repack(seed: bytes, change) -> bytes:
    """`seed` (a torch zip) with every record's bytes passed through ``change(name, data)``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(seed)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            zout.writestr(name, change(name, zin.read(name)))
    return out.getvalue()


def pth_mutants(seed: bytes) -> st.SearchStrategy[bytes]:
    """Byte flips anywhere, truncations, and (inside an intact zip) damaged pickles and storage records."""
    pickled = st.one_of(
        _flip_lists.map(lambda f: lambda data: _flips(data, f)),
        st.integers(0, 200).map(lambda k: lambda data: data[:k]),
    )
    return st.one_of(
        _flip_lists.map(lambda f: _flips(seed, f)),
        st.integers(0, len(seed) - 1).map(lambda k: seed[:k]),
        pickled.map(lambda hurt: _repack(seed, lambda n, d: hurt(d) if n.endswith("data.pkl") else d)),
        pickled.map(lambda hurt: _repack(seed, lambda n, d: hurt(d) if "/data/" in n else d)),
    )


# --- the oracle ----------------------------------------------------------------------------------------------------


def _by_hand(data: bytes) -> dict[str, torch.Tensor]:
    header, rest = _header(data)
    out = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        raw = bytearray(rest[start:end])
        dtype = _ST_DTYPES[entry["dtype"]]
        out[key] = torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(entry["shape"]) if raw else \
            torch.zeros(entry["shape"], dtype=dtype)  # fmt: skip
    return out


def _reference(data: bytes, seed: bytes | None) -> dict[str, torch.Tensor]:
    """What the file holds, by an independent decoder. A torch zip that plain ``torch.load`` refuses (a damaged
    local header, which the mmap path does not read) but our reader read must hold the seed's data."""
    if data[:4] != b"PK\x03\x04":
        return _by_hand(data)
    from adapters.core.readers.torch_file import _flatten

    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:
        if seed is None:
            raise
        obj = torch.load(io.BytesIO(seed), map_location="cpu", weights_only=True)
    tensors: dict[str, torch.Tensor] = {}
    _flatten(obj, "", tensors, {})
    return tensors


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and a.contiguous().view(torch.uint8).equal(b.contiguous().view(torch.uint8))
    )


def check(path: Path, data: bytes, seed: bytes | None = None) -> str:
    """Write `data` (a mutant of `seed`) to `path` and read it back. Returns "refused" or "read"; raises
    AssertionError on a wrong read and lets any non-`AdapterError` exception escape."""
    path.write_bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the odd pickle protocols that flips produce
            with open_source(path) as reader:
                got = {k: reader.read(k) for k in reader.keys()}
                infos = {k: reader.info(k) for k in got}
    except AdapterError:
        return "refused"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _reference(data, seed)
    assert sorted(got) == sorted(expected), (sorted(got), sorted(expected))
    for key, tensor in got.items():
        assert (tuple(tensor.shape), tensor.dtype) == (infos[key].shape, infos[key].dtype), key
        assert _same(tensor, expected[key]), key
    return "read"
