"""The THUDM layouts (`thudm_layout`) name and shape exactly what the family fixtures write.

The fixtures are the files the parity tests load against the reference implementations, so a layout that matches
them at tiny size writes the right names at full size. This also covers the families whose published config.json
is still missing (GLM-4V, CogVLM, CogAgent): their layouts are ready for the day one is added under configs/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from adapters.sat.tiny import write_tiny_cogagent, write_tiny_cogvlm
from thudm_layout import thudm_tensors

sys.path.insert(0, str(Path(__file__).parents[1] / "sat"))  # the family fixtures (tests/sat/*_fixtures.py)
from glm4v_fixtures import glm4v_checkpoint  # noqa: E402
from glm_fixtures import chatglm6b_checkpoint, thudm_checkpoint  # noqa: E402


def _layout(config: dict, family: str) -> dict[str, tuple[int, ...]]:
    return {name: shape for name, shape, _ in thudm_tensors(config, family)}


def _written(folder: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a sharded safetensors folder, from the headers."""
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shapes = {}
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(str(folder / shard), "pt") as f:
            shapes.update({key: tuple(f.get_slice(key).get_shape()) for key in f.keys()})
    return shapes


@pytest.mark.parametrize("release", ["chatglm2", "chatglm3", "glm4"])
def test_chatglm2_layout_matches_the_fixture(tmp_path, release):
    ckpt = thudm_checkpoint(tmp_path, release)
    assert _layout(ckpt.config, release) == {k: tuple(v.shape) for k, v in ckpt.tensors.items()}


def test_chatglm6b_layout_matches_the_fixture(tmp_path):
    config, tensors = chatglm6b_checkpoint(tmp_path)
    assert _layout(config, "chatglm") == {k: tuple(v.shape) for k, v in tensors.items()}


def test_glm4v_layout_matches_the_fixture(tmp_path):
    ckpt = glm4v_checkpoint(tmp_path)
    assert _layout(ckpt.config, "glm4v") == {k: tuple(v.shape) for k, v in ckpt.tensors.items()}


@pytest.mark.parametrize(("family", "write"), [("cogvlm", write_tiny_cogvlm), ("cogagent", write_tiny_cogagent)])
def test_cog_layouts_match_the_written_files(tmp_path, family, write):
    folder = write(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert _layout(config, family) == _written(folder)
