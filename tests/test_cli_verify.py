"""``adapters verify`` for the SAT families beyond causal LMs, run as ``python -m adapters --json verify FOLDER``:
BERT and RoBERTa (hidden states, pooler, MLM logits vs transformers' base and masked-LM models), ViT (hidden states,
classifier logits), CLIP (both towers' embeddings) on tiny checkpoints transformers writes; one weight changed (in
the loaded model, or in the file) fails with exit 1; families transformers does not implement are refused by name."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("sat")

from safetensors.torch import load_file, save_file  # noqa: E402

TOL = 1e-4


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter drawn again: matrices ~ N(0, 0.15), vectors (norms, biases) ~ 1 + N(0, 0.1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1.0 + 0.1 * noise if param.dim() == 1 else 0.15 * noise)
    return model


def _bert(cls_name: str):
    import transformers

    config = transformers.BertConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, max_position_embeddings=32)  # fmt: skip
    return getattr(transformers, cls_name)(config)


def _roberta(cls_name: str):
    import transformers

    config = transformers.RobertaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=34, type_vocab_size=1,
                                        pad_token_id=1, layer_norm_eps=1e-5)  # fmt: skip
    model = getattr(transformers, cls_name)(config)
    randomize_(model)
    base = getattr(model, "roberta", model)
    with torch.no_grad():
        base.embeddings.token_type_embeddings.weight.zero_()  # as converted fairseq files (SAT has no type table)
    return model


def _vit(cls_name: str):
    import transformers

    config = transformers.ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    image_size=32, patch_size=8, num_labels=5)  # fmt: skip
    return getattr(transformers, cls_name)(config)


def _clip(cls_name: str):
    import transformers

    text = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=16, bos_token_id=98, eos_token_id=99, pad_token_id=0)  # fmt: skip
    vision = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)  # fmt: skip
    return transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=24))


# name -> (builds the transformers model, what verify reports it compared, the outputs it compares)
CASES = {
    "bert-pretraining": (lambda: _bert("BertForPreTraining"),
                         "SAT BertModel vs transformers BertModel (last_hidden_state, pooler_output) and "
                         "BertForMaskedLM (logits)", {"last_hidden_state", "pooler_output", "logits"}),
    "bert-base": (lambda: _bert("BertModel"), "SAT BertModel vs transformers BertModel (last_hidden_state, "
                  "pooler_output)", {"last_hidden_state", "pooler_output"}),
    "roberta-mlm": (lambda: _roberta("RobertaForMaskedLM"), "SAT RobertaModel vs transformers RobertaModel "
                    "(last_hidden_state) and RobertaForMaskedLM (logits)", {"last_hidden_state", "logits"}),
    "roberta-base": (lambda: _roberta("RobertaModel"), "SAT RobertaModel vs transformers RobertaModel "
                     "(last_hidden_state, pooler_output)", {"last_hidden_state", "pooler_output"}),
    "vit-classifier": (lambda: _vit("ViTForImageClassification"), "SAT ViTModel vs transformers ViTModel "
                       "(last_hidden_state) and ViTForImageClassification (logits)", {"last_hidden_state", "logits"}),
    "vit-base": (lambda: _vit("ViTModel"), "SAT ViTModel vs transformers ViTModel (last_hidden_state)",
                 {"last_hidden_state"}),
    "clip": (lambda: _clip("CLIPModel"), "SAT CLIP vs transformers CLIPModel (image_embeds, text_embeds)",
             {"image_embeds", "text_embeds"}),
}  # fmt: skip


def write(name: str, folder):
    torch.manual_seed(0)
    model = CASES[name][0]()
    if not name.startswith("roberta"):
        randomize_(model)
    model.save_pretrained(folder)
    return folder


def verify(capsys, folder, *extra: str) -> tuple[int, dict]:
    """``adapters --json verify FOLDER`` in this process (`main`); the entry point itself is tested once below."""
    from adapters.cli import main

    code = main(["--json", "verify", str(folder), *extra])
    return code, json.loads(capsys.readouterr().out)


def test_python_dash_m_adapters_verify_an_encoder(tmp_path):
    folder = write("bert-base", tmp_path / "bert")
    done = subprocess.run([sys.executable, "-m", "adapters", "--json", "verify", str(folder)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    data = json.loads(done.stdout)
    assert done.returncode == 0 and data["ok"] and data["max_abs_diff"] <= TOL, done.stderr[-2000:]


@pytest.mark.parametrize("name", list(CASES))
def test_verify_matches_transformers(tmp_path, capsys, name):
    code, data = verify(capsys, write(name, tmp_path / name))
    assert code == 0 and data["ok"], data
    assert data["compared"] == CASES[name][1]
    assert set(data["diffs"]) == CASES[name][2]
    assert data["max_abs_diff"] <= TOL and max(data["diffs"].values()) == data["max_abs_diff"]


@pytest.mark.parametrize("name", ["bert-pretraining", "roberta-base", "vit-classifier", "clip"])
def test_one_weight_changed_after_loading_fails_with_exit_1(tmp_path, capsys, monkeypatch, name):
    """A mapping that put one weight wrong: the SAT model's first attention output weight is off by 1 in one
    element. Every family's comparison sees it, and verify exits 1."""
    import adapters.sat
    load = adapters.sat.from_hf

    def tampered(*args, **kwargs):
        model, sat_args = load(*args, **kwargs)
        weight = next(p for k, p in model.named_parameters() if k.endswith("layers.0.attention.dense.weight"))
        with torch.no_grad():
            weight[0, 0] += 1.0
        return model, sat_args

    monkeypatch.setattr(adapters.sat, "from_hf", tampered)
    folder = write(name, tmp_path / name)
    code, data = verify(capsys, folder, "--tol", "1e-4")
    assert code == 1 and not data["ok"] and data["max_abs_diff"] > 1e-3


def test_a_folder_with_a_trained_roberta_type_row_fails_with_exit_1(tmp_path, capsys):
    """One weight changed in the file: RoBERTa's token-type row, which SAT has no table for, is no longer zero."""
    folder = write("roberta-base", tmp_path / "roberta")
    tensors = load_file(folder / "model.safetensors")
    tensors["embeddings.token_type_embeddings.weight"][0, 0] = 0.5
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    code, data = verify(capsys, folder)
    assert code == 1 and data["error"] == "HookError"
    assert data["message"].startswith(f"{folder}: embeddings.token_type_embeddings.weight is not zero (max abs 0.5)")


def test_families_transformers_does_not_implement_are_refused(tmp_path, capsys):
    from adapters.sat.tiny import TinyCogVLM, write_tiny_cogvlm

    folder = write_tiny_cogvlm(tmp_path / "cogvlm", TinyCogVLM())
    code, data = verify(capsys, folder)
    assert code == 1 and data["error"] == "CLIError"
    assert data["message"] == (
        f"{folder}: verify compares with transformers, which has no implementation of family cogvlm\n"
        "  hint: verify supports the families llama, mixtral, gpt2, glm, bert, roberta, vit, clip; compare others "
        "in Python (see the tests)"
    )
