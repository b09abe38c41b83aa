"""BlinkDL .pth -> FLA with part of the model offloaded to disk (accelerate's ``"disk"`` entries, ``offload_folder``).

The offloaded tensors are written to the folder as they are read and stay on meta in the model; accelerate's hooks
bring them in for each forward. The logits must equal those of the all-CPU load of the same file.
"""

import pytest
import torch

pytest.importorskip("fla")

from accelerate.hooks import AlignDevicesHook  # noqa: E402
from blinkdl_checkpoint import make_blinkdl_rwkv7, save_blinkdl_rwkv7  # noqa: E402
from fla.models import RWKV7ForCausalLM  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

import adapters.fla  # noqa: E402,F401  (installs the hook)
from adapters.core import HookError  # noqa: E402

TOKENS = [5, 17, 250, 3, 99, 42, 7, 8]
CPU_DISK = {"model.embeddings": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.norm": "disk",
            "lm_head": "cpu"}  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny BlinkDL file and the logits of its all-CPU load."""
    path = save_blinkdl_rwkv7(
        make_blinkdl_rwkv7(hidden_size=64, head_size=16), tmp_path_factory.mktemp("tiny") / "m.pth"
    )
    return path, _logits(RWKV7ForCausalLM.from_pretrained(path))


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([TOKENS])).logits[0]


@pytest.mark.parametrize("cls", [RWKV7ForCausalLM, AutoModelForCausalLM])
def test_a_map_with_disk_entries_matches_the_all_cpu_load(tiny, tmp_path, cls):
    path, reference = tiny
    model = cls.from_pretrained(path, device_map=CPU_DISK, offload_folder=tmp_path / "offload")
    assert model.hf_device_map == CPU_DISK
    for name, p in model.named_parameters():
        on_disk = name.startswith(("model.layers.1.", "model.norm."))
        assert p.device.type == ("meta" if on_disk else "cpu"), name
        assert (tmp_path / "offload" / f"{name}.dat").is_file() == on_disk, name
    assert (tmp_path / "offload" / "index.json").is_file()
    assert isinstance(model.model.layers[1]._hf_hook, AlignDevicesHook)
    assert torch.equal(_logits(model), reference)


def test_auto_with_little_memory_offloads_to_disk_and_matches(tiny, tmp_path):
    path, reference = tiny
    model = AutoModelForCausalLM.from_pretrained(path, device_map="auto", max_memory={"cpu": 200_000},
                                                 offload_folder=tmp_path)  # fmt: skip
    placed = model.hf_device_map
    assert "disk" in placed.values() and not any(k.startswith("model.layers.1.") for k in placed)  # blocks whole
    assert any(p.device.type == "meta" for p in model.parameters())
    assert torch.equal(_logits(model), reference)


def test_a_disk_map_without_an_offload_folder_is_refused_before_reading(tiny):
    # device_map="auto" that needs disk and has no folder: tests/fla/test_hook_export.py
    path, _ = tiny
    with pytest.raises(HookError) as e:
        RWKV7ForCausalLM.from_pretrained(path, device_map=CPU_DISK)
    assert str(e.value) == (
        f"{path}: the device map offloads model.layers.1, model.norm to disk, which needs an offload folder\n"
        "  hint: pass offload_folder= (a folder for the offloaded weights)"
    )
