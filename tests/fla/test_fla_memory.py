"""Bounded memory: loading a >= 500 MB BlinkDL x070 file to CPU grows peak RSS by at most 1.1x the model + 200 MB.

The file has the key set and shapes of a real 12-layer RWKV-7 with the 0.4B model's width (C 1024, V 65536, LoRA
ranks 64/64/32/128): 292.5 M parameters, 585 MB in bf16. It is loaded in float32, `from_blinkdl`'s default,
so every tensor is also converted on the way (model: 1.17 GB).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("fla")

from adapters.fla import tiny_blinkdl_rwkv7  # noqa: E402

DIMS = {"vocab_size": 65536, "hidden_size": 1024, "num_layers": 12, "lora_ranks": (64, 64, 32, 128)}


def write_big_blinkdl(path: Path) -> int:
    """Write the file; return its tensor bytes. Shapes come from the tiny builder run on `meta` (no values);
    the values are uniform noise, since only their bytes matter here and drawing them is fast."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in tiny_blinkdl_rwkv7(dtype=torch.bfloat16, **DIMS).items()}
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.empty(s, dtype=torch.bfloat16).uniform_(-0.1, 0.1, generator=gen) for k, s in shapes.items()}
    torch.save(state, path)
    return sum(t.nbytes for t in state.values())


@pytest.mark.slow
def test_peak_rss_growth_is_bounded(tmp_path):
    path = tmp_path / "rwkv7-big.pth"
    assert write_big_blinkdl(path) >= 500e6
    child = Path(__file__).with_name("_rss_fla_child.py")
    out = subprocess.run([sys.executable, str(child), str(path), "float32"],
                         capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    growth = r["peak"] - r["baseline"]
    print(f"model {r['model_bytes'] / 1e9:.2f} GB (float32 from a bf16 file), peak RSS growth {growth / 1e9:.2f} GB "
          f"({growth / r['model_bytes']:.3f}x), load {r['seconds']:.1f} s")  # fmt: skip
    assert r["model_bytes"] == 4 * 292_461_568  # every parameter, in float32
    assert growth <= 1.1 * r["model_bytes"] + 200e6
