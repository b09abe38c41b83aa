"""``adapters`` / ``python -m adapters``: inspect, convert and verify checkpoints from the command line.

One module per command (`inspect_cmd`, `convert`, `verify`), each with ``add_parser(subparsers)`` and
``run(args, out) -> int``; `families` renders the supported-families table from the spec registry.
"""

from __future__ import annotations

import argparse
import sys

from ..core import AdapterError
from . import convert, inspect_cmd, verify
from .output import Output

__all__ = ["main", "build_parser"]

_COMMANDS = (inspect_cmd, convert, verify)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adapters", description=__doc__.splitlines()[0])
    _output_options(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _COMMANDS:
        command.add_parser(sub)
    for command_parser in sub.choices.values():  # `adapters inspect PATH --json` as well as `adapters --json ...`
        _output_options(command_parser, default=argparse.SUPPRESS)
    return parser


def _output_options(parser: argparse.ArgumentParser, default: object) -> None:
    """--quiet and --json. A command's copies default to SUPPRESS: argparse copies every attribute of the command's
    namespace over the main one, so a False default there would undo ``adapters --json COMMAND``."""
    parser.add_argument("--quiet", "-q", action="store_true", default=default,
                        help="print only the result line; no progress bars")  # fmt: skip
    parser.add_argument("--json", action="store_true", default=default,
                        help="print one JSON object (for scripts); no progress bars")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 a typed `AdapterError`, 2 a usage error)."""
    args = build_parser().parse_args(argv)
    out = Output(quiet=args.quiet, as_json=args.json)
    try:
        return args.run(args, out)
    except AdapterError as e:
        out.error(e)
        return 1
    finally:
        out.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
