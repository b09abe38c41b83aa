"""``adapters convert PATH --to sat|fla|blinkdl OUT``: offline export, for those who want files.

HF folder -> SAT checkpoint folder (``latest``, ``1/mp_rank_00_model_states.pt``, ``model_config.json``); BlinkDL
``.pth`` -> FLA folder (``save_pretrained``: config.json + safetensors); FLA folder -> BlinkDL ``.pth``
(`save_blinkdl`). Every output appears whole or not at all: folders are written beside OUT and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..core import ExportError
from .detect import detect
from .output import CLIError

__all__ = ["add_parser", "run", "write_folder_atomically"]

_TARGETS = {"hf": "sat", "blinkdl": "fla", "fla": "blinkdl"}  # source kind -> the one conversion it has
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="write a checkpoint in another framework's format (atomic)")
    p.add_argument("path", help="an HF folder (--to sat), a BlinkDL .pth (--to fla) or an FLA folder (--to blinkdl)")
    p.add_argument("--to", required=True, choices=("sat", "fla", "blinkdl", "hf"), help="target format")
    p.add_argument("out", help="destination folder (sat, fla) or .pth file (blinkdl); must not exist")
    p.add_argument("--dtype", choices=tuple(_DTYPES), help="dtype to write (default: float32; bfloat16 for blinkdl)")
    p.set_defaults(run=run)


def run(args, out) -> int:
    if args.to == "hf":
        raise CLIError(
            f"{args.path}: --to hf is not yet supported: SAT->HF export is its own issue\n"
            "  hint: load HF checkpoints directly with from_hf (no conversion needed); SAT models export later"
        )
    source = detect(args.path)
    dest = Path(args.out)
    if _TARGETS.get(source.kind) != args.to:
        have = f"a {source.kind} checkpoint" if source.kind != "file" else "not an HF/FLA folder or BlinkDL .pth"
        raise CLIError(
            f"{source.path} is {have}; it cannot be converted --to {args.to}\n"
            "  hint: conversions are HF folder --to sat, BlinkDL .pth --to fla, FLA folder --to blinkdl"
        )
    if dest.exists():
        raise CLIError(f"{dest} already exists\n  hint: choose another output path, or remove it first")
    dtype = _DTYPES[args.dtype] if args.dtype else None
    written = {"sat": _to_sat, "fla": _to_fla, "blinkdl": _to_blinkdl}[args.to](source.path, dest, dtype, out)
    out.result(f"wrote {written}", output=str(written), to=args.to)
    return 0


def write_folder_atomically(dest: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_folder)`` on a fresh folder beside `dest`, then rename it to `dest` (whole or not at all)."""
    if not dest.parent.is_dir():
        raise ExportError(f"cannot write {dest}: folder {dest.parent} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        write(tmp)
        os.rename(tmp, dest)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (KeyboardInterrupt, SystemExit, ExportError)):
            raise
        raise ExportError(f"writing {dest} failed: {e}\n  hint: nothing was written; fix the cause and retry") from e
    return dest


def _to_sat(path: Path, dest: Path, dtype, out) -> Path:
    import adapters.sat  # noqa: F401
    from adapters.sat import family_of, from_hf

    family, ckpt = family_of(path)
    model, _ = from_hf(None, path, device="cpu", dtype=dtype or torch.float32, progress=out.progress)
    config = {"model_class": type(model).__name__, "model_parallel_size": 1, **family.args(ckpt)}

    def write(tmp: Path) -> None:
        (tmp / "1").mkdir()
        torch.save({"module": model.state_dict(), "iteration": 1}, tmp / "1" / "mp_rank_00_model_states.pt")
        (tmp / "model_config.json").write_text(json.dumps(config, indent=2, default=str))
        (tmp / "latest").write_text("1")

    return write_folder_atomically(dest, write)


def _to_fla(path: Path, dest: Path, dtype, out) -> Path:
    from adapters.fla import from_blinkdl

    model = from_blinkdl(detect(path).weights, dtype=dtype or torch.float32, progress=out.progress)
    return write_folder_atomically(dest, lambda tmp: model.save_pretrained(tmp))


def _to_blinkdl(path: Path, dest: Path, dtype, out) -> Path:
    from fla.models import RWKV7ForCausalLM

    from adapters.fla import save_blinkdl

    model = RWKV7ForCausalLM.from_pretrained(path)
    return save_blinkdl(model, dest, dtype=dtype or torch.bfloat16)
