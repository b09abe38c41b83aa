"""The from_pretrained hook and export back to a BlinkDL .pth that BlinkDL's rwkv package runs."""

import pytest
import torch

pytest.importorskip("fla")
pytest.importorskip("rwkv")

from blinkdl_checkpoint import make_blinkdl_rwkv7, save_blinkdl_rwkv7  # noqa: E402
from fla.models import RWKV7Config, RWKV7ForCausalLM  # noqa: E402
from reference import rwkv_logits  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

import adapters.fla  # noqa: E402,F401  (installs the hook)
from adapters.core import HookError, LoadError, TensorInfo, open_source  # noqa: E402
from adapters.core.empty import no_init  # noqa: E402
from adapters.fla import install_hook, save_blinkdl  # noqa: E402
from adapters.fla.blinkdl import config_from_shapes, disjoint_device_map  # noqa: E402

TOKENS = [5, 17, 250, 3, 99, 42, 7, 8]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny fp32 BlinkDL file that tests only read, and the `rwkv` package's logits for it."""
    path = save_blinkdl_rwkv7(
        make_blinkdl_rwkv7(hidden_size=64, head_size=16), tmp_path_factory.mktemp("tiny") / "m.pth"
    )
    return path, rwkv_logits(path, TOKENS)[0]


@pytest.mark.parametrize("cls", [RWKV7ForCausalLM, AutoModelForCausalLM])
def test_from_pretrained_accepts_a_pth_and_a_folder(tmp_path, cls):
    path = save_blinkdl_rwkv7(
        make_blinkdl_rwkv7(hidden_size=64, head_size=16, dtype=torch.bfloat16), tmp_path / "m.pth"
    )
    for arg in (path, str(tmp_path)):
        model = cls.from_pretrained(arg, torch_dtype=torch.float32)
        assert type(model) is RWKV7ForCausalLM and not hasattr(model, "hf_device_map")  # one device: no map
        with torch.no_grad():
            ours = model(torch.tensor([TOKENS])).logits[0]
        assert (ours - rwkv_logits(path, TOKENS)[0]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("kwargs", [{"dtype": "bfloat16"}, {"torch_dtype": torch.bfloat16, "dtype": torch.float16}])
def test_dtype_and_torch_dtype_are_both_understood(tiny, kwargs):
    model = AutoModelForCausalLM.from_pretrained(tiny[0], **kwargs)  # torch_dtype wins, as in transformers 4
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_installing_twice_wraps_once():
    wrapped = (RWKV7ForCausalLM.__dict__["from_pretrained"], AutoModelForCausalLM.__dict__["from_pretrained"])
    install_hook()
    assert (RWKV7ForCausalLM.__dict__["from_pretrained"], AutoModelForCausalLM.__dict__["from_pretrained"]) == wrapped


def _unplaceable(device_map) -> str:
    return (
        f"cannot place the model on {device_map!r}: expected a device, a dict of module prefix -> device, or one of "
        "'auto', 'balanced', 'balanced_low_0', 'sequential'\n"
        '  hint: for example device_map="cpu", device_map=0, device_map={"": "cuda:0"} or device_map="auto"'
    )


_LAYERS = ("model.embeddings", "model.layers.0", "model.layers.1", "model.norm", "lm_head")


@pytest.mark.parametrize(
    "device_map, expected",
    [
        ({"": "cpu"}, {"": "cpu"}),
        ({name: "cpu" for name in _LAYERS}, {name: "cpu" for name in _LAYERS}),
        ({"model.layers.1.attn": torch.device("cpu"), "": "cpu"}, {"model.layers.1.attn": torch.device("cpu"), "": "cpu"}),
        ("auto", {"": "cpu"}),  # no GPU here: accelerate puts everything on the CPU
        ("balanced", {"": "cpu"}),
        ("sequential", {"": "cpu"}),
    ],
)  # fmt: skip
def test_device_maps_place_every_tensor_and_are_recorded(tiny, device_map, expected):
    path, reference = tiny
    model = AutoModelForCausalLM.from_pretrained(path, device_map=device_map)
    assert model.hf_device_map == expected
    assert {t.device.type for t in model.state_dict().values()} == {"cpu"}
    with torch.no_grad():
        ours = model(torch.tensor([TOKENS])).logits[0]
    assert (ours - reference).abs().max().item() <= 1e-4


def test_maps_spanning_devices_are_made_disjoint_for_dispatch():
    # What accelerate's dispatch_model is given when a map spans devices (no GPU here to dispatch onto).
    sd = make_blinkdl_rwkv7(hidden_size=64, head_size=16)
    table = {k: TensorInfo(tuple(v.shape), v.dtype) for k, v in sd.items()}
    with torch.device("meta"), no_init():
        model = RWKV7ForCausalLM(RWKV7Config(**config_from_shapes(table)))
    assert disjoint_device_map(model, {"": "cpu", "model.layers.1": 0}) == {
        "model.embeddings": "cpu", "model.layers.0": "cpu", "model.layers.1": 0, "model.norm": "cpu", "lm_head": "cpu"
    }  # fmt: skip
    assert disjoint_device_map(model, {"": "cpu", "model.layers": torch.device("cpu")}) == {"": "cpu"}


def test_a_map_that_leaves_modules_out_is_refused_before_reading(tiny):
    path, _ = tiny
    with pytest.raises(LoadError) as e:
        RWKV7ForCausalLM.from_pretrained(path, device_map={name: "cpu" for name in _LAYERS[:-1]})
    assert str(e.value) == (
        "the device map places no device for lm_head.weight\n  hint: add their modules (or '') to the device map"
    )


def test_round_trip_is_bit_exact_and_runs_in_rwkv(tmp_path):
    sd = make_blinkdl_rwkv7(hidden_size=64, head_size=16, dtype=torch.bfloat16)
    src = save_blinkdl_rwkv7(sd, tmp_path / "src.pth")
    before = src.read_bytes()
    model = RWKV7ForCausalLM.from_pretrained(src, torch_dtype=torch.bfloat16)
    out = save_blinkdl(model, tmp_path / "out.pth")
    assert src.read_bytes() == before
    with open_source(out) as back:
        assert sorted(back.keys()) == sorted(
            k for k in sd if k not in ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")
        )
        for k in back.keys():
            assert torch.equal(back.read(k), sd[k]), k
    assert (rwkv_logits(out, TOKENS)[0] - rwkv_logits(src, TOKENS)[0]).abs().max().item() == 0


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((1,), {}, "from_pretrained got 1 positional argument(s) after the path; a BlinkDL file takes none\n"
                   "  hint: pass torch_dtype=, device_map= and config fields as keyword arguments"),
        ((), {"torch_dtype": "int8"}, "torch_dtype='int8' is not a floating-point torch dtype\n"
                                      '  hint: pass torch.bfloat16, torch.float16, torch.float32, or a name such as "bfloat16"'),
        *(((), {"device_map": bad}, _unplaceable(bad)) for bad in (["cpu"], "gpu0", "meta", -1, {"": 1.5})),
        ((), {"device_map": {"model.layrs.0": "cpu", "": "cpu"}},
         "the device map names model.layrs.0, which RWKV7ForCausalLM does not have\n"
         "  hint: name modules such as model.embeddings, model.layers.0, model.norm, lm_head, or '' for the rest"),
        ((), {"device_map": "auto", "max_memory": {"cpu": 10_000}},
         "device_map='auto' leaves the whole model to disk offload, which needs an offload folder (max_memory: {'cpu': 10000})\n"
         "  hint: pass offload_folder=, allow more memory in max_memory, or load in a smaller dtype"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("cls", [RWKV7ForCausalLM, AutoModelForCausalLM])
def test_hook_refuses_what_it_cannot_honour(tiny, cls, args, kwargs, message):
    path, _ = tiny
    with pytest.raises(HookError) as e:
        cls.from_pretrained(path, *args, **kwargs)
    assert str(e.value) == f"{path}: {message}"


@pytest.mark.parametrize("cls", [RWKV7ForCausalLM, AutoModelForCausalLM])
def test_plain_fla_checkpoints_still_go_to_fla(tmp_path, cls):
    sd = make_blinkdl_rwkv7(hidden_size=64, head_size=16)
    model = RWKV7ForCausalLM.from_pretrained(save_blinkdl_rwkv7(sd, tmp_path / "m.pth"))
    model.save_pretrained(tmp_path / "fla")
    again = cls.from_pretrained(tmp_path / "fla")
    assert type(again) is RWKV7ForCausalLM
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_an_interrupted_export_keeps_the_old_file_and_the_source(tmp_path, monkeypatch):
    import hashlib

    from adapters.core import ExportError

    source = save_blinkdl_rwkv7(make_blinkdl_rwkv7(hidden_size=64, head_size=16), tmp_path / "src.pth")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    model = RWKV7ForCausalLM.from_pretrained(source)
    dest = tmp_path / "out.pth"
    dest.write_bytes(b"old")

    def interrupted(obj, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(ExportError) as info:
        save_blinkdl(model, dest, overwrite=True)
    assert str(info.value) == (
        f"writing {dest} failed: [Errno 28] No space left on device\n  hint: nothing was written; fix the cause and retry"
    )
    assert dest.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.pth", "src.pth"]
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest
