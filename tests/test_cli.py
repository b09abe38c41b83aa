"""The command line, run in-process (``main(argv)``) on tiny checkpoints: inspect, convert, verify, errors."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("sat")
pytest.importorskip("fla")

from adapters.cli import main  # noqa: E402
from adapters.cli.families import table  # noqa: E402
from adapters.core import open_source  # noqa: E402
from adapters.fla.tiny import write_tiny_blinkdl  # noqa: E402


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A tiny HF LLaMA folder, written by transformers (sharded, so inspect shows a sharded index)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder, max_shard_size=20_000)
    return folder


@pytest.fixture(scope="module")
def pth(tmp_path_factory):
    path = tmp_path_factory.mktemp("blinkdl") / "rwkv7.pth"
    return write_tiny_blinkdl(path, dtype=torch.float32, vocab_size=64, hidden_size=32, head_size=16)


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["--json", *map(str, argv)])
    return code, json.loads(capsys.readouterr().out)


def test_inspect_hf_folder(capsys, hf):
    code = main(["inspect", str(hf)])
    text = capsys.readouterr().out
    assert code == 0
    assert "format:  sharded (" in text and "family:  SAT family llama -> LLaMAModel" in text
    assert "model.layers.{0,1}.self_attn.q_proj.weight" in text  # the plan table, layer ranges compressed
    assert text.rstrip().endswith("missing: none, unused: none, 0 ignored, 1 kept")
    code, data = run_json(capsys, "inspect", hf)
    assert code == 0 and data["ok"] and data["tensors"] == 21 and data["dtypes"] == {"float32": 21}
    assert (
        data["missing"] == []
        and data["unused"] == []
        and data["targets"] == 17
        and data["kept"] == ["transformer.position_embeddings.inv_freq"]
    )


def test_inspect_blinkdl_file_and_a_plain_file(capsys, pth, tmp_path):
    code, data = run_json(capsys, "inspect", pth)
    assert code == 0 and data["format"] == "torch zip (torch.save)"
    assert data["family"].startswith("BlinkDL RWKV-7 x070 (canonical names) -> FLA RWKV7ForCausalLM (hidden 32")
    torch.save({"a": torch.ones(3)}, tmp_path / "other.pt")
    code, data = run_json(capsys, "inspect", tmp_path / "other.pt")
    assert code == 0 and data["family"] is None and data["tensors"] == 1


def test_inspect_names_another_generation(capsys, tmp_path):
    torch.save({"emb.weight": torch.zeros(4, 2), "blocks.0.att.time_first": torch.zeros(2)}, tmp_path / "x040.pth")
    code, data = run_json(capsys, "inspect", tmp_path / "x040.pth")
    assert code == 1 and data["family"] is None
    assert data["problems"].startswith(f"{tmp_path}/x040.pth is RWKV-4/5 (x040-x052), not final RWKV-7 x070\n")


def test_convert_hf_to_sat_loads_in_sat(capsys, hf, tmp_path):
    from sat.model import AutoModel

    import adapters.sat  # noqa: F401

    code = main(["--quiet", "convert", str(hf), "--to", "sat", str(tmp_path / "sat")])
    assert code == 0 and capsys.readouterr().out == f"wrote {tmp_path / 'sat'}\n"
    assert sorted(p.name for p in (tmp_path / "sat").iterdir()) == ["1", "latest", "model_config.json"]
    native, _ = AutoModel.from_pretrained(str(tmp_path / "sat"))
    ours, _ = AutoModel.from_hf(hf)
    assert all(torch.equal(a, b) for a, b in zip(native.state_dict().values(), ours.state_dict().values()))


def test_convert_blinkdl_to_fla_and_back_is_bit_exact(capsys, pth, tmp_path):
    assert main(["-q", "convert", str(pth), "--to", "fla", str(tmp_path / "fla")]) == 0
    assert (tmp_path / "fla" / "config.json").is_file()
    assert main(["-q", "convert", str(tmp_path / "fla"), "--to", "blinkdl", str(tmp_path / "back.pth"),
                 "--dtype", "float32"]) == 0  # fmt: skip
    with open_source(pth) as a, open_source(tmp_path / "back.pth") as b:
        assert set(b.keys()) == set(a.keys()) - {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"}
        assert all(torch.equal(a.read(k), b.read(k)) for k in b.keys())


def test_convert_refusals(capsys, hf, pth, tmp_path):
    code, data = run_json(capsys, "convert", hf, "--to", "hf", tmp_path / "x")
    assert (
        code == 1
        and data["error"] == "CLIError"
        and data["message"]
        == (
            f"{hf} is a hf checkpoint; it cannot be converted --to hf\n"
            "  hint: conversions are HF folder --to sat, SAT folder --to hf, BlinkDL .pth --to fla, FLA folder --to blinkdl"
        )
    )
    code, data = run_json(capsys, "convert", pth, "--to", "sat", tmp_path / "x")
    assert code == 1 and data["message"] == (
        f"{pth} is a blinkdl checkpoint; it cannot be converted --to sat\n"
        "  hint: conversions are HF folder --to sat, SAT folder --to hf, BlinkDL .pth --to fla, FLA folder --to blinkdl"
    )
    (tmp_path / "taken").mkdir()
    code, data = run_json(capsys, "convert", pth, "--to", "fla", tmp_path / "taken")
    assert code == 1 and data["message"] == (
        f"{tmp_path / 'taken'} already exists\n  hint: choose another output path, or remove it first"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_convert_onto_a_full_disk_leaves_nothing(capsys, pth, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    def full(self, folder, *args, **kwargs):
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    code, data = run_json(capsys, "convert", pth, "--to", "fla", tmp_path / "fla")
    assert (
        code == 1
        and data["error"] == "ExportError"
        and data["message"]
        == (
            f"writing {tmp_path / 'fla'} failed: [Errno 28] No space left on device\n"
            "  hint: nothing was written; fix the cause and retry"
        )
    )
    assert list(tmp_path.iterdir()) == []


def test_verify_hf_against_transformers(capsys, hf):
    code, data = run_json(capsys, "verify", hf)
    assert code == 0 and data["ok"] and data["max_abs_diff"] <= 1e-4
    assert data["compared"] == "SAT LLaMAModel vs transformers LlamaForCausalLM"


def test_verify_blinkdl_against_the_rwkv_package(capsys, pth):
    pytest.importorskip("rwkv")
    code = main(["-q", "verify", str(pth), "--tokens", "6"])
    line = capsys.readouterr().out
    assert code == 0 and line.startswith("max abs diff ") and line.rstrip().endswith(": ok tol 0.001")
    assert "(FLA RWKV7ForCausalLM vs BlinkDL rwkv RWKV_x070 (cpu fp32), 6 tokens)" in line


def test_errors_are_typed_and_go_to_stderr(capsys, tmp_path):
    assert main(["inspect", str(tmp_path / "absent")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        f"error: {tmp_path / 'absent'} does not exist\n"
        "  hint: pass a checkpoint file, an HF/FLA folder, or a BlinkDL .pth\n"
    )


def test_module_entry_point_and_console_script_are_the_same_main():
    from pathlib import Path

    import adapters.__main__ as entry

    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    scripts = pyproject[pyproject.index("[project.scripts]") :].split("\n\n")[0]
    assert 'adapters = "adapters.cli:main"' in scripts.splitlines() and entry.main is main


def test_families_table_is_generated_from_the_registry():
    from adapters.sat.specs import FAMILIES

    lines = table().splitlines()
    assert lines[0] == "| host | family | source (HF model_type / file) | target class |"
    assert len(lines) == 2 + len(FAMILIES) + 1
    assert "| SAT | llama | `llama` | `sat.model.official.llama_model.LLaMAModel` |" in lines
    assert lines[-1].startswith("| FLA | rwkv7 | BlinkDL `.pth`: RWKV-7 x070")


def test_readme_table_matches_the_registry():
    """Once the README carries the families table (pasted from table()), it must stay equal to it."""
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start = readme.find("| host | family | source (HF model_type / file) | target class |")
    if start < 0:
        pytest.skip("README.md has no generated families table yet")
    assert readme[start:].startswith(table() + "\n"), (
        "regenerate with: python -c 'from adapters.cli.families import table; print(table())'"
    )


@pytest.mark.parametrize("before", [True, False], ids=["before-command", "after-command"])
def test_output_options_go_before_or_after_the_command(capsys, hf, before):
    def argv(option: str) -> list[str]:
        return [option, "inspect", str(hf)] if before else ["inspect", str(hf), option]

    assert main(argv("--json")) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and data["family"] == "SAT family llama -> LLaMAModel"
    assert main(argv("-q")) == 0
    assert capsys.readouterr().out == "plan ok: 17 units, 17 targets, missing: none, unused: none, 0 ignored, 1 kept\n"
    assert main(argv("--quiet")) == 0 and capsys.readouterr().out.count("\n") == 1


@pytest.mark.parametrize("umask, folder, file", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_written_folders_and_files_get_the_umask_modes(capsys, hf, pth, tmp_path, umask, folder, file):
    import os
    import stat

    from adapters.core.atomic import write_atomically

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    old = os.umask(umask)
    try:
        assert main(["-q", "convert", str(hf), "--to", "sat", str(tmp_path / "sat")]) == 0
        assert main(["-q", "convert", str(pth), "--to", "fla", str(tmp_path / "fla")]) == 0
        write_atomically(tmp_path / "one.bin", lambda tmp: open(tmp, "wb").close())
    finally:
        os.umask(old)
    written = [tmp_path / "sat", *(tmp_path / "sat").rglob("*"), tmp_path / "fla"]
    assert {p.name: mode(p) for p in written} == {p.name: folder if p.is_dir() else file for p in written}
    # (transformers 5.24's save_pretrained writes model.safetensors itself, 0600, inside the --to fla folder)
    assert mode(tmp_path / "one.bin") == file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fla", "one.bin", "sat"]  # no staging folder left


def test_inspect_json_says_not_ok_when_no_family_reads_the_folder(tmp_path, capsys):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text('{"model_type": "no-such-family"}')
    code = main(["inspect", str(tmp_path), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert (code, data["ok"], data["family"]) == (1, False, None)
    assert "model_type 'no-such-family'" in data["problems"]
