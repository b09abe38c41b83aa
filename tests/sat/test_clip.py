"""HF CLIP → SAT CLIP (through the construction shim): embeddings and logits match transformers; pooling; refusals."""

import pytest

sat = pytest.importorskip("sat")

import json

import torch
from sat import AutoModel
from sat.model.official import clip_model
from vision_fixtures import clip_checkpoint, images, sat_text_forward, sat_vit_forward, text_ids

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError
from adapters.sat.shims import CLIP

TOL = 1e-4
VOCAB, EOS = 100, 99


def hf_features(checkpoint, pixels, ids):
    with torch.no_grad():
        image = checkpoint.model.get_image_features(pixel_values=pixels)
        text = checkpoint.model.get_text_features(input_ids=ids)
    # transformers 5 returns an output object whose pooler_output holds the projected features.
    return getattr(image, "pooler_output", image), getattr(text, "pooler_output", text)


def test_embeddings_and_logits_match_transformers(tmp_path):
    checkpoint = clip_checkpoint(tmp_path)
    model, args = CLIP.from_hf(tmp_path, device="cpu")
    model.eval()
    pixels, ids = images(), text_ids(VOCAB, EOS)
    hf_image, hf_text = hf_features(checkpoint, pixels, ids)
    image, text = sat_vit_forward(model.image_encoder, pixels), sat_text_forward(model.text_encoder, ids)
    assert image.shape == hf_image.shape == (2, 24) and text.shape == hf_text.shape == (2, 24)
    assert (image - hf_image).abs().max().item() <= TOL
    assert (text - hf_text).abs().max().item() <= TOL

    batch, length = ids.shape
    with torch.no_grad():
        expected = checkpoint.model(input_ids=ids, pixel_values=pixels).logits_per_text
        *_, logits_per_text, _ = model(torch.zeros(batch, 1, dtype=torch.long), torch.arange(17).expand(batch, -1),
                                       ids, torch.arange(length).expand(batch, -1), image=pixels,
                                       text_attention_mask=torch.ones(1, 1, length, length))  # fmt: skip
    assert (logits_per_text - expected).abs().max().item() <= TOL

    vision = (args.hidden_size, args.num_layers, args.image_size, args.patch_size, args.projection_dim)
    assert vision == (48, 2, [32, 32], 8, 24)
    text = (args.text_hidden_size, args.text_num_layers, args.text_vocab_size, args.text_max_sequence_length)
    assert text == (32, 2, 100, 16)
    assert args.layernorm_epsilon == 1e-5


def test_shim_is_sats_clip_and_sats_own_cannot_be_built(tmp_path):
    """The shim exists because SAT 0.4.12's CLIP fails in construction; if SAT fixes that, this test says so."""
    clip_checkpoint(tmp_path)
    model, args = AutoModel.from_hf(tmp_path)
    assert type(model) is CLIP and isinstance(model, clip_model.CLIP)
    assert isinstance(model.image_encoder, clip_model.ImageEncoder)
    assert isinstance(model.text_encoder, clip_model.TextEncoder)
    args.skip_init = False
    with pytest.raises(TypeError, match="got multiple values for keyword argument 'layernorm_epsilon'"):
        clip_model.CLIP(args)


def test_text_pooling_is_the_last_position_not_the_eos(tmp_path):
    """SAT's CLIP pools the last position; HF pools the EOS. With right padding after the EOS they differ."""
    checkpoint = clip_checkpoint(tmp_path)
    model, _ = CLIP.from_hf(tmp_path)
    ids = text_ids(VOCAB, EOS)
    ids[:, 5], ids[:, 6:] = EOS, 0  # EOS, then padding
    with torch.no_grad():
        hidden = checkpoint.model.text_model(input_ids=ids).last_hidden_state
        last = checkpoint.model.text_projection(hidden[:, -1])
        _, hf_text = hf_features(checkpoint, images(), ids)
    sat_text = sat_text_forward(model.eval().text_encoder, ids)
    assert (sat_text - last).abs().max().item() <= TOL
    assert (sat_text - hf_text).abs().max().item() > 1e-2


def test_auto_model_from_pretrained_routes_to_the_adapter(tmp_path):
    checkpoint = clip_checkpoint(tmp_path)
    model, _ = AutoModel.from_pretrained(str(tmp_path), args=None)
    assert type(model) is CLIP
    pixels = images()
    hf_image, _ = hf_features(checkpoint, pixels, text_ids(VOCAB, EOS))
    assert (sat_vit_forward(model.eval().image_encoder, pixels) - hf_image).abs().max().item() <= TOL


@pytest.mark.parametrize(
    "change, message",
    [
        ({"vision_config": {"hidden_act": "gelu"}},
         "vision_config.hidden_act asks for the activation 'gelu' (SAT's is QuickGELU)"),
        ({"text_config": {"layer_norm_eps": 1e-6}},
         "layer_norm_eps asks for two LayerNorm eps, 1e-05 (vision) and 1e-06 (text) (SAT's towers share one)"),
    ],
)  # fmt: skip
def test_configs_sat_cannot_compute_are_refused(tmp_path, change, message):
    clip_checkpoint(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for tower, fields in change.items():
        config[tower].update(fields)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(HookError) as info:
        CLIP.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: {message}, which SAT's CLIP does not compute\n"
        "  hint: SAT's CLIP has no such option; loading would give wrong outputs, so it is refused"
    )
