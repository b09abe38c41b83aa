"""Every ```python block of README.md runs as written, or is listed in `EXAMPLES` as skipped with a reason.

Each runnable block is written unchanged to ``example.py`` in a fresh temporary folder and run there in a fresh
interpreter, after its setup has put tiny local stand-ins at every path and hub id it names:

    tmp/
      example.py                                  the block's text, byte for byte
      hub/models--meta-llama--Llama-3.2-1B/...    an HF cache (HF_HUB_CACHE; HF_HUB_OFFLINE=1: no network)
      path/to/hf-folder/                          a tiny HF LLaMA folder
      checkpoints/finetune-run/                   a SAT checkpoint folder of it (latest, 1/mp_rank_00_...)
      rwkv7-g1a-0.1b-20250728-ctx4096.pth         a tiny BlinkDL RWKV-7 file

Hub stand-ins keep the published config's structure (``tests/conformance/configs``: rope scaling, tied head, GQA
ratio) at small sizes. A README block that no entry of `EXAMPLES` names fails `test_every_readme_block_is_listed`,
so the README and this file cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PUBLISHED = ROOT / "tests" / "conformance" / "configs"
REVISION = "0123456789abcdef0123456789abcdef01234567"
TIMEOUT_S = 300

# Published sizes -> tiny sizes; every other field (rope scaling, tying, eps, ids) is kept as published.
TINY_LLAMA = {"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 256, "intermediate_size": 128}
TINY_HEAD_DIM = 16


def readme_python_blocks(text: str) -> list[str]:
    """The bodies of the fenced blocks whose info string is exactly ``python``, in README order."""
    return re.findall(r"^```python\n(.*?)^```\s*$", text, flags=re.MULTILINE | re.DOTALL)


# -- stand-ins -----------------------------------------------------------------------------------------------------


def tiny_llama_config(published: dict) -> dict:
    """`published` at `TINY_LLAMA` sizes, with its GQA ratio (heads : kv heads) kept and head size 16."""
    config = dict(published) | TINY_LLAMA
    ratio = published["num_attention_heads"] // published.get("num_key_value_heads", published["num_attention_heads"])
    heads = TINY_LLAMA["hidden_size"] // TINY_HEAD_DIM
    config |= {"num_attention_heads": heads, "num_key_value_heads": heads // ratio}
    if "head_dim" in config:
        config["head_dim"] = TINY_HEAD_DIM
    config["bos_token_id"], config["eos_token_id"] = 1, 2  # the published ids lie past the tiny vocabulary
    return config


def write_tiny_llama(folder: Path, published_file: str, seed: int = 0) -> Path:
    """An HF LLaMA folder: transformers' weights for the tiny config, and that config.json in the published spelling."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = tiny_llama_config(json.loads((PUBLISHED / "llama" / published_file).read_text()))
    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig.from_dict(config)).save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config, indent=2))  # not transformers' rewrite of it
    return folder


def cached_snapshot(hub: Path, repo_id: str) -> Path:
    """The snapshot folder of `repo_id` in the HF cache `hub`, with ``refs/main`` pointing at it (as in test_hub)."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    return repo / "snapshots" / REVISION


def setup_fla(tmp: Path) -> None:
    from adapters.fla.tiny import write_tiny_blinkdl

    write_tiny_blinkdl(tmp / "rwkv7-g1a-0.1b-20250728-ctx4096.pth")


def setup_sat(tmp: Path) -> None:
    write_tiny_llama(cached_snapshot(tmp / "hub", "meta-llama/Llama-3.2-1B"), "llama-3.2-1b.json")
    write_tiny_llama(tmp / "path" / "to" / "hf-folder", "llama-3.2-1b.json")


def setup_cogvlm(tmp: Path) -> None:
    from adapters.sat.tiny import write_tiny_cogvlm

    write_tiny_cogvlm(cached_snapshot(tmp / "hub", "THUDM/cogvlm-chat-hf"))


def setup_back_to_hf(tmp: Path) -> None:
    from adapters.cli.sat_folder import write_sat_folder

    hf = write_tiny_llama(tmp / "path" / "to" / "hf-folder", "llama-2-7b-hf.json")  # convert refuses llama3 RoPE
    (tmp / "checkpoints").mkdir()
    write_sat_folder(hf, tmp / "checkpoints" / "finetune-run", torch.float32, progress=False)


# -- the table -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One README block, found by `marker` (a substring of it and of no other block)."""

    marker: str
    needs: tuple[str, ...] = ()  # modules the block imports that an install may lack (sat, fla)
    setup: Callable[[Path], None] | None = None
    skip: str | None = None  # why it is not run; None: it runs
    needs_cuda: bool = False  # skipped only where CUDA is absent
    produces: tuple[str, ...] = ()  # files the block writes, relative to its folder


EXAMPLES = (
    Example(
        "from adapters import Concat, Reshape, Spec",
        skip="a sketch of the engine API: MyModel, config, path/to/checkpoint and `dims=...` are placeholders",
    ),
    Example(
        'RWKV7ForCausalLM.from_pretrained("rwkv7-g1a-0.1b',
        needs=("fla", "rwkv"),
        setup=setup_fla,
        produces=("finetuned.pth",),
    ),
    Example('LLaMAModel.from_hf("meta-llama/Llama-3.2-1B")', needs=("sat",), setup=setup_sat),
    Example(
        '"THUDM/cogvlm-chat-hf"',
        needs=("sat",),
        setup=setup_cogvlm,
        skip="builds the model with device='cuda', use_gpu_initialization=True: needs CUDA",
        needs_cuda=True,
    ),
    Example(
        'adapters.sat.save_hf(model, "out-hf")',
        needs=("sat",),
        setup=setup_back_to_hf,
        produces=("out-hf/config.json", "run-hf/config.json", "peft-hf/adapter/adapter_config.json"),
    ),
)


def example_for(block: str) -> list[Example]:
    """The entries whose marker `block` contains (exactly one, for a listed block)."""
    return [example for example in EXAMPLES if example.marker in block]


BLOCKS = readme_python_blocks(README.read_text())


def test_every_readme_block_is_listed():
    """Each block is named by exactly one entry, and each entry names exactly one block."""
    assert BLOCKS, "README.md has no ```python blocks: the parser or the README changed"
    unlisted = [block.splitlines()[0] for block in BLOCKS if len(example_for(block)) != 1]
    assert not unlisted, f"README python blocks with no (or more than one) entry in EXAMPLES: {unlisted}"
    for example in EXAMPLES:
        assert sum(example.marker in block for block in BLOCKS) == 1, f"{example.marker!r} names no single block"


def run_block(block: str, tmp: Path) -> subprocess.CompletedProcess:
    """Run `block` as ``tmp/example.py`` in a fresh interpreter, offline, against the HF cache ``tmp/hub``."""
    (tmp / "example.py").write_text(block)
    env = os.environ | {"HF_HOME": str(tmp / "hf-home"), "HF_HUB_CACHE": str(tmp / "hub"), "HF_HUB_OFFLINE": "1"}
    env |= {"TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    return subprocess.run(
        [sys.executable, "example.py"], cwd=tmp, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )


def block_id(block: str) -> str:
    return "|".join(example.marker for example in example_for(block)) or block.splitlines()[0]


@pytest.mark.parametrize("block", BLOCKS, ids=[block_id(block) for block in BLOCKS])
def test_readme_block_runs_as_written(block, tmp_path):
    [example] = example_for(block)
    if example.skip and not (example.needs_cuda and torch.cuda.is_available()):
        pytest.skip(example.skip)
    for module in example.needs:
        pytest.importorskip(module)
    if example.setup:
        example.setup(tmp_path)
    start = time.perf_counter()
    result = run_block(block, tmp_path)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, f"README block failed ({elapsed:.1f} s):\n{block}\n--- stderr:\n{result.stderr}"
    assert [name for name in example.produces if not (tmp_path / name).is_file()] == []
