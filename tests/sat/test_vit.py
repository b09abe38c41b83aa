"""HF ViT → SAT ViTModel: logits and hidden states match transformers; the config's eps; routing; refusals."""

import pytest

sat = pytest.importorskip("sat")

import json

import torch
from sat import AutoModel
from sat.model.official.vit_model import ViTModel
from vision_fixtures import images, sat_vit_forward, vit_checkpoint

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError

TOL = 1e-4


def test_logits_match_transformers(tmp_path):
    checkpoint = vit_checkpoint(tmp_path)
    model, args = ViTModel.from_hf(tmp_path, device="cpu")
    pixels = images()
    with torch.no_grad():
        expected = checkpoint.model(pixel_values=pixels).logits
    got = sat_vit_forward(model.eval(), pixels)
    assert got.shape == expected.shape == (2, 5)
    assert (got - expected).abs().max().item() <= TOL
    assert (args.image_size, args.patch_size, args.pre_len, args.post_len, args.vocab_size) == ([32, 32], 8, 1, 0, 1)
    assert (args.num_layers, args.hidden_size, args.inner_hidden_size, args.num_classes) == (2, 32, 64, 5)
    assert args.max_sequence_length == 17  # CLS + 4 x 4 patches
    # HF ViT normalises with eps 1e-12; SAT's default is 1e-5.
    assert args.layernorm_epsilon == 1e-12
    assert {m.eps for m in model.modules() if hasattr(m, "eps")} == {1e-12}


def test_headless_vit_model_file_returns_hidden_states(tmp_path):
    """A bare ``ViTModel`` file (no ``vit.`` prefix, a pooler, no classifier) loads without SAT's ``cls`` head."""
    checkpoint = vit_checkpoint(tmp_path, head=False)
    model, _ = ViTModel.from_hf(tmp_path, device="cpu")
    assert "cls" not in model.mixins
    pixels = images()
    with torch.no_grad():
        expected = checkpoint.model(pixel_values=pixels).last_hidden_state
    got = sat_vit_forward(model.eval(), pixels)
    assert got.shape == expected.shape == (2, 17, 32)
    assert (got - expected).abs().max().item() <= TOL


def test_auto_model_from_pretrained_routes_to_the_adapter(tmp_path):
    checkpoint = vit_checkpoint(tmp_path)
    model, _ = AutoModel.from_pretrained(str(tmp_path), args=None)
    assert type(model) is ViTModel
    pixels = images()
    with torch.no_grad():
        expected = checkpoint.model(pixel_values=pixels).logits
    assert (sat_vit_forward(model.eval(), pixels) - expected).abs().max().item() <= TOL


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_act": "gelu_new"}, "hidden_act asks for the activation 'gelu_new' (SAT's is exact gelu)"),
        ({"qkv_bias": False}, "qkv_bias asks for q/k/v without biases (SAT's always has them)"),
    ],
)
def test_configs_sat_cannot_compute_are_refused(tmp_path, change, message):
    vit_checkpoint(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(change)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(HookError) as info:
        ViTModel.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: {message}, which SAT's ViTModel does not compute\n"
        "  hint: SAT's ViTModel has no such option; loading would give wrong outputs, so it is refused"
    )


def test_rectangular_patches_are_refused(tmp_path):
    vit_checkpoint(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["patch_size"] = [8, 4]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(HookError) as info:
        ViTModel.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: patch_size asks for 8x4 patches, which SAT's ViTModel does not compute\n"
        "  hint: SAT's patch embedding takes one square patch size; loading is refused"
    )
