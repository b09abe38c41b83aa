"""Fine-tune a BlinkDL RWKV-7 ``.pth`` with FLA in plain PyTorch, export it back, and run the export in BlinkDL's
own `rwkv` package.

    python examples/finetune_rwkv7_from_blinkdl.py [--pth rwkv7-g1a-0.1b-20250728-ctx4096.pth] [--text notes.txt]

1. ``import adapters.fla``, then ``RWKV7ForCausalLM.from_pretrained(pth)`` reads the BlinkDL file directly (no
   conversion step). Without ``--pth`` a tiny random x070 checkpoint (vocab 256, 2 layers, bf16) is written to a
   temporary folder first (removed at exit, with the export unless ``--out`` names another place).
2. A plain AdamW loop on random windows of the text; the loss is printed every step.
3. ``adapters.fla.save_blinkdl`` writes the result as a BlinkDL ``.pth`` (bf16 by default, like released files).
4. BlinkDL's `rwkv` package (``RWKV_V7_ON=1``, strategy ``"cpu fp32"``) loads the export and runs a window of the
   text; the script prints the max abs logit difference against the trained FLA model, whose weights are first
   rounded to the export dtype (the file holds exactly those; without rounding, bf16 alone moves logits ~1e-1).

Tokens: a 65536 vocab uses the RWKV World tokenizer shipped in the `rwkv` package; any other vocab uses the
text's UTF-8 bytes modulo the vocab (the tiny model's vocab is 256, so bytes map one to one).

Runs on CPU (the loader installs torch fallbacks for FLA's Triton ops) and on CUDA with ``--device cuda``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

TEXT = """\
The goose keeps its whole past in a fixed-size state. Each new token decays some channels of that state,
writes a little of itself into others, and reads the result back through a learned gate. Long memories live
on slow channels; quick details live on fast ones and are gone a few tokens later. Training teaches every
channel how fast to forget. Because the state never grows, the thousandth token costs what the first did,
and a state saved after a long prompt can be handed to another program that carries on from it.
"""

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True, slots=True)
class FinetuneResult:
    """What a run produced: the loss of every step, the exported file, and the rwkv-vs-FLA logit difference."""

    losses: tuple[float, ...]
    exported: Path
    max_abs_diff: float


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pth", type=Path, help="BlinkDL x070 .pth (default: a tiny random one in a temporary folder)")
    p.add_argument("--text", type=Path, help="UTF-8 text file to fine-tune on (default: a short embedded text)")
    p.add_argument(
        "--out",
        type=Path,
        help="exported .pth, replaced if it exists (default: <pth stem>-finetuned.pth beside the input)",
    )
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--export-dtype", choices=sorted(_DTYPES), default="bf16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def tokenize(text: str, vocab_size: int) -> torch.Tensor:
    """World tokenizer for the 65536 vocab of every released RWKV-7; UTF-8 bytes modulo the vocab otherwise."""
    if vocab_size == 65536:
        import rwkv
        from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

        vocab = Path(rwkv.__file__).with_name("rwkv_vocab_v20230424.txt")
        return torch.tensor(TRIE_TOKENIZER(str(vocab)).encode(text))
    return torch.tensor(list(text.encode("utf-8"))) % vocab_size


def finetune(model, ids: torch.Tensor, args: argparse.Namespace) -> list[float]:
    """Plain PyTorch: AdamW on `args.batch` random windows of `args.seq_len` tokens per step."""
    if len(ids) <= args.seq_len:
        raise SystemExit(f"the text has {len(ids)} tokens; it needs more than --seq-len {args.seq_len}")
    gen = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    model.train()
    losses = []
    for step in range(args.steps):
        starts = torch.randint(0, len(ids) - args.seq_len, (args.batch,), generator=gen)
        batch = torch.stack([ids[s : s + args.seq_len] for s in starts.tolist()]).to(args.device)
        loss = model(batch, labels=batch).loss  # FLA shifts the labels itself
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        print(f"step {step + 1:3d}/{args.steps}  loss {losses[-1]:.4f}")
    model.eval()
    return losses


def rwkv_package_logits(path: Path, ids: list[int]) -> torch.Tensor:
    """Logits ``[T, V]`` of BlinkDL's `rwkv` package (CPU, fp32) for `ids`, read from the ``.pth`` at `path`."""
    # RWKV-7 exists in rwkv.model only if RWKV_V7_ON=1 when the module is first imported.
    os.environ["RWKV_V7_ON"] = "1"
    os.environ.setdefault("RWKV_JIT_ON", "1")
    os.environ["RWKV_CUDA_ON"] = "0"
    import rwkv.model

    if not hasattr(rwkv.model, "RWKV_x070"):
        raise SystemExit("rwkv.model was imported before RWKV_V7_ON=1 was set; run this script in a fresh process")
    reference = rwkv.model.RWKV_x070(str(path.with_suffix("")), "cpu fp32")  # it appends ".pth" itself
    with torch.no_grad():
        logits, _ = reference.forward(ids, None, full_output=True)
    return logits.float().reshape(len(ids), -1)


def main(argv: list[str] | None = None) -> FinetuneResult:
    from fla.models import RWKV7ForCausalLM

    import adapters.fla  # installs the from_pretrained hook for BlinkDL files

    args = parse_args(argv)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        pth = args.pth or adapters.fla.write_tiny_blinkdl(Path(tmp) / "tiny-rwkv7.pth", vocab_size=256, seed=args.seed)
        out = args.out or pth.with_name(f"{pth.stem}-finetuned.pth")
        model = RWKV7ForCausalLM.from_pretrained(pth, torch_dtype=torch.float32, device_map=args.device)
        text = args.text.read_text(encoding="utf-8") if args.text else TEXT
        ids = tokenize(text, model.config.vocab_size)
        print(f"{pth.name}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; {len(ids)} tokens")

        losses = finetune(model, ids, args)
        adapters.fla.save_blinkdl(model, out, dtype=_DTYPES[args.export_dtype], overwrite=True)
        print(f"exported {out} ({args.export_dtype})")

        window = ids[: args.seq_len].tolist()
        with torch.no_grad():
            for p in model.parameters():  # the file holds the weights rounded to the export dtype
                p.copy_(p.to(_DTYPES[args.export_dtype]))
            ours = model(torch.tensor([window], device=args.device)).logits[0].float().cpu()
        diff = (rwkv_package_logits(out, window) - ours).abs().max().item()
        print(f"rwkv package on the export vs the trained FLA model: max abs logit diff {diff:.2e}")
    return FinetuneResult(tuple(losses), out, diff)


if __name__ == "__main__":
    main()
