"""The pooler survives HF → SAT → HF: a file's trained pooler loads into the ``pooler`` mixin, computes HF's
``pooler_output``, and `save_hf` writes it back, so transformers' base model loads the export with no missing key
and the same pooler output. Files without a pooler get no pooler mixin and write none."""

import pytest

sat = pytest.importorskip("sat")

import torch
import transformers
from encoder_fixtures import VOCAB, bert_checkpoint, roberta_checkpoint

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import open_source
from adapters.sat import from_hf, save_hf
from adapters.sat.hf_outputs import encoder_outputs

TOL = 1e-4
PAD = 1  # tiny_roberta_config's pad_token_id

# name -> (writes the checkpoint, transformers base class, the pooler's key prefix in the file)
CASES = {
    "bert-model": (lambda p: bert_checkpoint(p, transformers.BertModel), "BertModel", ""),
    "bert-pretraining": (lambda p: bert_checkpoint(p, transformers.BertForPreTraining), "BertModel", "bert."),
    "roberta-model": (lambda p: roberta_checkpoint(p, transformers.RobertaModel), "RobertaModel", ""),
}


def tensors(folder) -> dict[str, torch.Tensor]:
    with open_source(folder) as reader:
        return {k: reader.read(k) for k in reader.keys()}


def inputs(name: str):
    ids = torch.randint(PAD + 1, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    if name.startswith("roberta"):  # HF numbers RoBERTa's positions from pad + 1; types stay 0 (one-row table)
        return ids, PAD + 1 + torch.arange(12).expand_as(ids), None
    types = torch.randint(0, 2, ids.shape, generator=torch.Generator().manual_seed(1))
    return ids, torch.arange(12).expand_as(ids), types


def hf_base(model):
    """The base model inside a task model (``BertForPreTraining.bert``), or the model itself."""
    return getattr(model, "bert", None) or getattr(model, "roberta", None) or model


@pytest.mark.parametrize("name", list(CASES))
def test_pooler_loads_computes_and_is_written_back(tmp_path, name):
    write, base_class, prefix = CASES[name]
    checkpoint = write(tmp_path / "hf")
    ids, positions, types = inputs(name)
    kw = {} if types is None else {"token_type_ids": types}
    with torch.no_grad():
        expected = hf_base(checkpoint.model)(input_ids=ids, **kw)
    model, args = from_hf(None, tmp_path / "hf", device="cpu")
    assert "pooler" in model.mixins
    ours = encoder_outputs(model.eval(), ids, positions, types)
    assert (ours["pooler_output"] - expected.pooler_output).abs().max().item() <= TOL
    assert (ours["last_hidden_state"] - expected.last_hidden_state).abs().max().item() <= TOL

    out = save_hf(model, tmp_path / "out", args)
    source, written = tensors(tmp_path / "hf"), tensors(out)
    for key in (f"{prefix}pooler.dense.weight", f"{prefix}pooler.dense.bias"):
        assert torch.equal(written[key], source[key])
    exported, info = getattr(transformers, base_class).from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == set() and info["mismatched_keys"] == set()
    with torch.no_grad():
        again = exported.eval()(input_ids=ids, **kw)
    assert (again.pooler_output - expected.pooler_output).abs().max().item() <= TOL
    assert (again.last_hidden_state - expected.last_hidden_state).abs().max().item() <= TOL


def test_a_file_without_a_pooler_gets_none_and_writes_none(tmp_path):
    bert_checkpoint(tmp_path / "hf")  # BertForMaskedLM: no pooler
    model, args = from_hf(None, tmp_path / "hf", device="cpu")
    assert "pooler" not in model.mixins
    assert "pooler_output" not in encoder_outputs(model.eval(), *inputs("bert"))
    written = tensors(save_hf(model, tmp_path / "out", args))
    assert not any("pooler" in key for key in written)
