"""Bounded memory: loading a >= 1 GB checkpoint to CPU grows peak RSS by at most 1.1x the model + 200 MB."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adapters.demo import ToyConfig, write_toy_checkpoint

LAYERS, HIDDEN, INNER = 22, 1024, 2816  # about 1.03 GB of fp32 over 200+ tensors


def big_state() -> dict[str, torch.Tensor]:
    c = ToyConfig(vocab=1024, hidden=HIDDEN, layers=LAYERS, heads=8, kv_heads=4, inner=INNER)
    hd, sd = c.head_dim, {}
    gen = torch.Generator().manual_seed(0)

    def t(*shape):
        return torch.empty(*shape).uniform_(-0.1, 0.1, generator=gen)

    sd["model.embed_tokens.weight"] = t(c.vocab, c.hidden)
    for i in range(c.layers):
        p = f"model.layers.{i}."
        sd |= {p + "input_norm.weight": t(c.hidden), p + "post_norm.weight": t(c.hidden),
               p + "self_attn.q_proj.weight": t(c.heads * hd, c.hidden),
               p + "self_attn.k_proj.weight": t(c.kv_heads * hd, c.hidden),
               p + "self_attn.v_proj.weight": t(c.kv_heads * hd, c.hidden),
               p + "self_attn.o_proj.weight": t(c.hidden, c.hidden),
               p + "mlp.gate_up_proj.weight": t(2 * c.inner, c.hidden), p + "mlp.down_proj.weight": t(c.hidden, c.inner),
               p + "mix": t(1, 1, c.hidden)}  # fmt: skip
    sd |= {"model.norm.weight": t(c.hidden), "lm_head.weight": t(c.vocab, c.hidden)}
    return sd


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["sharded", "pth"])
def test_peak_rss_growth_is_bounded(tmp_path, fmt):
    state = big_state()
    total = sum(v.nbytes for v in state.values())
    assert total >= 1e9
    path = write_toy_checkpoint(tmp_path, state, fmt)
    del state
    child = Path(__file__).with_name("_rss_child.py")
    out = subprocess.run([sys.executable, str(child), str(path), str(LAYERS), str(HIDDEN), str(INNER)],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    growth = r["peak"] - r["baseline"]
    print(f"{fmt}: model {r['model_bytes'] / 1e9:.2f} GB, peak RSS growth {growth / 1e9:.2f} GB "
          f"({growth / r['model_bytes']:.3f}x), load {r['seconds']:.2f} s")  # fmt: skip
    assert growth <= 1.1 * r["model_bytes"] + 200e6
