"""The from_pretrained hook and export back to a BlinkDL .pth that BlinkDL's rwkv package runs."""

import pytest
import torch

pytest.importorskip("fla")
pytest.importorskip("rwkv")

from blinkdl_checkpoint import make_blinkdl_rwkv7, save_blinkdl_rwkv7  # noqa: E402
from fla.models import RWKV7ForCausalLM  # noqa: E402
from reference import rwkv_logits  # noqa: E402

import adapters.fla  # noqa: E402,F401  (installs the hook)
from adapters.core import HookError, open_source  # noqa: E402
from adapters.fla import save_blinkdl  # noqa: E402

TOKENS = [5, 17, 250, 3, 99, 42, 7, 8]


def test_from_pretrained_accepts_a_pth_and_a_folder(tmp_path):
    path = save_blinkdl_rwkv7(make_blinkdl_rwkv7(hidden_size=64, head_size=16, dtype=torch.bfloat16), tmp_path / "m.pth")
    for arg in (path, str(tmp_path)):
        model = RWKV7ForCausalLM.from_pretrained(arg, torch_dtype=torch.float32)
        with torch.no_grad():
            ours = model(torch.tensor([TOKENS])).logits[0]
        assert (ours - rwkv_logits(path, TOKENS)[0]).abs().max().item() <= 1e-4


def test_round_trip_is_bit_exact_and_runs_in_rwkv(tmp_path):
    sd = make_blinkdl_rwkv7(hidden_size=64, head_size=16, dtype=torch.bfloat16)
    src = save_blinkdl_rwkv7(sd, tmp_path / "src.pth")
    before = src.read_bytes()
    model = RWKV7ForCausalLM.from_pretrained(src, torch_dtype=torch.bfloat16)
    out = save_blinkdl(model, tmp_path / "out.pth")
    assert src.read_bytes() == before
    with open_source(out) as back:
        assert sorted(back.keys()) == sorted(k for k in sd if k not in ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"))
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
        ((), {"device_map": {"": "cpu"}}, "device_map={'': 'cpu'} is not supported for BlinkDL files yet (expected one device)\n"
                                          '  hint: pass one device, e.g. device_map="cpu" or device_map="cuda:0"'),
    ],
)  # fmt: skip
def test_hook_refuses_what_it_cannot_honour(tmp_path, args, kwargs, message):
    path = save_blinkdl_rwkv7(make_blinkdl_rwkv7(hidden_size=64, head_size=16), tmp_path / "m.pth")
    with pytest.raises(HookError) as e:
        RWKV7ForCausalLM.from_pretrained(path, *args, **kwargs)
    assert str(e.value) == f"{path}: {message}"


def test_plain_fla_checkpoints_still_go_to_fla(tmp_path):
    sd = make_blinkdl_rwkv7(hidden_size=64, head_size=16)
    model = RWKV7ForCausalLM.from_pretrained(save_blinkdl_rwkv7(sd, tmp_path / "m.pth"))
    model.save_pretrained(tmp_path / "fla")
    again = RWKV7ForCausalLM.from_pretrained(tmp_path / "fla")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
