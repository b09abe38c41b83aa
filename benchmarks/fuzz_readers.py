"""Long fuzz run of the readers: ``python benchmarks/fuzz_readers.py N`` tries N damaged files per format.

The strategies and the oracle are the CI ones (``tests/bad_inputs/mutations.py``): every damaged safetensors file
and .pth must give a typed `AdapterError` or read back exactly the data an independent decoder finds. Prints how
many examples were refused and how many read, per format; exits 1 on the first escape (hypothesis prints the
shrunk example).
"""

from __future__ import annotations

import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "bad_inputs"))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from mutations import check, pth_mutants, pth_seed, safetensors_mutants, safetensors_seed  # noqa: E402


def _recorder(counts: collections.Counter, path: Path, seed: bytes):
    def one(data: bytes) -> None:
        counts[check(path, data, seed)] += 1

    return one


def run(examples: int, seed: int = 0) -> int:
    outcomes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    config = settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name, seed, mutants, file in (("safetensors", safetensors_seed(), safetensors_mutants, "m.safetensors"),
                                          ("pth", pth_seed(), pth_mutants, "m.pth")):  # fmt: skip
            one = config(given(data=mutants(seed))(_recorder(outcomes[name], Path(tmp) / file, seed)))
            start = time.perf_counter()
            try:
                one()
            except Exception as e:  # noqa: BLE001 - report the escape and fail the run
                for sub in getattr(e, "exceptions", [e]):
                    print(f"{name}: ESCAPE {type(sub).__name__}: {sub}")
                return 1
            counts = outcomes[name]
            print(f"{name}: {sum(counts.values())} examples in {time.perf_counter() - start:.1f} s: "
                  f"{counts['refused']} refused with a typed error, {counts['read']} read back exactly")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
