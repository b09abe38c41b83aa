"""Scaled RoPE (``linear``, ``llama3``, ``yarn``) in SAT's LLaMA and Mixtral, as transformers computes it.

The reference is transformers reading the same ``config.json`` (`from_pretrained`), so both spellings of the config
(``rope_parameters``, legacy ``rope_scaling``) are checked against what transformers makes of them. The tiny models
have ``original_max_position_embeddings`` 16 and run 40 positions, and the llama3 factors put the 8 frequencies of a
16-wide head in all three bands. Also: conflicts and unsupported types refused with exact messages; the inverse
frequencies survive a cast (SAT recomputes them then); save_hf writes the scaling back; GLM-4 (no scaling) sees a
legacy ``rope_scaling`` too.
"""

import pytest

sat = pytest.importorskip("sat")

import json
import math

import torch
import transformers
from glm_fixtures import glm_checkpoint
from hf_fixtures import llama_checkpoint
from moe_fixtures import mixtral_checkpoint
from sat.model import LLaMAModel
from sat.model.official.chatglm4_model import ChatGLM4Model
from sat.model.official.mixtral_model import MixtralModel
from sat.model.position_embedding.triton_rotary_embeddings import FastRotaryEmbedding
from sat_forward import causal_logits, token_ids

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError
from adapters.sat import save_hf
from adapters.sat.rope import Rope, install_rope, set_rotary_base

TOL = 1e-4
ORIGINAL, LENGTH, HEAD_DIM = 16, 40, 16
# head 16, θ 1e4: wavelengths 2π·1e4^(i/8) = 6.3, 19.9, 62.8, 199, ...; with L = 16 the high band is λ < 16/2 = 8,
# the low band λ > 16/0.25 = 64, the smoothed middle in between.
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 0.25, "high_freq_factor": 2.0,
          "original_max_position_embeddings": ORIGINAL, "rope_theta": 10000.0}  # fmt: skip
TYPES = {
    "default-5e5": {"rope_type": "default", "rope_theta": 5e5},
    "linear": {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0},
    "llama3": LLAMA3,
    "llama3-5e5": {**LLAMA3, "rope_theta": 5e5, "factor": 32.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": ORIGINAL, "rope_theta": 100.0},
    "yarn-mscale": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": ORIGINAL, "beta_fast": 8,
                    "beta_slow": 0.5, "mscale": 1.0, "mscale_all_dim": 0.5, "truncate": False, "rope_theta": 100.0},
    "yarn-attention-factor": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": ORIGINAL,
                              "attention_factor": 1.5, "rope_theta": 10000.0},
}  # fmt: skip


def read_config(folder) -> dict:
    return json.loads((folder / "config.json").read_text())


def write_config(folder, config: dict) -> None:
    (folder / "config.json").write_text(json.dumps(config))


def respell(folder, spelling: str, old_key: bool = False) -> dict:
    """Rewrite the saved ``rope_parameters`` as a legacy ``rope_scaling`` + top-level ``rope_theta`` ("scaling"), or
    add that beside it ("both"); `old_key` spells ``rope_type`` as ``type``. Returns the config written."""
    config = read_config(folder)
    params = dict(config["rope_parameters"])
    config["rope_theta"] = params.pop("rope_theta")
    if old_key:
        params["type"] = params.pop("rope_type")
    config["rope_scaling"] = params
    if spelling == "scaling":
        del config["rope_parameters"]
    write_config(folder, config)
    return config


def llama(folder, rope: dict, spelling: str = "parameters", old_key: bool = False):
    llama_checkpoint(folder, "gqa", rope_parameters=dict(rope))
    if spelling != "parameters":
        respell(folder, spelling, old_key)
    return transformers.LlamaForCausalLM.from_pretrained(folder).eval()


def rotaries(model) -> list[FastRotaryEmbedding]:
    return [m for m in model.modules() if isinstance(m, FastRotaryEmbedding)]


def max_diff(sat_model, hf_model, vocab: int = 128) -> float:
    ids = token_ids(vocab, length=LENGTH)
    with torch.no_grad():
        return (causal_logits(sat_model.eval(), ids) - hf_model(input_ids=ids).logits).abs().max().item()


@pytest.mark.parametrize("name", list(TYPES))
def test_each_supported_type_matches_transformers_past_the_original_length(tmp_path, name):
    hf = llama(tmp_path, TYPES[name])
    model, _ = LLaMAModel.from_hf(tmp_path, device="cpu")
    (rotary,) = rotaries(model)
    assert LENGTH > ORIGINAL
    assert torch.equal(rotary.inv_freq, hf.model.rotary_emb.inv_freq)  # bit for bit, not only close
    assert max_diff(model, hf) <= TOL
    scaling = hf.model.rotary_emb.attention_scaling
    assert rotary.adapters_rope.attention_factor() == scaling and (scaling != 1.0) == name.startswith("yarn")
    if name.startswith("yarn"):  # cos and sin carry the attention factor, as in transformers
        angles = torch.outer(torch.arange(LENGTH, dtype=torch.float32), rotary.inv_freq)
        assert torch.allclose(rotary._cos_cached, angles.cos() * scaling, atol=0, rtol=1e-6)
    if name != "default-5e5":  # the scaling is not a detail at these positions: plain RoPE gives other logits
        set_rotary_base(model, TYPES[name]["rope_theta"])
        assert max_diff(model, hf) > 1e-2


def test_llama3_exercises_all_three_bands_and_scales_each_as_transformers_does(tmp_path):
    hf = llama(tmp_path, LLAMA3)
    model, _ = LLaMAModel.from_hf(tmp_path, device="cpu")
    plain = 1.0 / (1e4 ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.int64).float() / HEAD_DIM))
    wavelen = 2 * math.pi / plain
    high = wavelen < ORIGINAL / LLAMA3["high_freq_factor"]
    low = wavelen > ORIGINAL / LLAMA3["low_freq_factor"]
    middle = ~high & ~low
    assert (int(high.sum()), int(middle.sum()), int(low.sum())) == (1, 2, 5)
    (rotary,) = rotaries(model)
    got = rotary.inv_freq
    assert torch.equal(got[high], plain[high])  # kept
    assert torch.equal(got[low], plain[low] / LLAMA3["factor"])  # scaled
    assert ((got[middle] < plain[middle]) & (got[middle] > plain[middle] / LLAMA3["factor"])).all()  # smoothed
    assert torch.equal(got, hf.model.rotary_emb.inv_freq)


@pytest.mark.parametrize(
    "spelling, old_key",
    [("parameters", False), ("scaling", False), ("scaling", True), ("both", False)],
    ids=["rope_parameters", "rope_scaling", "rope_scaling-type", "both-agreeing"],
)
def test_both_spellings_of_the_config_load_the_same_rope(tmp_path, spelling, old_key):
    hf = llama(tmp_path, {**LLAMA3, "rope_theta": 5e5}, spelling, old_key)
    assert hf.config.rope_parameters["rope_type"] == "llama3" and hf.config.rope_parameters["rope_theta"] == 5e5
    model, _ = LLaMAModel.from_hf(tmp_path, device="cpu")
    assert torch.equal(rotaries(model)[0].inv_freq, hf.model.rotary_emb.inv_freq)
    assert max_diff(model, hf) <= TOL


def test_a_top_level_original_length_wins_as_in_transformers(tmp_path):
    llama_checkpoint(tmp_path, "gqa", rope_parameters=dict(LLAMA3))
    write_config(tmp_path, {**read_config(tmp_path), "original_max_position_embeddings": 32})
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    model, _ = LLaMAModel.from_hf(tmp_path, device="cpu")
    assert rotaries(model)[0].adapters_rope.parameters["original_max_position_embeddings"] == 32
    assert torch.equal(rotaries(model)[0].inv_freq, hf.model.rotary_emb.inv_freq)


def test_the_frequencies_survive_a_cast(tmp_path):
    """SAT recomputes inv_freq with `_compute_inv_freq` whenever the buffer is not float32 (after .bfloat16())."""
    hf = llama(tmp_path, LLAMA3)
    model, _ = LLaMAModel.from_hf(tmp_path, device="cpu")
    (rotary,) = rotaries(model.to(torch.bfloat16))
    assert rotary.inv_freq.dtype == torch.bfloat16
    assert torch.equal(rotary._compute_inv_freq(device="cpu"), hf.model.rotary_emb.inv_freq)


def test_mixtral_computes_scaled_rope_too(tmp_path):
    mixtral_checkpoint(tmp_path, rope_parameters={**LLAMA3, "rope_theta": 1e6})
    hf = transformers.MixtralForCausalLM.from_pretrained(tmp_path).eval()
    model, _ = MixtralModel.from_hf(tmp_path, device="cpu")
    assert torch.equal(rotaries(model)[0].inv_freq, hf.model.rotary_emb.inv_freq)
    assert max_diff(model, hf) <= TOL


def test_rope_scaling_beside_a_default_rope_parameters_is_refused_naming_both(tmp_path):
    """transformers would take rope_scaling (and lose rope_parameters' θ); we used to take rope_parameters."""
    llama_checkpoint(tmp_path, "gqa", rope_parameters={"rope_type": "default", "rope_theta": 5e5})
    write_config(tmp_path, {**read_config(tmp_path), "rope_scaling": {"rope_type": "linear", "factor": 2.0}})
    with pytest.raises(HookError) as info:
        LLaMAModel.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: rope_scaling and rope_parameters disagree\n"
        '  rope_scaling:    {"factor": 2.0, "rope_type": "linear"}\n'
        '  rope_parameters: {"rope_theta": 500000.0, "rope_type": "default"}\n'
        "  hint: transformers 5 reads rope_scaling and ignores rope_parameters (its rope_theta too); keep the one "
        "the model was trained with and delete the other"
    )


@pytest.mark.parametrize(
    "field, rope, message",
    [
        ("rope_parameters", {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4},
         "rope_parameters.rope_type is 'dynamic', a RoPE SAT's LLaMAModel does not compute"),
        ("rope_scaling", {"type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8},
         "rope_scaling.rope_type is 'longrope', a RoPE SAT's LLaMAModel does not compute"),
    ],
)  # fmt: skip
def test_types_sat_cannot_compute_are_refused_by_field_and_value(tmp_path, field, rope, message):
    llama_checkpoint(tmp_path, "gqa")
    config = {k: v for k, v in read_config(tmp_path).items() if k != "rope_parameters"}  # one spelling only
    write_config(tmp_path, {**config, field: rope})
    with pytest.raises(HookError) as info:
        LLaMAModel.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: {message}\n"
        "  supported rope types: default, linear, llama3, yarn\n"
        "  hint: this type changes the frequencies with the sequence length or per layer, which SAT's fixed "
        "rotary buffer cannot; loading would give wrong outputs, so it is refused"
    )


def test_mixtral_refuses_by_its_class_name(tmp_path):
    mixtral_checkpoint(tmp_path)
    config = {k: v for k, v in read_config(tmp_path).items() if k != "rope_parameters"}
    write_config(tmp_path, {**config, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}})
    with pytest.raises(HookError) as info:
        MixtralModel.from_hf(tmp_path)
    assert str(info.value).splitlines()[0] == (
        f"{tmp_path / 'config.json'}: rope_scaling.rope_type is 'dynamic', a RoPE SAT's MixtralModel does not compute"
    )


def test_an_incomplete_scaling_is_refused(tmp_path):
    llama_checkpoint(tmp_path, "gqa")
    write_config(tmp_path, {**read_config(tmp_path), "rope_parameters": {"rope_type": "llama3", "factor": 8.0}})
    with pytest.raises(HookError) as info:
        LLaMAModel.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: rope_parameters of rope type 'llama3' has no low_freq_factor, high_freq_factor\n"
        "  hint: transformers cannot build this model either; the config is incomplete"
    )


@pytest.mark.parametrize(
    "spelling, rope",
    [("parameters", LLAMA3), ("scaling", LLAMA3), ("both", LLAMA3), ("parameters", TYPES["yarn-mscale"]),
     ("scaling", TYPES["linear"])],
    ids=["llama3-rope_parameters", "llama3-rope_scaling", "llama3-both", "yarn", "linear-rope_scaling"],
)  # fmt: skip
def test_save_hf_writes_the_scaling_back(tmp_path, spelling, rope):
    llama(tmp_path / "hf", rope, spelling)
    model, args = LLaMAModel.from_hf(tmp_path / "hf", device="cpu")
    out = save_hf(model, tmp_path / "out", args)
    assert read_config(out) == read_config(tmp_path / "hf")  # HF → SAT → HF: the config, spelling and all
    exported = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    assert max_diff(model, exported) <= TOL


def test_a_model_without_a_recorded_config_writes_rope_parameters(tmp_path):
    hf = llama(tmp_path / "hf", LLAMA3, "scaling")
    loaded, args = LLaMAModel.from_hf(tmp_path / "hf", device="cpu")
    model = LLaMAModel(args)
    model.load_state_dict(loaded.state_dict())
    install_rope(model, Rope(dict(LLAMA3)))
    written = read_config(save_hf(model, tmp_path / "out", args))
    assert written["rope_parameters"] == LLAMA3 and "rope_scaling" not in written
    assert max_diff(model, transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out").eval()) <= TOL
    assert max_diff(model, hf) <= TOL


def test_glm4_sees_a_legacy_rope_scaling_beside_a_default_rope_parameters(tmp_path):
    """GLM-4 computes no scaling; transformers would apply rope_scaling here, so it must be refused, not ignored."""
    glm_checkpoint(tmp_path, "quarter-rotary")
    write_config(tmp_path, {**read_config(tmp_path), "rope_scaling": {"rope_type": "linear", "factor": 2.0}})
    with pytest.raises(HookError) as info:
        ChatGLM4Model.from_hf(tmp_path)
    assert str(info.value).splitlines()[0] == (
        f"{tmp_path / 'config.json'}: rope_parameters asks for rope type 'linear' (scaled RoPE), which SAT's "
        "ChatGLM4Model does not compute"
    )
