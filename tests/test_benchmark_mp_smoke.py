"""The model-parallel benchmark runs end to end at a tiny size with 2 ranks; its timings are not asserted.

The harness forks each job's ranks from one server that imports torch and SAT once, so the 4 jobs take about 12 s.
What is asserted is that it reports every route for every rank and that the per-rank byte figures add up (from
its ``--json``): SAT's rank 0 reads the whole checkpoint and rank 1 receives exactly what rank 1 reads itself on the
adapter route (its half plus the replicated norms); every rank of ``repl-read`` reads the whole checkpoint, and on
``repl-bcast`` rank 1 receives all of it. The harness itself checks that both model routes give each rank the same
parameters (by digest) and exits non-zero otherwise.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sat")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "model_parallel.py"
ROUTES = ["adapter", "sat-rank0", "repl-read", "repl-bcast"]
NUMBER = re.compile(r"^\d+(\.\d+)?(e[+-]\d+)?$")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


@pytest.mark.slow
def test_two_ranks_report_every_route_with_consistent_bytes(tmp_path):
    out, raw = tmp_path / "mp.md", tmp_path / "mp.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--size", "tiny", "--ways", "2", "--repeats", "1", "--warmup", "0",
                           "--workdir", str(tmp_path / "work"), "--out", str(out), "--json", str(raw)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = out.read_text().splitlines()
    assert any(line.startswith("- machine: ") for line in lines)
    rows = [_cells(line) for line in lines if line.startswith("| warm | 2 | ") and len(_cells(line)) == 9]
    assert [(row[2], row[3]) for row in rows] == [(route, rank) for route in ROUTES for rank in ("0", "1")]
    assert all(NUMBER.match(cell) for row in rows for cell in row[4:]), rows

    figures = json.loads(raw.read_text())
    total = figures["bytes"]
    ranks = {job["route"]: [(r["read"], r["received"]) for r in job["ranks"]] for job in figures["jobs"]}
    assert list(ranks) == ROUTES
    (a0, _), (a1, _) = ranks["adapter"]
    assert a0 == a1 and total / 2 < a0 <= 1.01 * total / 2  # half, plus the replicated norms
    assert ranks["adapter"] == [(a0, 0), (a1, 0)]
    assert ranks["sat-rank0"] == [(total, 0), (0, a1)]
    assert ranks["repl-read"] == [(total, 0), (total, 0)]
    assert ranks["repl-bcast"] == [(total, 0), (0, total)]
