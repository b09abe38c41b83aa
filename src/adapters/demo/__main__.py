"""``python -m adapters.demo``: build a tiny sharded foreign checkpoint, plan, load, print the report, export back."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from ..core import empty_weights, export, load, open_source, plan
from ..core.readers import open_source as _open
from .toy import FORMATS, TOY_SPEC, ToyConfig, ToyModel, toy_dims, toy_foreign_state, write_toy_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapters.demo", description=__doc__)
    parser.add_argument(
        "--format", choices=FORMATS, default="sharded", help="foreign format to build (default: sharded safetensors)"
    )
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args(argv)

    config = ToyConfig(layers=args.layers)
    state = toy_foreign_state(config)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_toy_checkpoint(Path(tmp) / "foreign", state, args.format)
        print(f"built a {args.format} toy checkpoint: {len(state)} tensors -> {path.name}\n")
        with empty_weights():
            model = ToyModel(config)
        with _open(path) as reader:
            print(plan(TOY_SPEC, reader, model, dims=toy_dims(config)).describe(), "\n")
        report = load(TOY_SPEC, path, model, dims=toy_dims(config), progress=False)
        print(report, "\n")
        out = export(TOY_SPEC, model, Path(tmp) / "exported.safetensors", dims=toy_dims(config))
        with open_source(out) as back:
            exact = sorted(back.keys()) == sorted(k for k in state if "inv_freq" not in k) and all(
                torch.equal(back.read(k), state[k]) for k in back.keys()
            )
        logits = model(torch.arange(8)[None] % config.vocab)
        print(f"export round trip: {'bit-exact' if exact else 'MISMATCH'}; forward ok, logits {list(logits.shape)}")
        return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
