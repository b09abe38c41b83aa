"""Tensor ops of a rule's pipeline. Each op has an inverse and a shape rule.

An op maps a list of tensors to a list of tensors. *Elementwise* ops transform each tensor on its own (the list
keeps its length); `Concat` joins many into one and `Split` cuts one into many. Sizes may be written as names
(``Split(0, sizes=("q_dim", "kv_dim", "kv_dim"))``): a spec stays symbolic, and `bind(dims)` turns names into
numbers from the model's config at plan time, so one spec serves every model size.

Contract, tested for every op on distinct-valued tensors:
    op.inverse()(op(xs)) == xs                  bit-exact (Scale only for powers of two)
    op.out_shapes(shapes of xs) == shapes of op(xs)
    pulled = op.pull_partition(parts, shapes, ways); for every rank r, when pulled is not None:
        pulled.local(take_r(xs, pulled.inputs)) == take_r(op(xs), parts)     (see `core.partition`)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

import torch

from .errors import AdapterError, SpecError
from .partition import Partition, Pulled

__all__ = [
    "Op",
    "Elementwise",
    "Transpose",
    "Reshape",
    "Concat",
    "Split",
    "BlockPermute",
    "RotaryPermute",
    "Scale",
    "Duplicate",
    "Dedupe",
    "OpShapeError",
    "OpValueError",
    "OnParts",
    "Shape",
    "Size",
]

Shape = tuple[int, ...]
Size = int | str  # a number, or a name bound from the model's dims at plan time


class OpShapeError(ValueError):
    """An op cannot take these input shapes. The planner turns it into a `ShapeMismatchError` with context."""


class OpValueError(AdapterError, ValueError):
    """An op's inputs have the right shapes but values it cannot honour (tied copies that differ)."""


def _bind_size(size: Size, dims: Mapping[str, int], op: Op) -> int:
    if isinstance(size, int):
        return size
    if size not in dims:
        known = ", ".join(sorted(dims)) or "none"
        raise SpecError(f"{op} needs the size {size!r}, which the dims do not define (known: {known})")
    return int(dims[size])


def _is_bound(value: object) -> bool:
    if isinstance(value, tuple):
        return all(_is_bound(v) for v in value)
    return not isinstance(value, str)


class Op(ABC):
    """Base of all ops. Subclasses are frozen dataclasses whose size fields may hold names until `bind`."""

    _size_fields: tuple[str, ...] = ()

    @abstractmethod
    def count(self, n_in: int) -> int | None:
        """How many tensors come out for `n_in` going in; None when only the rule's targets can tell."""

    @abstractmethod
    def out_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        """Output shapes for these input shapes; raises `OpShapeError` when the inputs do not fit."""

    @abstractmethod
    def apply(self, tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Run the op. Outputs may be views of inputs."""

    @abstractmethod
    def inverse(self) -> Op:
        """The op that undoes this one."""

    def __call__(self, tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return self.apply(tensors)

    def pull_partition(self, outputs: Sequence[Partition | None], shapes: Sequence[Shape], ways: int) -> Pulled | None:
        """The input partitions that give `outputs` (for inputs of full `shapes`), and the op to run on the rank
        slices; None when this op cannot (the loader then reads the sources whole and slices the results)."""
        return None

    def bind(self, dims: Mapping[str, int]) -> Op:
        """This op with every named size replaced by its number from `dims`."""
        changes = {}
        for name in self._size_fields:
            value = getattr(self, name)
            if isinstance(value, tuple):
                changes[name] = tuple(_bind_size(v, dims, self) for v in value)
            elif value is not None:
                changes[name] = _bind_size(value, dims, self)
        return replace(self, **changes) if changes else self

    @property
    def bound(self) -> bool:
        return all(_is_bound(getattr(self, n)) for n in self._size_fields if getattr(self, n) is not None)

    def _require_bound(self) -> None:
        if not self.bound:
            raise SpecError(f"{self} still has named sizes; call bind(dims) first")

    def __str__(self) -> str:
        args = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if getattr(self, f.name) is not None
        )  # type: ignore[arg-type]
        return f"{type(self).__name__}({args})"


class Elementwise(Op):
    """An op applied to each tensor of the list on its own."""

    def count(self, n_in: int) -> int:
        return n_in

    def out_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._require_bound()
        return tuple(self.out_shape(s) for s in shapes)

    def apply(self, tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        self._require_bound()
        return tuple(self.apply_one(t) for t in tensors)

    @abstractmethod
    def out_shape(self, shape: Shape) -> Shape: ...

    @abstractmethod
    def apply_one(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def pull_one(self, part: Partition, shape: Shape, ways: int) -> tuple[Partition, Elementwise] | None:
        """One tensor's input partition and local op for output partition `part`; None when it cannot."""
        return None

    def pull_partition(self, outputs: Sequence[Partition | None], shapes: Sequence[Shape], ways: int) -> Pulled | None:
        pulled = pull_each(self, outputs, shapes, ways)
        if pulled is None:
            return None
        inputs, local = pulled
        return Pulled(inputs, local)


def pull_each(
    op: Elementwise, outputs: Sequence[Partition | None], shapes: Sequence[Shape], ways: int
) -> tuple[tuple[Partition | None, ...], Elementwise] | None:
    """`op.pull_one` on each tensor; the tensors must agree on one local op (a replicated one needs `op` itself)."""
    inputs: list[Partition | None] = []
    locals_: set[Elementwise] = set()
    for part, shape in zip(outputs, shapes):
        if part is None:
            inputs.append(None)
            locals_.add(op)
            continue
        one = op.pull_one(part, shape, ways)
        if one is None:
            return None
        inputs.append(one[0])
        locals_.add(one[1])
    if len(locals_) > 1:
        return None
    return tuple(inputs), (locals_.pop() if locals_ else op)


def _check_dim(op: Op, shape: Shape, dim: int) -> int:
    if not -len(shape) <= dim < len(shape):
        raise OpShapeError(f"{op} needs a tensor with dim {dim}, got shape {list(shape)}")
    return dim % len(shape)


@dataclass(frozen=True, slots=True)
class Transpose(Elementwise):
    """Swap two dims. ``[in, out]`` (GPT-2 Conv1D, BlinkDL LoRA) ↔ ``[out, in]`` (nn.Linear). Its own inverse."""

    dim0: int = 0
    dim1: int = 1

    def out_shape(self, shape: Shape) -> Shape:
        a, b = _check_dim(self, shape, self.dim0), _check_dim(self, shape, self.dim1)
        out = list(shape)
        out[a], out[b] = out[b], out[a]
        return tuple(out)

    def apply_one(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.transpose(self.dim0, self.dim1)

    def pull_one(self, part: Partition, shape: Shape, ways: int) -> tuple[Partition, Elementwise]:
        a, b = _check_dim(self, shape, self.dim0), _check_dim(self, shape, self.dim1)
        dim = b if part.dim == a else a if part.dim == b else part.dim
        return Partition(dim, part.segments), self

    def inverse(self) -> Transpose:
        return Transpose(self.dim1, self.dim0)


def _fill(pattern: tuple[int, ...], numel: int, op: Op, shape: Shape) -> Shape:
    known = math.prod(d for d in pattern if d != -1)
    if -1 in pattern:
        if known == 0 or numel % known:
            raise OpShapeError(f"{op} cannot reshape {list(shape)} ({numel} elements) to {list(pattern)}")
        return tuple(numel // known if d == -1 else d for d in pattern)
    if known != numel:
        raise OpShapeError(f"{op} cannot reshape {list(shape)} ({numel} elements) to {list(pattern)}")
    return pattern


@dataclass(frozen=True, slots=True)
class Reshape(Elementwise):
    """Reshape from the `src` layout to the `dst` layout; each may hold one -1 and named sizes.

    `src` is checked against the input, which is what makes the op invertible: ``Reshape((1, 1, -1), (-1,))``
    turns BlinkDL's ``[1, 1, C]`` into ``[C]``, and its inverse ``Reshape((-1,), (1, 1, -1))`` turns it back.
    """

    src: tuple[Size, ...]
    dst: tuple[Size, ...]
    _size_fields = ("src", "dst")

    def __post_init__(self) -> None:
        for name in ("src", "dst"):
            pattern = getattr(self, name)
            if not isinstance(pattern, tuple) or sum(1 for d in pattern if d == -1) > 1:
                raise SpecError(f"Reshape {name} must be a tuple with at most one -1, got {pattern!r}")

    def out_shape(self, shape: Shape) -> Shape:
        src = _fill(self.src, math.prod(shape), self, shape)  # type: ignore[arg-type]
        if tuple(src) != tuple(shape):
            raise OpShapeError(f"{self} expects an input of layout {list(self.src)}, got {list(shape)}")
        return _fill(self.dst, math.prod(shape), self, shape)  # type: ignore[arg-type]

    def apply_one(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(self.out_shape(tuple(tensor.shape)))

    def inverse(self) -> Reshape:
        return Reshape(self.dst, self.src)


@dataclass(frozen=True, slots=True)
class Concat(Op):
    """Join many tensors along `dim`: ``[q; k; v]`` → ``qkv``. With `sizes` (one may be -1), each part is checked.

    Without `sizes` the inverse cuts equal parts (a rule tells it how many), so give `sizes` whenever parts can
    differ (GQA: q is larger than k and v).
    """

    dim: int = 0
    sizes: tuple[Size, ...] | None = None
    _size_fields = ("sizes",)

    def count(self, n_in: int) -> int:
        return 1

    def out_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._require_bound()
        if not shapes:
            raise OpShapeError(f"{self} needs at least one input")
        dim = _check_dim(self, shapes[0], self.dim)
        for s in shapes[1:]:
            if len(s) != len(shapes[0]) or any(a != b for i, (a, b) in enumerate(zip(s, shapes[0])) if i != dim):
                got = ", ".join(str(list(x)) for x in shapes)
                raise OpShapeError(f"{self} needs inputs that agree off dim {dim}, got {got}")
        if self.sizes is not None:
            got_sizes = tuple(s[dim] for s in shapes)
            if len(got_sizes) != len(self.sizes) or any(w not in (-1, g) for w, g in zip(self.sizes, got_sizes)):
                raise OpShapeError(f"{self} expects parts of {list(self.sizes)} along dim {dim}, got {list(got_sizes)}")
        out = list(shapes[0])
        out[dim] = sum(s[dim] for s in shapes)
        return (tuple(out),)

    def apply(self, tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        self.out_shapes([tuple(t.shape) for t in tensors])
        return (torch.cat(list(tensors), dim=self.dim),)

    def pull_partition(self, outputs: Sequence[Partition | None], shapes: Sequence[Shape], ways: int) -> Pulled | None:
        # Off the concat dim every input is split like the output. On it, each input must be a whole number of
        # the output's segments ([Q; K; V] for q, k, v): a rank's slice then concatenates its slices of the parts.
        (part,) = outputs
        if part is None:
            return Pulled((None,) * len(shapes), self)
        dim = _check_dim(self, shapes[0], self.dim)
        if part.dim != dim:
            return Pulled((part,) * len(shapes), self)
        inputs = _group_segments(part.segments, [s[dim] for s in shapes])
        if inputs is None:
            return None
        sizes = None if self.sizes is None else tuple(s if s == -1 else int(s) // ways for s in self.sizes)  # type: ignore[arg-type]
        return Pulled(tuple(Partition(dim, g) for g in inputs), Concat(self.dim, sizes))

    def inverse(self) -> Split:
        return Split(self.dim, sizes=self.sizes)


@dataclass(frozen=True, slots=True)
class Split(Op):
    """Cut one tensor along `dim` into parts: by `sizes` (one may be -1), or into `parts` equal pieces.

    With neither, the rule fills `parts` from its number of targets (merged ``gate_up`` → ``gate``, ``up``).
    """

    dim: int = 0
    sizes: tuple[Size, ...] | None = None
    parts: int | None = None
    _size_fields = ("sizes",)

    def __post_init__(self) -> None:
        if self.sizes is not None and self.parts is not None:
            raise SpecError(f"{self}: give sizes or parts, not both")
        if self.sizes is not None and sum(1 for s in self.sizes if s == -1) > 1:
            raise SpecError(f"{self}: at most one size may be -1")

    def count(self, n_in: int) -> int | None:
        if self.sizes is not None:
            return len(self.sizes)
        return self.parts

    def _sizes_for(self, shape: Shape) -> tuple[int, ...]:
        dim = _check_dim(self, shape, self.dim)
        total = shape[dim]
        if self.sizes is None:
            if self.parts is None:
                raise SpecError(f"{self} does not know how many parts to cut")
            if total % self.parts:
                raise OpShapeError(
                    f"{self} cannot cut {total} along dim {dim} of {list(shape)} into {self.parts} equal parts"
                )
            return (total // self.parts,) * self.parts
        known = sum(s for s in self.sizes if s != -1)  # type: ignore[misc]
        sizes = tuple(total - known if s == -1 else s for s in self.sizes)  # type: ignore[misc]
        if sum(sizes) != total or min(sizes) < 0:
            raise OpShapeError(f"{self} cannot cut {total} along dim {dim} of {list(shape)} into {list(self.sizes)}")
        return sizes  # type: ignore[return-value]

    def out_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._require_bound()
        if len(shapes) != 1:
            raise OpShapeError(f"{self} takes one input, got {len(shapes)}")
        (shape,) = shapes
        dim = _check_dim(self, shape, self.dim)
        return tuple(tuple(n if i == dim else d for i, d in enumerate(shape)) for n in self._sizes_for(shape))

    def apply(self, tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        self.out_shapes([tuple(t.shape) for t in tensors])
        (tensor,) = tensors
        return tuple(torch.split(tensor, list(self._sizes_for(tuple(tensor.shape))), dim=self.dim))

    def pull_partition(self, outputs: Sequence[Partition | None], shapes: Sequence[Shape], ways: int) -> Pulled | None:
        # Every part split on the cut dim: the input's segments are the parts' segments in order, so a merged
        # [gate; up] is chunked first, then sliced. Off the cut dim all parts must be split alike.
        if all(p is None for p in outputs):
            return Pulled((None,), self)
        if any(p is None for p in outputs) or len({p.dim for p in outputs}) != 1:  # type: ignore[union-attr]
            return None
        dim = _check_dim(self, shapes[0], self.dim)
        if outputs[0].dim != dim:  # type: ignore[union-attr]
            return Pulled((outputs[0],), self) if len(set(outputs)) == 1 else None
        segments = tuple(s for p in outputs for s in p.segments)  # type: ignore[union-attr]
        sizes = None if self.sizes is None else tuple(s if s == -1 else int(s) // ways for s in self.sizes)  # type: ignore[arg-type]
        return Pulled((Partition(dim, segments),), Split(self.dim, sizes, self.parts))

    def inverse(self) -> Concat:
        return Concat(self.dim, sizes=self.sizes)


def _group_segments(segments: tuple[int, ...], sizes: list[int]) -> list[tuple[int, ...]] | None:
    """`segments` grouped into consecutive runs that sum to each of `sizes`; None when a boundary splits one."""
    groups: list[tuple[int, ...]] = []
    rest = list(segments)
    for size in sizes:
        group: list[int] = []
        while rest and sum(group) < size:
            group.append(rest.pop(0))
        if sum(group) != size or not group:
            return None
        groups.append(tuple(group))
    return groups if not rest else None


def _argsort(order: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(range(len(order)), key=order.__getitem__))


@dataclass(frozen=True, slots=True)
class BlockPermute(Elementwise):
    """View `dim` as nested `blocks` (outermost first), reorder those block axes by `order`, flatten back.

    ChatGLM-6B stores qkv rows per head, SAT wants them globally::

        rows [h0:q k v | h1:q k v | ...]   blocks=("heads", 3, "head_dim"), order=(1, 0, 2)
          →  [q: h0 h1 ... | k: h0 h1 ... | v: h0 h1 ...]

    The inverse views the result as the permuted blocks and applies the inverse order.
    """

    dim: int
    blocks: tuple[Size, ...]
    order: tuple[int, ...]
    _size_fields = ("blocks",)

    def __post_init__(self) -> None:
        if sorted(self.order) != list(range(len(self.blocks))):
            raise SpecError(f"{self}: order must be a permutation of 0..{len(self.blocks) - 1}")

    def out_shape(self, shape: Shape) -> Shape:
        dim = _check_dim(self, shape, self.dim)
        if math.prod(self.blocks) != shape[dim]:  # type: ignore[arg-type]
            raise OpShapeError(f"{self} needs dim {dim} of size {math.prod(self.blocks)}, got {list(shape)}")  # type: ignore[arg-type]
        return shape

    def apply_one(self, tensor: torch.Tensor) -> torch.Tensor:
        dim = _check_dim(self, tuple(tensor.shape), self.dim)
        self.out_shape(tuple(tensor.shape))
        lead, tail = tensor.shape[:dim], tensor.shape[dim + 1 :]
        viewed = tensor.reshape(*lead, *self.blocks, *tail)  # type: ignore[misc]
        axes = list(range(dim)) + [dim + o for o in self.order] + list(range(dim + len(self.blocks), viewed.dim()))
        return viewed.permute(axes).reshape(tensor.shape)

    def pull_one(self, part: Partition, shape: Shape, ways: int) -> tuple[Partition, Elementwise] | None:
        # The output is the permuted blocks (b[order[0]], b[order[1]], ...). A partition that cuts one of those
        # block axes into `ways` (segments = every index of the axes before it) cuts the same axis of the input.
        dim = _check_dim(self, shape, self.dim)
        if part.dim != dim:
            return part, self
        blocks = tuple(int(b) for b in self.blocks)  # type: ignore[arg-type]
        out_blocks = tuple(blocks[o] for o in self.order)
        for k, size in enumerate(out_blocks):
            outer, inner = math.prod(out_blocks[:k]), math.prod(out_blocks[k:])
            if size % ways or part.segments != (inner,) * outer:
                continue
            axis = self.order[k]
            segments = (math.prod(blocks[axis:]),) * math.prod(blocks[:axis])
            local = tuple(b // ways if i == axis else b for i, b in enumerate(blocks))
            return Partition(dim, segments), BlockPermute(self.dim, local, self.order)
        return None

    def inverse(self) -> BlockPermute:
        return BlockPermute(self.dim, tuple(self.blocks[o] for o in self.order), _argsort(self.order))


@dataclass(frozen=True, slots=True)
class RotaryPermute(Elementwise):
    """Reorder each head's rotary channels between the interleaved (GPT-J) and half-split (GPT-NeoX) layouts.

    `dim` is cut into heads of `head_dim`; within each head the first `rotary_dim` channels (default: all) move::

        to="half":         [x0 y0 x1 y1 ... | pass]  →  [x0 x1 ... y0 y1 ... | pass]
        to="interleaved":  the reverse

    where (x_i, y_i) is the i-th rotated pair. Channels past `rotary_dim` pass through unchanged. Used for q and k
    rows (weight and bias) only: v and o are not rotated.
    """

    dim: int
    head_dim: Size
    rotary_dim: Size | None = None
    to: str = "half"
    _size_fields = ("head_dim", "rotary_dim")

    def __post_init__(self) -> None:
        if self.to not in ("half", "interleaved"):
            raise SpecError(f"{self}: to must be 'half' or 'interleaved'")

    def _index(self, size: int) -> torch.Tensor:
        hd = int(self.head_dim)
        rd = hd if self.rotary_dim is None else int(self.rotary_dim)
        if size % hd or rd % 2 or rd > hd:
            raise OpShapeError(
                f"{self} needs a dim that is a multiple of head_dim={hd} and an even rotary_dim <= head_dim"
            )
        to_half = torch.arange(rd).reshape(rd // 2, 2).t().reshape(-1)  # [0, 2, 4, ..., 1, 3, 5, ...]
        within = to_half if self.to == "half" else torch.argsort(to_half)
        head = torch.cat([within, torch.arange(rd, hd)])
        return (torch.arange(size // hd)[:, None] * hd + head).reshape(-1)

    def out_shape(self, shape: Shape) -> Shape:
        dim = _check_dim(self, shape, self.dim)
        self._index(shape[dim])
        return shape

    def apply_one(self, tensor: torch.Tensor) -> torch.Tensor:
        dim = _check_dim(self, tuple(tensor.shape), self.dim)
        return tensor.index_select(dim, self._index(tensor.shape[dim]))

    def pull_one(self, part: Partition, shape: Shape, ways: int) -> tuple[Partition, Elementwise] | None:
        # Per head: a partition whose chunks hold whole heads needs the same rows of the input.
        hd = int(self.head_dim)  # type: ignore[arg-type]
        if part.dim == _check_dim(self, shape, self.dim) and any(s % (ways * hd) for s in part.segments):
            return None
        return part, self

    def inverse(self) -> RotaryPermute:
        return RotaryPermute(self.dim, self.head_dim, self.rotary_dim, "interleaved" if self.to == "half" else "half")


@dataclass(frozen=True, slots=True)
class Scale(Elementwise):
    """Multiply by a constant (GLM-4V folds its vision ``1/scaling_factor`` into the projector).

    The round trip is bit-exact for powers of two; other factors round.
    """

    factor: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.factor) or self.factor == 0:
            raise SpecError(f"Scale factor must be finite and non-zero, got {self.factor!r}")

    def out_shape(self, shape: Shape) -> Shape:
        return shape

    def apply_one(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor * self.factor

    def pull_one(self, part: Partition, shape: Shape, ways: int) -> tuple[Partition, Elementwise]:
        return part, self

    def inverse(self) -> Scale:
        return Scale(1.0 / self.factor)


@dataclass(frozen=True, slots=True)
class Duplicate(Op):
    """One tensor to `copies` equal tensors: a tied source (HF ``tie_word_embeddings``) feeding untied targets.

    Every copy owns its memory, so training one target never moves another. The inverse is `Dedupe`.
    """

    copies: int = 2

    def __post_init__(self) -> None:
        if self.copies < 2:
            raise SpecError(f"{self}: copies must be at least 2")

    def count(self, n_in: int) -> int:
        return self.copies

    def out_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        if len(shapes) != 1:
            raise OpShapeError(f"{self} takes one input, got {len(shapes)}")
        return (tuple(shapes[0]),) * self.copies

    def apply(self, tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        self.out_shapes([tuple(t.shape) for t in tensors])
        (tensor,) = tensors
        return (tensor,) + tuple(tensor.clone() for _ in range(self.copies - 1))

    def pull_partition(self, outputs: Sequence[Partition | None], shapes: Sequence[Shape], ways: int) -> Pulled | None:
        # Copies split differently (a replicated embedding, a column-parallel head) need more than any one slice.
        return Pulled((outputs[0],), self) if len(set(outputs)) == 1 else None

    def inverse(self) -> Dedupe:
        return Dedupe(self.copies)


@dataclass(frozen=True, slots=True)
class Dedupe(Op):
    """`copies` equal tensors to one (export of a tied pair); raises `OpValueError` when the copies differ.

    A fine-tune that trained the two copies apart cannot be written as one tied tensor without losing one of them,
    so this refuses instead of picking.
    """

    copies: int = 2

    def __post_init__(self) -> None:
        if self.copies < 2:
            raise SpecError(f"{self}: copies must be at least 2")

    def count(self, n_in: int) -> int:
        return 1

    def out_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        if len(shapes) != self.copies or any(tuple(s) != tuple(shapes[0]) for s in shapes):
            got = ", ".join(str(list(s)) for s in shapes)
            raise OpShapeError(f"{self} needs {self.copies} inputs of one shape, got {got}")
        return (tuple(shapes[0]),)

    def apply(self, tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        self.out_shapes([tuple(t.shape) for t in tensors])
        first = tensors[0]
        for i, other in enumerate(tensors[1:], 1):
            if not torch.equal(first, other.to(first.device)):
                diff = (first.float() - other.to(first.device).float()).abs().max().item()
                raise OpValueError(
                    f"{self}: copy {i} differs from copy 0 (max abs diff {diff:.3g}); tied tensors must be equal"
                )
        return (first,)

    def pull_partition(self, outputs: Sequence[Partition | None], shapes: Sequence[Shape], ways: int) -> Pulled | None:
        return Pulled((outputs[0],) * self.copies, self)

    def inverse(self) -> Duplicate:
        return Duplicate(self.copies)


@dataclass(frozen=True, slots=True)
class OnParts(Op):
    """Run the elementwise `op` on the tensors at `parts` of the list and pass the others through unchanged.

    GLM-4's q and k rows (split out of a fused qkv) need the rotary permutation and its v rows must keep their order, which no elementwise op
    can tell apart (k and v even have one shape)::

        [q, k, v]  --OnParts(RotaryPermute(0, "head_dim", "rotary_dim"), parts=(0, 1))-->  [q', k', v]

    The inverse runs the inverse op on the same parts.
    """

    op: Elementwise
    parts: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.op, Elementwise):
            raise SpecError(f"OnParts takes an elementwise op, got {self.op!r}")
        if not self.parts or any(not isinstance(p, int) or p < 0 for p in self.parts):
            raise SpecError(f"OnParts parts must be a non-empty tuple of list positions, got {self.parts!r}")

    def count(self, n_in: int) -> int:
        return n_in

    def bind(self, dims: Mapping[str, int]) -> OnParts:
        return replace(self, op=self.op.bind(dims))

    @property
    def bound(self) -> bool:
        return self.op.bound

    def _check(self, n: int) -> None:
        if max(self.parts) >= n:
            raise OpShapeError(f"{self} names part {max(self.parts)} of a list of {n} tensors")

    def out_shapes(self, shapes: Sequence[Shape]) -> tuple[Shape, ...]:
        self._check(len(shapes))
        return tuple(self.op.out_shapes([s])[0] if i in self.parts else tuple(s) for i, s in enumerate(shapes))

    def apply(self, tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        self._check(len(tensors))
        return tuple(self.op.apply([t])[0] if i in self.parts else t for i, t in enumerate(tensors))

    def pull_partition(self, outputs: Sequence[Partition | None], shapes: Sequence[Shape], ways: int) -> Pulled | None:
        self._check(len(shapes))
        mine = [i for i in range(len(shapes)) if i in self.parts]
        pulled = pull_each(self.op, [outputs[i] for i in mine], [shapes[i] for i in mine], ways)
        if pulled is None:
            return None
        found, local = pulled
        inputs = list(outputs)
        for i, p in zip(mine, found):
            inputs[i] = p
        return Pulled(tuple(inputs), OnParts(local, self.parts))

    def inverse(self) -> OnParts:
        return OnParts(self.op.inverse(), self.parts)
