"""Mission demo, FLA part: a tiny BlinkDL RWKV-7 ``.pth`` loaded through ``RWKV7ForCausalLM.from_pretrained`` after
``import adapters.fla``, a few fine-tuning steps, ``save_blinkdl``, and the export run in BlinkDL's own `rwkv`.

Everything stays fp32 (the file, the model, the export), so the export holds exactly the trained weights and the
`rwkv` package's logits must match the trained FLA model's to float rounding.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from .errors import DemoError

__all__ = ["STEPS", "finetune", "load_into_fla", "rwkv_model_module", "rwkv_package_logits", "run_fla"]

STEPS = 3
VOCAB, HIDDEN, LAYERS, HEAD_SIZE = 256, 128, 2, 64  # 2 heads of 64 channels: a few seconds per step on CPU


def load_into_fla(pth: Path) -> nn.Module:
    """What an FLA user writes, on the BlinkDL file: ``RWKV7ForCausalLM.from_pretrained(pth)``, fp32, CPU."""
    import adapters.fla  # noqa: F401  (installs the hook that lets from_pretrained read BlinkDL .pth files)
    from fla.models import RWKV7ForCausalLM

    return RWKV7ForCausalLM.from_pretrained(pth, torch_dtype=torch.float32)


def finetune(model: nn.Module, batch: torch.Tensor, steps: int = STEPS, lr: float = 1e-3) -> list[float]:
    """Plain PyTorch AdamW on one fixed batch (so the loss must go down); returns each step's loss, printing it."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        loss = model(batch, labels=batch).loss  # FLA shifts the labels itself
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        print(f"fine-tune step {step + 1}/{steps}: loss {losses[-1]:.4f}")
    model.eval()
    return losses


def rwkv_model_module() -> ModuleType:
    """BlinkDL's ``rwkv.model`` with RWKV-7 enabled, on CPU; `DemoError` when it is missing or imported without it."""
    if importlib.util.find_spec("rwkv") is None:
        raise DemoError(
            "the mission demo compares its FLA export in BlinkDL's 'rwkv' package, which is not installed\n"
            "  hint: pip install 'rwkv==0.8.32' (the [test] extra; `make demo` installs it)"
        )
    # RWKV-7 exists in rwkv.model only if RWKV_V7_ON=1 when that module is first imported; no CUDA kernel on CPU.
    os.environ["RWKV_V7_ON"] = "1"
    os.environ.setdefault("RWKV_JIT_ON", "1")
    os.environ["RWKV_CUDA_ON"] = "0"
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner on import
        import rwkv.model
    if not hasattr(rwkv.model, "RWKV_x070"):
        raise DemoError(
            "rwkv.model was imported before RWKV_V7_ON=1 was set, so it has no RWKV-7 class\n"
            "  hint: run the demo in a fresh process (python -m adapters.demo)"
        )
    return rwkv.model


def rwkv_package_logits(pth: Path, tokens: list[int]) -> torch.Tensor:
    """Logits ``[T, V]`` of BlinkDL's `rwkv` package (strategy ``"cpu fp32"``) for `tokens`, read from `pth`."""
    rwkv_model = rwkv_model_module()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loading ..." to stdout
        reference = rwkv_model.RWKV(str(pth.with_suffix("")), "cpu fp32")  # it appends ".pth" itself
    with torch.no_grad():
        logits, _ = reference.forward(tokens, None, full_output=True)
    return logits.float().reshape(len(tokens), -1)


def run_fla(workdir: Path) -> float:
    """Write, load, fine-tune, export, compare and print; returns the max abs logit difference between BlinkDL's
    `rwkv` package on the export and the fine-tuned FLA model."""
    import adapters.fla

    pth = adapters.fla.write_tiny_blinkdl(workdir / "tiny-rwkv7.pth", dtype=torch.float32, vocab_size=VOCAB,
                                          hidden_size=HIDDEN, num_layers=LAYERS, head_size=HEAD_SIZE, seed=0)
    dims = f"vocab {VOCAB}, hidden {HIDDEN}, {LAYERS} layers, head size {HEAD_SIZE}"
    print(f"wrote a tiny BlinkDL RWKV-7 x070 checkpoint ({dims}, fp32)")
    print(f"  {pth.name}")
    model = load_into_fla(pth)
    print(f"import adapters.fla; RWKV7ForCausalLM.from_pretrained(pth) -> {type(model).__name__}")
    print(model.adapters_load_report)

    batch = torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(0))
    losses = finetune(model, batch)
    shape = list(batch.shape)
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} AdamW steps on one fixed batch {shape}")

    out = adapters.fla.save_blinkdl(model, workdir / "tiny-rwkv7-finetuned.pth", dtype=torch.float32)
    print(f"save_blinkdl(model, {out.name!r}, dtype=torch.float32)")
    tokens = batch[0].tolist()
    with torch.no_grad():
        ours = model(torch.tensor([tokens])).logits[0]
    diff = (rwkv_package_logits(out, tokens) - ours).abs().max().item()
    print(f"BlinkDL rwkv (cpu fp32) on the export vs the fine-tuned FLA model, {len(tokens)} tokens: "
          f"max abs diff {diff:.2e}")  # fmt: skip
    return diff
