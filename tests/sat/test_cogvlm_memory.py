"""HF CogVLM -> SAT streams: loading a >= 1 GB CogVLM checkpoint to CPU grows peak RSS by <= 1.1x the model + 200 MB.

The checkpoint is wide and shallow where CogVLM's bytes are (LM layers with both experts, 32000-token vocabulary) and
tiny in the tower; `write_tiny_cogvlm` writes it shard by shard.
"""

import pytest

sat = pytest.importorskip("sat")

import json
import subprocess
import sys
import time
from pathlib import Path

from adapters.sat.tiny import INDEX_FILE, TinyCogVLM, write_tiny_cogvlm

# 8 layers x 103 MB (both experts, hidden 1024, MLP 2816) + embedding and head 2 x 131 MB + projector 35 MB: 1.12 GB.
SIZES = TinyCogVLM(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                   num_attention_heads=16, vision_hidden_size=64, vision_intermediate_size=128,
                   vision_num_hidden_layers=2, vision_num_heads=4, image_size=28)  # fmt: skip


@pytest.mark.slow
def test_peak_rss_growth_is_bounded(tmp_path):
    start = time.perf_counter()
    folder = write_tiny_cogvlm(tmp_path / "hf", SIZES, shard_bytes=200 * 2**20)
    total = json.loads((folder / INDEX_FILE).read_text())["metadata"]["total_size"]
    assert total >= 1e9
    child = Path(__file__).with_name("_rss_cogvlm_child.py")
    out = subprocess.run([sys.executable, str(child), str(folder)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    growth = r["peak"] - r["baseline"]
    print(f"HF CogVLM->SAT: model {r['model_bytes'] / 1e9:.2f} GB, peak RSS growth {growth / 1e9:.2f} GB "
          f"({growth / r['model_bytes']:.3f}x), load {r['seconds']:.2f} s, "
          f"test {time.perf_counter() - start:.1f} s")  # fmt: skip
    assert r["model_bytes"] == total
    assert growth <= 1.1 * r["model_bytes"] + 200e6
