"""``adapters convert PATH --to sat|hf|fla|blinkdl OUT``: offline export, for those who want files.

HF folder -> SAT checkpoint folder (``latest``, ``1/mp_rank_00_model_states.pt``, ``model_config.json``); SAT
checkpoint folder (any number of model-parallel ranks) -> HF folder (`adapters.sat.save_hf`: sharded safetensors,
config.json; lora2 LoRA layers merged, or ``--lora peft`` for a PEFT adapter in ``OUT/adapter``); BlinkDL ``.pth``
-> FLA folder (``save_pretrained``: config.json + safetensors, with BlinkDL's ln_x eps as ``adapters_ln_x_eps``,
which FLA honours after ``import adapters.fla``); FLA folder -> BlinkDL ``.pth`` (`save_blinkdl`).
Every output appears whole or not at all: folders are written beside OUT and renamed into place.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.export import write_folder_atomically
from .detect import detect
from .output import CLIError

__all__ = ["add_parser", "run"]

_TARGETS = {"hf": "sat", "sat": "hf", "blinkdl": "fla", "fla": "blinkdl"}  # source kind -> its one conversion
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_CONVERSIONS = "conversions are HF folder --to sat, SAT folder --to hf, BlinkDL .pth --to fla, FLA folder --to blinkdl"
SAT_CONFIG = "model_config.json"  # what marks a SAT checkpoint folder


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="write a checkpoint in another framework's format (atomic)")
    p.add_argument("path", help="an HF folder (--to sat), a SAT folder (--to hf), a BlinkDL .pth (--to fla) or an "
                                "FLA folder (--to blinkdl)")  # fmt: skip
    p.add_argument("--to", required=True, choices=("sat", "fla", "blinkdl", "hf"), help="target format")
    p.add_argument("out", help="destination folder (sat, hf, fla) or .pth file (blinkdl); must not exist")
    p.add_argument("--dtype", choices=tuple(_DTYPES),
                   help="dtype to write (default: float32; bfloat16 for blinkdl; the checkpoint's for hf)")  # fmt: skip
    p.add_argument("--lora", choices=("merge", "peft"),
                   help="--to hf: LoRA layers merged into the weights (default), or a PEFT adapter in OUT/adapter")  # fmt: skip
    p.set_defaults(run=run)


def run(args, out) -> int:
    path = Path(args.path)
    source = detect(path)
    kind = "sat" if path.is_dir() and (path / SAT_CONFIG).is_file() else source.kind
    dest = Path(args.out)
    if _TARGETS.get(kind) != args.to:
        have = f"a {kind} checkpoint" if kind != "file" else "not an HF/SAT/FLA folder or BlinkDL .pth"
        raise CLIError(f"{source.path} is {have}; it cannot be converted --to {args.to}\n  hint: {_CONVERSIONS}")
    if args.lora is not None and args.to != "hf":
        raise CLIError(f"--lora applies to --to hf, not --to {args.to}\n  hint: leave --lora out")
    if dest.exists():
        raise CLIError(f"{dest} already exists\n  hint: choose another output path, or remove it first")
    dtype = _DTYPES[args.dtype] if args.dtype else None
    if args.to == "hf":
        written = _to_hf(path, dest, dtype, args.lora or "merge", out)
    else:
        written = {"sat": _to_sat, "fla": _to_fla, "blinkdl": _to_blinkdl}[args.to](source.path, dest, dtype, out)
    out.result(f"wrote {written}", output=str(written), to=args.to)
    return 0


def _to_sat(path: Path, dest: Path, dtype, out) -> Path:
    from .sat_folder import write_sat_folder

    return write_sat_folder(path, dest, dtype or torch.float32, out.progress)


def _to_hf(path: Path, dest: Path, dtype, lora: str, out) -> Path:
    from adapters.sat import save_hf

    from .sat_folder import load_recorded

    model, args = load_recorded(path, out.progress) or (path, None)  # a folder convert --to sat wrote: as it came
    return save_hf(model, dest, args, dtype=dtype, lora=lora, progress=out.progress)


def _to_fla(path: Path, dest: Path, dtype, out) -> Path:
    from adapters.fla import from_blinkdl
    from adapters.fla.rwkv7_eps import plain_fla_note

    model = from_blinkdl(detect(path).weights, dtype=dtype or torch.float32, progress=out.progress)
    written = write_folder_atomically(dest, lambda tmp: model.save_pretrained(tmp))
    note = plain_fla_note(model.config)  # head size != 64: plain FLA (no adapters import) loads ln_x's eps wrong
    if note is not None:
        out.line(note)
        out.data["note"] = note
    return written


def _to_blinkdl(path: Path, dest: Path, dtype, out) -> Path:
    from fla.models import RWKV7ForCausalLM

    from adapters.fla import save_blinkdl

    model = RWKV7ForCausalLM.from_pretrained(path)
    return save_blinkdl(model, dest, dtype=dtype or torch.bfloat16)
