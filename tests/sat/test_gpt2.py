"""HF GPT-2 → SAT GPT2Model: parity with transformers for both file spellings, the tied head, the refusals."""

import pytest

sat = pytest.importorskip("sat")

import json

import torch
from encoder_fixtures import VOCAB, gpt2_checkpoint
from sat import AutoModel
from sat.model import GPT2Model
from sat_forward import causal_logits, token_ids
from transformers.activations import ACT2FN

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError

TOL = 1e-4


def hf_logits(checkpoint, ids):
    with torch.no_grad():
        return checkpoint.model(input_ids=ids).logits


def edit_config(path, **change):
    config = json.loads((path / "config.json").read_text())
    config.update(change)
    (path / "config.json").write_text(json.dumps(config))


def test_sat_activation_is_transformers_gelu_new():
    from sat.model.official import gpt2_model

    assert type(gpt2_model.gelu) is type(ACT2FN["gelu_new"])


@pytest.mark.parametrize("prefixed", [True, False], ids=["transformer-prefix", "openai-style"])
def test_logits_match_transformers(tmp_path, prefixed):
    checkpoint = gpt2_checkpoint(tmp_path, prefixed=prefixed)
    keys = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert ("transformer.wte.weight" in keys) is prefixed and ("h.0.attn.masked_bias" in keys) is not prefixed
    model, args = GPT2Model.from_hf(tmp_path, device="cpu")
    ids = token_ids(VOCAB)
    assert (causal_logits(model.eval(), ids) - hf_logits(checkpoint, ids)).abs().max().item() <= TOL
    assert (args.num_layers, args.hidden_size, args.num_attention_heads, args.max_sequence_length) == (2, 64, 4, 64)
    assert (args.inner_hidden_size, args.layernorm_epsilon, args.layernorm_order) == (None, 1e-5, "pre")
    assert model.adapters_load_report.ignored == (0 if prefixed else 4)  # attn.bias, attn.masked_bias per layer
    head, embedding = model.mixins["gpt2-final"].lm_head.weight, model.transformer.word_embeddings.weight
    assert torch.equal(head, embedding) and head.data_ptr() != embedding.data_ptr()


def test_untied_head_is_read_from_the_file(tmp_path):
    checkpoint = gpt2_checkpoint(tmp_path, tie_word_embeddings=False)
    model, _ = GPT2Model.from_hf(tmp_path, device="cpu")
    ids = token_ids(VOCAB)
    assert (causal_logits(model.eval(), ids) - hf_logits(checkpoint, ids)).abs().max().item() <= TOL
    assert not torch.equal(model.mixins["gpt2-final"].lm_head.weight, model.transformer.word_embeddings.weight)


def test_auto_model_routes_an_hf_folder_to_gpt2(tmp_path):
    checkpoint = gpt2_checkpoint(tmp_path, prefixed=False)
    model, args = AutoModel.from_pretrained(str(tmp_path), args=None)
    assert type(model) is GPT2Model and args.device == "cpu"
    direct, _ = AutoModel.from_hf(tmp_path)
    ids = token_ids(VOCAB)
    assert torch.equal(causal_logits(direct.eval(), ids), causal_logits(model.eval(), ids))
    assert (causal_logits(model, ids) - hf_logits(checkpoint, ids)).abs().max().item() <= TOL


@pytest.mark.parametrize(
    "change, message",
    [
        ({"activation_function": "relu"}, "activation_function asks for the activation 'relu' (SAT's is gelu_new)"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx asks for scores scaled by 1/(layer+1)"),
        ({"scale_attn_weights": False}, "scale_attn_weights asks for unscaled attention scores"),
    ],
)  # fmt: skip
def test_configs_sat_cannot_compute_are_refused(tmp_path, change, message):
    gpt2_checkpoint(tmp_path)
    edit_config(tmp_path, **change)
    with pytest.raises(HookError) as info:
        GPT2Model.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: {message}, which SAT's GPT2Model does not compute\n"
        "  hint: SAT's GPT2Model has no such option; loading would give wrong outputs, so it is refused"
    )


def test_a_head_the_file_lacks_is_never_made_up(tmp_path):
    gpt2_checkpoint(tmp_path)  # tied: the file has no lm_head.weight
    edit_config(tmp_path, tie_word_embeddings=False)
    with pytest.raises(HookError) as info:
        GPT2Model.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path}: lm_head.weight is not in the checkpoint and tie_word_embeddings is false, so GPT2Model's head "
        "has no source\n"
        "  hint: from_hf never initialises a head at random; save the model with its head (GPT2LMHeadModel)"
    )
