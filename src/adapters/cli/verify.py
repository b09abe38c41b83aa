"""``adapters verify PATH``: load through the hook and compare with the reference implementation on random tokens.

HF folder: the SAT model from `from_hf` against transformers, for every SAT family transformers implements (causal
LMs: logits; BERT, RoBERTa, ViT: hidden states, pooler and head outputs; CLIP: both towers' embeddings; the table is
`sat_references`). BlinkDL ``.pth``: the FLA model from `from_blinkdl` against BlinkDL's ``rwkv`` package
(``RWKV_V7_ON=1``, ``"cpu fp32"``). Prints the max abs difference over the compared outputs; exits 1 above ``--tol``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path

import torch

from .detect import detect
from .output import CLIError

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="compare the loaded model with the reference implementation (max abs diff)")
    p.add_argument("path", help="an HF folder or a BlinkDL .pth")
    p.add_argument("--tokens", type=int, default=8, help="length of the random input (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-3, help="largest accepted max abs diff (default 1e-3)")
    p.set_defaults(run=run)


def run(args, out) -> int:
    source = detect(args.path)
    if source.kind == "hf":
        pairs, what, given = _hf(source.path, args, out)
    elif source.kind == "blinkdl":
        pairs, what, given = _blinkdl(source.weights, args, out)
    else:
        raise CLIError(
            f"{source.path} is {'an FLA folder' if source.kind == 'fla' else 'not an HF folder or BlinkDL .pth'}; "
            "verify compares foreign checkpoints with their reference implementation\n"
            "  hint: pass an HF checkpoint folder or a BlinkDL .pth"
        )
    diffs = {name: (ours.float() - theirs.float()).abs().max().item() for name, ours, theirs in pairs}
    diff = max(diffs.values(), key=lambda d: (math.isnan(d), d))  # a NaN anywhere is the result, never hidden
    ok = diff <= args.tol
    out.result(f"max abs diff {diff:.3g} ({what}, {given}): {'ok' if ok else 'ABOVE'} tol {args.tol:g}",
               max_abs_diff=diff, diffs=diffs, tol=args.tol, ok=ok, compared=what)  # fmt: skip
    return 0 if ok else 1


def _ids(vocab: int, args) -> torch.Tensor:
    return torch.randint(0, vocab, (1, args.tokens), generator=torch.Generator().manual_seed(args.seed))


def _hf(path: Path, args, out):
    import adapters.sat  # noqa: F401
    from adapters.sat import family_of, from_hf

    from .sat_references import COMPARE

    family, ckpt = family_of(path)
    if family.name not in COMPARE:
        raise CLIError(
            f"{path}: verify compares with transformers, which has no implementation of family {family.name}\n"
            f"  hint: verify supports the families {', '.join(COMPARE)}; compare others in Python (see the tests)"
        )
    model, _ = from_hf(None, path, device="cpu", dtype=torch.float32, progress=out.progress)
    pairs, what, given = COMPARE[family.name](path, model.eval(), ckpt, args.tokens, args.seed)
    return pairs, f"SAT {type(model).__name__} vs transformers {what}", given


def _rwkv_x070():
    if "rwkv.model" in sys.modules and not hasattr(sys.modules["rwkv.model"], "RWKV_x070"):
        raise CLIError(
            "rwkv.model was imported without RWKV_V7_ON=1 in this process; RWKV-7 is unavailable\n"
            "  hint: run verify in a fresh process"
        )
    os.environ["RWKV_V7_ON"] = "1"
    os.environ.setdefault("RWKV_JIT_ON", "1")
    os.environ["RWKV_CUDA_ON"] = "0"
    try:
        import rwkv.model
    except ImportError as e:
        raise CLIError("verify needs BlinkDL's rwkv package\n  hint: pip install rwkv==0.8.32") from e
    return rwkv.model.RWKV_x070


def _blinkdl(path: Path, args, out):
    from adapters.fla import from_blinkdl

    model = from_blinkdl(path, dtype=torch.float32, progress=out.progress)
    ids = _ids(model.config.vocab_size, args)
    with contextlib.redirect_stdout(sys.stderr), torch.no_grad():  # the rwkv package prints banners
        reference = _rwkv_x070()(str(path.with_suffix("")), "cpu fp32")
        ours = model(ids).logits[0]
        theirs, _ = reference.forward(ids[0].tolist(), None, full_output=True)
    what = "FLA RWKV7ForCausalLM vs BlinkDL rwkv RWKV_x070 (cpu fp32)"
    return [("logits", ours, theirs.reshape(args.tokens, -1))], what, f"{args.tokens} tokens"
