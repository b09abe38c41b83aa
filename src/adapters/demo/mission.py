"""The mission demo (``python -m adapters.demo``): both host integrations on tiny checkpoints built on the spot.

1. SAT: an HF LLaMA checkpoint through SAT's own ``AutoModel.from_pretrained``, vs transformers (`sat_demo`).
2. FLA: a BlinkDL RWKV-7 ``.pth`` through ``RWKV7ForCausalLM.from_pretrained``, fine-tuned, exported with
   ``save_blinkdl`` and run in BlinkDL's `rwkv` package (`fla_demo`).

Nothing is downloaded; everything runs on CPU in fp32 and is written to a temporary folder removed at exit.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TOLERANCE", "run_mission"]

TOLERANCE = 1e-4  # fp32 on both sides: what is left is float rounding in a different order of operations


def run_mission() -> int:
    """Run both parts and print one summary line; 0 when both logit differences are within `TOLERANCE`, else 1."""
    from .fla_demo import run_fla
    from .sat_demo import run_sat

    with _quiet_hosts(), tempfile.TemporaryDirectory() as tmp:
        print("== SAT: HF LLaMA -> SAT, via sat.AutoModel.from_pretrained ==")
        sat_diff = run_sat(Path(tmp))
        print("\n== FLA: BlinkDL RWKV-7 .pth -> FLA, fine-tune, save_blinkdl -> BlinkDL rwkv ==")
        fla_diff = run_fla(Path(tmp))
    ok = sat_diff <= TOLERANCE and fla_diff <= TOLERANCE
    verdict = "ok" if ok else "FAILED"
    print(f"\nmission {verdict}: SAT vs transformers {sat_diff:.2e}, BlinkDL rwkv vs FLA {fla_diff:.2e} "
          f"(max abs logit diff, fp32, tolerance {TOLERANCE:.0e})")  # fmt: skip
    return 0 if ok else 1


@contextlib.contextmanager
def _quiet_hosts() -> Iterator[None]:
    """Silence host-library notices that say nothing about this run, so stderr shows only what matters."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a progress bar for saving one 350 KiB file
    with warnings.catch_warnings():
        # FLA: on CPU it says Triton is unavailable (adapters.fla installs CPU fallbacks), and every RWKV-7 layer
        # built warns that results may differ from BlinkDL's code (the demo checks exactly that, against `rwkv`).
        warnings.filterwarnings("ignore", message="Triton is not supported on current platform")
        warnings.filterwarnings("ignore", message="According to Bo")
        # The rwkv package scripts its model with torch.jit, which torch deprecates.
        warnings.filterwarnings("ignore", message=r"`torch.jit.script", category=DeprecationWarning)
        try:
            yield
        finally:
            if bars:  # leave transformers as found when called in-process (tests)
                hf_logging.enable_progress_bar()
