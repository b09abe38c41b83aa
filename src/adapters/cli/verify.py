"""``adapters verify PATH``: load through the hook and compare with the reference implementation on random tokens.

HF folder: the SAT model from `from_hf` against transformers' ``AutoModelForCausalLM`` (causal LM families).
BlinkDL ``.pth``: the FLA model from `from_blinkdl` against BlinkDL's ``rwkv`` package (``RWKV_V7_ON=1``,
``"cpu fp32"``). Prints the max abs difference of the logits; exits 1 above ``--tol``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

from .detect import detect
from .output import CLIError

__all__ = ["add_parser", "run"]

_CAUSAL = ("llama", "mixtral", "gpt2", "glm")  # SAT families whose forward gives logits like transformers' CausalLM


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
        ours, reference, what = _hf(source.path, args, out)
    elif source.kind == "blinkdl":
        ours, reference, what = _blinkdl(source.weights, args, out)
    else:
        raise CLIError(
            f"{source.path} is {'an FLA folder' if source.kind == 'fla' else 'not an HF folder or BlinkDL .pth'}; "
            "verify compares foreign checkpoints with their reference implementation\n"
            "  hint: pass an HF checkpoint folder or a BlinkDL .pth"
        )
    diff = (ours.float() - reference.float()).abs().max().item()
    ok = diff <= args.tol
    out.result(f"max abs diff {diff:.3g} ({what}, {args.tokens} tokens): {'ok' if ok else 'ABOVE'} tol {args.tol:g}",
               max_abs_diff=diff, tol=args.tol, ok=ok, compared=what)  # fmt: skip
    return 0 if ok else 1


def _ids(vocab: int, args) -> torch.Tensor:
    return torch.randint(0, vocab, (1, args.tokens), generator=torch.Generator().manual_seed(args.seed))


def _hf(path: Path, args, out):
    import adapters.sat  # noqa: F401
    from adapters.sat import family_of, from_hf

    family, ckpt = family_of(path)
    if family.name not in _CAUSAL:
        raise CLIError(
            f"{path}: verify compares causal language models; family {family.name} is not one\n"
            f"  hint: verify supports the families {', '.join(_CAUSAL)}; compare others in Python (see the tests)"
        )
    from transformers import AutoModelForCausalLM

    model, _ = from_hf(None, path, device="cpu", dtype=torch.float32, progress=out.progress)
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = _ids(ckpt.require("vocab_size"), args)
    length = ids.shape[1]
    with torch.no_grad():
        ours = model.eval()(input_ids=ids, position_ids=torch.arange(length)[None],
                            attention_mask=torch.ones(1, 1, length, length).tril())[0]  # fmt: skip
        theirs = reference(input_ids=ids).logits
    return ours, theirs, f"SAT {type(model).__name__} vs transformers {type(reference).__name__}"


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
    return ours, theirs.reshape(args.tokens, -1), "FLA RWKV7ForCausalLM vs BlinkDL rwkv RWKV_x070 (cpu fp32)"
