"""`SatReader`: the rank files of one SAT checkpoint iteration, read as one checkpoint of full tensors.

SAT writes one ``mp_rank_XX_model_states.pt`` per model-parallel rank, each ``{"module": state_dict, ...}`` with
that rank's part of every partitioned tensor (`adapters.sat.partition`). The reader lists every key of
``module`` at its full shape from the files' headers, and assembles a tensor (or a slice of it) from the parts
only when asked, one tensor at a time::

    full qkv [Q; K; V], 2 ranks:   [ Q0 Q1 | K0 K1 | V0 V1 ]
    mp_rank_00 holds [Q0; K0; V0]  mp_rank_01 holds [Q1; K1; V1]

A slice that lies within one rank's part reads that rank's file alone, so a model-parallel load reads on each
rank only the parts it keeps. Replicated tensors (norms, small embeddings) are read from one file,
`replicas_from`. Everything outside ``module`` (iteration, optimizer and RNG states) is never read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..core import CorruptFileError, ReadError, summarize_keys
from ..core.partition import Partition
from ..core.readers import Reader, TorchReader
from ..core.table import TensorInfo

__all__ = ["SatReader"]

_MODULE = "module."


def _rng_globals() -> list:
    """What numpy's RNG state needs to unpickle: SAT's trainer saves ``np.random.get_state()`` in every file."""
    multiarray = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
    return [multiarray.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _open(path: Path) -> TorchReader:
    """A `TorchReader` that also accepts numpy uint32 arrays (RNG states); every other global is still refused."""
    allow = getattr(torch.serialization, "safe_globals", None)
    with allow(_rng_globals()) if allow is not None else contextlib.nullcontext():
        return TorchReader(str(path))


class SatReader(Reader):
    """Full tensors under SAT's names, joined from the rank files of one iteration.

    Args:
        files: the rank files, rank 0 first (``mp_rank_00_model_states.pt``, ...).
        partitions: key → how SAT cuts it among the ranks, at full size (`adapters.sat.partition.sat_partitions`
            of the model the checkpoint belongs to); keys not named are replicated.
        prefix: read only the keys of ``module`` that start with it, without it (SAT's ``prefix=``).
        replicas_from: the rank file replicated tensors are read from.
        path: the name in messages (default: the files' folder).

    Raises:
        ReadError: a file cannot be read (its own typed error), holds no ``module`` tensors, or the files
            disagree on the keys, shapes or dtypes they hold.
    """

    def __init__(
        self,
        files: Sequence[str | Path],
        partitions: Mapping[str, Partition],
        *,
        prefix: str = "",
        replicas_from: int = 0,
        path: str | Path | None = None,
    ) -> None:
        self.files = tuple(Path(f) for f in files)
        self.path = str(path if path is not None else self.files[0].parent)
        self.bytes_read = 0
        self.tensors_read = 0
        self.ways = len(self.files)
        self._head = _MODULE + prefix
        self._ranks: list[TorchReader] = []
        try:
            for file in self.files:
                self._ranks.append(_open(file))
            self._infos, self._joined = self._layout(partitions)
        except BaseException:
            self.close()
            raise
        self._home = self._ranks[replicas_from % self.ways]

    def _layout(self, partitions: Mapping[str, Partition]) -> tuple[dict[str, TensorInfo], dict[str, Partition]]:
        tables = [self._module_table(r) for r in self._ranks]
        first = tables[0]
        for file, table in zip(self.files[1:], tables[1:]):
            _check_same(self.path, self.files[0].name, first, file.name, table)
        infos: dict[str, TensorInfo] = {}
        joined: dict[str, Partition] = {}
        for key, info in first.items():
            part = partitions.get(key)
            if part is None or self.ways == 1 or part.dim >= len(info.shape):
                infos[key] = TensorInfo(info.shape, info.dtype, info.file)
                continue
            joined[key] = part
            infos[key] = TensorInfo(part.full_shape(info.shape, self.ways), info.dtype, self.path)
        return infos, joined

    def _module_table(self, rank: TorchReader) -> dict[str, TensorInfo]:
        table = {k[len(self._head) :]: rank.info(k) for k in rank.keys() if k.startswith(self._head)}
        if not table:
            tops = sorted({k.split(".")[0] for k in [*rank.keys(), *rank.extras]})
            under = (
                f"under 'module' starting with {self._head[len(_MODULE) :]!r}"
                if self._head != _MODULE
                else "under 'module'"
            )
            raise CorruptFileError(
                f"{rank.path} holds no tensors {under}\n"
                f"  top-level entries: {', '.join(tops) or 'none'}\n"
                "  hint: SAT saves {'module': state_dict, ...} in every mp_rank_XX_model_states.pt; "
                + ("check the prefix" if self._head != _MODULE else "this file was written by something else")
            )
        return table

    def keys(self) -> list[str]:
        return list(self._infos)

    def info(self, key: str) -> TensorInfo:
        return self._infos[key]

    @property
    def file_bytes_read(self) -> tuple[int, ...]:
        """Bytes read from each rank file so far, rank 0 first."""
        return tuple(r.bytes_read for r in self._ranks)

    def _read(self, key: str) -> torch.Tensor:
        if key not in self._joined:
            return self._home.read(self._head + key)
        return self._read_slice(key, tuple(slice(None) for _ in self._infos[key].shape))

    def _read_slice(self, key: str, index: tuple[slice, ...]) -> torch.Tensor:
        part = self._joined.get(key)
        if part is None:
            return self._home.read_slice(self._head + key, index)
        info = self._infos[key]
        index = tuple(index) + (slice(None),) * (len(info.shape) - len(index))
        start, stop, step = index[part.dim].indices(info.shape[part.dim])
        if step != 1:
            return self._read(key)[index].clone()
        pieces = list(self._pieces(key, part, start, stop))
        if len(pieces) == 1:
            rank, a, b = pieces[0]
            return self._ranks[rank].read_slice(self._head + key, _along(index, part.dim, a, b))
        out = torch.empty(torch.empty(info.shape, device="meta")[index].shape, dtype=info.dtype)
        at = 0
        for rank, a, b in pieces:  # one part at a time: the peak is the result and one part
            piece = self._ranks[rank].read_slice(self._head + key, _along(index, part.dim, a, b))
            out.narrow(part.dim, at, b - a).copy_(piece)
            del piece
            at += b - a
        return out

    def _pieces(self, key: str, part: Partition, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """(rank, local start, local stop) of every rank part that `[start, stop)` of the full dim covers, in order."""
        full = self._infos[key].shape[part.dim]
        if sum(part.segments) != full or any(s % self.ways for s in part.segments):
            raise ReadError(
                f"{self.path}: cannot join {key!r} of {self.ways} parts into {full} rows of segments "
                f"{list(part.segments)} on dim {part.dim}\n"
                "  hint: the model these partitions come from does not match the checkpoint; build it from the "
                "checkpoint's model_config.json"
            )
        pieces: list[list[int]] = []
        base = local = 0
        for size in part.segments:
            chunk = size // self.ways
            for rank in range(self.ways):
                lo, hi = max(start, base + rank * chunk), min(stop, base + (rank + 1) * chunk)
                if lo >= hi:
                    continue
                a, b = local + lo - base - rank * chunk, local + hi - base - rank * chunk
                if pieces and pieces[-1][0] == rank and pieces[-1][2] == a:
                    pieces[-1][2] = b
                else:
                    pieces.append([rank, a, b])
            base += size
            local += chunk
        return (tuple(p) for p in pieces)  # type: ignore[misc]

    def view(self, key: str) -> torch.Tensor | None:
        self._check(key)
        if key in self._joined:
            return None
        before_bytes, before_reads = self._home.bytes_read, self._home.tensors_read
        tensor = self._home.view(self._head + key)
        if tensor is not None:
            self.bytes_read += self._home.bytes_read - before_bytes
            self.tensors_read += self._home.tensors_read - before_reads
        return tensor

    def release(self, key: str, view: torch.Tensor) -> None:
        self._home.release(self._head + key, view)

    def close(self) -> None:
        for rank in self._ranks:
            rank.close()

    def __repr__(self) -> str:
        return f"SatReader({self.path!r}, {self.ways} rank file(s))"


def _along(index: tuple[slice, ...], dim: int, a: int, b: int) -> tuple[slice, ...]:
    return tuple(slice(a, b) if i == dim else s for i, s in enumerate(index))


def _check_same(path: str, name0: str, first: Mapping[str, TensorInfo], name: str, table: Mapping[str, TensorInfo]):
    """Every rank file holds the same keys, each with one shape and dtype (SAT cuts tensors in equal parts)."""
    missing = [k for k in first if k not in table]
    extra = [k for k in table if k not in first]
    differ = [k for k in first if k in table and (first[k].shape, first[k].dtype) != (table[k].shape, table[k].dtype)]
    if not (missing or extra or differ):
        return
    lines = f"  missing:   {summarize_keys(missing)}\n" if missing else ""
    lines += f"  extra:     {summarize_keys(extra)}\n" if extra else ""
    for key in differ[:3]:
        lines += f"  differs:   {key} {_describe(table[key])} here, {_describe(first[key])} in {name0}\n"
    if len(differ) > 3:
        lines += f"  ... and {len(differ) - 3} more that differ\n"
    raise CorruptFileError(
        f"{path}: {name} does not hold the tensors {name0} holds\n{lines}"
        "  hint: the rank files come from different saves or models; copy all mp_rank_XX files of one iteration "
        "together"
    )


def _describe(info: TensorInfo) -> str:
    return f"{list(info.shape)} {str(info.dtype).removeprefix('torch.')}"
