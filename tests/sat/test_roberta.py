"""HF RoBERTa → SAT RobertaModel: logits vs transformers with HF's position numbering, headless files, and the
token-type table SAT has no place for (dropped when zero, refused otherwise)."""

import pytest

sat = pytest.importorskip("sat")

import json

import torch
from encoder_fixtures import VOCAB, encoder_forward, roberta_checkpoint
from sat import AutoModel
from sat.model import RobertaModel
from transformers import RobertaModel as HFRobertaModel

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError

TOL = 1e-4
PAD = 1  # tiny_roberta_config's pad_token_id, as roberta-base's


def inputs(batch: int = 2, length: int = 12):
    """Token ids without padding, and HF's positions for them: pad_token_id + 1 + arange."""
    ids = torch.randint(PAD + 1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(0))
    return ids, PAD + 1 + torch.arange(length).expand_as(ids)


def max_diff(a, b):
    return (a - b).abs().max().item()


def test_logits_match_transformers(tmp_path):
    checkpoint = roberta_checkpoint(tmp_path)
    model, args = RobertaModel.from_hf(tmp_path, device="cpu")
    ids, positions = inputs()
    with torch.no_grad():
        ref = checkpoint.model(input_ids=ids).logits
    assert max_diff(encoder_forward(model.eval(), ids, positions)[0], ref) <= TOL
    # Positions from 0 read other rows of the table: the numbering is the caller's to get right.
    assert max_diff(encoder_forward(model, ids, positions - PAD - 1)[0], ref) > 1e-2
    assert (args.num_layers, args.hidden_size, args.max_sequence_length, args.layernorm_epsilon) == (2, 64, 66, 1e-5)
    assert args.layernorm_order == "post" and model.mixins["bert-final"].lm_head.layer_norm.eps == 1e-5
    assert "bert-type" not in model.mixins
    assert model.adapters_load_report.ignored == 1  # the all-zero token-type table


def test_auto_model_routes_an_hf_folder_to_roberta(tmp_path):
    checkpoint = roberta_checkpoint(tmp_path)
    model, _ = AutoModel.from_pretrained(str(tmp_path), args=None)
    assert type(model) is RobertaModel
    ids, positions = inputs()
    with torch.no_grad():
        ref = checkpoint.model(input_ids=ids).logits
    assert max_diff(encoder_forward(model.eval(), ids, positions)[0], ref) <= TOL


def test_headless_file_returns_hidden_states(tmp_path):
    checkpoint = roberta_checkpoint(tmp_path, HFRobertaModel)
    keys = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert not any(k.startswith(("roberta.", "lm_head.")) for k in keys)
    model, _ = RobertaModel.from_hf(tmp_path, device="cpu")
    assert list(model.mixins) == ["hidden-states", "pooler"]
    ids, positions = inputs()
    with torch.no_grad():
        ref = checkpoint.model(input_ids=ids).last_hidden_state
    assert max_diff(encoder_forward(model.eval(), ids, positions)[0], ref) <= TOL


def test_nonzero_token_types_are_refused(tmp_path):
    checkpoint = roberta_checkpoint(tmp_path, zero_token_types=False)
    largest = checkpoint.model.roberta.embeddings.token_type_embeddings.weight.abs().max().item()
    assert largest > 0
    with pytest.raises(HookError) as info:
        RobertaModel.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path}: roberta.embeddings.token_type_embeddings.weight is not zero (max abs {largest:.3g}), and SAT's "
        "RobertaModel has no token-type table to hold it\n"
        "  hint: HF adds row 0 to every token; dropping it would change every output, so the checkpoint is refused"
    )


def test_configs_sat_cannot_compute_are_refused(tmp_path):
    roberta_checkpoint(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["hidden_act"] = "relu"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(HookError) as info:
        RobertaModel.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: hidden_act asks for the activation 'relu' (SAT's is exact gelu), which SAT's "
        "RobertaModel does not compute\n"
        "  hint: SAT's RobertaModel has no such option; loading would give wrong outputs, so it is refused"
    )
