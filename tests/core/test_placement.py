"""core.placement on toy modules: explicit maps, strategies, the `together` rule, disjoint maps, disk in `load`."""

import pytest
import torch
from torch import nn

from adapters.core import HookError
from adapters.core.placement import disjoint_device_map, dispatch, plan_placement


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.shared = nn.ModuleDict({"w": nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])})
        self.blocks = nn.ModuleList([Block(), Block()])
        self.register_buffer("scale", torch.ones(8))


def _plan(device, **kw):
    with torch.device("meta"):
        model = Toy()
    return plan_placement(model, device, dtype=torch.float32, path="toy", no_split=["Block"], **kw)


def test_devices_and_maps_pass_through():
    assert _plan("cpu") == "cpu"
    assert _plan({"blocks.1": "cpu", "": "cpu"}) == {"blocks.1": "cpu", "": "cpu"}
    assert _plan("auto") == {"": "cpu"}


@pytest.mark.parametrize(
    "device, kw, message",
    [
        ({"blocks.2": "cpu"}, {},
         "toy: the device map names blocks.2, which Toy does not have\n"
         "  hint: name modules such as shared, blocks, or '' for the rest"),
        ({"blocks.1": "disk", "": "cpu"}, {},
         "toy: the device map offloads blocks.1 to disk, which needs an offload folder\n"
         "  hint: pass offload_folder= (a folder for the offloaded weights)"),
        ("auto", {"max_memory": {"cpu": 10}, "disk": False},
         "toy: device_map='auto' leaves the whole model to disk offload, which is not supported (max_memory: {'cpu': 10})\n"
         "  hint: allow more memory in max_memory, or load in a smaller dtype"),
        ({"shared.w.1": 1, "": 0}, {"together": ("shared",)},
         "toy: the device map puts shared on cuda:0, cuda:1 and the model computes on cuda:0, cuda:1; shared must sit "
         "whole on the one device every module computes on\n"
         "  hint: shared's weights are used inside other modules' forward, where accelerate's hooks neither move nor "
         "load them: map 'shared' to that device and use one accelerator"),
        ({"shared": "cpu", "": 0}, {"together": ("shared",)},
         "toy: the device map puts shared on cpu and the model computes on cuda:0; shared must sit whole on the one "
         "device every module computes on\n"
         "  hint: shared's weights are used inside other modules' forward, where accelerate's hooks neither move nor "
         "load them: map 'shared' to that device and use one accelerator"),
    ],
)  # fmt: skip
def test_refusals_name_the_cause(device, kw, message):
    with pytest.raises(HookError) as e:
        _plan(device, **kw)
    assert str(e.value) == message


def test_disjoint_maps_cover_buffers_and_keep_the_longest_prefix():
    with torch.device("meta"):
        model = Toy()
    assert disjoint_device_map(model, {"": "cpu", "blocks.1": 0}) == {"shared": "cpu", "blocks.0": "cpu",
                                                                     "blocks.1": 0, "scale": "cpu"}  # fmt: skip
    assert disjoint_device_map(model, {"": "cpu", "blocks": torch.device("cpu")}) == {"": "cpu"}


def test_disk_entries_are_written_by_load_and_hooked_by_dispatch(tmp_path):
    from safetensors.torch import save_file

    from adapters.core import Spec, empty_weights, ignore, load, rule

    torch.manual_seed(0)
    ref = Toy()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items() if k != "scale"}, tmp_path / "m.safetensors")
    spec = Spec(
        name="toy->toy",
        rules=[rule(k, k) for k in ref.state_dict() if k != "scale"],
        keep=[ignore("scale", "computed by the model")],
    )
    with empty_weights():
        model = Toy()
    placement = {"shared": "cpu", "blocks.0": "cpu", "blocks.1": "disk", "scale": "cpu"}
    load(spec, tmp_path / "m.safetensors", model, device=placement, offload_folder=tmp_path / "off")
    assert all(p.device.type == "meta" for p in model.blocks[1].parameters())
    assert (tmp_path / "off" / "index.json").is_file() and (tmp_path / "off" / "blocks.1.a.weight.dat").is_file()
    dispatch(model, placement, str(tmp_path / "off"))
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(model.blocks[1].a(x), ref.blocks[1].a(x))
    assert model.hf_device_map == placement
