"""HF LLaMA → SAT LLaMAModel: parity with transformers, tied heads, the hooks, the config refusals."""

import pytest

sat = pytest.importorskip("sat")

import json

import torch
from hf_fixtures import LLAMA_VARIANTS, llama_checkpoint
from sat import AutoModel
from sat.model import GPT2Model, LLaMAModel
from sat_forward import causal_logits, token_ids

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError, MissingSourceError, ShapeMismatchError

TOL = 1e-4


def hf_logits(checkpoint, ids):
    with torch.no_grad():
        return checkpoint.model(input_ids=ids).logits


@pytest.mark.parametrize("variant", list(LLAMA_VARIANTS))
def test_logits_match_transformers(tmp_path, variant):
    checkpoint = llama_checkpoint(tmp_path, variant)
    model, args = LLaMAModel.from_hf(tmp_path, device="cpu")
    ids = token_ids(128)
    diff = (causal_logits(model.eval(), ids) - hf_logits(checkpoint, ids)).abs().max().item()
    assert diff <= TOL
    kv = checkpoint.config.num_key_value_heads
    assert args.num_multi_query_heads == (0 if kv == 4 else kv)
    assert (args.num_layers, args.hidden_size, args.inner_hidden_size, args.layernorm_epsilon) == (2, 64, 128, 1e-6)
    assert (args.hidden_dropout, args.attention_dropout, args.device) == (0.0, 0.0, "cpu")


def test_rope_theta_is_applied_not_sat_default(tmp_path):
    checkpoint = llama_checkpoint(tmp_path, "gqa-rope5e5")
    model, _ = LLaMAModel.from_hf(tmp_path, device="cpu")
    rotary = model.transformer.position_embeddings
    assert rotary.base == 5e5
    torch.testing.assert_close(rotary.inv_freq, 1.0 / 5e5 ** (torch.arange(0, 16, 2).float() / 16))
    assert checkpoint.config.rope_parameters["rope_theta"] == 5e5


def test_tied_embeddings_fill_an_independent_sat_head(tmp_path):
    checkpoint = llama_checkpoint(tmp_path, "gqa", tie_word_embeddings=True)
    assert "lm_head.weight" not in json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    model, _ = LLaMAModel.from_hf(tmp_path, device="cpu")
    ids = token_ids(128)
    assert (causal_logits(model.eval(), ids) - hf_logits(checkpoint, ids)).abs().max().item() <= TOL
    head, embedding = model.mixins.lm.lm_head.weight, model.transformer.word_embeddings.weight
    assert torch.equal(head, embedding) and head.data_ptr() != embedding.data_ptr()


def test_dtype_and_args_namespace_follow_sat_conventions(tmp_path):
    llama_checkpoint(tmp_path, "mha")
    args = LLaMAModel.get_args(hidden_dropout=0.1, bf16=True)
    args.my_script_flag = "kept"
    model, out = LLaMAModel.from_hf(tmp_path, args, overwrite_args={"max_sequence_length": 32})
    assert out is args and out.my_script_flag == "kept" and out.hidden_dropout == 0.1
    assert out.max_sequence_length == 32 and out.num_layers == 2
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model32, _ = LLaMAModel.from_hf(tmp_path, dtype=torch.float32)
    assert {p.dtype for p in model32.parameters()} == {torch.float32}


def test_unchanged_sat_snippet_with_auto_model_from_pretrained(tmp_path):
    """What a SAT inference script does, with an HF folder in place of a SAT checkpoint."""
    checkpoint = llama_checkpoint(tmp_path, "gqa")
    model, args = AutoModel.from_pretrained(str(tmp_path), args=None)
    model.eval()
    assert type(model) is LLaMAModel and args.device == "cpu"
    ids = token_ids(128)
    assert (causal_logits(model, ids) - hf_logits(checkpoint, ids)).abs().max().item() <= TOL
    direct, _ = AutoModel.from_hf(tmp_path)
    assert torch.equal(causal_logits(direct.eval(), ids), causal_logits(model, ids))
    same, _ = LLaMAModel.from_pretrained(str(tmp_path))
    assert torch.equal(causal_logits(same.eval(), ids), causal_logits(model, ids))


def test_subclasses_get_from_hf_and_strangers_are_refused(tmp_path):
    llama_checkpoint(tmp_path, "mha")

    class MyLLaMA(LLaMAModel):
        pass

    model, _ = MyLLaMA.from_hf(tmp_path)
    assert type(model) is MyLLaMA
    with pytest.raises(HookError) as info:
        GPT2Model.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path}: a llama checkpoint (model_type 'llama') loads into LLaMAModel or a subclass of it, not GPT2Model\n"
        "  hint: call LLaMAModel.from_hf(...), or sat.AutoModel.from_hf(...) to pick the class"
    )


def test_unsupported_architecture_is_refused_by_name(tmp_path):
    llama_checkpoint(tmp_path, "mha")
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(model_type="mamba", architectures=["MambaForCausalLM"])
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(HookError) as info:
        AutoModel.from_hf(tmp_path)
    first, supported, hint = str(info.value).split("\n")
    assert first == f"{tmp_path}: model_type 'mamba' (architectures: MambaForCausalLM) has no SAT mapping"
    assert supported.startswith("  supported model_types: ") and "llama" in supported
    assert hint == "  hint: a new family is one spec file in adapters/sat/specs/ plus one registry line"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_act": "gelu"}, "hidden_act asks for an activation other than silu"),
        ({"attention_bias": True}, "attention_bias asks for q/k/v/o biases"),
    ],
)  # fmt: skip
def test_configs_sat_cannot_compute_are_refused(tmp_path, change, message):
    llama_checkpoint(tmp_path, "mha")
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(change)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(HookError) as info:
        LLaMAModel.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: {message}, which SAT's LLaMAModel does not compute\n"
        "  hint: SAT's LLaMAModel has no such option; loading would give wrong outputs, so it is refused"
    )


def test_config_that_disagrees_with_the_weights_fails_before_reading(tmp_path):
    llama_checkpoint(tmp_path, "gqa")
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 96
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ShapeMismatchError) as info:
        LLaMAModel.from_hf(tmp_path)
    message = str(info.value)
    assert "model.layers.{0,1}.mlp.gate_proj.weight" in message and "[128, 64]" in message and "[96, 64]" in message


def test_missing_shard_is_a_typed_error_and_no_model_comes_back(tmp_path):
    llama_checkpoint(tmp_path, "gqa")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[3]
    shard.unlink()
    with pytest.raises(Exception) as info:
        LLaMAModel.from_hf(tmp_path)
    assert type(info.value).__name__ == "SourceNotFoundError"
    assert shard.name in str(info.value)


def test_checkpoint_without_layers_is_reported_missing(tmp_path):
    llama_checkpoint(tmp_path, "mha")
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(MissingSourceError) as info:
        LLaMAModel.from_hf(tmp_path)
    assert "transformer.layers.2.attention.query_key_value.weight" in str(info.value)


def test_sat_checkpoints_still_load_through_sats_own_path(tmp_path):
    from sat_checkpoint import save_sat_checkpoint

    llama_checkpoint(tmp_path / "hf", "gqa-rope5e5")
    model, args = LLaMAModel.from_hf(tmp_path / "hf")
    save_sat_checkpoint(model, args, tmp_path / "sat")
    native, native_args = AutoModel.from_pretrained(str(tmp_path / "sat"))
    assert type(native) is LLaMAModel and not hasattr(native, "adapters_load_report")  # SAT's loader, not ours
    ids = token_ids(128)
    native.transformer.position_embeddings.base = 5e5  # SAT's own path keeps its hard-coded base: set it by hand
    native.transformer.position_embeddings.inv_freq = model.transformer.position_embeddings.inv_freq.clone()
    assert torch.equal(causal_logits(native.eval(), ids), causal_logits(model.eval(), ids))
