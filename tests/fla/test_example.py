"""examples/finetune_rwkv7_from_blinkdl.py: the loss goes down, and BlinkDL's `rwkv` package runs the export
with the trained model's logits (fp32, <= 1e-4)."""

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("fla")
pytest.importorskip("rwkv")
pytestmark = [
    pytest.mark.filterwarnings("ignore:According to Bo:UserWarning"),  # FLA warns on every RWKV7Attention
    pytest.mark.filterwarnings("ignore:`torch.jit.script:DeprecationWarning"),  # the rwkv package scripts itself
]

import torch  # noqa: E402

from adapters.fla import write_tiny_blinkdl  # noqa: E402

EXAMPLE = Path(__file__).parents[2] / "examples" / "finetune_rwkv7_from_blinkdl.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("finetune_rwkv7_from_blinkdl", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_default_run_trains_exports_and_matches_rwkv(example, tmp_path, capsys):
    result = example.main(["--steps", "6", "--out", str(tmp_path / "out.pth")])
    printed = capsys.readouterr().out
    assert len(result.losses) == 6 and result.losses[-1] < result.losses[0] - 1.0, result.losses
    assert result.exported.is_file()
    assert torch.load(result.exported, weights_only=True)["emb.weight"].dtype == torch.bfloat16
    assert result.max_abs_diff <= 1e-4
    assert "step   6/6  loss" in printed
    assert f"max abs logit diff {result.max_abs_diff:.2e}" in printed


def test_given_checkpoint_and_text_file_fp32_export(example, tmp_path):
    pth = write_tiny_blinkdl(tmp_path / "given.pth", vocab_size=300, hidden_size=64, head_size=16,
                             lora_ranks=(12, 10, 8, 20), seed=3)  # fmt: skip
    text = tmp_path / "corpus.txt"
    text.write_text("Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich. " * 6, encoding="utf-8")
    result = example.main(["--pth", str(pth), "--text", str(text), "--steps", "4", "--export-dtype", "fp32"])
    assert result.exported == tmp_path / "given-finetuned.pth"
    assert torch.load(result.exported, weights_only=True)["emb.weight"].dtype == torch.float32
    assert result.losses[-1] < result.losses[0]
    assert result.max_abs_diff <= 1e-4
