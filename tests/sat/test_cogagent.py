"""HF CogAgent → SAT `CogAgentModel` (adapters.sat.models, the CogVLM repository's names and forward).

Parity: text without a high-res image (no cross-attention) against transformers' `LlamaForCausalLM` holding the
language expert; low-res image + high-res image + text against an independent reference of the HF remote-code
forward (`cogagent_reference`); the cross tower alone against the reference's. Then the exact tensors, the
repository's names, the args CogAgent's SAT scripts read, cached generation, the hooks, and the refusals.
"""

import pytest

sat = pytest.importorskip("sat")

import argparse
import importlib.util
import json
from pathlib import Path

import torch
from cogagent_fixtures import SIZES, cogagent_batch, cogagent_checkpoint, sat_logits
from cogagent_reference import CogAgentReference, rope_angles
from cogvlm_fixtures import cli_demo_args, llama_from_experts
from sat import AutoModel
from sat.model.mixins import CachedAutoregressiveMixin
from sat.model.registry import model_registry

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError, keys
from adapters.sat import CogAgentModel, CogVLMModel
from adapters.sat.hf_checkpoint import HFCheckpoint
from adapters.sat.specs.cogagent import cogagent_args
from adapters.sat.tiny import TinyCogAgent

TOL = 1e-4
EXAMPLE = Path(__file__).parents[2] / "examples" / "cogvlm_sat_inference.py"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return cogagent_checkpoint(tmp_path_factory.mktemp("cogagent"))


@pytest.fixture(scope="module")
def loaded(checkpoint):
    model, args = CogAgentModel.from_hf(checkpoint.path, device="cpu")
    return model.eval(), args


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_checkpoint_is_sharded_with_the_remote_code_names(checkpoint):
    weight_map = json.loads((checkpoint.path / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(weight_map.values())) >= 10
    assert checkpoint.config["architectures"] == ["CogAgentForCausalLM"] and "model_type" not in checkpoint.config
    shards = {weight_map[f"model.layers.{i}.cross_attn.{n}.weight"] for i in (0, 1) for n in ("query", "dense")}
    assert len(shards) > 1  # the cross-attention tensors are spread over shards


def test_text_without_a_cross_image_matches_transformers_llama(checkpoint, loaded):
    """No high-res image: SAT's decoder layer skips cross-attention, and CogAgent is its LLaMA language expert."""
    model, _ = loaded
    ids = torch.randint(3, SIZES.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = llama_from_experts(checkpoint, "language")(input_ids=ids).logits
    assert _diff(sat_logits(model, ids), expected) <= TOL


def test_images_and_text_match_the_hf_remote_code_reference(checkpoint, loaded):
    model, _ = loaded
    ids, types, images, cross = cogagent_batch(text=6)
    reference = CogAgentReference(checkpoint.tensors, checkpoint.config)
    with torch.no_grad():
        expected = reference.logits(ids, types, images, cross)
        other_cross = reference.logits(ids, types, images, torch.zeros_like(cross))
        other_image = reference.logits(ids, types, torch.zeros_like(images), cross)
    assert _diff(sat_logits(model, ids, types, images, cross), expected) <= TOL
    assert _diff(expected, other_cross) > 0.1 and _diff(expected, other_image) > 0.1  # both images reach the logits


def test_cross_tower_matches_the_reference_and_never_runs_its_last_block(checkpoint, loaded):
    model, _ = loaded
    _, _, _, cross = cogagent_batch()
    encoder = model.get_mixin("encoder")
    with torch.no_grad():
        features = encoder(image=cross, input_ids=torch.zeros(2, 1, dtype=torch.long), attention_mask=torch.ones(1, 1))
        expected = CogAgentReference(checkpoint.tensors, checkpoint.config).encode_cross_images(cross)
        assert features.shape == (2, SIZES.cross_patches, SIZES.cross_hidden_size)
        assert _diff(features, expected) <= 1e-5
        last = encoder.vit.model.blocks[-1]
        saved = {k: v.clone() for k, v in last.state_dict().items()}
        for p in last.parameters():
            p.add_(1.0)
        try:
            assert torch.equal(encoder(image=cross), features)
        finally:
            last.load_state_dict(saved)


def test_rope_tables_are_computed_not_loaded(checkpoint, loaded):
    """The file's tables are random (tiny writer): the model's must be the computed ones, in every block."""
    model, _ = loaded
    rope = model.get_mixin("encoder").vit.model.rope
    grid, head_dim = SIZES.cross_image_size // SIZES.cross_patch_size, SIZES.cross_hidden_size // SIZES.cross_num_heads
    angles = rope_angles(grid, head_dim)
    assert torch.allclose(rope.freqs_cos, angles.cos(), atol=1e-6) and torch.allclose(rope.freqs_sin, angles.sin())
    assert not torch.equal(rope.freqs_cos, checkpoint.tensors["model.cross_vision.vit.model.rope.freqs_cos"])
    assert all(block.attn.rope is rope for block in model.get_mixin("encoder").vit.model.blocks)


def _cross_table(sizes: TinyCogAgent) -> dict[str, str]:
    """Every HF tensor CogAgent adds to CogVLM → its SAT name, written out (independent of the spec's rules)."""
    table = {
        "model.vision.pos_embed": "mixins.eva.pos_embed",
        "model.cross_vision.pos_embed": "mixins.encoder.pos_embed",
    }
    for i in range(sizes.num_hidden_layers):
        for name in ("query", "key_value", "dense"):
            table[f"model.layers.{i}.cross_attn.{name}.weight"] = (
                f"transformer.layers.{i}.cross_attention.{name}.weight"
            )
        table[f"model.layers.{i}.post_cross_attention_layernorm.weight"] = (
            f"transformer.layers.{i}.post_cross_attention_layernorm.weight"
        )
    tower = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias",
             "head.weight", "head.bias"]  # fmt: skip
    for k in range(sizes.cross_num_hidden_layers):
        tower += [f"blocks.{k}.{n}" for n in (
            "norm1.weight", "norm1.bias", "attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight",
            "attn.q_bias", "attn.v_bias", "attn.inner_attn_ln.weight", "attn.inner_attn_ln.bias", "attn.proj.weight",
            "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.w1.weight", "mlp.w1.bias", "mlp.w2.weight",
            "mlp.w2.bias", "mlp.ffn_ln.weight", "mlp.ffn_ln.bias", "mlp.w3.weight", "mlp.w3.bias")]  # fmt: skip
    table |= {f"model.cross_vision.vit.model.{n}": f"mixins.encoder.vit.model.{n}" for n in tower}
    return table


def test_every_cross_tower_and_cross_attention_tensor_is_loaded_exactly(checkpoint, loaded):
    model, _ = loaded
    state = model.state_dict()
    table = _cross_table(SIZES)
    for hf, ours in table.items():
        assert torch.equal(state[ours], checkpoint.tensors[hf]), f"{hf} -> {ours}"
    new_in_file = {k for k in checkpoint.tensors if "cross" in k or k == "model.vision.pos_embed"}
    assert new_in_file - set(table) == {f"model.cross_vision.vit.model.rope.freqs_{p}" for p in ("cos", "sin")}
    encoder = {k for k in state if k.startswith("mixins.encoder.") and ".rope." not in k}
    assert encoder == {v for v in table.values() if v.startswith("mixins.encoder.")}


# The CogVLM repository's CogAgent names beyond CogVLM's, for 2 LM layers and 2 cross blocks (ranges compressed).
REPOSITORY_NAMES = """
mixins.encoder.pos_embed
mixins.encoder.vit.model.blocks.{0,1}.attn.inner_attn_ln.bias
mixins.encoder.vit.model.blocks.{0,1}.attn.inner_attn_ln.weight
mixins.encoder.vit.model.blocks.{0,1}.attn.k_proj.weight
mixins.encoder.vit.model.blocks.{0,1}.attn.proj.bias
mixins.encoder.vit.model.blocks.{0,1}.attn.proj.weight
mixins.encoder.vit.model.blocks.{0,1}.attn.q_bias
mixins.encoder.vit.model.blocks.{0,1}.attn.q_proj.weight
mixins.encoder.vit.model.blocks.{0,1}.attn.rope.freqs_cos
mixins.encoder.vit.model.blocks.{0,1}.attn.rope.freqs_sin
mixins.encoder.vit.model.blocks.{0,1}.attn.v_bias
mixins.encoder.vit.model.blocks.{0,1}.attn.v_proj.weight
mixins.encoder.vit.model.blocks.{0,1}.mlp.ffn_ln.bias
mixins.encoder.vit.model.blocks.{0,1}.mlp.ffn_ln.weight
mixins.encoder.vit.model.blocks.{0,1}.mlp.w{1..3}.bias
mixins.encoder.vit.model.blocks.{0,1}.mlp.w{1..3}.weight
mixins.encoder.vit.model.blocks.{0,1}.norm{1,2}.bias
mixins.encoder.vit.model.blocks.{0,1}.norm{1,2}.weight
mixins.encoder.vit.model.cls_token
mixins.encoder.vit.model.head.bias
mixins.encoder.vit.model.head.weight
mixins.encoder.vit.model.norm.bias
mixins.encoder.vit.model.norm.weight
mixins.encoder.vit.model.patch_embed.proj.bias
mixins.encoder.vit.model.patch_embed.proj.weight
mixins.encoder.vit.model.pos_embed
mixins.encoder.vit.model.rope.freqs_cos
mixins.encoder.vit.model.rope.freqs_sin
mixins.eva.pos_embed
transformer.layers.{0,1}.cross_attention.dense.weight
transformer.layers.{0,1}.cross_attention.key_value.weight
transformer.layers.{0,1}.cross_attention.query.weight
transformer.layers.{0,1}.post_cross_attention_layernorm.weight
"""


def test_state_dict_names_are_the_cogvlm_repositorys(loaded):
    model, args = loaded
    cogvlm = CogVLMModel(argparse.Namespace(**vars(args) | {"is_decoder": False, "cross_attn_hidden_size": None}))
    added = set(model.state_dict()) - set(cogvlm.state_dict())
    assert sorted(keys.compress_keys(added)) == REPOSITORY_NAMES.split()
    assert set(cogvlm.state_dict()) <= set(model.state_dict())


def test_args_carry_what_cogagent_sat_scripts_read(loaded):
    _, args = loaded
    assert (args.is_decoder, args.cross_attn_hidden_size, args.cross_hidden_size_per_attention_head) == (True, 32, 8)
    assert (args.cross_image_pix, args.image_length, args.text_processor_version) == (56, 9, "chat_old")
    assert args.cross_eva_args == {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_hidden_size": 48,
                                   "patch_size": 14, "head_size": 16}  # fmt: skip


@pytest.mark.parametrize("release, template", [("cogagent-chat-hf", "chat_old"), ("cogagent-vqa-hf", "vqa")])
def test_released_configs_translate_to_the_sat_scripts_fields(tmp_path, release, template):
    sizes = TinyCogAgent(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, vision_hidden_size=1792, vision_intermediate_size=15360,
                         vision_num_hidden_layers=63, vision_num_heads=16, image_size=224, template_version=template,
                         cross_image_size=1120, cross_hidden_size=1024, cross_compute_hidden_size=1024,
                         cross_num_hidden_layers=24, cross_num_heads=16, cross_intermediate_size=2730,
                         cross_head_size=768)  # fmt: skip
    config = sizes.config()
    assert "cross_vision_config" not in config  # EVA-02-CLIP-L: the releases write no such field
    args = cogagent_args(HFCheckpoint(tmp_path, config, release))
    assert (args["image_length"], args["cross_image_pix"], args["cross_eva_args"]) == (256, 1120, {})
    assert (args["is_decoder"], args["cross_attn_hidden_size"], args["cross_hidden_size_per_attention_head"]) == (
        True, 1024, 32)  # fmt: skip
    assert (args["text_processor_version"], args["tokenizer_type"]) == (template, "lmsys/vicuna-7b-v1.5")
    assert args["eva_args"]["image_size"] == [224, 224]


def _example():
    spec = importlib.util.spec_from_file_location("cogvlm_sat_inference", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_auto_model_with_the_cli_demo_namespace_picks_cogagent_and_generates(checkpoint):
    example = _example()
    namespace = cli_demo_args(checkpoint.path, version="chat_old")
    model, args = AutoModel.from_pretrained(str(checkpoint.path), args=namespace)
    assert type(model) is CogAgentModel and args is namespace and model.cross_image_pix == 56
    direct, _ = CogAgentModel.from_hf(checkpoint.path)
    state, expected = model.state_dict(), direct.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)

    opts = example.parse(["--from_pretrained", str(checkpoint.path), "--max_new_tokens", "3"])
    tokenizer = example.CharTokenizer(args.vocab_size)
    model.eval().add_mixin("auto-regressive", CachedAutoregressiveMixin())
    encoder_calls = []
    model.get_mixin("encoder").register_forward_hook(lambda *_: encoder_calls.append(1))
    result = example.chat_turn(model, args, tokenizer, opts)
    assert len(result["tokens"]) == len(result["prompt_ids"]) + 3
    assert len(encoder_calls) == 1  # later steps reuse the first step's cross keys and values


def _demo_inputs(example, tokenizer, model, args, tokens: list[int], prompt: str) -> dict:
    """The demo's inputs for `tokens` (the prompt's masks padded for generated tokens), both images included."""
    text = example.text_inputs(tokenizer, prompt, model.image_length)
    grow = len(tokens) - text["input_ids"].shape[1]
    ids, mask, positions = example.masks_and_positions(torch.tensor(tokens), text["image_rope_mask"])
    images = {f"{prefix}_{k}": v for prefix, size in (("vision", args.eva_args["image_size"][0]),
                                                      ("cross", args.cross_image_pix))
              for k, v in example.image_inputs(None, size, torch.float32, "cpu").items()}  # fmt: skip
    masks = {k: torch.nn.functional.pad(text[k], (0, grow)) for k in ("image_embed_mask", "vision_expert_mask")}
    return dict(input_ids=ids, position_ids=positions, attention_mask=mask, **masks, **images)


def test_a_cached_step_with_reused_cross_keys_equals_a_full_forward(checkpoint, loaded):
    """SAT's cached generation: the prompt once, then one token with the self- and cross-attention caches."""
    example = _example()
    model, args = loaded
    tokenizer = example.CharTokenizer(args.vocab_size)
    prompt = example.PROMPTS["chat_old"]("What is it?", [])
    tokens = example.text_inputs(tokenizer, prompt, model.image_length)["input_ids"][0].tolist()
    cached = CogAgentModel.from_hf(checkpoint.path)[0].eval()
    cached.add_mixin("auto-regressive", CachedAutoregressiveMixin())
    with torch.no_grad():
        _, *layers = cached(**_demo_inputs(example, tokenizer, model, args, tokens, prompt), encoder_outputs=None)
        full = _demo_inputs(example, tokenizer, model, args, tokens + [7], prompt)
        step = {k: v for k, v in full.items() if k not in ("input_ids", "position_ids", "attention_mask")}
        logits = cached(input_ids=full["input_ids"][:, -1:], position_ids=full["position_ids"][:, -1:],
                        attention_mask=full["attention_mask"][..., -1:, :],
                        mems=torch.stack([layer["mem_kv"] for layer in layers]),
                        encoder_outputs=[layer["mem_cross"] for layer in layers], **step)[0]  # fmt: skip
        expected = model(**full)[0]
    assert _diff(logits[0, -1], expected[0, -1]) <= TOL
    without_cross = model(**{k: v for k, v in full.items() if not k.startswith("cross_")})[0]
    assert _diff(expected[0, -1], without_cross[0, -1]) > 0.1  # the cached cross keys matter


def test_sat_checkpoint_of_model_class_cogagent_loads_through_sats_registry(tmp_path, loaded):
    """A SAT checkpoint names ``model_class: CogAgentModel`` and the args in its model_config.json."""
    model, args = loaded
    assert model_registry.get("CogAgentModel") is CogAgentModel
    folder = tmp_path / "sat"
    (folder / "1").mkdir(parents=True)
    (folder / "latest").write_text("1")
    fields = ("num_layers", "vocab_size", "hidden_size", "num_attention_heads", "inner_hidden_size",
              "max_sequence_length", "layernorm_epsilon", "use_bias", "layernorm_order", "image_length", "eva_args",
              "is_decoder", "cross_attn_hidden_size", "cross_hidden_size_per_attention_head", "cross_image_pix",
              "cross_eva_args")  # fmt: skip
    config = {"model_class": "CogAgentModel", "model_parallel_size": 1} | {k: getattr(args, k) for k in fields}
    (folder / "model_config.json").write_text(json.dumps(config))
    torch.save({"module": model.state_dict(), "iteration": 1}, folder / "1" / "mp_rank_00_model_states.pt")
    native, _ = AutoModel.from_pretrained(str(folder))
    assert type(native) is CogAgentModel and not hasattr(native, "adapters_load_report")  # SAT's loader, not ours
    ids, types, images, cross = cogagent_batch()
    assert torch.equal(
        sat_logits(native.eval(), ids, types, images, cross), sat_logits(model, ids, types, images, cross)
    )


def test_a_cogagent_checkpoint_does_not_load_into_cogvlm(checkpoint):
    with pytest.raises(HookError) as info:
        CogVLMModel.from_hf(checkpoint.path)
    assert str(info.value) == (
        f"{checkpoint.path}: a cogagent checkpoint (architectures: CogAgentForCausalLM) loads into CogAgentModel or "
        "a subclass of it, not CogVLMModel\n"
        "  hint: call CogAgentModel.from_hf(...), or sat.AutoModel.from_hf(...) to pick the class"
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"cross_compute_hidden_size": 64},
         "cross_compute_hidden_size asks for a cross-attention width of 64 with cross_hidden_size=32 and 4 heads"),
        ({"cross_hidden_size": 64, "cross_compute_hidden_size": 64},
         "cross_hidden_size asks for cross-attention keys of width 64 from a 32-wide tower"),
        ({"hidden_act": "gelu"}, "hidden_act asks for an activation other than silu"),
    ],
)  # fmt: skip
def test_configs_sat_cannot_compute_are_refused(tmp_path, change, message):
    (tmp_path / "config.json").write_text(json.dumps(SIZES.config() | change))
    with pytest.raises(HookError) as info:
        CogAgentModel.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: {message}, which SAT's CogAgentModel does not compute\n"
        "  hint: SAT's CogAgentModel has no such option; loading would give wrong outputs, so it is refused"
    )
