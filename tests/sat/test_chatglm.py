"""THUDM ChatGLM-6B, ChatGLM2-6B and ChatGLM3-6B → SAT ChatGLMModel / ChatGLM2Model / ChatGLM3Model.

ChatGLM2/3 files are written from a transformers `GlmForCausalLM` (same math: interleaved RoPE on half of each
head, RMSNorm, SwiGLU, GQA with qkv bias), which is the reference. ChatGLM-6B (v1) has no transformers class: it
is checked tensor by tensor against the hand-written qkv regrouping, and against a reference forward written below
from the v1 remote code's semantics. Also here: how a ``model_type: chatglm`` config is told apart, and how
naming the SAT class picks the release when the config cannot.
"""

import pytest

sat = pytest.importorskip("sat")

import torch
import torch.nn.functional as F
from glm_fixtures import CHATGLM6B_CONFIG, THUDM_RELEASES, chatglm6b_checkpoint, thudm_checkpoint
from sat import AutoModel
from sat.model.official.chatglm2_model import ChatGLM2Model
from sat.model.official.chatglm3_model import ChatGLM3Model
from sat.model.official.chatglm_model import ChatGLMModel
from sat_forward import causal_logits, token_ids

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError
from adapters.sat.hf_checkpoint import HFCheckpoint
from adapters.sat.specs._glm import release

TOL = 1e-4


def hf_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def max_diff(sat_model, reference, ids):
    return (causal_logits(sat_model.eval(), ids) - hf_logits(reference, ids)).abs().max().item()


# ---------------------------------------------------------------------------------------------------- ChatGLM-6B


def chatglm6b_positions(batch: int, length: int, context: int) -> torch.Tensor:
    """(batch, 2, length): positions stop at the mask token (`context - 1`), block positions count the answer."""
    positions = torch.arange(length).clamp(max=context - 1)
    blocks = torch.cat([torch.zeros(context, dtype=torch.long), torch.arange(1, length - context + 1)])
    return torch.stack([positions, blocks]).expand(batch, 2, length)


def chatglm6b_reference(t: dict, config: dict, ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """ChatGLM-6B logits from the v1 remote code's semantics, causal mask.

    qkv rows per head ``[h: q k v]``; 2-D RoPE: the first half of each head rotates by positions, the second by block
    positions, each half-split (rotate_half) with base 10000; post-LN layers ``x = LN(x) * sqrt(2L) + f(LN(x))``;
    GELU in its tanh form.
    """
    heads, hidden, layers = config["num_attention_heads"], config["hidden_size"], config["num_layers"]
    hd, eps, alpha = hidden // heads, config["layernorm_epsilon"], (2 * layers) ** 0.5
    half = hd // 2
    inv_freq = 1.0 / 10000 ** (torch.arange(0, half, 2).float() / half)

    def rope(x, pos):  # x: (b, s, heads, half)
        angles = pos[:, :, None].float() * inv_freq
        cos, sin = torch.cat([angles, angles], -1).cos()[:, :, None], torch.cat([angles, angles], -1).sin()[:, :, None]
        x1, x2 = x[..., : half // 2], x[..., half // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def rotate(x):
        return torch.cat([rope(x[..., :half], position_ids[:, 0]), rope(x[..., half:], position_ids[:, 1])], -1)

    def norm(x, name):
        return F.layer_norm(x, (hidden,), t[name + ".weight"], t[name + ".bias"], eps)

    def linear(x, name):
        return F.linear(x, t[name + ".weight"], t[name + ".bias"])

    def gelu(x):
        return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * x * (1.0 + 0.044715 * x * x)))

    b, s = ids.shape
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    h = t["transformer.word_embeddings.weight"][ids]
    for i in range(layers):
        p = f"transformer.layers.{i}."
        x = norm(h, p + "input_layernorm")
        q, k, v = linear(x, p + "attention.query_key_value").view(b, s, heads, 3 * hd).split(hd, dim=-1)
        scores = torch.einsum("bqhd,bkhd->bhqk", rotate(q), rotate(k)) / hd**0.5
        attn = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        context = torch.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b, s, hidden)
        h = x * alpha + linear(context, p + "attention.dense")
        m = norm(h, p + "post_attention_layernorm")
        h = m * alpha + linear(gelu(linear(m, p + "mlp.dense_h_to_4h")), p + "mlp.dense_4h_to_h")
    head = t.get("lm_head.weight", t["transformer.word_embeddings.weight"])
    return F.linear(norm(h, "transformer.final_layernorm"), head)


def chatglm6b_logits(model, ids, position_ids):
    mask = torch.ones(1, 1, ids.shape[1], ids.shape[1]).tril()
    with torch.no_grad():
        return model.eval()(input_ids=ids, position_ids=position_ids, attention_mask=mask)[0]


@pytest.mark.parametrize("tied", [False, True], ids=["lm_head", "tied"])
def test_chatglm6b_logits_match_the_v1_reference_forward(tmp_path, tied):
    config, tensors = chatglm6b_checkpoint(tmp_path, tied=tied)
    model, args = AutoModel.from_hf(tmp_path, device="cpu")
    assert type(model) is ChatGLMModel
    ids, positions = token_ids(160), chatglm6b_positions(2, 12, context=7)
    logits = chatglm6b_logits(model, ids, positions)
    reference = chatglm6b_reference(tensors, config, ids, positions)
    assert logits.abs().mean() > 0.1 and (logits - reference).abs().max().item() <= TOL
    assert (args.num_layers, args.inner_hidden_size, args.layernorm_order, args.use_bias) == (2, 256, "post", True)
    assert (args.bos_token_id, args.mask_token_id, args.gmask_token_id, args.pad_token_id) == (150, 152, 153, 3)


def test_chatglm6b_qkv_rows_are_regrouped_and_the_rest_is_copied(tmp_path):
    config, tensors = chatglm6b_checkpoint(tmp_path, tied=True)
    model, _ = ChatGLMModel.from_hf(tmp_path)
    state = model.state_dict()
    for key, tensor in tensors.items():
        if key.endswith("inv_freq"):
            continue
        if "query_key_value" in key:  # rows [h: q k v] per head -> [Q; K; V]; weight (192, 64) and bias (192,)
            tensor = tensor.reshape(4, 3, 16, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)
        assert torch.equal(state[key], tensor), key
    head = state["mixins.chatglm-final.lm_head.weight"]
    assert torch.equal(head, tensors["transformer.word_embeddings.weight"])


def test_chatglm6b_with_auto_model_from_pretrained(tmp_path):
    chatglm6b_checkpoint(tmp_path)
    model, args = AutoModel.from_pretrained(str(tmp_path), args=None)
    assert type(model) is ChatGLMModel and args.device == "cpu"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"position_encoding_2d": False}, "position_encoding_2d asks for 1-D rotary positions"),
        ({"quantization_bit": 4}, "quantization_bit asks for int4/int8 weights"),
        ({"pre_seq_len": 128}, "pre_seq_len asks for a P-tuning prefix encoder"),
    ],
)
def test_chatglm6b_configs_sat_cannot_compute_are_refused(tmp_path, change, message):
    chatglm6b_checkpoint(tmp_path, **change)
    with pytest.raises(HookError) as info:
        AutoModel.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: {message}, which SAT's ChatGLMModel does not compute\n"
        "  hint: SAT's ChatGLMModel has no such option; loading would give wrong outputs, so it is refused"
    )


def test_a_generation_the_class_cannot_hold_is_refused(tmp_path):
    chatglm6b_checkpoint(tmp_path / "v1")
    with pytest.raises(HookError) as info:
        ChatGLM2Model.from_hf(tmp_path / "v1")
    assert str(info.value) == (
        f"{tmp_path / 'v1' / 'config.json'}: this is a ChatGLM-6B (v1) config (no ffn_hidden_size), which SAT's "
        "ChatGLM2Model cannot hold\n  hint: call sat.AutoModel.from_hf(...) to pick the class"
    )
    thudm_checkpoint(tmp_path / "v3", "chatglm3")
    with pytest.raises(HookError) as info:
        ChatGLMModel.from_hf(tmp_path / "v3")
    assert str(info.value) == (
        f"{tmp_path / 'v3' / 'config.json'}: this is a ChatGLM2/ChatGLM3/GLM-4 config (ffn_hidden_size), which "
        "SAT's ChatGLMModel (ChatGLM-6B v1) cannot hold\n  hint: call sat.AutoModel.from_hf(...) to pick the class"
    )


# ------------------------------------------------------------------------------------------ ChatGLM2-6B / ChatGLM3-6B


@pytest.mark.parametrize("per_head_qkv", [False, True], ids=["multi-query", "per-head-qkv"])
def test_chatglm2_logits_match_transformers(tmp_path, per_head_qkv):
    checkpoint = thudm_checkpoint(tmp_path, "chatglm2", per_head_qkv=per_head_qkv)
    model, args = AutoModel.from_hf(tmp_path, device="cpu")
    assert type(model) is ChatGLM2Model
    assert max_diff(model, checkpoint.model, token_ids(128)) <= TOL
    # SAT's ChatGLM2 computes silu(dense_h_to_4h(x)) * w2(x): the gate half goes to dense_h_to_4h.
    gate, up = checkpoint.tensors["transformer.encoder.layers.0.mlp.dense_h_to_4h.weight"].chunk(2)
    assert torch.equal(model.transformer.layers[0].mlp.dense_h_to_4h.weight, gate)
    assert torch.equal(model.mixins.mlp.w2[0].weight, up)
    assert (args.num_layers, args.vocab_size, args.inner_hidden_size, args.max_sequence_length) == (2, 128, 96, 32768)
    assert args.num_multi_query_heads == (0 if per_head_qkv else 2) and args.use_qkv_bias and not args.use_bias


def test_chatglm3_32k_logits_match_transformers_with_a_scaled_base(tmp_path):
    checkpoint = thudm_checkpoint(tmp_path, "chatglm3", _name_or_path="THUDM/chatglm3-6b-32k", rope_ratio=50)
    assert checkpoint.model.config.rope_parameters["rope_theta"] == 5e5
    model, args = AutoModel.from_hf(tmp_path, device="cpu")
    assert type(model) is ChatGLM3Model and args.base_scale == 50
    assert model.get_mixin("attn").rotary_pos_emb.base == 5e5
    assert max_diff(model, checkpoint.model, token_ids(128)) <= TOL
    # SAT's ChatGLM3 computes silu(w2(x)) * dense_h_to_4h(x): the halves swap slots against ChatGLM2.
    gate, up = checkpoint.tensors["transformer.encoder.layers.1.mlp.dense_h_to_4h.weight"].chunk(2)
    assert torch.equal(model.mixins.mlp.w2[1].weight, gate)
    assert torch.equal(model.transformer.layers[1].mlp.dense_h_to_4h.weight, up)


@pytest.mark.parametrize("files, cls", [("chatglm2", ChatGLM3Model), ("chatglm3", ChatGLM2Model)])
def test_naming_the_class_picks_the_release_the_config_does_not(tmp_path, files, cls):
    checkpoint = thudm_checkpoint(tmp_path, files)

    class Mine(cls):
        pass

    for asked in (cls, Mine):
        model, _ = asked.from_hf(tmp_path)
        assert type(model) is asked and max_diff(model, checkpoint.model, token_ids(128)) <= TOL


@pytest.mark.parametrize("files, expected", [("chatglm2", ChatGLM2Model), ("chatglm3", ChatGLM3Model)])
def test_unchanged_sat_snippets_with_from_pretrained(tmp_path, files, expected):
    checkpoint = thudm_checkpoint(tmp_path, files)
    model, args = AutoModel.from_pretrained(str(tmp_path), args=None)
    assert type(model) is expected and args.device == "cpu"
    assert max_diff(model, checkpoint.model, token_ids(128)) <= TOL
    other = ChatGLM3Model if expected is ChatGLM2Model else ChatGLM2Model
    model, _ = other.from_pretrained(str(tmp_path))  # the class named in the script picks the release
    assert type(model) is other and max_diff(model, checkpoint.model, token_ids(128)) <= TOL


def test_unnamed_chatglm2_or_3_defaults_to_chatglm3_only_while_rope_ratio_is_1(tmp_path):
    thudm_checkpoint(tmp_path / "plain", "chatglm3", _name_or_path=None)
    model, _ = AutoModel.from_hf(tmp_path / "plain")
    assert type(model) is ChatGLM3Model

    checkpoint = thudm_checkpoint(tmp_path / "32k", "chatglm3", _name_or_path=None, rope_ratio=50)
    with pytest.raises(HookError) as info:
        AutoModel.from_hf(tmp_path / "32k")
    # Other families of model_type chatglm (GLM-4V) may join ours in the lists.
    first, hint = str(info.value).split("\n")
    head = f"{tmp_path / '32k'}: model_type 'chatglm' matches none of the families reading it ("
    assert first.startswith(head) and {"chatglm", "chatglm2", "chatglm3", "glm4"} <= set(
        first[len(head) : -1].split(", ")
    )
    head = "  hint: the config lacks the fields that tell these versions apart; name the version by its SAT class: "
    classes = {f"{name}.from_hf(...)" for name in ("ChatGLMModel", "ChatGLM2Model", "ChatGLM3Model", "ChatGLM4Model")}
    assert hint.startswith(head) and classes <= set(hint[len(head) :].split(" or "))
    model, _ = ChatGLM3Model.from_hf(tmp_path / "32k")
    assert max_diff(model, checkpoint.model, token_ids(128)) <= TOL


def test_chatglm2_32k_position_interpolation_is_refused(tmp_path):
    thudm_checkpoint(tmp_path, "chatglm2", _name_or_path="THUDM/chatglm2-6b-32k", rope_ratio=16)
    with pytest.raises(HookError) as info:
        AutoModel.from_hf(tmp_path)
    assert str(info.value).startswith(
        f"{tmp_path / 'config.json'}: rope_ratio=16 asks for ChatGLM2-6B-32k's position interpolation"
    )
    with pytest.raises(HookError) as info:
        ChatGLM3Model.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: rope_ratio=16 of a ChatGLM2 checkpoint divides positions (ChatGLM2-6B-32k), "
        "but SAT's ChatGLM3Model multiplies the RoPE base by it\n"
        "  hint: SAT has no ChatGLM2 model with position interpolation; loading would give wrong outputs, so it is refused"
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"add_bias_linear": True}, "add_bias_linear asks for biases on the dense and MLP layers"),
        ({"rmsnorm": False}, "rmsnorm asks for LayerNorm in place of RMSNorm"),
        ({"apply_residual_connection_post_layernorm": True},
         "apply_residual_connection_post_layernorm asks for residuals taken after the layer norm"),
        ({"post_layer_norm": False}, "post_layer_norm asks for no final layer norm"),
        ({"quantization_bit": 4}, "quantization_bit asks for int4/int8 weights"),
        ({"pre_seq_len": 128}, "pre_seq_len asks for a P-tuning prefix encoder"),
    ],
)  # fmt: skip
def test_chatglm2_configs_sat_cannot_compute_are_refused(tmp_path, change, message):
    thudm_checkpoint(tmp_path, "chatglm2", **change)
    with pytest.raises(HookError) as info:
        AutoModel.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: {message}, which SAT's ChatGLM2Model does not compute\n"
        "  hint: SAT's ChatGLM2Model has no such option; loading would give wrong outputs, so it is refused"
    )


# ------------------------------------------------------------------------------------------------ release detection

_V2_SIZES = dict(ffn_hidden_size=13696, multi_query_attention=True, multi_query_group_num=2)


@pytest.mark.parametrize(
    "config, expected",
    [
        (CHATGLM6B_CONFIG, "chatglm"),
        ({**_V2_SIZES, **THUDM_RELEASES["chatglm2"], "padded_vocab_size": 65024}, "chatglm2"),
        ({**_V2_SIZES, **THUDM_RELEASES["chatglm3"], "padded_vocab_size": 65024}, "chatglm3"),
        ({**_V2_SIZES, "_name_or_path": "THUDM/chatglm3-6b-128k", "rope_ratio": 500}, "chatglm3"),
        ({**_V2_SIZES, **THUDM_RELEASES["glm4"], "padded_vocab_size": 151552}, "glm4"),
        ({**_V2_SIZES, "_name_or_path": "/data/ckpt/codegeex4-all-9b/", "padded_vocab_size": 151552}, "glm4"),
        ({**_V2_SIZES, "_name_or_path": "/data/finetuned", "padded_vocab_size": 151552}, "glm4"),
        ({**_V2_SIZES, "padded_vocab_size": 65024}, "chatglm3"),
        ({**_V2_SIZES, "padded_vocab_size": 65024, "rope_ratio": 50}, None),
        ({**_V2_SIZES, **THUDM_RELEASES["glm4"], "vision_config": {}}, "glm4v"),
    ],
    ids=["v1", "chatglm2", "chatglm3", "chatglm3-128k", "glm4", "codegeex4", "glm4-vocab", "unnamed", "ambiguous",
         "glm4v"],
)  # fmt: skip
def test_release_is_told_from_the_config(tmp_path, config, expected):
    assert release(HFCheckpoint(tmp_path, {"model_type": "chatglm", **config})) == expected
