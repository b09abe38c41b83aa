"""The load report: what was read, what was written, how long it took."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LoadReport", "RuleSummary"]


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


@dataclass(frozen=True, slots=True)
class RuleSummary:
    """One rule's share of a load."""

    index: int
    rule: str
    units: int
    bytes: int


@dataclass(frozen=True, slots=True)
class LoadReport:
    """Counts, bytes, time and a per-rule summary of one load. `str(report)` renders it as a table."""

    spec: str
    source: str
    target: str
    tensors_written: int
    tensors_read: int
    ignored: int
    kept: int
    bytes_read: int
    seconds: float
    device: str
    dtype: str
    rules: tuple[RuleSummary, ...]

    def __str__(self) -> str:
        rate = self.bytes_read / self.seconds / 2**30 if self.seconds > 0 else 0.0
        lines = [
            f"loaded {self.source} into {self.target} with spec {self.spec!r}",
            f"  wrote {self.tensors_written} tensors from {self.tensors_read} source tensors "
            f"({self.ignored} ignored, {self.kept} kept as built) on {self.device} as {self.dtype}",
            f"  read {_size(self.bytes_read)} in {self.seconds:.3f} s ({rate:.2f} GiB/s)",
            "  rule  units      bytes  mapping",
        ]
        lines += [f"  {r.index:>4}  {r.units:>5}  {_size(r.bytes):>9}  {r.rule}" for r in self.rules]
        return "\n".join(lines)
