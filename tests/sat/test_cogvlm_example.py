"""The CogVLM SAT demo example runs as shipped, and its greedy tokens are those of the HF remote-code reference."""

import pytest

sat = pytest.importorskip("sat")

import importlib.util
from pathlib import Path

import torch
from cogvlm_fixtures import cogvlm_checkpoint
from cogvlm_reference import CogVLMReference

EXAMPLE = Path(__file__).parents[2] / "examples" / "cogvlm_sat_inference.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("cogvlm_sat_inference", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def greedy(reference: CogVLMReference, result: dict, new_tokens: int, eos: int = 2) -> list[int]:
    """Greedy decoding with the reference, recomputing the whole sequence each step (no cache)."""
    ids, types = torch.tensor([result["prompt_ids"]]), result["image_embed_mask"].clone()
    for _ in range(new_tokens):
        with torch.no_grad():
            token = reference.logits(ids, types, result["pixels"])[0, -1].argmax()
        ids, types = (
            torch.cat((ids, token.view(1, 1)), dim=1),
            torch.cat((types, torch.zeros(1, 1, dtype=types.dtype)), 1),
        )
        if token.item() == eos:
            break
    return ids[0].tolist()


def test_example_runs_without_arguments(example, capsys):
    result = example.main(["--max_new_tokens", "3"])
    assert result["version"] == "chat_old" and result["prompt"] == "<EOI>Question: Describe this image. Answer:"
    assert len(result["prompt_ids"]) < len(result["tokens"]) <= len(result["prompt_ids"]) + 3
    assert "Model: " in capsys.readouterr().out


def test_example_tokens_are_the_reference_greedy_tokens(example, tmp_path):
    checkpoint = cogvlm_checkpoint(tmp_path, seed=3)
    result = example.main(["--from_pretrained", str(tmp_path), "--max_new_tokens", "6", "--query", "What is it?"])
    reference = CogVLMReference(checkpoint.tensors, checkpoint.config)
    assert result["tokens"] == greedy(reference, result, 6)
    assert len(result["tokens"]) > len(result["prompt_ids"])
