"""The engine benchmark harness runs end to end at a tiny size (its figures are not asserted: see benchmarks/)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_engine_benchmark_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "engine_load.py"), "--sizes-mb", "20", "--runs", "1",
                          "--out", str(tmp_path / "r.md")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [line for line in (tmp_path / "r.md").read_text().splitlines() if line.startswith("| 0.")]
    assert [r.split(" | ")[1] for r in rows] == ["sharded", "pth"]
