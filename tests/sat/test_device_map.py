"""SAT from_hf with accelerate device maps on a CPU-only machine: cpu + disk offload, "auto", refusals."""

import pytest

sat = pytest.importorskip("sat")

from accelerate.hooks import AlignDevicesHook
from hf_fixtures import llama_checkpoint
from sat.model import LLaMAModel
from sat_forward import causal_logits, token_ids

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError

_CPU_DISK = {"mixins": "cpu", "transformer.word_embeddings": "cpu", "transformer.layers.0": "cpu",
             "transformer.layers.1": "disk", "transformer.final_layernorm": "disk"}  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    llama_checkpoint(path, "gqa")
    plain, _ = LLaMAModel.from_hf(path, device="cpu")
    return path, causal_logits(plain.eval(), token_ids(32))


def test_cpu_and_disk_map_matches_a_plain_load(tiny, tmp_path):
    path, reference = tiny
    model, _ = LLaMAModel.from_hf(path, device_map=_CPU_DISK, offload_folder=tmp_path)
    assert model.hf_device_map == {**_CPU_DISK, "transformer.position_embeddings": "cpu"}  # its computed inv_freq
    for name, p in model.named_parameters():
        on_disk = name.startswith(("transformer.layers.1.", "transformer.final_layernorm."))
        assert p.device.type == ("meta" if on_disk else "cpu"), name
    assert (tmp_path / "index.json").is_file() and (
        tmp_path / "transformer.layers.1.mlp.dense_4h_to_h.weight.dat"
    ).is_file()
    assert isinstance(model.transformer.layers[1]._hf_hook, AlignDevicesHook)
    assert (causal_logits(model.eval(), token_ids(32)) - reference).abs().max().item() == 0


def test_auto_with_little_cpu_memory_offloads_to_disk(tiny, tmp_path):
    path, reference = tiny
    model, _ = LLaMAModel.from_hf(path, device_map="auto", max_memory={"cpu": 250_000}, offload_folder=tmp_path)
    assert "disk" in model.hf_device_map.values() and model.hf_device_map["mixins"] == "cpu"
    assert not any(k.startswith("transformer.layers.0.") for k in model.hf_device_map)  # layers stay whole
    assert all(p.device.type == "meta" for p in model.transformer.layers.parameters())
    assert (causal_logits(model.eval(), token_ids(32)) - reference).abs().max().item() == 0


def test_single_device_maps_are_recorded_without_hooks(tiny):
    path, reference = tiny
    model, _ = LLaMAModel.from_hf(path, device="cuda:7", device_map={"": "cpu"})  # device_map wins over device
    assert model.hf_device_map == {"": "cpu"} and not hasattr(model, "_hf_hook")
    assert (causal_logits(model.eval(), token_ids(32)) - reference).abs().max().item() == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"device_map": "auto", "max_memory": {"cpu": 250_000}},
         "device_map='auto' leaves transformer.final_layernorm, transformer.layers to disk offload, which needs an "
         "offload folder (max_memory: {'cpu': 250000})\n"
         "  hint: pass offload_folder=, allow more memory in max_memory, or load in a smaller dtype"),
        ({"device_map": _CPU_DISK},
         "the device map offloads transformer.final_layernorm, transformer.layers.1 to disk, which needs an offload folder\n"
         "  hint: pass offload_folder= (a folder for the offloaded weights)"),
        ({"device_map": {"transformer.layer.0": "cpu", "": "cpu"}},
         "the device map names transformer.layer.0, which LLaMAModel does not have\n"
         "  hint: name modules such as mixins, transformer.word_embeddings, transformer.layers.0, "
         "transformer.final_layernorm, or '' for the rest"),
        ({"device_map": {"mixins": "disk", "": "cpu"}, "offload_folder": "unused"},
         "the device map puts mixins on disk and the model computes on cpu; mixins must sit whole on the one device "
         "every module computes on\n"
         "  hint: mixins's weights are used inside other modules' forward, where accelerate's hooks neither move nor "
         "load them: map 'mixins' to that device and use one accelerator"),
        ({"device_map": {"transformer.layers.1": 1, "": 0}},
         "the device map puts mixins on cuda:0 and the model computes on cuda:0, cuda:1; mixins must sit whole on the "
         "one device every module computes on\n"
         "  hint: mixins's weights are used inside other modules' forward, where accelerate's hooks neither move nor "
         "load them: map 'mixins' to that device and use one accelerator"),
    ],
)  # fmt: skip
def test_maps_that_cannot_be_honoured_are_refused_before_reading(tiny, kwargs, message):
    path, _ = tiny
    with pytest.raises(HookError) as e:
        LLaMAModel.from_hf(path, **kwargs)
    assert str(e.value) == f"{path}: {message}"
