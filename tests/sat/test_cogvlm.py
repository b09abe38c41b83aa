"""HF CogVLM → SAT `CogVLMModel` (adapters.sat.models, the CogVLM repository's names and forward).

Parity: the language path and the vision-expert path each against transformers' `LlamaForCausalLM` holding that
expert; image + text against an independent reference of the HF remote-code forward (`cogvlm_reference`). Then the
exact tensors, the names CogVLM's SAT checkpoints use, the hooks (``AutoModel.from_pretrained`` with the CogVLM
demo's namespace, SAT's registry, the repository's own class), and the configs that are refused.
"""

import pytest

sat = pytest.importorskip("sat")

import argparse
import importlib.util
import json
from pathlib import Path

import torch
from cogvlm_fixtures import (
    SIZES,
    cli_demo_args,
    cogvlm_checkpoint,
    llama_from_experts,
    multimodal_batch,
    sat_logits,
)
from cogvlm_reference import CogVLMReference, build_position_ids, vision_expert_mask
from sat import AutoModel
from sat.model.official.eva_clip_model import EVA2CLIPModel as SatEVA2CLIPModel
from sat.model.official.llama_model import LLaMAModel
from sat.model.registry import model_registry

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError, keys
from adapters.sat import CogVLMModel
from adapters.sat.hf_checkpoint import HFCheckpoint
from adapters.sat.models import (
    ImageMixin,
    LlamaVisionExpertAttnMixin,
    LlamaVisionExpertFCMixin,
    sat_inputs_from_token_types,
)
from adapters.sat.specs.cogvlm import cogvlm_args
from adapters.sat.tiny import TinyCogVLM

TOL = 1e-4
EXAMPLE = Path(__file__).parents[2] / "examples" / "cogvlm_sat_inference.py"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return cogvlm_checkpoint(tmp_path_factory.mktemp("cogvlm"))


@pytest.fixture(scope="module")
def loaded(checkpoint):
    model, args = CogVLMModel.from_hf(checkpoint.path, device="cpu")
    return model.eval(), args


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def text_ids(length: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, SIZES.vocab_size, (2, length), generator=torch.Generator().manual_seed(seed))


def test_checkpoint_is_sharded_with_the_remote_code_names(checkpoint):
    assert len(checkpoint.shards()) >= 10
    assert checkpoint.config["architectures"] == ["CogVLMForCausalLM"]
    assert "model_type" not in checkpoint.config  # as THUDM's config.json: the family is found by architecture


def test_language_path_matches_transformers_llama(checkpoint, loaded):
    model, _ = loaded
    ids = text_ids()
    with torch.no_grad():
        expected = llama_from_experts(checkpoint, "language")(input_ids=ids).logits
    assert _diff(sat_logits(model, ids), expected) <= TOL


def test_vision_expert_path_matches_transformers_llama(checkpoint, loaded):
    model, _ = loaded
    ids = text_ids()
    with torch.no_grad():
        expected = llama_from_experts(checkpoint, "vision")(input_ids=ids).logits
        language = llama_from_experts(checkpoint, "language")(input_ids=ids).logits
    every_token = torch.ones_like(ids)
    assert _diff(sat_logits(model, ids, vision_expert_mask=every_token), expected) <= TOL
    assert _diff(expected, language) > 0.1  # the experts differ, so the routing is what is tested


def test_image_and_text_match_the_hf_remote_code_reference(checkpoint, loaded):
    model, _ = loaded
    ids, types, images = multimodal_batch(text=6)
    reference = CogVLMReference(checkpoint.tensors, checkpoint.config)
    with torch.no_grad():
        expected = reference.logits(ids, types, images)
        without_image = reference.logits(ids, types, torch.zeros_like(images))
    assert _diff(sat_logits(model, ids, types, images), expected) <= TOL
    assert _diff(expected, without_image) > 0.1  # the image reaches the logits


@pytest.mark.parametrize(
    "types",
    [
        [0, 1, 1, 1, 1, 1, 0, 0],  # bos, boi, 3 patches, eoi, text
        [1, 1, 1, 1, 0, 0, 0, 0],  # the image first
        [0, 1, 1, 1, 0, 1, 1, 1, 1, 0],  # two images
        [0, 0, 0, 0, 0],  # text only
    ],
)
def test_sat_inputs_follow_hf_position_and_expert_conventions(types):
    token_types = torch.tensor([types])
    inputs = sat_inputs_from_token_types(token_types)
    assert torch.equal(inputs["position_ids"], build_position_ids(token_types))
    assert torch.equal(inputs["vision_expert_mask"].bool(), vision_expert_mask(token_types))
    assert torch.equal(inputs["image_embed_mask"], token_types)


def test_cogvlm_sat_demo_masks_equal_hf_token_types():
    """The CogVLM SAT demo's text processor (in the example) and HF's token types give the same SAT inputs."""
    example = _example()
    tokenizer = example.CharTokenizer(SIZES.vocab_size)
    inputs = example.text_inputs(tokenizer, example.PROMPTS["chat_old"]("What is it?", []), SIZES.patches)
    _, _, positions = example.masks_and_positions(inputs["input_ids"][0], inputs["image_rope_mask"])
    hf = sat_inputs_from_token_types(inputs["image_embed_mask"])
    assert torch.equal(hf["position_ids"], positions)
    assert torch.equal(hf["vision_expert_mask"], inputs["vision_expert_mask"])


def _vision_table(sizes: TinyCogVLM) -> dict[str, str]:
    """Every HF tower and projector tensor → its SAT name, written out (independent of the spec's rules)."""
    table = {
        "model.vision.patch_embedding.proj.weight": "mixins.eva.vit_model.mixins.patch_embedding.proj.weight",
        "model.vision.patch_embedding.proj.bias": "mixins.eva.vit_model.mixins.patch_embedding.proj.bias",
        "model.vision.patch_embedding.cls_embedding": "mixins.eva.vit_model.transformer.word_embeddings.weight",
        "model.vision.patch_embedding.position_embedding.weight":
            "mixins.eva.vit_model.transformer.position_embeddings.weight",
        "model.vision.linear_proj.linear_proj.weight": "mixins.eva.linear_proj.linear_proj.weight",
        "model.vision.linear_proj.norm1.weight": "mixins.eva.linear_proj.norm1.weight",
        "model.vision.linear_proj.norm1.bias": "mixins.eva.linear_proj.norm1.bias",
        "model.vision.linear_proj.dense_h_to_4h.weight": "mixins.eva.linear_proj.dense_h_to_4h.weight",
        "model.vision.linear_proj.gate_proj.weight": "mixins.eva.linear_proj.gate_proj.weight",
        "model.vision.linear_proj.dense_4h_to_h.weight": "mixins.eva.linear_proj.dense_4h_to_h.weight",
        "model.vision.boi": "mixins.eva.boi",
        "model.vision.eoi": "mixins.eva.eoi",
    }  # fmt: skip
    renames = {"input_layernorm": "input_layernorm", "attention.query_key_value": "attention.query_key_value",
               "attention.dense": "attention.dense", "post_attention_layernorm": "post_attention_layernorm",
               "mlp.fc1": "mlp.dense_h_to_4h", "mlp.fc2": "mlp.dense_4h_to_h"}  # fmt: skip
    for j in range(sizes.vision_num_hidden_layers):
        for hf, ours in renames.items():
            for kind in ("weight", "bias"):
                table[f"model.vision.transformer.layers.{j}.{hf}.{kind}"] = (
                    f"mixins.eva.vit_model.transformer.layers.{j}.{ours}.{kind}"
                )
    return table


def test_every_vision_tower_and_projector_tensor_is_loaded_exactly(checkpoint, loaded):
    model, _ = loaded
    state = model.state_dict()
    table = _vision_table(SIZES)
    assert set(table) == {k for k in checkpoint.tensors if k.startswith("model.vision.")}
    for hf, ours in table.items():
        assert torch.equal(state[ours], checkpoint.tensors[hf]), f"{hf} -> {ours}"
    tower = [k for k in state if k.startswith("mixins.eva.")]
    assert sorted(tower) == sorted(table.values())  # nothing in the tower or projector is left unloaded


# The CogVLM repository's SAT state-dict names for 2 LM layers and 2 tower layers (ranges compressed).
REPOSITORY_NAMES = """
mixins.eva.boi
mixins.eva.eoi
mixins.eva.linear_proj.dense_4h_to_h.weight
mixins.eva.linear_proj.dense_h_to_4h.weight
mixins.eva.linear_proj.gate_proj.weight
mixins.eva.linear_proj.linear_proj.weight
mixins.eva.linear_proj.norm1.bias
mixins.eva.linear_proj.norm1.weight
mixins.eva.vit_model.mixins.patch_embedding.proj.bias
mixins.eva.vit_model.mixins.patch_embedding.proj.weight
mixins.eva.vit_model.transformer.layers.{0,1}.attention.dense.bias
mixins.eva.vit_model.transformer.layers.{0,1}.attention.dense.weight
mixins.eva.vit_model.transformer.layers.{0,1}.attention.query_key_value.bias
mixins.eva.vit_model.transformer.layers.{0,1}.attention.query_key_value.weight
mixins.eva.vit_model.transformer.layers.{0,1}.input_layernorm.bias
mixins.eva.vit_model.transformer.layers.{0,1}.input_layernorm.weight
mixins.eva.vit_model.transformer.layers.{0,1}.mlp.dense_4h_to_h.bias
mixins.eva.vit_model.transformer.layers.{0,1}.mlp.dense_4h_to_h.weight
mixins.eva.vit_model.transformer.layers.{0,1}.mlp.dense_h_to_4h.bias
mixins.eva.vit_model.transformer.layers.{0,1}.mlp.dense_h_to_4h.weight
mixins.eva.vit_model.transformer.layers.{0,1}.post_attention_layernorm.bias
mixins.eva.vit_model.transformer.layers.{0,1}.post_attention_layernorm.weight
mixins.eva.vit_model.transformer.position_embeddings.weight
mixins.eva.vit_model.transformer.word_embeddings.weight
mixins.lm.lm_head.weight
mixins.mlp.gate_proj.{0,1}.weight
mixins.mlp.vision_dense_4h_to_h_list.{0,1}.weight
mixins.mlp.vision_dense_h_to_4h_list.{0,1}.weight
mixins.mlp.vision_gate_proj.{0,1}.weight
mixins.rotary.rotary_emb.inv_freq
mixins.rotary.vision_dense_list.{0,1}.weight
mixins.rotary.vision_query_key_value_list.{0,1}.weight
transformer.final_layernorm.weight
transformer.layers.{0,1}.attention.dense.weight
transformer.layers.{0,1}.attention.query_key_value.weight
transformer.layers.{0,1}.input_layernorm.weight
transformer.layers.{0,1}.mlp.dense_4h_to_h.weight
transformer.layers.{0,1}.mlp.dense_h_to_4h.weight
transformer.layers.{0,1}.post_attention_layernorm.weight
transformer.word_embeddings.weight
"""


def test_state_dict_names_are_the_cogvlm_repositorys(loaded):
    model, _ = loaded
    assert sorted(keys.compress_keys(model.state_dict())) == REPOSITORY_NAMES.split()
    assert type(model.get_mixin("eva").vit_model) is SatEVA2CLIPModel  # SAT's own tower, no xformers mixin
    assert set(model.get_mixin("eva").vit_model.mixins) == {"patch_embedding", "pos_embedding", "final", "newpost"}


def test_args_carry_what_cogvlm_sat_scripts_read(loaded):
    _, args = loaded
    assert (args.image_length, args.eva_args["image_size"], args.text_processor_version) == (9, [42, 42], "chat_old")
    assert args.eva_args == {
        "num_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "inner_hidden_size": 64, "vocab_size": 1,
        "layernorm_order": "post", "layernorm_epsilon": 1e-6, "use_bias": True, "use_final_layernorm": False,
        "row_parallel_linear_final_bias": False, "image_size": [42, 42], "patch_size": 14, "pre_len": 1,
        "post_len": 0, "in_channels": 3,
    }  # fmt: skip
    assert (args.is_rotary_emb, args.is_gated_mlp, args.use_bias, args.layernorm_epsilon) == (False, False, False, 1e-5)
    # The repository's ImageMixin builds Namespace(**eva_args, **run_fields): a shared key would be a TypeError.
    run_fields = {"world_size", "rank", "local_rank", "skip_init", "use_gpu_initialization", "deepspeed", "bf16",
                  "fp16", "mode", "device", "checkpoint_activations", "checkpoint_num_layers", "hidden_dropout",
                  "attention_dropout", "model_parallel_size"}  # fmt: skip
    assert not set(args.eva_args) & run_fields
    assert not hasattr(args, "tokenizer_type")  # a 128-token vocabulary is not Vicuna's


@pytest.mark.parametrize(
    "release, template, expected",
    [
        ("cogvlm-chat-hf", "chat", (490, 1225, "chat_old")),
        ("cogvlm-base-224-hf", "base", (224, 256, "base")),
        ("cogvlm-grounding-generalist-hf", "base", (490, 1225, "base")),
    ],
)
def test_released_configs_translate_to_the_sat_scripts_fields(tmp_path, release, template, expected):
    image = expected[0]
    sizes = TinyCogVLM(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, vision_hidden_size=1792, vision_intermediate_size=15360,
                       vision_num_hidden_layers=63, vision_num_heads=16, image_size=image, template_version=template)  # fmt: skip
    args = cogvlm_args(HFCheckpoint(tmp_path, sizes.config(), release))
    assert (args["eva_args"]["image_size"][0], args["image_length"], args["text_processor_version"]) == expected
    assert args["tokenizer_type"] == "lmsys/vicuna-7b-v1.5"
    assert (args["num_layers"], args["inner_hidden_size"], args["eva_args"]["num_layers"]) == (32, 11008, 63)


def _example():
    spec = importlib.util.spec_from_file_location("cogvlm_sat_inference", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_auto_model_with_the_cli_demo_namespace_equals_from_hf_and_generates(checkpoint):
    example = _example()
    namespace = cli_demo_args(checkpoint.path)
    model, args = AutoModel.from_pretrained(str(checkpoint.path), args=namespace)
    assert type(model) is CogVLMModel and args is namespace and model.image_length == 9
    direct, _ = CogVLMModel.from_hf(checkpoint.path)
    state, expected = model.state_dict(), direct.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)

    opts = example.parse(["--from_pretrained", str(checkpoint.path), "--max_new_tokens", "4"])
    tokenizer = example.CharTokenizer(args.vocab_size)
    model.eval().add_mixin("auto-regressive", example.CachedAutoregressiveMixin())
    result = example.chat_turn(model, args, tokenizer, opts)
    assert result["version"] == "chat_old" and len(result["tokens"]) <= len(result["prompt_ids"]) + 4
    direct.eval().add_mixin("auto-regressive", example.CachedAutoregressiveMixin())
    assert example.chat_turn(direct, args, tokenizer, opts)["tokens"] == result["tokens"]


def test_sat_checkpoint_of_model_class_cogvlm_loads_through_sats_registry(tmp_path, loaded):
    """CogVLM's SAT checkpoints name ``model_class: CogVLMModel``; SAT's AutoModel finds ours by that name."""
    model, args = loaded
    assert model_registry.get("CogVLMModel") is CogVLMModel
    folder = tmp_path / "sat"
    (folder / "1").mkdir(parents=True)
    (folder / "latest").write_text("1")
    fields = ("num_layers", "vocab_size", "hidden_size", "num_attention_heads", "inner_hidden_size",
              "max_sequence_length", "layernorm_epsilon", "use_bias", "layernorm_order", "image_length", "eva_args")  # fmt: skip
    config = {"model_class": "CogVLMModel", "model_parallel_size": 1} | {k: getattr(args, k) for k in fields}
    (folder / "model_config.json").write_text(json.dumps(config))
    torch.save({"module": model.state_dict(), "iteration": 1}, folder / "1" / "mp_rank_00_model_states.pt")
    native, _ = AutoModel.from_pretrained(str(folder))
    assert type(native) is CogVLMModel and not hasattr(native, "adapters_load_report")  # SAT's loader, not ours
    ids, types, images = multimodal_batch()
    assert torch.equal(sat_logits(native.eval(), ids, types, images), sat_logits(model, ids, types, images))


@pytest.fixture
def registry_restored():
    saved = dict(model_registry.member)
    yield
    model_registry.member.clear()
    model_registry.member.update(saved)


def _repository_class():
    """A stand-in for THUDM/CogVLM's own ``utils/models/cogvlm_model.CogVLMModel``: not our class, same names."""

    class CogVLMModel(LLaMAModel):
        def __init__(self, args, transformer=None, **kwargs):
            super().__init__(args, transformer=transformer, **kwargs)
            self.image_length = args.image_length
            self.add_mixin("eva", ImageMixin(args))
            self.del_mixin("mlp")
            self.add_mixin("mlp", LlamaVisionExpertFCMixin(args.hidden_size, args.inner_hidden_size,
                                                           args.num_layers, 32))  # fmt: skip
            self.del_mixin("rotary")
            self.add_mixin("rotary", LlamaVisionExpertAttnMixin(args.hidden_size, args.num_attention_heads,
                                                                args.num_layers, 32))  # fmt: skip

        def forward(self, input_ids, vision_expert_mask, image_embed_mask, **kwargs):
            if input_ids.shape[1] > 1:
                kwargs |= dict(vision_expert_mask=vision_expert_mask, image_embed_mask=image_embed_mask)
            return super().forward(input_ids=input_ids, **kwargs)

    class FineTuneTrainCogVLMModel(CogVLMModel):
        pass

    return CogVLMModel, FineTuneTrainCogVLMModel


def test_the_repositorys_own_cogvlm_class_is_accepted_by_name(checkpoint, loaded, registry_restored):
    theirs, finetune = _repository_class()
    assert not issubclass(theirs, adapters.sat.CogVLMModel)
    ids, types, images = multimodal_batch()
    expected = sat_logits(loaded[0], ids, types, images)
    for cls in (theirs, finetune):
        model, _ = cls.from_hf(checkpoint.path, args=cli_demo_args(checkpoint.path))
        assert type(model) is cls
        assert torch.equal(sat_logits(model.eval(), ids, types, images), expected)


def test_a_class_of_another_name_is_refused(checkpoint, registry_restored):
    class MyVLM(LLaMAModel):
        pass

    with pytest.raises(HookError) as info:
        MyVLM.from_hf(checkpoint.path)
    assert str(info.value) == (
        f"{checkpoint.path}: a cogvlm checkpoint (architectures: CogVLMForCausalLM) loads into CogVLMModel or a "
        "subclass of it, not MyVLM\n"
        "  hint: call CogVLMModel.from_hf(...), or sat.AutoModel.from_hf(...) to pick the class"
    )


def test_a_config_with_model_type_cogvlm_is_read_too(tmp_path, loaded):
    checkpoint = cogvlm_checkpoint(tmp_path, model_type="cogvlm")
    model, _ = AutoModel.from_hf(checkpoint.path)
    assert type(model) is CogVLMModel
    ids, types, images = multimodal_batch()
    assert torch.equal(sat_logits(model.eval(), ids, types, images), sat_logits(loaded[0], ids, types, images))


def test_bf16_load_gives_one_dtype_and_runs(checkpoint):
    model, args = CogVLMModel.from_hf(checkpoint.path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and args.bf16
    ids, types, images = multimodal_batch()
    logits = sat_logits(model.eval(), ids, types, images.bfloat16())
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def _config_only(folder: Path, **changes) -> Path:
    """A folder with only a config.json: the refusals below happen before any weight is looked at."""
    config = SIZES.config() | changes
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


COGVLM2 = dict(vocab_size=128256, num_multi_query_heads=8, rms_norm_eps=1e-5, bos_token_id=128000,
               vision_config=SIZES.config()["vision_config"] | {"image_size": 1344, "num_positions": 2305})  # fmt: skip


def test_cogvlm2_is_refused_naming_what_sat_lacks(tmp_path):
    folder = _config_only(tmp_path, **COGVLM2)
    with pytest.raises(HookError) as info:
        AutoModel.from_pretrained(str(folder), args=argparse.Namespace(mode="inference"))
    assert str(info.value) == (
        f"{folder / 'config.json'}: this is a CogVLM2 config (num_multi_query_heads=8 (grouped-query attention); "
        "vision_config.num_positions=2305 for 1344/14 patches (a 2x2 conv downsampler after the tower); "
        "vocab_size=128256 (the Llama-3 tokenizer)), which SAT's CogVLMModel cannot hold\n"
        "  missing in SAT: grouped-query vision-expert attention with a qkv bias, the tower's conv downsampler, "
        "RoPE base 500000\n"
        "  hint: no SAT model of CogVLM2 exists (THUDM released it for transformers only); load it with "
        "transformers (AutoModelForCausalLM, trust_remote_code=True)"
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_hidden_layers": 40},
         "num_hidden_layers asks for vision experts in all 40 layers (SAT's gives them to the first 32 only)"),
        ({"hidden_act": "gelu"}, "hidden_act asks for an activation other than silu"),
    ],
)  # fmt: skip
def test_configs_sat_cannot_compute_are_refused(tmp_path, change, message):
    folder = _config_only(tmp_path, **change)
    with pytest.raises(HookError) as info:
        CogVLMModel.from_hf(folder)
    assert str(info.value) == (
        f"{folder / 'config.json'}: {message}, which SAT's CogVLMModel does not compute\n"
        "  hint: SAT's CogVLMModel has no such option; loading would give wrong outputs, so it is refused"
    )
