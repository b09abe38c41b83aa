"""Key patterns with named digit placeholders, natural sorting, and range compression for messages.

A pattern is literal text with placeholders in braces: ``model.layers.{layer}.mlp.up_proj.weight``. A placeholder
matches a non-negative integer written without leading zeros (``0``, ``7``, ``31``; never ``07``) and binds it to
its name. A placeholder may carry a constant offset, ``{layer+1}`` or ``{layer-1}``: the key's number is then the
bound value plus the offset. That is how BERT's post-LN ``layer.{layer}.output.LayerNorm`` becomes SAT's
``layers.{layer+1}.input_layernorm``, and how the reverse direction reads it back.

Nothing else is special: dots, brackets and regex characters in the literal text are matched literally.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import SpecError

__all__ = ["KeyPattern", "Slot", "compress_keys", "natural_key", "summarize_keys"]

_SLOT = re.compile(r"\{([A-Za-z_][A-Za-z_0-9]*)([+-]\d+)?\}")
_NUMBER = r"(0|[1-9][0-9]*)"


@dataclass(frozen=True, slots=True)
class Slot:
    """One placeholder occurrence: ``{name}`` or ``{name+offset}``."""

    name: str
    offset: int = 0

    def __str__(self) -> str:
        if self.offset == 0:
            return f"{{{self.name}}}"
        return f"{{{self.name}{self.offset:+d}}}"


@dataclass(frozen=True, slots=True)
class KeyPattern:
    """A parsed key pattern. Build with ``KeyPattern.parse(text)``.

    Attributes:
        text: the pattern as written.
        parts: literal strings and `Slot`s, in order.
    """

    text: str
    parts: tuple[str | Slot, ...]
    _regex: re.Pattern[str] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> KeyPattern:
        if not isinstance(text, str) or not text:
            raise SpecError(f"key pattern must be a non-empty string, got {text!r}")
        parts: list[str | Slot] = []
        pos = 0
        for m in _SLOT.finditer(text):
            if m.start() > pos:
                parts.append(text[pos : m.start()])
            parts.append(Slot(m.group(1), int(m.group(2) or 0)))
            pos = m.end()
        if pos < len(text):
            parts.append(text[pos:])
        for part in parts:
            if isinstance(part, str) and ("{" in part or "}" in part):
                raise SpecError(
                    f"key pattern {text!r} has a malformed placeholder near {part!r}\n"
                    "  hint: placeholders are {name}, {name+1} or {name-1}, with name a Python identifier"
                )
        for a, b in zip(parts, parts[1:]):
            if isinstance(a, Slot) and isinstance(b, Slot):
                raise SpecError(
                    f"key pattern {text!r} has two adjacent placeholders {a}{b}; their digits could split either way"
                )
        regex = "".join(_NUMBER if isinstance(p, Slot) else re.escape(p) for p in parts)
        return cls(text, tuple(parts), re.compile(regex))

    @property
    def slots(self) -> tuple[Slot, ...]:
        return tuple(p for p in self.parts if isinstance(p, Slot))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(s.name for s in self.slots)

    def match(self, key: str) -> dict[str, int] | None:
        """The placeholder bindings if `key` matches, else None (also when one name would bind two values)."""
        m = self._regex.fullmatch(key)
        if m is None:
            return None
        bound: dict[str, int] = {}
        for slot, digits in zip(self.slots, m.groups()):
            value = int(digits) - slot.offset
            if value < 0 or bound.setdefault(slot.name, value) != value:
                return None
        return bound

    def format(self, bindings: Mapping[str, int]) -> str | None:
        """The key for these bindings, or None when an offset makes a number negative."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            if part.name not in bindings:
                raise SpecError(f"key pattern {self.text!r} needs a value for {{{part.name}}}")
            value = bindings[part.name] + part.offset
            if value < 0:
                return None
            out.append(str(value))
        return "".join(out)

    def overlaps(self, other: KeyPattern) -> bool:
        """True if some key matches both patterns; errs towards True.

        Numbers are any digit strings, except that a placeholder with a positive offset (``{expert+1}``: at least 1,
        written without leading zeros) never starts with ``0``. That keeps ``experts.0.w`` and ``experts.{e+1}.w``
        apart, which is how a rule for the first item and a rule for the rest share one key family.
        """
        if not _ends_agree(self.parts, other.parts):
            return False
        return _intersects(_elements(self), _elements(other))

    def __str__(self) -> str:
        return self.text


# --- overlap: product of two tiny automata -------------------------------------------------------------------------
# Elements are literal characters or a placeholder, written as the least number it matches (0, or its positive
# offset). A placeholder matches one or more digits. A state is (index, inside_digits).

_Element = str | int


def _ends_agree(a: tuple[str | Slot, ...], b: tuple[str | Slot, ...]) -> bool:
    """Whether the literal texts before the first and after the last placeholder can begin / end the same key.

    A cheap necessary condition: most pairs of rules in a spec differ there (``q_proj.weight`` / ``k_proj.weight``),
    and checking every pair with the automaton below is the bulk of building a spec.
    """
    heads = [p[0] if isinstance(p[0], str) else "" for p in (a, b)]
    tails = [p[-1] if isinstance(p[-1], str) else "" for p in (a, b)]
    n, m = min(map(len, heads)), min(map(len, tails))
    return heads[0][:n] == heads[1][:n] and (m == 0 or tails[0][-m:] == tails[1][-m:])


def _elements(p: KeyPattern) -> tuple[_Element, ...]:
    out: list[_Element] = []
    for part in p.parts:
        out.extend(part) if isinstance(part, str) else out.append(max(part.offset, 0))
    return tuple(out)


def _step(els: tuple[_Element, ...], state: tuple[int, bool], ch: str) -> set[tuple[int, bool]]:
    nxt: set[tuple[int, bool]] = set()
    for i, inside in _closure(els, state):
        if i < len(els):
            el = els[i]
            if isinstance(el, int):
                # A number of at least 1 has no leading zero, so its first digit is not 0.
                if ch.isdigit() and (inside or el == 0 or ch != "0"):
                    nxt.add((i, True))
            elif el == ch:
                nxt.add((i + 1, False))
    return nxt


def _closure(els: tuple[_Element, ...], state: tuple[int, bool]) -> set[tuple[int, bool]]:
    i, inside = state
    return {state, (i + 1, False)} if inside else {state}


def _accepts(els: tuple[_Element, ...], state: tuple[int, bool]) -> bool:
    return any(i == len(els) for i, _ in _closure(els, state))


def _intersects(a: tuple[_Element, ...], b: tuple[_Element, ...]) -> bool:
    literals = {c for c in a + b if isinstance(c, str)}
    # Digits that no literal uses behave alike, except 0 (see _step): one spare of each kind is enough.
    spare = [next((d for d in digits if d not in literals), None) for digits in ("0", "123456789")]
    alphabet = literals | {d for d in spare if d is not None}
    start = ((0, False), (0, False))
    seen, todo = {start}, [start]
    while todo:
        sa, sb = todo.pop()
        if _accepts(a, sa) and _accepts(b, sb):
            return True
        for ch in alphabet:
            for na in _step(a, sa, ch):
                for nb in _step(b, sb, ch):
                    if (na, nb) not in seen:
                        seen.add((na, nb))
                        todo.append((na, nb))
    return False


# --- sorting and compression for messages --------------------------------------------------------------------------

_DIGITS = re.compile(r"(\d+)")


def natural_key(key: str) -> tuple:
    """Sort key that puts ``layers.2`` before ``layers.10``."""
    return tuple(int(t) if t.isdigit() else t for t in _DIGITS.split(key))


def _render_numbers(values: Iterable[int]) -> str:
    nums = sorted(set(values))
    runs: list[str] = []
    start = prev = nums[0]
    for n in nums[1:] + [None]:  # type: ignore[operator]
        if n is not None and n == prev + 1:
            prev = n
            continue
        runs.append(str(start) if start == prev else f"{start},{prev}" if prev == start + 1 else f"{start}..{prev}")
        if n is not None:
            start = prev = n
    return runs[0] if len(nums) == 1 else "{" + ",".join(runs) + "}"


def compress_keys(keys: Iterable[str]) -> list[str]:
    """Collapse keys that differ only in numbers: ``layers.0.w … layers.31.w`` → ``layers.{0..31}.w``.

    Keys are grouped by their text with every number blanked out; within a group, numbers that vary are rendered as
    sorted ranges. A group whose varying numbers do not form a full product is split on its first varying number, so
    the output never claims a key that is not in the input.
    """
    groups: dict[tuple[str, ...], list[tuple[int, ...]]] = {}
    for key in keys:
        tokens = _DIGITS.split(key)
        groups.setdefault(tuple(tokens[0::2]), []).append(tuple(int(t) for t in tokens[1::2]))
    out: list[str] = []
    for texts, numbers in groups.items():
        out.extend(_compress_group(texts, sorted(set(numbers))))
    return sorted(out, key=natural_key)


def _compress_group(texts: tuple[str, ...], numbers: list[tuple[int, ...]]) -> list[str]:
    columns = [sorted({n[i] for n in numbers}) for i in range(len(texts) - 1)]
    size = 1
    for col in columns:
        size *= len(col)
    if size == len(numbers):
        rendered = [_render_numbers(col) for col in columns]
        return ["".join(t + (rendered[i] if i < len(rendered) else "") for i, t in enumerate(texts))]
    first = next(i for i, col in enumerate(columns) if len(col) > 1)
    out: list[str] = []
    for value in columns[first]:
        out.extend(_compress_group(texts, [n for n in numbers if n[first] == value]))
    return out


def summarize_keys(keys: Iterable[str], limit: int = 8, sep: str = ", ") -> str:
    """Compressed keys joined by `sep`, at most `limit` entries, then ``… and N more``."""
    lines = compress_keys(keys)
    shown = sep.join(lines[:limit])
    if len(lines) > limit:
        shown += f"{sep}... and {len(lines) - limit} more"
    return shown
