"""``adapters convert SAT_DIR --to hf OUT``: SAT checkpoint folders (plain and with lora2 LoRA) to HF folders."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("sat")

from adapters.cli import main  # noqa: E402
from adapters.core import open_source  # noqa: E402


@pytest.fixture(scope="module")
def sat_folder(tmp_path_factory):
    """An HF LLaMA, converted --to sat by the CLI (the SAT folder this converts back)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("cli_hf")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(root / "hf")
    assert main(["-q", "convert", str(root / "hf"), "--to", "sat", str(root / "sat")]) == 0
    return root


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["--json", *map(str, argv)])
    return code, json.loads(capsys.readouterr().out)


def test_sat_folder_converts_back_to_the_hf_files_bit_exact(capsys, sat_folder, tmp_path):
    capsys.readouterr()
    code, data = run_json(capsys, "convert", sat_folder / "sat", "--to", "hf", tmp_path / "out")
    assert code == 0 and data == {"output": str(tmp_path / "out"), "to": "hf", "ok": True}
    with open_source(sat_folder / "hf") as a, open_source(tmp_path / "out") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert all(torch.equal(a.read(k), b.read(k)) for k in a.keys())
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_key_value_heads"] == 2
    assert main(["-q", "convert", str(sat_folder / "sat"), "--to", "hf", str(tmp_path / "bf16"),
                 "--dtype", "bfloat16"]) == 0  # fmt: skip
    with open_source(tmp_path / "bf16") as b:
        assert {b.info(k).dtype for k in b.keys()} == {torch.bfloat16}


def test_refusals(capsys, sat_folder, tmp_path):
    code, data = run_json(capsys, "convert", sat_folder / "hf", "--to", "sat", tmp_path / "x", "--lora", "peft")
    assert code == 1 and data["message"] == "--lora applies to --to hf, not --to sat\n  hint: leave --lora out"
    code, data = run_json(capsys, "convert", sat_folder / "sat", "--to", "hf", tmp_path / "x", "--lora", "peft")
    assert (
        code == 1
        and data["error"] == "ExportError"
        and data["message"]
        == (
            "lora='peft' was asked for, but LLaMAModel has no LoRA layers (lora2 LoraLinear)\n"
            "  hint: export without lora='peft'"
        )
    )
    code, data = run_json(capsys, "convert", sat_folder / "sat", "--to", "fla", tmp_path / "x")
    assert code == 1 and data["message"] == (
        f"{sat_folder / 'sat'} is a sat checkpoint; it cannot be converted --to fla\n"
        "  hint: conversions are HF folder --to sat, SAT folder --to hf, BlinkDL .pth --to fla, FLA folder --to blinkdl"
    )
    assert list(tmp_path.iterdir()) == []
