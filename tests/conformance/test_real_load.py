"""The small HF releases (<= 1 GiB) load for real from their full-size files; decoders run one forward.

The data are holes (zeros), so this checks the streaming path at published shapes (every used byte read once,
placed into a model built from the published config), not numerics: those are proved against transformers and
BlinkDL's `rwkv` at small sizes elsewhere.
"""

from __future__ import annotations

import os

import pytest
import torch

from adapters.cli.plans import sat_plan
from adapters.core import open_source
from published_cases import CASES, KNOWN_FAILURES, RWKV7, Case
from sparse import write_blinkdl_zeros, write_sparse_hf

SMALL = 1024**3
DECODERS = ("gpt2",)  # families whose SAT forward is (input_ids, position_ids, attention_mask) -> logits first

# RWKV-7 is left out by default: writing the file for real and FLA's CPU forward take 28 s (0.1B) and 59 s (0.4B);
# `_load_blinkdl` passes for both (run with CONFORMANCE_RWKV7_LOAD=1).
WITH_RWKV7 = os.environ.get("CONFORMANCE_RWKV7_LOAD") == "1"
PARAMS = [pytest.param(c, id=c.id) for c in CASES if c.id not in KNOWN_FAILURES and c.nbytes <= SMALL
          and (WITH_RWKV7 or c.family != RWKV7)]  # fmt: skip


def _used_bytes(path, table) -> int:
    """Bytes of the tensors the plan reads: all but the deliberately ignored ones."""
    with open_source(path) as reader:
        _, plan = sat_plan(path, reader)
    ignored = {key for key, _ in plan.ignored}
    return sum(info.nbytes for key, info in table.items() if key not in ignored)


def _ids(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (1, 8), generator=torch.Generator().manual_seed(0))


def _load_hf(case: Case, tmp_path) -> None:
    from adapters.sat.from_hf import from_hf

    path = write_sparse_hf(tmp_path, case.config_file, case.tensors())
    with open_source(path) as reader:
        table = reader.table()
    model, args = from_hf(None, path, device="cpu", dtype=torch.float32, progress=False)
    assert model.adapters_load_report.bytes_read == _used_bytes(path, table)
    if case.family in DECODERS:
        ids = _ids(args.vocab_size)
        mask = torch.ones(1, 1, 8, 8).tril()
        with torch.no_grad():
            logits = model(input_ids=ids, position_ids=torch.arange(8)[None], attention_mask=mask)[0]
        assert logits.shape == (1, 8, args.vocab_size) and bool(torch.isfinite(logits).all())


def _load_blinkdl(case: Case, tmp_path) -> None:
    from adapters.fla import from_blinkdl

    path = write_blinkdl_zeros(tmp_path / "model.pth", case.tensors())
    try:
        model = from_blinkdl(path, dtype=torch.float32, progress=False)
        with torch.no_grad():
            logits = model(_ids(case.config["vocab_size"])).logits
        assert logits.shape == (1, 8, case.config["vocab_size"]) and bool(torch.isfinite(logits).all())
    finally:
        path.unlink()


@pytest.mark.slow
@pytest.mark.parametrize("case", PARAMS)
def test_small_release_loads_for_real(case, tmp_path):
    (_load_blinkdl if case.family == RWKV7 else _load_hf)(case, tmp_path)
