"""Model-parallel loading: each rank reads only its slice of every source tensor and builds only its partition.

A target `Partition` says how a full tensor is shared among ``ways`` ranks (Megatron/SAT tensor parallelism)::

    full tensor, cut on `dim` into `segments`:   [ seg 0          | seg 1    | seg 2    ]
    each segment cut into `ways` equal chunks:   [ c0 c1 ... cN-1 | c0 ... c | c0 ... c ]
    rank r holds                                 cat(chunk r of seg 0, chunk r of seg 1, chunk r of seg 2)

A column-parallel fused qkv is three segments ``[Q; K; V]`` on dim 0 (each rank gets its heads of each), a
row-parallel weight one segment on dim 1, a vocab-parallel embedding one segment on dim 0. Replicated tensors have
no partition (None).

Each op pulls the partitions its outputs need back to its inputs (`Op.pull_partition`) and names the op that runs
on the rank slices (sizes scaled by 1/ways where the sliced dim carries them). Walking a unit's ops from the
targets back to the sources gives each source's partition: the rank reads those ranges alone (`Reader.read_slice`)
and runs the local ops. Where an op cannot pull a partition back (`Reshape`, a concat whose parts straddle a
segment, ties of differently split targets), the unit falls back to reading its sources whole and slicing the
results: still correct, and visible in the bytes read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .errors import PlanError
from .table import ModelTable, TensorInfo

if TYPE_CHECKING:
    from .ops import Op, Shape
    from .plan import Plan, Unit
    from .readers.base import Reader

__all__ = ["Partition", "PartitionError", "Pulled", "Sharding", "UnitShard", "pull_unit"]


class PartitionError(PlanError):
    """A tensor's partition cannot be cut into equal chunks for the number of ranks (raised before any read)."""


@dataclass(frozen=True, slots=True)
class Partition:
    """Cut `dim` of the full tensor into `segments` (sizes, in order); rank r holds chunk r of every segment."""

    dim: int
    segments: tuple[int, ...]

    def fits(self, shape: Shape, ways: int) -> bool:
        """Whether the segments tile `shape[dim]` and every segment cuts into `ways` equal chunks."""
        return (
            0 <= self.dim < len(shape)
            and sum(self.segments) == shape[self.dim]
            and all(s % ways == 0 for s in self.segments)
        )

    def ranges(self, rank: int, ways: int) -> tuple[tuple[int, int], ...]:
        """The ``[start, stop)`` ranges of `dim` that `rank` holds, adjacent ranges merged."""
        out: list[list[int]] = []
        start = 0
        for size in self.segments:
            chunk = size // ways
            a, b = start + rank * chunk, start + (rank + 1) * chunk
            if out and out[-1][1] == a:
                out[-1][1] = b
            elif b > a:
                out.append([a, b])
            start += size
        return tuple((a, b) for a, b in out)

    def local_shape(self, shape: Shape, ways: int) -> Shape:
        return tuple(d // ways if i == self.dim else d for i, d in enumerate(shape))

    def full_shape(self, local: Shape, ways: int) -> Shape:
        return tuple(d * ways if i == self.dim else d for i, d in enumerate(local))

    def _index(self, ndim: int, a: int, b: int) -> tuple[slice, ...]:
        return tuple(slice(a, b) if i == self.dim else slice(None) for i in range(ndim))

    def take(self, tensor: torch.Tensor, rank: int, ways: int) -> torch.Tensor:
        """Rank `rank`'s part of the full `tensor`."""
        parts = [tensor[self._index(tensor.dim(), a, b)] for a, b in self.ranges(rank, ways)]
        return torch.cat(parts, dim=self.dim) if len(parts) > 1 else parts[0]

    def read(self, reader: Reader, key: str, rank: int, ways: int) -> torch.Tensor:
        """Rank `rank`'s part of source `key`, reading only its ranges."""
        ndim = len(reader.info(key).shape)
        parts = [reader.read_slice(key, self._index(ndim, a, b)) for a, b in self.ranges(rank, ways)]
        return torch.cat(parts, dim=self.dim) if len(parts) > 1 else parts[0]


Parts = tuple["Partition | None", ...]


@dataclass(frozen=True, slots=True)
class Pulled:
    """What an op needs of its inputs for given output partitions, and the op that runs on the rank slices."""

    inputs: Parts
    local: Op


@dataclass(frozen=True, slots=True)
class UnitShard:
    """How one rank runs one unit: read `sources` slices and run `ops`; `sources` None reads whole (fallback)."""

    sources: Parts | None
    ops: tuple[Op, ...]
    targets: Parts

    @property
    def fallback(self) -> bool:
        return self.sources is None


def pull_unit(ops: Sequence[Op], source_shapes: Sequence[Shape], targets: Parts, ways: int) -> UnitShard:
    """Pull the target partitions back through `ops` to the sources; a fallback shard where an op cannot."""
    shapes = [tuple(tuple(s) for s in source_shapes)]
    for op in ops:
        shapes.append(op.out_shapes(shapes[-1]))
    parts, local = targets, []
    for op, in_shapes in zip(reversed(ops), reversed(shapes[:-1])):
        pulled = op.pull_partition(parts, in_shapes, ways)
        if pulled is None or not all(p is None or p.fits(s, ways) for p, s in zip(pulled.inputs, in_shapes)):
            return UnitShard(None, tuple(ops), targets)
        parts = pulled.inputs
        local.append(pulled.local)
    return UnitShard(parts, tuple(reversed(local)), targets)


@dataclass(frozen=True)
class Sharding:
    """One rank's view of a model-parallel load.

    Attributes:
        ways: the model-parallel size (number of ranks sharing each partitioned tensor).
        rank: this process' rank within its model-parallel group.
        partitions: target key → its `Partition`; every key not named is replicated (read whole on every rank).
    """

    ways: int
    rank: int
    partitions: Mapping[str, Partition]

    def __post_init__(self) -> None:
        if self.ways < 1 or not 0 <= self.rank < self.ways:
            raise PartitionError(
                f"Sharding(ways={self.ways}, rank={self.rank}): expected 1 <= ways and 0 <= rank < ways\n"
                "  hint: ways is the model-parallel size and rank this process' model-parallel rank"
            )

    def of(self, key: str) -> Partition | None:
        return self.partitions.get(key)

    def full_table(self, table: ModelTable) -> ModelTable:
        """`table` (a rank's model, local shapes) with every partitioned tensor at its full shape, for `plan`."""
        tensors: dict[str, TensorInfo] = {}
        for key, info in table.tensors.items():
            part = self.of(key)
            shape = info.shape if part is None else part.full_shape(info.shape, self.ways)
            if part is not None and not part.fits(shape, self.ways):
                raise PartitionError(
                    f"{table.name}: {key} of full shape {list(shape)} cannot be cut into {self.ways} equal chunks "
                    f"of segments {list(part.segments)} on dim {part.dim}\n"
                    f"  hint: every segment must be a multiple of the model-parallel size {self.ways}"
                )
            tensors[key] = TensorInfo(shape, info.dtype, info.file)
        return ModelTable(tensors, dict(table.aliases), table.buffers, table.name)

    def shard(self, unit: Unit) -> UnitShard:
        targets = tuple(self.of(t) for t in unit.targets)
        if all(p is None for p in targets):
            return UnitShard(tuple(None for _ in unit.sources), unit.ops, targets)
        return pull_unit(unit.ops, [i.shape for i in unit.source_infos], targets, self.ways)

    def run(self, unit: Unit, reader: Reader) -> tuple[torch.Tensor, ...]:
        """This rank's target tensors of `unit`, reading as little of the sources as the ops allow."""
        shard = self.shard(unit)
        if shard.sources is None:
            tensors = tuple(reader.read(k) for k in unit.sources)
            for op in unit.ops:
                tensors = op.apply(tensors)
            return tuple(t if p is None else p.take(t, self.rank, self.ways) for t, p in zip(tensors, shard.targets))
        tensors = tuple(
            reader.read(k) if p is None else p.read(reader, k, self.rank, self.ways)
            for k, p in zip(unit.sources, shard.sources)
        )
        for op in shard.ops:
            tensors = op.apply(tensors)
        return tensors

    def fallbacks(self, the_plan: Plan) -> list[Unit]:
        """The units whose sources this rank reads whole although a target is partitioned."""
        return [u for u in the_plan.units if self.shard(u).fallback]
