"""Fuzzing the readers: damaged safetensors headers and .pth files give a typed error or exactly the file's data.

Bounded for CI (200 examples per format, no deadline); ``benchmarks/fuzz_readers.py N`` runs the same strategies
for as long as one likes.
"""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from mutations import check, pth_mutants, pth_seed, safetensors_mutants, safetensors_seed

CI = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow],
              database=None)  # fmt: skip

ST, PTH = safetensors_seed(), pth_seed()


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


@pytest.fixture(autouse=True)
def alarm():
    def expired(signum, frame):
        raise TimeoutError("a fuzz run took longer than 300 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(300)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@CI
@given(data=safetensors_mutants(ST))
def test_damaged_safetensors(folder, data):
    check(folder / "m.safetensors", data, ST)


@CI
@given(data=pth_mutants(PTH))
def test_damaged_pth(folder, data):
    check(folder / "m.pth", data, PTH)


def test_the_seeds_themselves_read_back(folder):
    assert check(folder / "s.safetensors", safetensors_seed()) == "read"
    assert check(folder / "s.pth", pth_seed()) == "read"
