"""``python -m adapters.demo``: the mission on tiny checkpoints it builds itself (no hub).

By default: an HF LLaMA loaded into SAT through ``AutoModel.from_pretrained`` and compared with transformers, then a
BlinkDL RWKV-7 ``.pth`` loaded into FLA, fine-tuned, exported with ``save_blinkdl`` and compared in BlinkDL's `rwkv`.
With ``--toy``: the engine alone on a toy model and foreign format (plan, load, report, bit-exact export).
"""

from __future__ import annotations

import argparse
import sys

from .toy import FORMATS


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` and run the mission demo, or the toy engine demo with ``--toy``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m adapters.demo",
        description="Load tiny HF LLaMA and BlinkDL RWKV-7 checkpoints, built on the spot, into SAT and FLA, and "
        "compare each with its reference (no hub). --toy runs the engine alone on a toy model instead.",
    )
    parser.add_argument("--toy", action="store_true", help="run the toy engine demo instead (no SAT, FLA or rwkv)")
    toy = parser.add_argument_group("toy demo (with --toy)")
    toy.add_argument("--format", choices=FORMATS, help="foreign format to build (default: sharded safetensors)")
    toy.add_argument("--layers", type=int, help="toy model layers (default: 4)")
    args = parser.parse_args(argv)

    if not args.toy:
        if args.format is not None or args.layers is not None:
            parser.error("--format and --layers configure the toy demo; add --toy")
        from .mission import run_mission  # imports SAT, FLA and transformers only when they are used

        return run_mission()
    from .toy_demo import run_toy

    return run_toy(args.format or "sharded", 4 if args.layers is None else args.layers)


if __name__ == "__main__":
    sys.exit(main())
