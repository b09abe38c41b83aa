"""``python -m adapters.demo --toy``: build a tiny foreign checkpoint of the toy model, plan, load, print the
report, export back and check the round trip is bit-exact. The engine alone, no host library needed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ..core import empty_weights, export, load, open_source, plan
from .toy import TOY_SPEC, ToyConfig, ToyModel, toy_dims, toy_foreign_state, write_toy_checkpoint

__all__ = ["run_toy"]


def run_toy(fmt: str = "sharded", layers: int = 4) -> int:
    """Run the toy demo in `fmt` (one of `FORMATS`) with `layers` layers; 0 when the export round trip is exact."""
    config = ToyConfig(layers=layers)
    state = toy_foreign_state(config)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_toy_checkpoint(Path(tmp) / "foreign", state, fmt)
        print(f"built a {fmt} toy checkpoint: {len(state)} tensors -> {path.name}\n")
        with empty_weights():
            model = ToyModel(config)
        with open_source(path) as reader:
            print(plan(TOY_SPEC, reader, model, dims=toy_dims(config)).describe(), "\n")
        report = load(TOY_SPEC, path, model, dims=toy_dims(config), progress=False)
        print(report, "\n")
        out = export(TOY_SPEC, model, Path(tmp) / "exported.safetensors", dims=toy_dims(config))
        exact = _same_tensors(out, state)
        logits = model(torch.arange(8)[None] % config.vocab)
        print(f"export round trip: {'bit-exact' if exact else 'MISMATCH'}; forward ok, logits {list(logits.shape)}")
        return 0 if exact else 1


def _same_tensors(exported: Path, state: dict[str, torch.Tensor]) -> bool:
    """Whether the export holds exactly the foreign tensors (inv_freq excepted: the spec ignores it on load)."""
    with open_source(exported) as back:
        keys = sorted(back.keys())
        return keys == sorted(k for k in state if "inv_freq" not in k) and all(
            torch.equal(back.read(k), state[k]) for k in keys
        )
