"""``adapters inspect PATH``: what the file is, which family reads it, and the plan (from headers only)."""

from __future__ import annotations

import collections

from ..core import HookError, PlanError, open_source
from ..core.readers import LegacyTorchReader, SafetensorsReader, ShardedReader, TorchReader
from ..core.report import _size
from .detect import detect
from .plans import blinkdl_plan, fla_plan, sat_plan

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="describe a checkpoint: format, tensors, family, plan (reads no tensor data)")
    p.add_argument("path", help="a checkpoint file, an HF or FLA folder, or a BlinkDL .pth")
    p.set_defaults(run=run)


def _format(reader) -> str:
    if isinstance(reader, ShardedReader):
        return f"sharded ({len(reader._shards)} files, {type(next(iter(reader._shards.values()))).__name__})"
    if isinstance(reader, SafetensorsReader):
        return "safetensors"
    if isinstance(reader, TorchReader):
        return "torch zip (torch.save)"
    if isinstance(reader, LegacyTorchReader):
        return "legacy torch pickle (read whole into memory to list it: no mmap for this format)"
    return type(reader).__name__


def run(args, out) -> int:
    source = detect(args.path)
    with open_source(source.weights) as reader:
        table = reader.table()
        dtypes = collections.Counter(str(i.dtype).removeprefix("torch.") for i in table.values())
        total = sum(i.nbytes for i in table.values())
        out.line(f"path:    {reader.path}")
        out.line(f"format:  {_format(reader)}")
        out.line(f"tensors: {len(table)}, {_size(total)}, " + ", ".join(f"{d} x{n}" for d, n in dtypes.most_common()))
        out.data.update(path=reader.path, format=_format(reader), tensors=len(table), bytes=total, dtypes=dict(dtypes))
        planner = {"hf": lambda: sat_plan(source.path, reader), "blinkdl": lambda: blinkdl_plan(reader),
                   "fla": lambda: fla_plan(reader)}.get(source.kind)  # fmt: skip
        if planner is None:
            out.result(f"{reader.path}: {len(table)} tensors; no family matched (not an HF/FLA folder or BlinkDL .pth)",
                       family=None)  # fmt: skip
            return 0
        try:
            what, the_plan = planner()
        except HookError as e:
            out.result(f"family:  none\n{e}", ok=False, family=None, problems=str(e))
            return 1
        except PlanError as e:
            out.result(f"family:  matched, but the plan does not fit\n{e}", ok=False, family="matched",
                       problems=str(e))  # fmt: skip
            return 1
    out.line(f"family:  {what}")
    out.line(the_plan.describe())
    out.result(
        f"plan ok: {len(the_plan.units)} units, {len(the_plan.targets)} targets, missing: none, unused: none, "
        f"{len(the_plan.ignored)} ignored, {len(the_plan.kept)} kept",
        family=what, units=len(the_plan.units), targets=len(the_plan.targets), missing=[], unused=[],
        ignored=[k for k, _ in the_plan.ignored], kept=[k for k, _ in the_plan.kept],
    )  # fmt: skip
    return 0
