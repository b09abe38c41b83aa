"""Print where this environment left the lock: `python drift.py LOCK [LOCK ...]` (the canary's first lines)."""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\;]+)", re.M)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(locks: list[str]) -> int:
    locked = {_norm(n): v for lock in locks for n, v in _PIN.findall(Path(lock).read_text())}
    installed = {_norm(d.metadata["Name"]): d.version for d in distributions()}
    moved = [(n, locked[n], installed[n]) for n in sorted(locked) if n in installed and installed[n] != locked[n]]
    added = sorted(set(installed) - set(locked) - {"ckpt-adapters", "pip", "torch"})
    for name, old, new in moved:
        print(f"canary: {name} {old} (lock) -> {new}")
    for name in added:
        print(f"canary: {name} {installed[name]} (not in the lock)")
    print(f"canary: {len(moved)} moved past the lock, {len(added)} new")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
