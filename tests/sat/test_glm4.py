"""GLM-4 → SAT ChatGLM4Model, from transformers' native Glm files and from THUDM remote-code files.

The reference is transformers' `GlmForCausalLM` (the GLM-4 math); the THUDM files hold the same weights under the
remote code's names, so both layouts are checked against one forward pass.
"""

import pytest

sat = pytest.importorskip("sat")

import json

import torch
from glm_fixtures import GLM_VARIANTS, glm_checkpoint, thudm_checkpoint
from sat import AutoModel
from sat.model.official.chatglm2_model import ChatGLM2Model
from sat.model.official.chatglm3_model import ChatGLM3Model
from sat.model.official.chatglm4_model import ChatGLM4Model
from sat_forward import causal_logits, token_ids

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError, RotaryPermute, SpecError
from adapters.core.ops import OnParts, OpShapeError

TOL = 1e-4


def hf_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def max_diff(sat_model, reference, ids):
    return (causal_logits(sat_model.eval(), ids) - hf_logits(reference, ids)).abs().max().item()


def rotary_of(model):
    return model.get_mixin("attn").rotary_pos_emb


@pytest.mark.parametrize("variant", list(GLM_VARIANTS))
def test_native_glm_logits_match_transformers(tmp_path, variant):
    checkpoint = glm_checkpoint(tmp_path, variant)
    model, args = ChatGLM4Model.from_hf(tmp_path, device="cpu")
    ids = token_ids(128)
    assert max_diff(model, checkpoint.model, ids) <= TOL
    auto, _ = AutoModel.from_hf(tmp_path)
    assert type(auto) is ChatGLM4Model and torch.equal(causal_logits(auto.eval(), ids), causal_logits(model, ids))
    c = checkpoint.config
    assert args.num_multi_query_heads == (0 if c.num_key_value_heads == 4 else c.num_key_value_heads)
    assert args.hidden_size_per_attention_head == c.head_dim and args.use_qkv_bias and not args.use_bias
    assert (args.num_layers, args.vocab_size, args.inner_hidden_size, args.layernorm_epsilon) == (2, 128, 96, 1e-5)
    assert rotary_of(model).dim == int(c.head_dim * c.rope_parameters["partial_rotary_factor"])


def test_native_glm_tied_head_gets_an_independent_copy(tmp_path):
    checkpoint = glm_checkpoint(tmp_path, "gqa", tie_word_embeddings=True)
    assert "lm_head.weight" not in checkpoint.weight_map()
    model, _ = ChatGLM4Model.from_hf(tmp_path)
    assert max_diff(model, checkpoint.model, token_ids(128)) <= TOL
    head, embedding = model.mixins["chatglm-final"].lm_head.weight, model.transformer.word_embeddings.weight
    assert torch.equal(head, embedding) and head.data_ptr() != embedding.data_ptr()


@pytest.mark.parametrize("per_head_qkv", [False, True], ids=["multi-query", "per-head-qkv"])
def test_thudm_glm4_logits_match_transformers(tmp_path, per_head_qkv):
    checkpoint = thudm_checkpoint(tmp_path, "glm4", per_head_qkv=per_head_qkv)
    model, args = AutoModel.from_hf(tmp_path, device="cpu")
    assert type(model) is ChatGLM4Model
    assert max_diff(model, checkpoint.model, token_ids(128)) <= TOL
    assert rotary_of(model).base == 5e6 and rotary_of(model).dim == 8  # rope_ratio 500; half of kv_channels 16
    assert (args.num_layers, args.vocab_size, args.layernorm_epsilon) == (2, 128, 1.5625e-07)
    assert args.num_multi_query_heads == (0 if per_head_qkv else 2) and args.max_sequence_length == 131072


def test_q_and_k_rows_are_permuted_to_halves_and_v_rows_kept(tmp_path):
    checkpoint = thudm_checkpoint(tmp_path, "glm4")
    model, _ = ChatGLM4Model.from_hf(tmp_path)
    # Per head of 16: the 8 rotary channels go from interleaved pairs to halves, the other 8 stay.
    head = torch.tensor([0, 2, 4, 6, 1, 3, 5, 7, *range(8, 16)])
    for kind in ("weight", "bias"):
        source = checkpoint.tensors[f"transformer.encoder.layers.1.self_attention.query_key_value.{kind}"]
        loaded = getattr(model.transformer.layers[1].attention.query_key_value, kind)
        q, k, v = source.split([64, 32, 32])
        want_q = q.reshape(4, 16, *q.shape[1:])[:, head].reshape(q.shape)
        want_k = k.reshape(2, 16, *k.shape[1:])[:, head].reshape(k.shape)
        assert torch.equal(loaded, torch.cat([want_q, want_k, v]))


@pytest.mark.parametrize("layout", ["thudm", "native"])
def test_unchanged_sat_snippet_with_auto_model_from_pretrained(tmp_path, layout):
    checkpoint = thudm_checkpoint(tmp_path, "glm4") if layout == "thudm" else glm_checkpoint(tmp_path)
    model, args = AutoModel.from_pretrained(str(tmp_path), args=None)
    assert type(model) is ChatGLM4Model and args.device == "cpu"
    assert max_diff(model, checkpoint.model, token_ids(128)) <= TOL


def test_glm4_files_load_as_chatglm3_when_that_class_is_asked_for(tmp_path):
    """GLM-4's remote code computes ChatGLM3's function; naming the class picks ChatGLM3's mapping and layout."""
    checkpoint = thudm_checkpoint(tmp_path, "glm4")
    model, args = ChatGLM3Model.from_hf(tmp_path)
    assert type(model) is ChatGLM3Model and args.base_scale == 500
    assert max_diff(model, checkpoint.model, token_ids(128)) <= TOL
    with pytest.raises(HookError) as info:
        ChatGLM2Model.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: rope_ratio=500 asks for ChatGLM2-6B-32k's position interpolation (positions "
        "divided by rope_ratio), which SAT's ChatGLM2Model does not compute\n"
        "  hint: if this is a ChatGLM3 or GLM-4 checkpoint (rope_ratio scales the RoPE base), call "
        "ChatGLM3Model.from_hf(...) or ChatGLM4Model.from_hf(...)"
    )


def test_subclass_of_chatglm4_gets_the_glm4_mapping(tmp_path):
    checkpoint = thudm_checkpoint(tmp_path, "glm4")

    class MyGLM4(ChatGLM4Model):
        pass

    model, _ = MyGLM4.from_hf(tmp_path)
    assert type(model) is MyGLM4 and max_diff(model, checkpoint.model, token_ids(128)) <= TOL


def edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e4}},
         "rope_parameters asks for rope type 'linear' (scaled RoPE)"),
        ({"hidden_act": "gelu"}, "hidden_act asks for an activation other than silu"),
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.3125}},
         "partial_rotary_factor asks for a rotary width of 5 channels (SAT rotates an even number)"),
    ],
)  # fmt: skip
def test_native_glm_configs_sat_cannot_compute_are_refused(tmp_path, change, message):
    glm_checkpoint(tmp_path, "gqa")
    edit_config(tmp_path, **change)
    with pytest.raises(HookError) as info:
        ChatGLM4Model.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: {message}, which SAT's ChatGLM4Model does not compute\n"
        "  hint: SAT's ChatGLM4Model has no such option; loading would give wrong outputs, so it is refused"
    )


def test_glm4v_config_is_refused_by_the_language_model_class(tmp_path):
    thudm_checkpoint(tmp_path, "glm4", vision_config={"hidden_size": 32})
    with pytest.raises(HookError) as info:
        ChatGLM4Model.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: this is a GLM-4V config (vision_config), which SAT's ChatGLM4Model cannot hold\n"
        "  hint: call sat.AutoModel.from_hf(...) to pick the class"
    )


def distinct(*shape):
    return torch.arange(1, 1 + torch.Size(shape).numel(), dtype=torch.float32).reshape(shape)


def test_on_parts_touches_only_the_named_parts_and_inverts_bit_exactly():
    op = OnParts(RotaryPermute(0, "head_dim", "rotary_dim"), parts=(0, 1)).bind({"head_dim": 4, "rotary_dim": 4})
    q, k, v = distinct(8, 3), distinct(4, 3) + 100, distinct(4, 3) + 200
    out = op([q, k, v])
    assert torch.equal(out[0], q[[0, 2, 1, 3, 4, 6, 5, 7]]) and torch.equal(out[1], k[[0, 2, 1, 3]])
    assert out[2] is v
    assert op.out_shapes([(8, 3), (4, 3), (4, 3)]) == ((8, 3), (4, 3), (4, 3))
    back = op.inverse()(out)
    assert all(torch.equal(a, b) for a, b in zip(back, (q, k, v)))
    with pytest.raises(OpShapeError, match="names part 1 of a list of 1 tensors"):
        op.out_shapes([(8, 3)])
    with pytest.raises(SpecError, match="OnParts takes an elementwise op"):
        OnParts(op, parts=(0,))
