"""`save_hf`: SAT → HF. Every family's round trip HF → SAT → HF is bit-exact and transformers (or, for the THUDM
remote-code families, the source file's key set) takes the result with no missing or unexpected key; SAT checkpoint
folders of two ranks; models SAT built itself; shards, dtypes, tied heads; atomic writes and the refusals.
LoRA export is tests/sat/test_save_hf_lora.py."""

import pytest

sat = pytest.importorskip("sat")

import argparse
import json

import torch
import transformers
from cogagent_fixtures import cogagent_checkpoint
from cogvlm_fixtures import cogvlm_checkpoint
from encoder_fixtures import bert_checkpoint, gpt2_checkpoint, roberta_checkpoint
from glm4v_fixtures import glm4v_checkpoint
from glm_fixtures import chatglm6b_checkpoint, glm_checkpoint, thudm_checkpoint
from hf_fixtures import llama_checkpoint
from moe_fixtures import mixtral_checkpoint
from sat.model import LLaMAModel
from sat_forward import causal_logits, token_ids
from save_hf_fixtures import two_rank_folder
from vision_fixtures import clip_checkpoint, vit_checkpoint

import adapters.sat  # noqa: F401  (installs the hooks)
import adapters.sat.export_hf as export_hf
from adapters.core import ExportError, open_source
from adapters.sat import FAMILIES, from_hf, save_hf
from adapters.sat.specs.glm4 import SAT_CLASS as CHATGLM4

# name -> (writes the HF checkpoint, transformers class that must load the export, or None for remote code)
CASES = {
    "llama-mha": (lambda p: llama_checkpoint(p, "mha"), "LlamaForCausalLM"),
    "llama-gqa-rope5e5": (lambda p: llama_checkpoint(p, "gqa-rope5e5"), "LlamaForCausalLM"),
    "llama-tied": (lambda p: llama_checkpoint(p, "gqa", tie_word_embeddings=True), "LlamaForCausalLM"),
    "mixtral": (mixtral_checkpoint, "MixtralForCausalLM"),
    "gpt2": (gpt2_checkpoint, "GPT2LMHeadModel"),
    "bert": (bert_checkpoint, "BertForMaskedLM"),
    "roberta": (roberta_checkpoint, "RobertaForMaskedLM"),
    "vit": (vit_checkpoint, "ViTForImageClassification"),
    "clip": (clip_checkpoint, "CLIPModel"),
    "glm": (lambda p: glm_checkpoint(p, "quarter-rotary"), "GlmForCausalLM"),
    "chatglm": (chatglm6b_checkpoint, None),
    "chatglm2": (lambda p: thudm_checkpoint(p, "chatglm2"), None),
    "chatglm3": (lambda p: thudm_checkpoint(p, "chatglm3", rope_ratio=50), None),
    "chatglm3-per-head": (lambda p: thudm_checkpoint(p, "chatglm3", per_head_qkv=True), None),
    "glm4": (lambda p: thudm_checkpoint(p, "glm4"), None),
    "glm4v": (glm4v_checkpoint, None),
    "cogvlm": (cogvlm_checkpoint, None),
    "cogagent": (cogagent_checkpoint, None),
}
# The cross tower's RoPE tables: the fixture writes random ones (so a loader that read them would show); SAT computes
# them, and the export writes SAT's.
COMPUTED = {"cogagent": ("model.cross_vision.vit.model.rope.freqs_cos", "model.cross_vision.vit.model.rope.freqs_sin")}


def tensors(folder) -> dict[str, torch.Tensor]:
    with open_source(folder) as reader:
        return {k: reader.read(k) for k in reader.keys()}


def config(folder) -> dict:
    return json.loads((folder / "config.json").read_text())


def loads_cleanly(folder, class_name: str, **kwargs):
    model, info = getattr(transformers, class_name).from_pretrained(folder, output_loading_info=True, **kwargs)
    assert {k: v for k, v in info.items() if v} == {}
    return model.eval()


@pytest.fixture
def llama(tmp_path):
    llama_checkpoint(tmp_path / "hf", "gqa")
    model, args = LLaMAModel.from_hf(tmp_path / "hf", device="cpu")
    return model, args


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_is_bit_exact_and_loads_without_missing_or_unexpected_keys(tmp_path, name):
    write, class_name = CASES[name]
    write(tmp_path / "hf")
    model, args = from_hf(None, tmp_path / "hf", device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = save_hf(model, tmp_path / "out", args)
    source, written = tensors(tmp_path / "hf"), tensors(out)
    assert sorted(written) == sorted(source)
    assert [k for k in source if k not in COMPUTED.get(name, ()) and not torch.equal(source[k], written[k])] == []
    assert all(written[k].dtype == source[k].dtype for k in source)
    for key in COMPUTED.get(name, ()):  # written from SAT's own tables
        assert torch.equal(written[key], model.state_dict()[key.replace("model.cross_vision.", "mixins.encoder.")])
    changed = {k for k in config(tmp_path / "hf") if config(tmp_path / "hf")[k] != config(out).get(k)}
    assert changed <= {"torch_dtype", "head_dim"}  # fixtures say float16 for float32 tensors; Mixtral's head_dim
    if class_name is not None:
        loads_cleanly(out, class_name)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model is not touched


def test_llama_export_computes_what_the_sat_model_computes(tmp_path):
    llama_checkpoint(tmp_path / "hf", "gqa-rope5e5")
    model, args = LLaMAModel.from_hf(tmp_path / "hf", device="cpu")
    hf = loads_cleanly(save_hf(model, tmp_path / "out", args), "LlamaForCausalLM")
    ids = token_ids(128)
    with torch.no_grad():
        assert (hf(input_ids=ids).logits - causal_logits(model.eval(), ids)).abs().max().item() <= 1e-4


def test_without_args_a_from_hf_model_is_written_from_its_recorded_config(tmp_path):
    llama_checkpoint(tmp_path / "hf", "gqa")
    model, _ = LLaMAModel.from_hf(tmp_path / "hf", device="cpu")
    assert model.adapters_family == "llama" and model.adapters_hf_config == config(tmp_path / "hf")
    out = save_hf(model, tmp_path / "out")
    assert config(out) == config(tmp_path / "hf")
    assert tensors(out).keys() == tensors(tmp_path / "hf").keys()


def test_headless_encoders_write_the_base_models_layout(tmp_path):
    bert_checkpoint(tmp_path / "bert", transformers.BertModel)
    model, args = from_hf(None, tmp_path / "bert", device="cpu")
    out = save_hf(model, tmp_path / "bert-out", args)
    assert config(out)["architectures"] == ["BertModel"]
    source, written = tensors(tmp_path / "bert"), tensors(out)
    assert sorted(written) == sorted(source)  # the pooler too (tests/sat/test_pooler_export.py)
    assert all(torch.equal(source[k], written[k]) for k in written)
    loads_cleanly(out, "BertModel")
    vit_checkpoint(tmp_path / "vit", head=False)
    model, args = from_hf(None, tmp_path / "vit", device="cpu")
    out = save_hf(model, tmp_path / "vit-out", args)
    assert config(out)["architectures"] == ["ViTModel"] and "vit.embeddings.cls_token" not in tensors(out)
    loads_cleanly(out, "ViTModel", add_pooling_layer=False)


def test_shards_are_cut_as_transformers_cuts_them(tmp_path):
    llama_checkpoint(tmp_path / "hf", "gqa")
    model, args = LLaMAModel.from_hf(tmp_path / "hf", device="cpu")
    one = save_hf(model, tmp_path / "one", args)
    assert sorted(p.name for p in one.iterdir()) == ["config.json", "model.safetensors"]
    many = save_hf(model, tmp_path / "many", args, max_shard_size="40KB")
    index = json.loads((many / "model.safetensors.index.json").read_text())
    files = sorted({*index["weight_map"].values()})
    assert files == [f"model-{i:05d}-of-{len(files):05d}.safetensors" for i in range(1, len(files) + 1)]
    assert len(files) > 3 and index["metadata"]["total_size"] == sum(t.nbytes for t in tensors(one).values())
    assert all((many / f).stat().st_size <= 40_000 + 4096 for f in files)  # data within the limit, plus the header
    assert all(torch.equal(a, tensors(many)[k]) for k, a in tensors(one).items())


def test_dtype_casts_every_floating_tensor_and_the_config_says_so(tmp_path):
    llama_checkpoint(tmp_path / "hf", "gqa")
    model, args = LLaMAModel.from_hf(tmp_path / "hf", device="cpu")
    out = save_hf(model, tmp_path / "out", args, dtype=torch.bfloat16)
    written, source = tensors(out), tensors(tmp_path / "hf")
    assert {t.dtype for t in written.values()} == {torch.bfloat16} and config(out)["dtype"] == "bfloat16"
    assert all(torch.equal(written[k], source[k].to(torch.bfloat16)) for k in source)
    model16, args16 = LLaMAModel.from_hf(tmp_path / "hf", device="cpu", dtype=torch.bfloat16)
    assert config(save_hf(model16, tmp_path / "out16", args16))["dtype"] == "bfloat16"  # default: the model's


def test_a_head_trained_apart_from_its_tied_embedding_is_written_untied(tmp_path):
    llama_checkpoint(tmp_path / "hf", "gqa", tie_word_embeddings=True)
    model, args = LLaMAModel.from_hf(tmp_path / "hf", device="cpu")
    with torch.no_grad():
        model.mixins.lm.lm_head.weight.add_(0.01)
    out = save_hf(model, tmp_path / "out", args)
    assert config(out)["tie_word_embeddings"] is False and "lm_head.weight" in tensors(out)
    hf = loads_cleanly(out, "LlamaForCausalLM")
    ids = token_ids(128)
    with torch.no_grad():
        assert (hf(input_ids=ids).logits - causal_logits(model.eval(), ids)).abs().max().item() <= 1e-4


def test_a_model_sat_built_is_written_from_its_args(tmp_path):
    """No recorded config: the family comes from the class, every field from the args and the model."""
    llama_checkpoint(tmp_path / "hf", "gqa-rope5e5")
    loaded, args = LLaMAModel.from_hf(tmp_path / "hf", device="cpu")
    model = LLaMAModel(args)
    model.load_state_dict(loaded.state_dict())
    adapters.sat.rope.set_rotary_base(model, 5e5)
    out = save_hf(model, tmp_path / "out", args)
    assert all(torch.equal(v, tensors(tmp_path / "hf")[k]) for k, v in tensors(out).items())
    written = config(out)
    assert written["rope_parameters"]["rope_theta"] == 5e5 and written["num_key_value_heads"] == 2
    assert written["tie_word_embeddings"] is False and written["pad_token_id"] is None
    loads_cleanly(out, "LlamaForCausalLM")
    with pytest.raises(ExportError) as e:
        save_hf(model, tmp_path / "x")
    assert str(e.value) == (
        "save_hf needs the model's SAT args for a model from_hf did not load\n"
        "  hint: pass the args SAT returned with the model: save_hf(model, out_dir, args)"
    )


def test_a_layout_the_family_does_not_write_is_refused_before_writing(tmp_path):
    args = LLaMAModel.get_args(num_layers=1, vocab_size=64, hidden_size=32, num_attention_heads=4,
                               inner_hidden_size=64, skip_init=True)  # fmt: skip
    model = LLaMAModel(args)  # SAT's default layout: RoPE and the gate in mixins, not the one from_hf builds
    with pytest.raises(ExportError) as e:
        save_hf(model, tmp_path / "out", args)
    assert str(e.value) == (
        "the HF llama config for LLaMAModel would build another model than its args\n"
        "    is_gated_mlp: the config gives True, the args have False\n"
        "    is_rotary_emb: the config gives True, the args have False\n"
        "  hint: the model is not in the layout from_hf builds for llama; pass the args it was built with, or "
        "another family="
    )
    assert list(tmp_path.iterdir()) == []


def test_a_tensor_with_no_hf_home_is_refused_naming_it(tmp_path, llama):
    from sat.model.base_model import BaseMixin

    class Prefix(BaseMixin):
        def __init__(self):
            super().__init__()
            self.prefix = torch.nn.Parameter(torch.zeros(2, 4, 64))

    model, args = llama
    model.add_mixin("prefix", Prefix())
    with pytest.raises(ExportError) as e:
        save_hf(model, tmp_path / "out", args)
    assert str(e.value) == (
        "LLaMAModel does not fit the HF llama layout:\n"
        "  spec 'hf-llama->sat-llama (inverse)' uses 1 tensor of <LLaMAModel in memory> in no rule\n"
        "    unused:    mixins.prefix.prefix\n"
        "  hint: the model has tensors (or lacks ones) that from_hf's llama model does not; export a model built as "
        "from_hf builds it, or name another family="
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_chatglm4_needs_the_family_named_and_writes_either_layout(tmp_path):
    glm_checkpoint(tmp_path / "hf", "gqa")
    model, args = from_hf(None, tmp_path / "hf", device="cpu")
    del model.adapters_family, model.adapters_hf_config
    with pytest.raises(ExportError) as e:
        save_hf(model, tmp_path / "out", args)
    assert str(e.value) == (
        "ChatGLM4Model is held by 2 HF families (glm4, glm), which write different files\n"
        '  hint: name the one to write: save_hf(..., family="glm4" or family="glm")'
    )
    native = save_hf(model, tmp_path / "glm", args, family="glm")
    assert all(torch.equal(v, tensors(tmp_path / "hf")[k]) for k, v in tensors(native).items())
    loads_cleanly(native, "GlmForCausalLM")
    thudm = save_hf(model, tmp_path / "glm4", args, family="glm4")
    assert config(thudm)["_name_or_path"] == "THUDM/glm-4-9b-chat"
    again, _ = from_hf(None, thudm, device="cpu")
    assert type(again).__name__ == "ChatGLM4Model"
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(ExportError) as e:
        save_hf(model, tmp_path / "x", args, family="gpt2")
    assert str(e.value) == (
        "family='gpt2' exports GPT2Model, and ChatGLM4Model is not one\n"
        "  hint: leave family= out to pick the family from the model class"
    )
    assert CHATGLM4.endswith("ChatGLM4Model")


def test_a_two_rank_sat_checkpoint_folder_is_joined_and_written(tmp_path):
    llama_checkpoint(tmp_path / "hf", "gqa", vocab_size=1024)  # vocab >= 1000: SAT splits the embedding too
    model, args = LLaMAModel.from_hf(tmp_path / "hf", device="cpu")
    parts = two_rank_folder(model, args, tmp_path / "sat")
    assert "transformer.word_embeddings.weight" in parts and len(parts) > 8
    source_files = {p: p.read_bytes() for p in (tmp_path / "sat").rglob("*") if p.is_file()}
    out = save_hf(tmp_path / "sat", tmp_path / "out")
    assert all(torch.equal(v, tensors(tmp_path / "hf")[k]) for k, v in tensors(out).items())
    assert tensors(out).keys() == tensors(tmp_path / "hf").keys()
    assert config(out)["num_key_value_heads"] == 2 and config(out)["architectures"] == ["LlamaForCausalLM"]
    loads_cleanly(out, "LlamaForCausalLM")
    assert {p: p.read_bytes() for p in (tmp_path / "sat").rglob("*") if p.is_file()} == source_files


# --- atomic writes ------------------------------------------------------------------------------------------------


def _failing_after(count: int, error: BaseException):
    real = export_hf.iter_export

    def failing(the_plan, reader):
        for i, item in enumerate(real(the_plan, reader)):
            if i == count:
                raise error
            yield item

    return failing


def test_an_interrupted_export_leaves_no_folder_and_the_model_unchanged(tmp_path, llama, monkeypatch):
    model, args = llama
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr(export_hf, "iter_export", _failing_after(5, OSError(28, "No space left on device")))
    with pytest.raises(ExportError) as e:
        save_hf(model, tmp_path / "out", args, max_shard_size="20KB")
    assert str(e.value) == (
        f"writing {tmp_path / 'out'} failed: [Errno 28] No space left on device\n"
        "  hint: nothing was written; fix the cause and retry"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no out, no temporary folder
    monkeypatch.setattr(export_hf, "iter_export", _failing_after(3, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_hf(model, tmp_path / "out", args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_an_existing_folder_is_refused_or_replaced_only_when_complete(tmp_path, llama, monkeypatch):
    model, args = llama
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError) as e:
        save_hf(model, tmp_path / "out", args)
    assert str(e.value) == (
        f"{tmp_path / 'out'} already exists\n  hint: pass overwrite=True to replace it, or choose another path"
    )
    monkeypatch.setattr(export_hf, "iter_export", _failing_after(5, RuntimeError("disk on fire")))
    with pytest.raises(ExportError):
        save_hf(model, tmp_path / "out", args, overwrite=True)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    monkeypatch.undo()
    save_hf(model, tmp_path / "out", args, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "out"]
    (tmp_path / "empty").mkdir()
    assert save_hf(model, tmp_path / "empty", args) == tmp_path / "empty"  # an empty folder is taken


def test_refusals_name_the_fix(tmp_path, llama):
    model, args = llama
    cases = [
        (dict(lora="fused"), "lora='fused' is not an export mode\n  hint: pass lora='merge' or lora='peft'"),
        (dict(lora="peft"), "lora='peft' was asked for, but LLaMAModel has no LoRA layers (lora2 LoraLinear)\n"
                            "  hint: export without lora='peft'"),
        (dict(family="llama2"), "family='llama2' is not a SAT family\n  hint: pass one of bert, chatglm, chatglm2, "
                                "chatglm3, clip, cogagent, cogvlm, glm, glm4, glm4v, gpt2, llama, mixtral, roberta, vit"),
        (dict(dtype=torch.int8), "dtype=torch.int8 cannot be written\n"
                                 "  hint: pass torch.float32, torch.bfloat16 or torch.float16"),
        (dict(max_shard_size="lots"), "max_shard_size='lots' is not a size\n"
                                      "  hint: pass a number of bytes or a string like '5GB' or '500MiB'"),
    ]  # fmt: skip
    for kwargs, message in cases:
        with pytest.raises(ExportError) as e:
            save_hf(model, tmp_path / "out", args, **kwargs)
        assert str(e.value) == message
    with pytest.raises(ExportError) as e:
        save_hf(model, tmp_path / "out", argparse.Namespace(**{**vars(args), "model_parallel_size": 2}))
    assert str(e.value) == (
        "LLaMAModel holds one of 2 model-parallel partitions; an HF checkpoint needs the whole model\n"
        "  hint: save it with SAT's save_checkpoint and pass that folder to save_hf, which joins the ranks"
    )
    with pytest.raises(ExportError) as e:
        save_hf(tmp_path / "hf", tmp_path / "out")
    assert str(e.value) == (
        f"{tmp_path / 'hf'} is not a SAT checkpoint folder (no model_config.json)\n"
        "  hint: pass a folder SAT's save_checkpoint wrote, or a live SAT model"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_inputs_that_are_not_a_sat_model_are_refused_by_name(tmp_path, llama):
    model, args = llama
    with pytest.raises(ExportError) as e:
        save_hf({"w": torch.zeros(1)}, tmp_path / "out")
    assert str(e.value) == (
        "save_hf takes a SAT model or a SAT checkpoint folder, not dict\n"
        "  hint: pass the model from_hf / from_pretrained returned, or the folder SAT's save_checkpoint wrote"
    )
    with pytest.raises(ExportError) as e:
        save_hf(tmp_path / "nowhere", tmp_path / "out")
    assert str(e.value) == (
        f"{tmp_path / 'nowhere'}: no such folder\n  hint: pass a SAT checkpoint folder or a live SAT model"
    )
    with pytest.raises(ExportError) as e:
        save_hf(torch.nn.Linear(2, 2), tmp_path / "out", args)
    assert str(e.value) == (
        "no SAT family exports Linear\n  hint: the exportable classes are "
        + ", ".join(sorted({f.class_name for f in FAMILIES}))
    )
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError) as e:
        save_hf(model, tmp_path / "file", args)
    assert str(e.value) == f"{tmp_path / 'file'} exists and is not a folder\n  hint: choose another output path"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "hf"] and (tmp_path / "file").read_text() == "x"
