import pytest

sat = pytest.importorskip("sat")

import json

import torch
from hf_fixtures import INDEX_FILE, LLAMA_VARIANTS, llama_checkpoint, save_sharded, tiny_llama_config
from transformers import LlamaForCausalLM


@pytest.mark.parametrize("variant", list(LLAMA_VARIANTS))
def test_llama_checkpoint_splits_qkv_across_shards_and_reloads(tmp_path, variant):
    checkpoint = llama_checkpoint(tmp_path, variant)

    weight_map = json.loads((tmp_path / INDEX_FILE).read_text())["weight_map"]
    for layer in range(2):
        shards = {weight_map[f"model.layers.{layer}.self_attn.{p}_proj.weight"] for p in "qkv"}
        assert len(shards) == 3
    assert all((tmp_path / shard).is_file() for shard in set(weight_map.values()))
    assert not any(key.endswith("inv_freq") for key in weight_map)

    ids = torch.arange(10)[None] % 128
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, checkpoint.model(input_ids=ids).logits)


def test_llama_variants_have_the_advertised_shapes(tmp_path):
    mha = llama_checkpoint(tmp_path / "mha", "mha").model.model.layers[0].self_attn
    gqa = llama_checkpoint(tmp_path / "gqa", "gqa-rope5e5")
    assert tuple(mha.k_proj.weight.shape) == (64, 64)
    assert tuple(gqa.model.model.layers[0].self_attn.k_proj.weight.shape) == (32, 64)
    assert gqa.config.rope_parameters["rope_theta"] == 5e5


def test_save_sharded_refuses_a_shard_size_that_keeps_qkv_together(tmp_path):
    model = LlamaForCausalLM(tiny_llama_config())
    with pytest.raises(RuntimeError, match=r"layer 0: q/k/v share shards"):
        save_sharded(model, tmp_path, max_shard_size=64 * 1024)
