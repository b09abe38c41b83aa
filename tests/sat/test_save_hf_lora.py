"""`save_hf` with SAT's lora2 LoRA: HF → SAT (`from_hf`) → a few SGD steps with a `LoraMixin` → HF, merged or as a
PEFT adapter, computes what the SAT model computes: LLaMA and GPT-2 in transformers (+ peft), GLM in transformers
+ peft (q/k rows through the rotary permutation), CogVLM through transformers' LLaMA (language path) and the
independent remote-code reference (image + text); SAT checkpoint folders of two ranks."""

import pytest

sat = pytest.importorskip("sat")

import json

import torch
import transformers
from cogvlm_fixtures import cogvlm_checkpoint, llama_from_experts, multimodal_batch, sat_logits
from cogvlm_reference import CogVLMReference
from encoder_fixtures import gpt2_checkpoint
from glm_fixtures import glm_checkpoint, thudm_checkpoint
from hf_fixtures import llama_checkpoint
from safetensors.torch import load_file
from sat.model import LLaMAModel
from sat_forward import causal_logits, token_ids
from save_hf_fixtures import add_lora, causal_forward, lora_matrices, train_steps, two_rank_folder

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.cli import main
from adapters.core import Concat, ExportError, Spec, Split, open_source, rule
from adapters.core.export import plan_export
from adapters.sat import CogVLMModel, from_hf, save_hf
from adapters.sat.lora import LoraReader, find_lora, peft_adapter
from adapters.sat.models import sat_inputs_from_token_types

TOL = 1e-4


class SaveHfLoraLLaMA(LLaMAModel):
    """LLaMA with lora2 on every layer's attention, as a SAT fine-tuning script builds it (registered by name)."""

    def __init__(self, args, transformer=None, **kwargs):
        super().__init__(args, transformer=transformer, **kwargs)
        add_lora(self, args.num_layers)


def tensors(folder) -> dict[str, torch.Tensor]:
    with open_source(folder) as reader:
        return {k: reader.read(k) for k in reader.keys()}


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def hf_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def load(folder, class_name: str):
    model, info = getattr(transformers, class_name).from_pretrained(folder, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}
    return model.eval()


def with_peft(folder, class_name: str):
    PeftModel = pytest.importorskip("peft").PeftModel

    return PeftModel.from_pretrained(load(folder, class_name), folder / "adapter").eval()


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A GQA LLaMA after three SGD steps of lora2 (r=4, alpha=8): the model, its args, the HF source."""
    root = tmp_path_factory.mktemp("llama_lora")
    checkpoint = llama_checkpoint(root / "hf", "gqa")
    model, args = LLaMAModel.from_hf(checkpoint.path, device="cpu")
    losses = train_steps(add_lora(model, args.num_layers), causal_forward, 128)
    assert losses[-1] < losses[0] and all(m.abs().max() > 0 for m in lora_matrices(model).values())
    return model.eval(), args, checkpoint


def test_merged_llama_computes_what_the_sat_model_computes(llama, tmp_path):
    model, args, checkpoint = llama
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = save_hf(model, tmp_path / "out", args)
    ids = token_ids(128)
    sat_out = causal_logits(model, ids)
    assert diff(hf_logits(load(out, "LlamaForCausalLM"), ids), sat_out) <= TOL
    assert diff(hf_logits(checkpoint.model, ids), sat_out) > 0.05  # the LoRA update is what is tested
    assert sorted(model.state_dict()) == sorted(before)  # still LoRA layers, same values: nothing merged in place
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not (tmp_path / "out" / "adapter").exists()


def test_llama_as_a_peft_adapter_loads_in_peft_with_the_same_logits(llama, tmp_path):
    model, args, checkpoint = llama
    out = save_hf(model, tmp_path / "out", args, lora="peft")
    assert all(torch.equal(v, tensors(checkpoint.path)[k]) for k, v in tensors(out).items())  # the base, unmerged
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    modules = [f"model.layers.{i}.self_attn.{p}_proj" for i in (0, 1) for p in "kvqo"]
    assert sorted(config["target_modules"]) == sorted(modules)
    assert (config["r"], config["lora_alpha"], config["rank_pattern"], config["fan_in_fan_out"]) == (4, 8.0, {}, False)
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert adapter["base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"].shape == (32, 4)  # 2 KV heads
    ids = token_ids(128)
    assert diff(hf_logits(with_peft(out, "LlamaForCausalLM"), ids), causal_logits(model, ids)) <= TOL


def test_gpt2_fused_conv1d_qkv_gets_one_adapter_of_three_ranks(tmp_path):
    gpt2_checkpoint(tmp_path / "hf")
    model, args = from_hf(None, tmp_path / "hf", device="cpu")
    train_steps(add_lora(model, args.num_layers), causal_forward, 128)
    out = save_hf(model.eval(), tmp_path / "out", args, lora="peft")
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is True and config["r"] == 4
    assert config["rank_pattern"] == {"transformer.h.0.attn.c_attn": 12, "transformer.h.1.attn.c_attn": 12}
    assert config["alpha_pattern"] == {"transformer.h.0.attn.c_attn": 24.0, "transformer.h.1.attn.c_attn": 24.0}
    ids = token_ids(128)
    sat_out = causal_logits(model, ids)
    assert diff(hf_logits(with_peft(out, "GPT2LMHeadModel"), ids), sat_out) <= TOL
    merged = save_hf(model, tmp_path / "merged", args)
    assert diff(hf_logits(load(merged, "GPT2LMHeadModel"), ids), sat_out) <= TOL


def test_glm_q_and_k_adapters_follow_the_rotary_permutation(tmp_path):
    glm_checkpoint(tmp_path / "hf", "gqa")
    model, args = from_hf(None, tmp_path / "hf", device="cpu")
    train_steps(add_lora(model, args.num_layers), causal_forward, 128)
    ids = token_ids(128)
    sat_out = causal_logits(model.eval(), ids)
    assert diff(hf_logits(load(save_hf(model, tmp_path / "merged", args), "GlmForCausalLM"), ids), sat_out) <= TOL
    peft = save_hf(model, tmp_path / "peft", args, lora="peft")
    assert diff(hf_logits(with_peft(peft, "GlmForCausalLM"), ids), sat_out) <= TOL


def assert_adapter_is_the_merged_update(peft_dir, merged_dir, modules: list[str]) -> None:
    """For modules peft cannot load here (remote code): base + alpha/r * B @ A equals the merged export."""
    config = json.loads((peft_dir / "adapter" / "adapter_config.json").read_text())
    adapter = load_file(peft_dir / "adapter" / "adapter_model.safetensors")
    base, merged = tensors(peft_dir), tensors(merged_dir)
    for module in modules:
        rank = config["rank_pattern"].get(module, config["r"])
        scaling = config["alpha_pattern"].get(module, config["lora_alpha"]) / rank
        a = adapter[f"base_model.model.{module}.lora_A.weight"]
        b = adapter[f"base_model.model.{module}.lora_B.weight"]
        assert a.shape[0] == b.shape[1] == rank
        assert diff(base[module + ".weight"] + scaling * b @ a, merged[module + ".weight"]) <= 1e-5


def test_thudm_glm4_fused_qkv_adapter_is_the_merged_update(tmp_path):
    thudm_checkpoint(tmp_path / "hf", "glm4")
    model, args = from_hf(None, tmp_path / "hf", device="cpu")
    train_steps(add_lora(model, args.num_layers), causal_forward, 128)
    merged = save_hf(model, tmp_path / "merged", args)
    peft = save_hf(model, tmp_path / "peft", args, lora="peft")
    config = json.loads((peft / "adapter" / "adapter_config.json").read_text())
    qkv = [f"transformer.encoder.layers.{i}.self_attention.query_key_value" for i in (0, 1)]
    assert config["rank_pattern"] == dict.fromkeys(qkv, 12)
    assert_adapter_is_the_merged_update(peft, merged, [*qkv, "transformer.encoder.layers.0.self_attention.dense"])


@pytest.fixture(scope="module")
def cogvlm(tmp_path_factory):
    root = tmp_path_factory.mktemp("cogvlm_lora")
    checkpoint = cogvlm_checkpoint(root / "hf")
    model, args = CogVLMModel.from_hf(checkpoint.path, device="cpu")

    def text_forward(model, ids):
        length = ids.shape[1]
        inputs = sat_inputs_from_token_types(torch.zeros_like(ids))
        return model(input_ids=ids, attention_mask=torch.ones(1, 1, length, length).tril(), **inputs)[0]

    train_steps(add_lora(model, args.num_layers), text_forward, 128)
    model.eval()
    merged = save_hf(model, root / "merged", args)
    return model, args, checkpoint, merged


def test_merged_cogvlm_language_path_matches_transformers_llama(cogvlm):
    model, _, checkpoint, merged = cogvlm
    exported = cogvlm_checkpoint.__globals__["CogVLMCheckpoint"](merged, checkpoint.config, tensors(merged))
    ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    expected = hf_logits(llama_from_experts(exported, "language"), ids)
    assert diff(sat_logits(model, ids), expected) <= TOL
    assert diff(hf_logits(llama_from_experts(checkpoint, "language"), ids), expected) > 0.05


def test_merged_cogvlm_image_and_text_match_the_remote_code_reference(cogvlm):
    model, _, checkpoint, merged = cogvlm
    ids, types, images = multimodal_batch(text=6)
    reference = CogVLMReference(tensors(merged), json.loads((merged / "config.json").read_text()))
    with torch.no_grad():
        expected = reference.logits(ids, types, images)
    assert diff(sat_logits(model, ids, types, images), expected) <= TOL
    assert sorted(tensors(merged)) == sorted(checkpoint.tensors)


def test_cogvlm_language_expert_adapter_is_the_merged_update(cogvlm, tmp_path):
    model, args, _, merged = cogvlm
    peft = save_hf(model, tmp_path / "peft", args, lora="peft")
    qkv = [f"model.layers.{i}.self_attn.language_expert_query_key_value" for i in (0, 1)]
    dense = [f"model.layers.{i}.self_attn.language_expert_dense" for i in (0, 1)]
    config = json.loads((peft / "adapter" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == sorted(qkv + dense) and config["rank_pattern"] == dict.fromkeys(qkv, 12)
    assert_adapter_is_the_merged_update(peft, merged, qkv + dense)


def test_a_two_rank_lora_checkpoint_folder_exports_as_the_live_model(tmp_path, capsys):
    llama_checkpoint(tmp_path / "hf", "gqa")
    loaded, args = LLaMAModel.from_hf(tmp_path / "hf", device="cpu")
    model = SaveHfLoraLLaMA(args)
    model.load_state_dict(loaded.state_dict(), strict=False)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # nonzero everywhere (SAT starts matrix_B at zero), so a misplaced rank part shows
        for _, param in sorted(lora_matrices(model).items()):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    parts = two_rank_folder(model, args, tmp_path / "sat")
    assert any(".matrix_B." in k for k in parts)  # the LoRA matrices are cut across the ranks too
    live = save_hf(model.eval(), tmp_path / "live", args)
    folder = save_hf(tmp_path / "sat", tmp_path / "folder")
    assert tensors(folder).keys() == tensors(live).keys()
    assert all(torch.equal(v, tensors(live)[k]) for k, v in tensors(folder).items())
    assert main(["-q", "convert", str(tmp_path / "sat"), "--to", "hf", str(tmp_path / "cli"), "--lora", "peft"]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'cli'}\n"
    ids = token_ids(128)
    assert diff(hf_logits(with_peft(tmp_path / "cli", "LlamaForCausalLM"), ids), causal_logits(model, ids)) <= TOL


def test_lora_kinds_that_cannot_be_exported_are_refused(tmp_path):
    from sat.model.finetune.lora import LoRAMixin

    llama_checkpoint(tmp_path / "hf", "gqa")
    model, args = LLaMAModel.from_hf(tmp_path / "hf", device="cpu")
    model.add_mixin("old", LoRAMixin(args.hidden_size, args.num_layers, r=2))
    with pytest.raises(ExportError) as e:
        save_hf(model, tmp_path / "out", args)
    assert str(e.value) == (
        "LLaMAModel has SAT's older LoRAMixin (sat.model.finetune.lora) at mixins.old, whose updates live in the "
        "mixin, outside the layers\n"
        "  hint: fine-tune with sat.model.finetune.lora2.LoraMixin, which save_hf merges or exports as PEFT"
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "hf"]


class TwoLinears(torch.nn.Module):
    """A LoRA'd linear and a plain one, for export rules PEFT cannot follow."""

    def __init__(self):
        from sat.model.finetune.lora2 import replace_linear_with_lora

        super().__init__()
        self.lin = replace_linear_with_lora(torch.nn.Linear(4, 6, bias=False), 1, 2, 4.0)
        self.other = torch.nn.Linear(4, 6, bias=False)


@pytest.mark.parametrize(
    ("rules", "why"),
    [
        ((rule(["a", "b"], "lin.weight", Concat(1)), rule("o", "other.weight")),
         "its export rule applies Split(dim=1, parts=2), which is not a row operation"),
        ((rule("w", ["lin.weight", "other.weight"], Split(0)),), "its export rule joins it with other.weight"),
    ],
)  # fmt: skip
def test_lora_a_peft_adapter_cannot_follow_is_refused(rules, why):
    model = TwoLinears()
    reader = LoraReader(model, find_lora(model), merge=False)
    the_plan, _ = plan_export(Spec("toy", rules), reader)
    with pytest.raises(ExportError) as e:
        peft_adapter(the_plan, reader, base_model="x")
    assert str(e.value) == (
        f"the LoRA update of lin.weight cannot be written as a PEFT adapter: {why}\n"
        "  hint: export with lora='merge' (the default): the LoRA update is added into the base weights"
    )
