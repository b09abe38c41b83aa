"""Published configs at full size: `adapters inspect` and the hook's plan are clean and read no tensor data.

Each case writes the release's checkpoint as holes (`sparse.py`: real headers, names, shapes, dtypes and shards; no
data), then runs ``adapters inspect PATH --json`` in-process and the plan the load hook builds (`sat_plan` /
`blinkdl_plan`: the family, its args, the SAT class on meta, the spec, `plan`). Every reader opened on the way is
recorded; their byte and tensor counters must stay at zero. Cases come from the registries (`published_cases`):
a registered family without a published config fails `test_every_family_has_a_published_config`.

Known failures are strict xfails that must fail for the known reason (`KnownFailure`), so a fix turns them red.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.cli import main
from adapters.cli.plans import blinkdl_plan, sat_plan
from adapters.core import AdapterError, open_source
from adapters.core.readers import SafetensorsReader, TorchReader
from published_cases import CASES, KNOWN_FAILURES, RWKV7, RWKV7_MAX_BYTES, Case, registered_families
from sparse import write_blinkdl_zeros, write_sparse_hf

# Registered families whose published config.json could not be found (see configs/SOURCES.md).
NOT_FOUND = {"glm": "THUDM/glm-4-9b-chat-hf", "glm4v": "THUDM/glm-4v-9b", "cogvlm": "THUDM/cogvlm-*-hf",
             "cogagent": "THUDM/cogagent-*-hf"}  # fmt: skip


class KnownFailure(AssertionError):
    """The case failed with the message `KNOWN_FAILURES` expects."""


def _marks(case: Case) -> list:
    if case.id in KNOWN_FAILURES:
        return [pytest.mark.xfail(strict=True, raises=KnownFailure, reason=KNOWN_FAILURES[case.id][0])]
    return []


# BlinkDL files are written for real: sizes above RWKV7_MAX_BYTES are kept as data only (see sparse.py).
PARAMS = [pytest.param(case, id=case.id, marks=_marks(case)) for case in CASES
          if case.family != RWKV7 or case.nbytes <= RWKV7_MAX_BYTES]  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints() -> Iterator[dict[str, Path]]:
    """Checkpoints written so far, by case id; the real BlinkDL files (hundreds of MB) are removed afterwards."""
    written: dict[str, Path] = {}
    yield written
    for path in written.values():
        if path.is_file():
            path.unlink()


def _checkpoint(case: Case, checkpoints: dict[str, Path], tmp_path_factory) -> Path:
    """The case's checkpoint, written once per module: an HF folder of holes, or a real BlinkDL ``.pth``."""
    if case.id not in checkpoints:
        out = tmp_path_factory.mktemp(case.id.replace("/", "-"))
        if case.family == RWKV7:
            checkpoints[case.id] = write_blinkdl_zeros(out / f"{case.config_file.stem}.pth", case.tensors())
        else:
            checkpoints[case.id] = write_sparse_hf(out, case.config_file, case.tensors())
    return checkpoints[case.id]


@pytest.fixture
def opened(monkeypatch) -> list:
    """Every file reader constructed during the test (sharded readers hold one per shard)."""
    readers: list = []
    for cls in (SafetensorsReader, TorchReader):
        init = cls.__init__

        def record(self, *args, _init=init, **kwargs):
            _init(self, *args, **kwargs)
            readers.append(self)

        monkeypatch.setattr(cls, "__init__", record)
    return readers


def _fail(case: Case, path: Path, message: str) -> None:
    """Raise `KnownFailure` when `case` is known to fail with exactly `message`, else a plain assertion error."""
    known = KNOWN_FAILURES.get(case.id)
    if known is not None and message == known[1].format(path=path):
        raise KnownFailure(message)
    raise AssertionError(message)


def _assert_nothing_read(readers: list) -> None:
    assert readers, "no file reader was opened"
    read = {r.path: (r.bytes_read, r.tensors_read) for r in readers if r.bytes_read or r.tensors_read}
    assert not read, f"tensor data was read: {read}"


@pytest.mark.parametrize("case", PARAMS)
def test_inspect_is_clean_and_reads_no_data(case, checkpoints, tmp_path_factory, opened, capsys):
    path = _checkpoint(case, checkpoints, tmp_path_factory)
    opened.clear()
    status = main(["inspect", str(path), "--json"])
    report = json.loads(capsys.readouterr().out)
    if status != 0:
        _fail(case, path, report.get("problems") or report.get("message") or f"exit {status}: {report}")
    assert report["ok"] is True and report["missing"] == [] and report["unused"] == []
    _assert_nothing_read(opened)


@pytest.mark.parametrize("case", PARAMS)
def test_plan_is_clean_and_reads_no_data(case, checkpoints, tmp_path_factory, opened):
    path = _checkpoint(case, checkpoints, tmp_path_factory)
    opened.clear()
    with open_source(path) as reader:
        try:
            _, plan = blinkdl_plan(reader) if case.family == RWKV7 else sat_plan(path, reader)
        except AdapterError as e:
            _fail(case, path, str(e))
        assert plan.units and plan.targets
        assert reader.bytes_read == 0 and reader.tensors_read == 0
    _assert_nothing_read(opened)


@pytest.mark.parametrize(
    "family",
    [pytest.param(f, marks=pytest.mark.xfail(strict=True, reason=f"no published config found for {NOT_FOUND[f]}"))
     if f in NOT_FOUND else f for f in registered_families()],
)  # fmt: skip
def test_every_family_has_a_published_config(family):
    assert [c for c in CASES if c.family == family], f"configs/{family}/ holds no published config.json"
