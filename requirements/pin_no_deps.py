"""Print hashed pins for packages installed with --no-deps: `python pin_no_deps.py NAME==VERSION ...`.

pip-compile resolves dependencies, and SwissArmyTransformer 0.4.12 declares deepspeed, an sdist whose isolated
build pulls a multi-GB CUDA torch; SAT needs none of it for models. `make lock` writes these pins with this script
(pip download, no dependencies, then sha256 of each file pip would install here).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path


def pin(requirement: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", tmp, requirement]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        hashes = sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in Path(tmp).iterdir())
    return " \\\n    ".join([requirement] + [f"--hash=sha256:{h}" for h in hashes])


if __name__ == "__main__":
    print("# Written by `make lock` (requirements/pin_no_deps.py); installed with --no-deps.")
    for requirement in sys.argv[1:]:
        print(pin(requirement))
