"""Folders written by ``adapters convert x.pth --to fla``: FLA's own `from_pretrained` loads them back with
BlinkDL's numbers (ln_x eps, CPU ops), they convert back bit-exactly, and the config says the model's dtype."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("fla")
pytest.importorskip("rwkv")

from blinkdl_checkpoint import make_blinkdl_rwkv7, save_blinkdl_rwkv7  # noqa: E402
from fla.models import RWKV7Config, RWKV7ForCausalLM  # noqa: E402
from reference import rwkv_logits  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

import adapters.fla  # noqa: E402,F401  (installs the hooks)
from adapters.cli import main  # noqa: E402
from adapters.core import HookError, open_source  # noqa: E402
from adapters.fla import from_blinkdl  # noqa: E402

TOKENS = [5, 17, 50, 3, 99, 42, 7, 8]
HEAD_SIZES = (64, 32, 16)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[int, tuple[Path, Path]]:
    """head size -> (fp32 BlinkDL .pth, the folder `adapters convert --to fla` wrote from it)."""
    root = tmp_path_factory.mktemp("folders")
    found = {}
    for head in HEAD_SIZES:
        state = make_blinkdl_rwkv7(vocab_size=128, hidden_size=64, head_size=head)
        pth = save_blinkdl_rwkv7(state, root / f"h{head}.pth")
        assert main(["-q", "convert", str(pth), "--to", "fla", str(root / f"fla{head}")]) == 0
        found[head] = (pth, root / f"fla{head}")
    return found


def _max_diff(model, pth: Path) -> float:
    with torch.no_grad():
        ours = model(torch.tensor([TOKENS])).logits[0]
    return (ours - rwkv_logits(pth, TOKENS)[0]).abs().max().item()


@pytest.mark.parametrize("cls", [RWKV7ForCausalLM, AutoModelForCausalLM])
@pytest.mark.parametrize("head", HEAD_SIZES)
def test_fla_from_pretrained_of_the_folder_matches_rwkv(converted, head, cls):
    pth, folder = converted[head]
    model = cls.from_pretrained(folder)
    assert type(model) is RWKV7ForCausalLM
    assert {layer.attn.g_norm.eps for layer in model.model.layers} == {64e-5}
    assert _max_diff(model, pth) <= 1e-4


@pytest.mark.parametrize("head", HEAD_SIZES)
def test_the_folder_converts_back_bit_exactly(converted, head, tmp_path):
    pth, folder = converted[head]
    back = tmp_path / "back.pth"
    assert main(["-q", "convert", str(folder), "--to", "blinkdl", str(back), "--dtype", "float32"]) == 0
    with open_source(pth) as a, open_source(back) as b:
        assert set(b.keys()) == set(a.keys()) - {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"}
        assert all(torch.equal(a.read(k), b.read(k)) for k in b.keys())


def test_config_json_records_ln_x_eps_next_to_flas_own_fields(converted):
    config = json.loads((converted[16][1] / "config.json").read_text())
    assert (config["adapters_ln_x_eps"], config["norm_eps"], config["head_dim"]) == (64e-5, 1e-5, 16)
    assert config["dtype"] == "float32"


def test_a_fresh_process_loads_the_folder_on_cpu_after_import_adapters_fla(converted, tmp_path):
    """The user's path exactly: no adapters call but the import, FLA's from_pretrained, a CPU forward."""
    pth, folder = converted[16]
    script = (
        "import sys, torch, adapters.fla\n"
        "from fla.models import RWKV7ForCausalLM\n"
        "model = RWKV7ForCausalLM.from_pretrained(sys.argv[1])\n"
        "with torch.no_grad():\n"
        f"    torch.save(model(torch.tensor([{TOKENS}])).logits[0], sys.argv[2])\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(folder), str(tmp_path / "logits.pt")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    logits = torch.load(tmp_path / "logits.pt")
    assert (logits - rwkv_logits(pth, TOKENS)[0]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("head", HEAD_SIZES)
def test_convert_says_when_plain_fla_would_load_the_folder_wrong(converted, head, tmp_path, capsys):
    pth, _ = converted[head]
    out = tmp_path / "fla"
    assert main(["convert", str(pth), "--to", "fla", str(out)]) == 0
    text = capsys.readouterr().out
    note = (
        f"note: head size {head}: plain FLA builds ln_x (attn.g_norm) with eps head_dim * norm_eps = {head * 1e-5:g}, "
        "BlinkDL with 0.00064; config.json records 0.00064 as adapters_ln_x_eps, which FLA honours only after "
        "`import adapters.fla` (which also lets RWKV-7 run on CPU)"
    )
    if head == 64:
        assert text == f"wrote {out}\n"
    else:
        assert text == f"{note}\nwrote {out}\n"
    assert main(["--json", "convert", str(pth), "--to", "fla", str(tmp_path / "again")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data.get("note") == (None if head == 64 else note)


def test_construction_honours_the_config_field_and_leaves_other_configs_alone():
    dims = {"hidden_size": 64, "head_dim": 16, "num_hidden_layers": 2, "vocab_size": 32}
    ours = RWKV7ForCausalLM(RWKV7Config(**dims, adapters_ln_x_eps=64e-5))
    theirs = RWKV7ForCausalLM(RWKV7Config(**dims))
    assert [layer.attn.g_norm.eps for layer in ours.model.layers] == [64e-5, 64e-5]
    assert [layer.attn.g_norm.eps for layer in theirs.model.layers] == [16 * 1e-5] * 2


@pytest.mark.parametrize("value", [0, -1e-3, "64e-5", True, float("nan")])
def test_a_bad_config_field_is_refused_at_construction(value):
    with pytest.raises(HookError) as e:
        RWKV7ForCausalLM(RWKV7Config(hidden_size=64, head_dim=16, num_hidden_layers=2, adapters_ln_x_eps=value))
    assert str(e.value) == (
        f"RWKV7Config field adapters_ln_x_eps is {value!r}; expected a positive finite float\n"
        "  hint: it is BlinkDL's ln_x eps (0.00064) that `adapters convert --to fla` writes; fix config.json, "
        "or delete the field to use FLA's head_dim * norm_eps"
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_config_dtype_is_the_models_dtype_and_is_saved(converted, dtype, tmp_path):
    pth, _ = converted[16]
    for model in (from_blinkdl(pth, dtype=dtype), RWKV7ForCausalLM.from_pretrained(pth, torch_dtype=dtype)):
        assert model.config.dtype == dtype and {p.dtype for p in model.parameters()} == {dtype}
    model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["dtype"] == str(dtype).removeprefix("torch.")
    assert RWKV7ForCausalLM.from_pretrained(tmp_path / "saved").config.dtype == dtype


def test_installing_the_construction_hook_twice_wraps_once():
    from fla.models.rwkv7.modeling_rwkv7 import RWKV7Block

    from adapters.fla.rwkv7_eps import install_ln_x_eps_hook

    wrapped = RWKV7Block.__init__
    install_ln_x_eps_hook()
    assert RWKV7Block.__init__ is wrapped and wrapped._adapters_ln_x_eps_of is not None
