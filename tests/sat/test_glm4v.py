"""GLM-4V (THUDM ``glm-4v-9b`` files) → SAT GLM4VModel.

References: text runs against transformers' `GlmForCausalLM` holding the same LM weights; the vision tower has no
transformers class, so `reference_image_embeddings` below computes glm-4v-9b's ``visual.py`` forward from the file's
tensors with plain torch ops, and the multimodal logits feed those embeddings to the Glm reference at the positions
the remote code gives them (boi ``p``, every image token ``p + 1``, eoi ``p + 2``).
"""

import pytest

sat = pytest.importorskip("sat")

import json
import math

import torch
import torch.nn.functional as F
from glm4v_fixtures import BOI, EOI, glm4v_checkpoint
from glm_fixtures import thudm_checkpoint
from sat import AutoModel
from sat.model.official.chatglm4_model import ChatGLM4Model
from sat.model.official.glm4v_model import GLM4VModel
from sat_forward import causal_logits, token_ids

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError
from adapters.sat.specs import glm4v

TOL = 1e-4
BEFORE, AFTER = 3, 2  # text tokens before boi and after eoi


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """The default checkpoint (scaling_factor 8, rope_ratio 500) and the GLM4VModel loaded from it."""
    path = tmp_path_factory.mktemp("glm4v")
    checkpoint = glm4v_checkpoint(path, rope_ratio=500)
    model, args = AutoModel.from_hf(path, device="cpu")
    return checkpoint, model.eval(), args


def reference_image_embeddings(checkpoint, images):
    """glm-4v-9b ``visual.py`` (``EVA2CLIPModel.forward``), from its semantics, on the tensors as the files hold them."""
    vc, t = checkpoint.vision, checkpoint.vision_tensor
    hv, heads, eps = vc["hidden_size"], vc["num_heads"], vc["layer_norm_eps"]
    hidden = checkpoint.config["hidden_size"]
    x = F.conv2d(images, t("patch_embedding.proj.weight"), t("patch_embedding.proj.bias"), stride=vc["patch_size"])
    x = x.flatten(2).transpose(1, 2)  # patches in row-major grid order
    cls = t("patch_embedding.cls_embedding").expand(len(x), 1, hv)
    x = torch.cat([cls, x], dim=1) + t("patch_embedding.position_embedding.weight")
    batch, length, _ = x.shape
    for j in range(vc["num_hidden_layers"]):

        def p(name, j=j):
            return t(f"transformer.layers.{j}.{name}")

        qkv = F.linear(x, p("attention.query_key_value.weight"), p("attention.query_key_value.bias"))
        q, k, v = qkv.reshape(batch, length, 3, heads, hv // heads).permute(2, 0, 3, 1, 4)  # rows [Q; K; V]
        weights = (q @ k.transpose(-1, -2) / math.sqrt(hv // heads)).softmax(-1)
        attention = (weights @ v).transpose(1, 2).reshape(batch, length, hv)
        attention = F.linear(attention, p("attention.dense.weight"), p("attention.dense.bias"))
        x = x + F.layer_norm(attention, (hv,), p("input_layernorm.weight"), p("input_layernorm.bias"), eps)
        inner = F.gelu(F.linear(x, p("mlp.fc1.weight"), p("mlp.fc1.bias")))
        mlp = F.linear(inner, p("mlp.fc2.weight"), p("mlp.fc2.bias"))
        x = x + F.layer_norm(mlp, (hv,), p("post_attention_layernorm.weight"), p("post_attention_layernorm.bias"), eps)
    x = x[:, 1:]
    grid = math.isqrt(x.shape[1])
    x = x.reshape(batch, grid, grid, hv).permute(0, 3, 1, 2)
    x = F.conv2d(x, t("conv.weight"), t("conv.bias"), stride=2).flatten(2).transpose(1, 2)
    y = F.linear(x, t("linear_proj.linear_proj.weight"))
    y = F.gelu(F.layer_norm(y, (hidden,), t("linear_proj.norm1.weight"), t("linear_proj.norm1.bias"), 1e-5))
    y = F.silu(F.linear(y, t("linear_proj.gate_proj.weight"))) * F.linear(y, t("linear_proj.dense_h_to_4h.weight"))
    y = F.linear(y, t("linear_proj.dense_4h_to_h.weight"))
    y = torch.cat([t("boi").expand(batch, 1, hidden), y, t("eoi").expand(batch, 1, hidden)], dim=1)
    return y / vc["scaling_factor"]


def multimodal_inputs(checkpoint, batch=2, seed=0):
    """SAT's inputs for ``[text, boi, image tokens, eoi, text]``, and the text ids and positions HF would use."""
    generator = torch.Generator().manual_seed(seed)
    side = checkpoint.vision["image_size"]
    images = torch.randn(batch, checkpoint.vision["in_channels"], side, side, generator=generator)
    before = torch.randint(0, BOI, (batch, BEFORE), generator=generator)
    after = torch.randint(0, BOI, (batch, AFTER), generator=generator)
    n = checkpoint.image_tokens
    filler = torch.zeros(batch, n, dtype=torch.long)  # overwritten by the image embeddings
    ids = torch.cat([before, torch.full((batch, 1), BOI), filler, torch.full((batch, 1), EOI), after], dim=1)
    mask = torch.zeros_like(ids)
    mask[:, BEFORE : BEFORE + n + 2] = 1
    positions = [*range(BEFORE + 1), *[BEFORE + 1] * n, *range(BEFORE + 2, BEFORE + 2 + AFTER + 1)]
    position_ids = torch.tensor(positions).expand(batch, -1)
    sat_inputs = dict(input_ids=ids, position_ids=position_ids, image_embed_mask=mask, vision_image=images,
                      vision_input_ids=torch.zeros(batch, 1, dtype=torch.long), vision_position_ids=None,
                      vision_attention_mask=None)  # fmt: skip
    return sat_inputs, (before, images, after)


def sat_inserted_embeddings(model, inputs):
    """The embedding rows SAT's ``eva`` mixin writes over boi..eoi, as [batch, image tokens + 2, hidden]."""
    with torch.no_grad():
        embedded = model.get_mixin("eva").word_embedding_forward(output_cross_layer={}, **inputs)
    mask = inputs["image_embed_mask"].bool()
    return embedded[mask].reshape(len(mask), -1, embedded.shape[-1])


def reference_logits(checkpoint, inputs, parts):
    before, images, after = parts
    embed = checkpoint.model.get_input_embeddings()
    with torch.no_grad():
        embeds = torch.cat([embed(before), reference_image_embeddings(checkpoint, images), embed(after)], dim=1)
        # An explicit all-ones mask keeps transformers from reading the repeated position ids as packed sequences.
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        return checkpoint.model(inputs_embeds=embeds, position_ids=inputs["position_ids"], attention_mask=mask).logits


def sat_logits(model, inputs):
    with torch.no_grad():
        return model(**inputs)[0]


def test_text_logits_match_transformers_glm(loaded):
    checkpoint, model, args = loaded
    assert type(model) is GLM4VModel
    ids = token_ids(BOI)
    with torch.no_grad():
        reference = checkpoint.model(input_ids=ids).logits
    assert (causal_logits(model, ids) - reference).abs().max().item() <= TOL
    rotary = model.get_mixin("attn").rotary_pos_emb
    assert rotary.base == 5e6 and rotary.dim == 8  # 10000 * rope_ratio 500; half of kv_channels 16
    assert (args.num_layers, args.vocab_size, args.num_multi_query_heads) == (2, 128, 2)
    assert args.layernorm_epsilon == 1.5625e-07 and args.max_sequence_length == 8192


def test_image_embeddings_match_the_visual_py_reference(loaded):
    checkpoint, model, _ = loaded
    inputs, (_, images, _) = multimodal_inputs(checkpoint)
    got = sat_inserted_embeddings(model, inputs)
    want = reference_image_embeddings(checkpoint, images)
    assert got.shape == want.shape == (2, checkpoint.image_tokens + 2, 64)
    assert (got - want).abs().max().item() <= TOL
    assert want.abs().mean() > 0.05  # O(1) activations over 8: the comparison is not between near-zeros


def test_multimodal_logits_match_the_reference(loaded):
    checkpoint, model, _ = loaded
    inputs, parts = multimodal_inputs(checkpoint)
    got, want = sat_logits(model, inputs), reference_logits(checkpoint, inputs, parts)
    assert got.shape == want.shape == (2, BEFORE + checkpoint.image_tokens + 2 + AFTER, 128)
    assert (got - want).abs().max().item() <= TOL


def _expected_vision_tensors(checkpoint) -> dict[str, torch.Tensor]:
    """Every SAT ``mixins.eva`` parameter and the value it must hold, from the HF tensors."""
    t, s = checkpoint.vision_tensor, checkpoint.vision["scaling_factor"]
    vit = "mixins.eva.vit_model."
    want = {
        vit + "mixins.patch_embedding.proj.weight": t("patch_embedding.proj.weight"),
        vit + "mixins.patch_embedding.proj.bias": t("patch_embedding.proj.bias"),
        vit + "transformer.word_embeddings.weight": t("patch_embedding.cls_embedding"),
        vit + "transformer.position_embeddings.weight": t("patch_embedding.position_embedding.weight"),
        "mixins.eva.conv.weight": t("conv.weight"),
        "mixins.eva.conv.bias": t("conv.bias"),
        "mixins.eva.boi": t("boi") / s,
        "mixins.eva.eoi": t("eoi") / s,
    }
    for name in ("linear_proj.weight", "norm1.weight", "norm1.bias", "dense_h_to_4h.weight", "gate_proj.weight"):
        want["mixins.eva.linear_proj." + name] = t("linear_proj." + name)
    want["mixins.eva.linear_proj.dense_4h_to_h.weight"] = t("linear_proj.dense_4h_to_h.weight") / s
    renames = {"mlp.fc1": "mlp.dense_h_to_4h", "mlp.fc2": "mlp.dense_4h_to_h"}
    for j in range(checkpoint.vision["num_hidden_layers"]):
        for module in ("input_layernorm", "attention.query_key_value", "attention.dense", "post_attention_layernorm",
                       "mlp.fc1", "mlp.fc2"):  # fmt: skip
            for kind in ("weight", "bias"):
                target = f"{vit}transformer.layers.{j}.{renames.get(module, module)}.{kind}"
                want[target] = t(f"transformer.layers.{j}.{module}.{kind}")
    return want


def test_every_vision_parameter_holds_its_source(loaded):
    checkpoint, model, _ = loaded
    state = {k: v for k, v in model.state_dict().items() if k.startswith("mixins.eva.")}
    want = _expected_vision_tensors(checkpoint)
    assert sorted(state) == sorted(want)
    unequal = [k for k in want if not torch.equal(state[k], want[k])]
    assert unequal == []


def test_scale_folding_is_exact_for_a_power_of_two_and_inverts_bit_exactly(loaded):
    checkpoint, model, _ = loaded
    spec = glm4v.FAMILY.spec(adapters.sat.resolve_hf(checkpoint.path), frozenset(checkpoint.tensors))
    folded = {"linear_proj.dense_4h_to_h.weight": model.mixins.eva.linear_proj.dense_4h_to_h.weight,
              "boi": model.mixins.eva.boi, "eoi": model.mixins.eva.eoi}  # fmt: skip
    for name, tensor in folded.items():
        source = checkpoint.vision_tensor(name)
        assert torch.equal(tensor, source / 8) and torch.equal(tensor * 8, source)
        (found,) = [r for r in spec.rules if r.sources[0].text == "transformer.vision." + name]
        assert torch.equal(found.inverse().ops[0]([tensor.detach()])[0], source)  # what an export writes back


def test_a_non_power_of_two_factor_rounds_by_an_ulp(tmp_path):
    checkpoint = glm4v_checkpoint(tmp_path, vision={"scaling_factor": 6})
    model, _ = GLM4VModel.from_hf(tmp_path)
    source = checkpoint.vision_tensor("linear_proj.dense_4h_to_h.weight")
    loaded = model.mixins.eva.linear_proj.dense_4h_to_h.weight.detach()
    relative = ((loaded - source / 6).abs() / (source / 6).abs()).max().item()
    assert 0 < relative <= 2**-23  # not bit-exact, one rounding step at most
    inputs, parts = multimodal_inputs(checkpoint)
    assert (sat_logits(model.eval(), inputs) - reference_logits(checkpoint, inputs, parts)).abs().max().item() <= TOL


def test_auto_model_from_pretrained_routes_to_glm4v(loaded):
    checkpoint, _, _ = loaded
    model, args = AutoModel.from_pretrained(str(checkpoint.path), args=None)
    assert type(model) is GLM4VModel and args.image_length == checkpoint.image_tokens == 9
    expected_eva = dict(num_layers=2, hidden_size=32, num_attention_heads=4, inner_hidden_size=64, image_size=[48, 48],
                        patch_size=8, in_channels=3, layernorm_epsilon=1e-6, vocab_size=1, pre_len=1, post_len=0,
                        use_bias=True, num_multi_query_heads=0, use_final_layernorm=False,
                        row_parallel_linear_final_bias=False, layernorm_order="post")  # fmt: skip
    assert {k: args.eva_args[k] for k in expected_eva} == expected_eva and args.proj_hidden_size == 64
    inputs, parts = multimodal_inputs(checkpoint, seed=1)
    assert (sat_logits(model.eval(), inputs) - reference_logits(checkpoint, inputs, parts)).abs().max().item() <= TOL


def test_sat_class_from_hf_and_the_language_model_class_refusal(loaded):
    checkpoint, auto, _ = loaded
    model, _ = GLM4VModel.from_hf(checkpoint.path)
    assert type(model) is GLM4VModel
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), auto.state_dict().values()))
    with pytest.raises(HookError) as info:
        ChatGLM4Model.from_hf(checkpoint.path)
    assert str(info.value) == (
        f"{checkpoint.path / 'config.json'}: this is a GLM-4V config (vision_config), which SAT's ChatGLM4Model "
        "cannot hold\n  hint: call sat.AutoModel.from_hf(...) to pick the class"
    )


def test_model_only_args_build_glm4v_and_stay_untouched():
    """SAT's own ``GLM4VModel.get_args()`` namespace lacks ``mode``; the shim fills a copy, never the caller's."""
    tower = dict(num_layers=1, hidden_size=16, num_attention_heads=2, inner_hidden_size=32, image_size=[16, 16],
                 patch_size=8, vocab_size=1, pre_len=1, post_len=0, layernorm_order="post", use_final_layernorm=False)  # fmt: skip
    args = GLM4VModel.get_args(num_layers=1, vocab_size=32, hidden_size=32, num_attention_heads=2,
                               inner_hidden_size=48, max_sequence_length=16, use_bias=False, image_length=1,
                               eva_args=tower, device="cpu")  # fmt: skip
    model = GLM4VModel(args)
    assert not hasattr(args, "mode") and model.mixins.eva.vit_model.transformer.hidden_size == 16


def _edit_vision(path, **changes):
    config = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config["vision_config"].pop(key)
        else:
            config["vision_config"][key] = value
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_act": "quick_gelu"},
         "vision_config.hidden_act asks for the vision activation 'quick_gelu' (SAT's EVA tower uses exact GELU), "
         "which SAT's GLM4VModel does not compute\n"
         "  hint: SAT's GLM4VModel has no such option; loading would give wrong outputs, so it is refused"),
        ({"scaling_factor": 0},
         "vision_config.scaling_factor asks for dividing the image embeddings by 0, which SAT's GLM4VModel does not "
         "compute\n  hint: SAT's GLM4VModel has no such option; loading would give wrong outputs, so it is refused"),
        ({"scaling_factor": None},
         "field 'vision_config.scaling_factor' is missing (model_type 'chatglm')\n"
         "  hint: the config does not look like one THUDM's GLM-4V remote code reads"),
    ],
    ids=["quick-gelu", "zero-factor", "no-factor"],
)  # fmt: skip
def test_vision_configs_sat_cannot_compute_are_refused(tmp_path, change, message):
    glm4v_checkpoint(tmp_path)
    _edit_vision(tmp_path, **change)
    with pytest.raises(HookError) as info:
        AutoModel.from_hf(tmp_path)
    assert str(info.value) == f"{tmp_path / 'config.json'}: {message}"


def test_glm4v_from_hf_on_a_text_only_config_is_refused_by_the_glm4v_family(tmp_path):
    """``GLM4VModel.from_hf(<GLM-4 files>)``: the nearest family of the class answers (GLM-4V), not GLM-4, which
    would build a GLM4VModel without ``eva_args`` and fail deep inside SAT."""
    from adapters.sat.shims import GLM4VModel

    thudm_checkpoint(tmp_path, "glm4")
    with pytest.raises(HookError) as info:
        GLM4VModel.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: there is no vision_config, so this is not a GLM-4V config, which SAT's "
        "GLM4VModel is built from\n  hint: call sat.AutoModel.from_hf(...) to pick the class"
    )
