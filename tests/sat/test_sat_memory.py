"""HF -> SAT streams: loading a >= 1 GB LLaMA checkpoint to CPU grows peak RSS by <= 1.1x the model + 200 MB.

The offline route (transformers model + SAT model + copy) holds the model at least twice.
"""

import pytest

sat = pytest.importorskip("sat")

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

# LLaMA shape, GQA 16/8 heads of 64: 18 layers x 46.6 MB + embedding and head 2 x 131 MB = 1.1 GB of fp32.
CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 1024,
    "intermediate_size": 2816, "num_hidden_layers": 18, "num_attention_heads": 16, "num_key_value_heads": 8,
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}, "dtype": "float32",
}  # fmt: skip


def write_llama(folder: Path, layers_per_shard: int = 5) -> int:
    """Sharded safetensors + index with transformers' on-disk names, written shard by shard; returns bytes."""
    c, gen, weight_map, total = CONFIG, torch.Generator().manual_seed(0), {}, 0
    hidden, inner, kv = c["hidden_size"], c["intermediate_size"], c["num_key_value_heads"] * 64

    def t(*shape):
        return torch.empty(*shape).uniform_(-0.05, 0.05, generator=gen)

    def flush(shard: dict, index: int) -> None:
        nonlocal total
        name = f"model-{index:05d}.safetensors"
        save_file(shard, folder / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        total += sum(v.nbytes for v in shard.values())

    folder.mkdir(parents=True)
    flush({"model.embed_tokens.weight": t(c["vocab_size"], hidden)}, 0)
    for start in range(0, c["num_hidden_layers"], layers_per_shard):
        shard = {}
        for i in range(start, min(start + layers_per_shard, c["num_hidden_layers"])):
            p = f"model.layers.{i}."
            shard |= {p + "input_layernorm.weight": 1 + t(hidden), p + "post_attention_layernorm.weight": 1 + t(hidden),
                      p + "self_attn.q_proj.weight": t(hidden, hidden), p + "self_attn.k_proj.weight": t(kv, hidden),
                      p + "self_attn.v_proj.weight": t(kv, hidden), p + "self_attn.o_proj.weight": t(hidden, hidden),
                      p + "mlp.gate_proj.weight": t(inner, hidden), p + "mlp.up_proj.weight": t(inner, hidden),
                      p + "mlp.down_proj.weight": t(hidden, inner)}  # fmt: skip
        flush(shard, 1 + start // layers_per_shard)
    flush({"model.norm.weight": 1 + t(hidden), "lm_head.weight": t(c["vocab_size"], hidden)}, 99)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return total


@pytest.mark.slow
def test_peak_rss_growth_is_bounded(tmp_path):
    total = write_llama(tmp_path / "hf")
    assert total >= 1e9
    child = Path(__file__).with_name("_rss_sat_child.py")
    out = subprocess.run(
        [sys.executable, str(child), str(tmp_path / "hf")], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    growth = r["peak"] - r["baseline"]
    print(f"HF->SAT: model {r['model_bytes'] / 1e9:.2f} GB, peak RSS growth {growth / 1e9:.2f} GB "
          f"({growth / r['model_bytes']:.3f}x), load {r['seconds']:.2f} s")  # fmt: skip
    assert r["model_bytes"] == total
    assert growth <= 1.1 * r["model_bytes"] + 200e6
