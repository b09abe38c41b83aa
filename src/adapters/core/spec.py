"""Rules and specs: a family's mapping written as data, validated when it is built.

A rule reads in the direction the data flows: source key pattern(s) → target key pattern(s), then the ops::

    rule(["model.layers.{layer}.self_attn.q_proj.weight",
          "model.layers.{layer}.self_attn.k_proj.weight",
          "model.layers.{layer}.self_attn.v_proj.weight"],
         "transformer.layers.{layer}.attention.query_key_value.weight",
         Concat(0, sizes=("q_dim", "kv_dim", "kv_dim")))

Construction checks: every pattern of a rule uses the same placeholder names; the ops turn the number of sources
into the number of targets; no two rules can match one source key or write one target key; every ignore entry
has a reason. An `ignore` entry wins over a rule that matches the same key: that is how one layer's unused copy
(``blocks.0.att.v0``) is dropped while ``blocks.{layer}.att.v0`` maps the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from .errors import SpecError
from .keys import KeyPattern
from .ops import Elementwise, Op, Split

__all__ = ["Rule", "Ignore", "Spec", "rule", "ignore"]


def _patterns(value: str | Sequence[str], side: str) -> tuple[KeyPattern, ...]:
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise SpecError(f"a rule needs at least one {side} pattern")
    return tuple(KeyPattern.parse(v) for v in items)


@dataclass(frozen=True, slots=True)
class Rule:
    """Source patterns → target patterns through `ops` (applied left to right; no ops means a rename)."""

    sources: tuple[KeyPattern, ...]
    targets: tuple[KeyPattern, ...]
    ops: tuple[Op, ...] = ()

    def __post_init__(self) -> None:
        names = self.sources[0].names
        for p in self.sources + self.targets:
            if p.names != names:
                only = sorted(p.names ^ names)
                raise SpecError(
                    f'rule "{self}" uses placeholder {{{only[0]}}} on one side only; '
                    "every pattern of a rule must use the same placeholders"
                )
        for side, pats in (("source", self.sources), ("target", self.targets)):
            for i, a in enumerate(pats):
                for b in pats[i + 1 :]:
                    if a.overlaps(b):
                        raise SpecError(f'rule "{self}" has two {side} patterns that match the same key: {a} and {b}')
        object.__setattr__(self, "ops", self._complete_ops())

    def _complete_ops(self) -> tuple[Op, ...]:
        count, ops = len(self.sources), list(self.ops)
        for i, op in enumerate(ops):
            if not isinstance(op, Op):
                raise SpecError(f'rule "{self}": {op!r} is not an op')
            n = op.count(count)
            if n is None:
                # An unsized Split takes its part count from the targets, if only elementwise ops follow it.
                if not (isinstance(op, Split) and all(isinstance(o, Elementwise) for o in ops[i + 1 :])):
                    raise SpecError(f'rule "{self}": cannot tell how many parts {op} makes; give it sizes or parts')
                ops[i], n = replace(op, parts=len(self.targets)), len(self.targets)
            count = n
        if count != len(self.targets):
            raise SpecError(
                f'rule "{self}" turns {len(self.sources)} source(s) into {count} tensor(s) but names '
                f"{len(self.targets)} target(s)"
            )
        return tuple(ops)

    @property
    def placeholders(self) -> frozenset[str]:
        return self.sources[0].names

    def inverse(self) -> Rule:
        """The rule that maps targets back to sources (for export)."""
        return Rule(self.targets, self.sources, tuple(op.inverse() for op in reversed(self.ops)))

    def __str__(self) -> str:
        src = ", ".join(p.text for p in self.sources)
        dst = ", ".join(p.text for p in self.targets)
        ops = " [" + ", ".join(str(o) for o in self.ops) + "]" if self.ops else ""
        return f"{src} -> {dst}{ops}"


@dataclass(frozen=True, slots=True)
class Ignore:
    """A key pattern deliberately left unmapped, with the reason."""

    pattern: KeyPattern
    reason: str

    def __post_init__(self) -> None:
        if not self.reason or not self.reason.strip():
            raise SpecError(f"ignore entry {self.pattern} needs a reason")


def rule(source: str | Sequence[str], target: str | Sequence[str], *ops: Op) -> Rule:
    """Build a `Rule`: ``rule(src, dst)`` renames, ``rule([q, k, v], qkv, Concat(0))`` merges."""
    return Rule(_patterns(source, "source"), _patterns(target, "target"), tuple(ops))


def ignore(pattern: str, reason: str) -> Ignore:
    """Build an `Ignore` entry: ``ignore("model.layers.{layer}.self_attn.rotary_emb.inv_freq", "recomputed")``."""
    return Ignore(KeyPattern.parse(pattern), reason)


@dataclass(frozen=True, slots=True)
class Spec:
    """A family's whole mapping.

    Attributes:
        name: ``"<source format>-><target format>"``, used in every message.
        rules: the rules, one per source→target relation.
        ignore: source keys deliberately not loaded, each with its reason.
        keep: target keys deliberately left as the model built them (recomputed buffers such as ``inv_freq``).
    """

    name: str
    rules: tuple[Rule, ...]
    ignore: tuple[Ignore, ...] = ()
    keep: tuple[Ignore, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "ignore", tuple(self.ignore))
        object.__setattr__(self, "keep", tuple(self.keep))
        if not self.rules:
            raise SpecError(f"spec {self.name!r} has no rules")
        for side in ("sources", "targets"):
            seen: list[tuple[int, KeyPattern]] = []
            for i, r in enumerate(self.rules):
                for p in getattr(r, side):
                    for j, q in seen:
                        if j != i and p.overlaps(q):
                            raise SpecError(
                                f"spec {self.name!r}: rules {j} and {i} both match {side[:-1]} keys like {q} / {p}\n"
                                f"  rule {j}: {self.rules[j]}\n  rule {i}: {self.rules[i]}\n"
                                "  hint: make the patterns disjoint; a key must belong to exactly one rule"
                            )
                    seen.append((i, p))
        for k in self.keep:
            for i, r in enumerate(self.rules):
                if any(k.pattern.overlaps(t) for t in r.targets):
                    raise SpecError(f"spec {self.name!r}: keep entry {k.pattern} overlaps the targets of rule {i}: {r}")

    def inverse(self) -> Spec:
        """The spec of the opposite direction: rules inverted, `ignore` and `keep` swapped.

        An ignore entry that a rule also matches (``blocks.0.att.v0`` against ``blocks.{layer}.att.v0``) cannot
        become a keep entry of the inverse, whose targets that rule writes; it is simply not produced.
        """
        rules = tuple(r.inverse() for r in self.rules)
        keep = tuple(g for g in self.ignore if not any(g.pattern.overlaps(t) for r in rules for t in r.targets))
        return Spec(f"{self.name} (inverse)", rules, self.keep, keep)

    def renamed(self, name: str) -> Spec:
        """The same mapping under another name (a family that stores the same layout)."""
        return Spec(name, self.rules, self.ignore, self.keep)

    def describe(self) -> str:
        """The rules as a numbered table, for review."""
        lines = [f"spec {self.name!r}: {len(self.rules)} rules"]
        lines += [f"  {i:>3}  {r}" for i, r in enumerate(self.rules)]
        lines += [f"  ignore  {g.pattern}  ({g.reason})" for g in self.ignore]
        lines += [f"  keep    {g.pattern}  ({g.reason})" for g in self.keep]
        return "\n".join(lines)
