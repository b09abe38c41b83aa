"""HF BERT → SAT BertModel: logits and every layer's hidden states vs transformers, the file spellings (``bert.``
prefix or none, legacy ``gamma``/``beta``), tied and untied decoders, headless files, the head's eps, refusals."""

import pytest

sat = pytest.importorskip("sat")

import json

import torch
from encoder_fixtures import VOCAB, bert_checkpoint, encoder_forward, legacy_norm_names, rewrite_shards
from sat import AutoModel
from sat.model import BertModel
from sat.model.official.bert_model import BertFinalMixin
from sat_forward import token_ids
from transformers import BertForMaskedLM, BertForPreTraining
from transformers import BertModel as HFBertModel

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError

TOL = 1e-4


def inputs():
    ids = token_ids(VOCAB)
    types = torch.randint(0, 2, ids.shape, generator=torch.Generator().manual_seed(1))
    return ids, types, torch.arange(ids.shape[1]).expand_as(ids)


def hf_outputs(checkpoint, ids, types):
    with torch.no_grad():
        return checkpoint.model(input_ids=ids, token_type_ids=types, output_hidden_states=True)


def max_diff(a, b):
    return (a - b).abs().max().item()


def normalised_layer_outputs(model, outputs):
    """SAT's layer outputs as HF reports them: HF's layer i ends with the LayerNorm that SAT runs first in layer
    i+1 (and in final_layernorm after the last layer)."""
    layers = model.transformer.layers
    norms = [layers[i + 1].input_layernorm for i in range(len(layers) - 1)] + [model.transformer.final_layernorm]
    with torch.no_grad():
        return [norm(out["hidden_states"]) for norm, out in zip(norms, outputs[1:])]


@pytest.mark.parametrize(
    "cls, overrides",
    [(BertForMaskedLM, {}), (BertForPreTraining, {}), (BertForMaskedLM, {"layer_norm_eps": 1e-3})],
    ids=["masked-lm", "pretraining", "eps1e-3"],
)
def test_logits_and_hidden_states_match_transformers(tmp_path, cls, overrides):
    checkpoint = bert_checkpoint(tmp_path, cls, **overrides)
    model, args = BertModel.from_hf(tmp_path, device="cpu")
    ids, types, positions = inputs()
    outputs = encoder_forward(model.eval(), ids, positions, token_type_ids=types, output_hidden_states=True)
    ref = hf_outputs(checkpoint, ids, types)
    logits = ref.logits if cls is BertForMaskedLM else ref.prediction_logits
    assert max_diff(outputs[0], logits) <= TOL
    for sat_hidden, hf_hidden in zip(normalised_layer_outputs(model, outputs), ref.hidden_states[1:], strict=True):
        assert max_diff(sat_hidden, hf_hidden) <= TOL
    eps = overrides.get("layer_norm_eps", 1e-12)
    assert (args.num_layers, args.hidden_size, args.inner_hidden_size, args.num_types) == (2, 64, 128, 2)
    assert (args.layernorm_order, args.layernorm_epsilon, args.max_sequence_length) == ("post", eps, 64)
    assert model.mixins["bert-final"].lm_head.layer_norm.eps == eps  # SAT builds it with 1e-5
    assert model.adapters_load_report.ignored == (2 if cls is BertForPreTraining else 0)  # seq_relationship
    assert ("pooler" in model.mixins) == (cls is BertForPreTraining)  # kept: tests/sat/test_pooler_export.py


def test_legacy_gamma_beta_names(tmp_path):
    checkpoint = bert_checkpoint(tmp_path)
    rewrite_shards(tmp_path, legacy_norm_names)
    keys = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert "bert.embeddings.LayerNorm.gamma" in keys and "cls.predictions.transform.LayerNorm.beta" in keys
    model, _ = BertModel.from_hf(tmp_path, device="cpu")
    ids, types, positions = inputs()
    out = encoder_forward(model.eval(), ids, positions, token_type_ids=types)[0]
    assert max_diff(out, hf_outputs(checkpoint, ids, types).logits) <= TOL


def test_untied_decoder_is_read_from_the_file(tmp_path):
    checkpoint = bert_checkpoint(tmp_path, tie_word_embeddings=False)
    model, _ = BertModel.from_hf(tmp_path, device="cpu")
    ids, types, positions = inputs()
    out = encoder_forward(model.eval(), ids, positions, token_type_ids=types)[0]
    assert max_diff(out, hf_outputs(checkpoint, ids, types).logits) <= TOL
    decoder = model.mixins["bert-final"].lm_head.decoder.weight
    assert not torch.equal(decoder, model.transformer.word_embeddings.weight)


def test_tied_decoder_gets_its_own_copy(tmp_path):
    bert_checkpoint(tmp_path)
    keys = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert "cls.predictions.decoder.weight" not in keys
    model, _ = BertModel.from_hf(tmp_path, device="cpu")
    decoder, embedding = model.mixins["bert-final"].lm_head.decoder.weight, model.transformer.word_embeddings.weight
    assert torch.equal(decoder, embedding) and decoder.data_ptr() != embedding.data_ptr()


def test_headless_file_loads_without_the_head_and_returns_hidden_states(tmp_path):
    checkpoint = bert_checkpoint(tmp_path, HFBertModel)
    keys = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert "embeddings.word_embeddings.weight" in keys and not any(k.startswith(("bert.", "cls.")) for k in keys)
    model, _ = AutoModel.from_pretrained(str(tmp_path), args=None)
    assert type(model) is BertModel and list(model.mixins) == ["bert-type", "hidden-states", "pooler"]
    ids, types, positions = inputs()
    hidden = encoder_forward(model.eval(), ids, positions, token_type_ids=types)[0]
    assert max_diff(hidden, hf_outputs(checkpoint, ids, types).last_hidden_state) <= TOL
    report = model.adapters_load_report
    assert report.spec == "hf-bert->sat-bert (headless)" and report.ignored == 0  # the pooler is kept
    # A head is an explicit choice, never a silent one: adding SAT's own replaces the hidden-states step.
    with pytest.warns(UserWarning, match="final_forward"):
        model.add_mixin("bert-final", BertFinalMixin(VOCAB, 64).eval())
    assert encoder_forward(model, ids, positions, token_type_ids=types)[0].shape == (*ids.shape, VOCAB)


def test_auto_model_routes_an_hf_folder_to_bert(tmp_path):
    checkpoint = bert_checkpoint(tmp_path)
    model, args = AutoModel.from_pretrained(str(tmp_path), args=None)
    assert type(model) is BertModel and args.device == "cpu"
    ids, types, positions = inputs()
    out = encoder_forward(model.eval(), ids, positions, token_type_ids=types)[0]
    assert max_diff(out, hf_outputs(checkpoint, ids, types).logits) <= TOL


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_act": "gelu_new"}, "hidden_act asks for the activation 'gelu_new' (SAT's is exact gelu)"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type asks for 'relative_key' position embeddings"),
    ],
)  # fmt: skip
def test_configs_sat_cannot_compute_are_refused(tmp_path, change, message):
    bert_checkpoint(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(change)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(HookError) as info:
        BertModel.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: {message}, which SAT's BertModel does not compute\n"
        "  hint: SAT's BertModel has no such option; loading would give wrong outputs, so it is refused"
    )
