"""Planning: resolve a spec against a source key table and a target key table, reading no tensor data.

The plan groups source keys into *units* (all sources of one rule application, e.g. q, k, v of one layer), checks
that every target tensor is produced exactly once, that every source key is used or deliberately ignored, that the
ops turn the source shapes into the target shapes, and that dtypes can be cast. Every problem found is reported
at once, in one `PlanError` whose class is the specific one when all problems are of one kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import (
    DtypeError,
    DuplicateTargetError,
    MissingSourceError,
    PlanError,
    ShapeMismatchError,
    UnusedSourceError,
)
from .keys import natural_key, summarize_keys
from .ops import Op, OpShapeError, Shape
from .readers.base import Reader
from .spec import Rule, Spec
from .table import ModelTable, TensorInfo, model_table

__all__ = ["Unit", "Plan", "plan"]


@dataclass(frozen=True, slots=True)
class Unit:
    """One application of one rule: read `sources`, run `ops`, write `targets` (a fusion unit)."""

    rule_index: int
    bindings: tuple[tuple[str, int], ...]
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    ops: tuple[Op, ...]
    source_infos: tuple[TensorInfo, ...]
    target_infos: tuple[TensorInfo, ...]

    @property
    def source_bytes(self) -> int:
        return sum(i.nbytes for i in self.source_infos)


@dataclass(frozen=True, slots=True)
class Plan:
    """A clean plan: materialising it writes every target exactly once.

    Attributes:
        spec: the spec it came from.
        units: fusion units in source-file order.
        ignored: (source key, reason) of every source key deliberately not read.
        kept: (target key, reason) of every target left as the model built it.
        aliases: tied target name → the canonical name the plan writes.
        source_name, target_name: for messages and reports.
    """

    spec: Spec
    units: tuple[Unit, ...]
    ignored: tuple[tuple[str, str], ...]
    kept: tuple[tuple[str, str], ...]
    aliases: Mapping[str, str] = field(default_factory=dict)
    source_name: str = "source"
    target_name: str = "target"

    @property
    def targets(self) -> list[str]:
        return [t for u in self.units for t in u.targets]

    @property
    def source_bytes(self) -> int:
        return sum(u.source_bytes for u in self.units)

    def describe(self) -> str:
        """The resolved plan as a table, one row per rule, layers compressed."""
        lines = [f"plan {self.spec.name!r}: {self.source_name} -> {self.target_name}"]
        by_rule: dict[int, list[Unit]] = {}
        for u in self.units:
            by_rule.setdefault(u.rule_index, []).append(u)
        for i, units in sorted(by_rule.items()):
            ops = ", ".join(str(o) for o in units[0].ops) or "rename"
            src = ", ".join(
                summarize_keys([u.sources[j] for u in units], limit=2) for j in range(len(units[0].sources))
            )
            dst = ", ".join(
                summarize_keys([u.targets[j] for u in units], limit=2) for j in range(len(units[0].targets))
            )
            shapes = " ".join(str(list(i.shape)) for i in units[0].source_infos)
            out = " ".join(str(list(i.shape)) for i in units[0].target_infos)
            lines.append(f"  {i:>3}  {src}  --{ops}-->  {dst}   {shapes} -> {out}  x{len(units)}")
        if self.ignored:
            lines.append(f"  ignored  {summarize_keys(k for k, _ in self.ignored)}")
        if self.kept:
            lines.append(f"  kept     {summarize_keys(k for k, _ in self.kept)}")
        return "\n".join(lines)


# --- problems ------------------------------------------------------------------------------------------------------

_KINDS: dict[type[PlanError], tuple[str, str]] = {
    MissingSourceError: (
        "leaves {n} of {target} without a source",
        "add a rule that produces them, or keep=[...] them with a reason if the model computes them itself",
    ),
    UnusedSourceError: (
        "uses {n} of {source} in no rule",
        "map them with a rule, or ignore=[...] them with a reason if they are deliberately dropped",
    ),
    ShapeMismatchError: (
        "would give {n} of {target} the wrong shape",
        "the checkpoint and the model config disagree; build the model from the checkpoint's config",
    ),
    DtypeError: (
        "cannot cast {n} of {source} to the target dtype",
        "integer, boolean and floating-point tensors do not convert into each other; check which key the rule maps",
    ),
    DuplicateTargetError: (
        "writes {n} of {target} more than once",
        "make the rules' targets disjoint: every target must come from exactly one source group",
    ),
}


def _tensors(n: int) -> str:
    return f"{n} tensor" if n == 1 else f"{n} tensors"


class _Problems:
    def __init__(self) -> None:
        self.details: dict[type[PlanError], list[str]] = {}
        self.counts: dict[type[PlanError], int] = {}
        self.groups: dict[tuple, tuple[type[PlanError], str, list[tuple[str, ...]]]] = {}

    def add(self, kind: type[PlanError], count: int, line: str) -> None:
        self.details.setdefault(kind, []).append(line)
        self.counts[kind] = self.counts.get(kind, 0) + count

    def add_grouped(self, kind: type[PlanError], count: int, template: str, keys: tuple[str, ...]) -> None:
        """One line per `template`; its ``{0}``, ``{1}``... are the keys of every occurrence, range-compressed."""
        entry = self.groups.setdefault((kind, template), (kind, template, []))
        entry[2].append(keys)
        self.counts[kind] = self.counts.get(kind, 0) + count

    def _render_groups(self) -> None:
        for kind, template, occurrences in self.groups.values():
            slots = [summarize_keys(column, limit=3) for column in zip(*occurrences)]
            self.details.setdefault(kind, []).append(template.format(*slots))
        self.groups.clear()

    def raise_if_any(self, spec: str, source: str, target: str) -> None:
        self._render_groups()
        if not self.details:
            return
        kinds = [k for k in _KINDS if k in self.details]
        phrases = {k: _KINDS[k][0].format(n=_tensors(self.counts[k]), source=source, target=target) for k in kinds}
        if len(kinds) == 1:
            (kind,) = kinds
            lines = [f"spec {spec!r} {phrases[kind]}", *self.details[kind], f"  hint: {_KINDS[kind][1]}"]
            raise kind("\n".join(lines), tuple(self.details[kind]))
        lines = [f"spec {spec!r} does not fit {target} ({len(kinds)} kinds of problem)"]
        for k in kinds:
            lines += [f"- {phrases[k]}", *("  " + d for d in self.details[k])]
        lines += [f"  hint: {_KINDS[k][1]}" for k in kinds]
        raise PlanError("\n".join(lines), tuple(d for k in kinds for d in self.details[k]))


# --- planning ------------------------------------------------------------------------------------------------------


def castable(src: torch.dtype, dst: torch.dtype) -> bool:
    """Whether a tensor of `src` can become `dst` without changing what it means."""
    if src == dst:
        return True
    if src.is_floating_point and dst.is_floating_point:
        return True
    if src.is_complex and dst.is_complex:
        return True
    ints = src not in (torch.bool,) and not src.is_floating_point and not src.is_complex
    return ints and dst not in (torch.bool,) and not dst.is_floating_point and not dst.is_complex


def _source_table(source: Reader | Mapping[str, TensorInfo]) -> tuple[dict[str, TensorInfo], str]:
    if isinstance(source, Reader):
        return source.table(), source.path
    return dict(source), "source"


def _target_table(target: nn.Module | ModelTable | None) -> ModelTable | None:
    if target is None or isinstance(target, ModelTable):
        return target
    return model_table(target)


def plan(
    spec: Spec,
    source: Reader | Mapping[str, TensorInfo],
    target: nn.Module | ModelTable | None,
    *,
    dims: Mapping[str, int] | None = None,
    dtype: torch.dtype | None = None,
) -> Plan:
    """Resolve `spec` from `source`'s headers onto `target`, reading no tensor data.

    Args:
        spec: the family's rules.
        source: a reader (or a key → `TensorInfo` table).
        target: the model (typically built on `meta`), its `ModelTable`, or None to accept whatever the rules
            produce (export: the foreign side has no table to check against).
        dims: numbers for the named sizes the ops use (``{"q_dim": 4096, ...}``).
        dtype: the floating-point dtype targets will get (default: each target's own).

    Returns:
        A clean `Plan`.

    Raises:
        PlanError: (or the one specific subclass) listing every problem at once.
    """
    src_table, source_name = _source_table(source)
    table = _target_table(target)
    target_name = table.name if table else "the export"
    problems = _Problems()

    ignored, groups, unused = _match_sources(spec, src_table)
    if unused:
        problems.add(UnusedSourceError, len(unused), f"  unused:    {summarize_keys(unused)}")

    order = {k: i for i, k in enumerate(src_table)}
    bound: dict[int, tuple[Op, ...]] = {}
    units: list[Unit] = []
    claimed: set[str] = set()  # targets of units that failed a check: reported there, not again as missing
    incomplete: dict[int, list[str]] = {}
    for (ri, bindings), found in sorted(groups.items(), key=lambda g: min(order[k] for k in g[1].values())):
        r = spec.rules[ri]
        values = dict(bindings)
        if len(found) < len(r.sources):
            absent = [p.format(values) for i, p in enumerate(r.sources) if i not in found]
            incomplete.setdefault(ri, []).extend(a for a in absent if a is not None)
            continue
        if ri not in bound:
            bound[ri] = tuple(op.bind(dims or {}) for op in r.ops)
        unit = _resolve_unit(spec, ri, r, bindings, found, bound[ri], src_table, table, dtype, problems, claimed)
        if unit is not None:
            units.append(unit)
    for ri, absent in incomplete.items():
        problems.add(MissingSourceError, 0, f"  rule {ri} lacks: {summarize_keys(absent)}  (rule: {spec.rules[ri]})")

    _check_duplicates(units, problems)
    kept: list[tuple[str, str]] = []
    if table is not None:
        written = {t for u in units for t in u.targets}
        missing = []
        for key in table.tensors:
            if key in written or key in claimed:
                continue
            reason = next((k.reason for k in spec.keep if k.pattern.match(key) is not None), None)
            if reason is None:
                missing.append(key)
            else:
                kept.append((key, reason))
        if missing:
            problems.add(MissingSourceError, len(missing), f"  missing:   {summarize_keys(missing)}")
    problems.raise_if_any(spec.name, source_name, target_name)
    return Plan(spec, tuple(units), tuple(ignored), tuple(kept), dict(table.aliases) if table else {},
                source_name, target_name)  # fmt: skip


def _match_sources(
    spec: Spec, src_table: Mapping[str, TensorInfo]
) -> tuple[list[tuple[str, str]], dict[tuple[int, tuple[tuple[str, int], ...]], dict[int, str]], list[str]]:
    ignored: list[tuple[str, str]] = []
    groups: dict[tuple[int, tuple[tuple[str, int], ...]], dict[int, str]] = {}
    unused: list[str] = []
    for key in src_table:
        reason = next((g.reason for g in spec.ignore if g.pattern.match(key) is not None), None)
        if reason is not None:
            ignored.append((key, reason))
            continue
        hit = _find_rule(spec.rules, key)
        if hit is None:
            unused.append(key)
            continue
        ri, si, bindings = hit
        groups.setdefault((ri, tuple(sorted(bindings.items()))), {})[si] = key
    return ignored, groups, sorted(unused, key=natural_key)


def _find_rule(rules: tuple[Rule, ...], key: str) -> tuple[int, int, dict[str, int]] | None:
    for ri, r in enumerate(rules):
        for si, pattern in enumerate(r.sources):
            bindings = pattern.match(key)
            if bindings is not None:
                return ri, si, bindings
    return None


def _resolve_unit(
    spec: Spec,
    ri: int,
    r: Rule,
    bindings: tuple[tuple[str, int], ...],
    found: dict[int, str],
    ops: tuple[Op, ...],
    src_table: Mapping[str, TensorInfo],
    table: ModelTable | None,
    dtype: torch.dtype | None,
    problems: _Problems,
    claimed: set[str],
) -> Unit | None:
    sources = tuple(found[i] for i in range(len(r.sources)))
    infos = tuple(src_table[k] for k in sources)
    names = [p.format(dict(bindings)) for p in r.targets]
    if any(n is None for n in names) or (table is not None and not all(_canonical(table, n) for n in names)):
        shown = tuple(n if n is not None else "(a negative index)" for n in names)
        arrows = f"{', '.join(f'{{{i}}}' for i in range(len(sources)))} -> " + ", ".join(
            f"{{{len(sources) + i}}}" for i in range(len(shown))
        )
        where = table.name if table else "the model"
        problems.add_grouped(
            UnusedSourceError, len(sources), f"  no target: {arrows} (not in {where})", (*sources, *shown)
        )
        return None
    targets = tuple(_canonical(table, n) if table else n for n in names)  # type: ignore[misc]
    claimed.update(targets)  # type: ignore[arg-type]
    shapes: tuple[Shape, ...] = tuple(i.shape for i in infos)
    try:
        for op in ops:
            shapes = op.out_shapes(shapes)
    except OpShapeError as e:
        inputs = ", ".join(f"{{{n}}} {list(i.shape)}" for n, i in enumerate(infos))
        problems.add_grouped(
            ShapeMismatchError, len(targets), f"  rule {ri} cannot run on {inputs}: {_braces(e)}", sources
        )
        return None
    if table is None:
        src_dtype = infos[0].dtype
        tinfos = tuple(
            TensorInfo(s, dtype if dtype is not None and src_dtype.is_floating_point else src_dtype) for s in shapes
        )
    else:
        tinfos = tuple(_target_info(table.tensors[t], dtype) for t in targets)  # type: ignore[index]
        wrong = [(t, s, i.shape) for t, s, i in zip(targets, shapes, tinfos) if tuple(s) != tuple(i.shape)]
        if wrong:
            ops_text = ", ".join(str(o) for o in ops) or "rename"
            inputs = ", ".join(f"{{{n + 1}}} {list(i.shape)}" for n, i in enumerate(infos))
            for t, got, want in wrong:
                problems.add_grouped(
                    ShapeMismatchError, 1,
                    f"  rule {ri} ({_braces(ops_text)}) would produce {list(got)} for {{0}}, but the model has "
                    f"{list(want)}\n    sources: {inputs}",
                    (t, *sources),
                )  # fmt: skip
            return None
    bad = [(k, i.dtype) for k, i in zip(sources, infos) if not all(castable(i.dtype, t.dtype) for t in tinfos)]
    if bad:
        want = ", ".join(sorted({_dtype(t.dtype) for t in tinfos}))
        for k, d in bad:
            problems.add_grouped(
                DtypeError, 1, f"  {{0}}: {_dtype(d)} cannot become {want} ({{1}})", (k, ", ".join(targets))
            )  # type: ignore[arg-type]
        return None
    return Unit(ri, bindings, sources, targets, ops, infos, tinfos)  # type: ignore[arg-type]


def _braces(text: object) -> str:
    return str(text).replace("{", "{{").replace("}", "}}")


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _canonical(table: ModelTable | None, name: str) -> str | None:
    if table is None:
        return name
    name = table.aliases.get(name, name)
    return name if name in table.tensors else None


def _target_info(info: TensorInfo, dtype: torch.dtype | None) -> TensorInfo:
    if dtype is not None and info.dtype.is_floating_point:
        return TensorInfo(info.shape, dtype)
    return info


def _check_duplicates(units: list[Unit], problems: _Problems) -> None:
    first: dict[str, Unit] = {}
    for u in units:
        for t in u.targets:
            if t in first:
                other = first[t]
                problems.add(
                    DuplicateTargetError, 1,
                    f"  {t}: from rule {other.rule_index} ({', '.join(other.sources)}) and rule {u.rule_index} ({', '.join(u.sources)})",
                )  # fmt: skip
            else:
                first[t] = u
