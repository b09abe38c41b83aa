"""The conformance cases: one per published config under ``configs/<family>/``, for every registered family.

A SAT family's folder is named after `Family.name` (``adapters.sat.specs.FAMILIES``); FLA's RWKV-7 folder after
its spec (``adapters.fla.specs.SPECS``). Each case knows how to write its sparse checkpoint and whether it is a
known failure (`KNOWN_FAILURES`: strict xfails, so a fix turns them red until the mark is removed).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from hf_layout import hf_tensors
from sparse import Tensor
from thudm_layout import LAYOUTS as THUDM_LAYOUTS
from thudm_layout import thudm_tensors

__all__ = ["CASES", "CONFIGS", "KNOWN_FAILURES", "Case", "registered_families"]

CONFIGS = Path(__file__).parent / "configs"
RWKV7 = "rwkv7"
RWKV7_MAX_BYTES = 600 * 1024**2  # written for real (see sparse.py): the 0.1B size only

# case id -> (why it fails today, the exact error message; {path} is the checkpoint folder). Strict xfails: a fix
# turns them red until the entry is removed. Llama 3.x ("rope type 'llama3'") planned clean once llama3 RoPE landed
# in src/adapters/sat/rope.py during this work, so it has no entry.
KNOWN_FAILURES: dict[str, tuple[str, str]] = {
    "roberta/roberta-base-2019": (
        "a legacy config.json without model_type or architectures: no family reads it",
        "{path}: model_type None (architectures: none listed) has no SAT mapping\n"
        "  supported model_types: bert, chatglm, clip, cogagent, cogvlm, glm, gpt2, llama, mixtral, roberta, vit\n"
        "  hint: a new family is one spec file in adapters/sat/specs/ plus one registry line",
    ),
}


@dataclass(frozen=True)
class Case:
    """One published config of one family."""

    family: str
    config_file: Path

    @property
    def id(self) -> str:
        return f"{self.family}/{self.config_file.stem}"

    @property
    def config(self) -> dict:
        return json.loads(self.config_file.read_text())

    def tensors(self) -> list[Tensor]:
        """Name, shape and dtype of every tensor of the published checkpoint (found once per session)."""
        return list(_tensors(self.family, self.config_file))

    @property
    def nbytes(self) -> int:
        return sum(torch.Size(shape).numel() * dtype.itemsize for _, shape, dtype in self.tensors())


@functools.cache
def _tensors(family: str, config_file: Path) -> tuple[Tensor, ...]:
    config = json.loads(config_file.read_text())
    if family == RWKV7:
        return tuple(blinkdl_tensors(config))
    if family in THUDM_LAYOUTS:
        return tuple(thudm_tensors(config, family))
    return tuple(hf_tensors(config, _model_type(family)))


def _model_type(family: str) -> str:
    from adapters.sat.specs import FAMILIES

    return next(f.model_types[0] for f in FAMILIES if f.name == family)


def blinkdl_tensors(sizes: dict) -> list[Tensor]:
    """BlinkDL x070 keys and shapes (layout: `adapters.fla.tiny`), bf16 as released."""
    C, L, V, N, F = sizes["n_embd"], sizes["n_layer"], sizes["vocab_size"], sizes["head_size"], sizes["ffn_size"]
    ranks = sizes["lora_ranks"]
    out: list[tuple[str, tuple[int, ...]]] = [("emb.weight", (V, C))]
    for i in range(L):
        p = f"blocks.{i}."
        norms = ("ln0", "ln1", "ln2") if i == 0 else ("ln1", "ln2")
        out += [(f"{p}{n}.{w}", (C,)) for n in norms for w in ("weight", "bias")]
        out += [(f"{p}att.x_{x}", (1, 1, C)) for x in "rwkvag"]
        for lora, rank in (("w", ranks["decay_w"]), ("a", ranks["aaa_a"]), ("v", ranks["mv_v"])):
            out += [(f"{p}att.{lora}0", (1, 1, C)), (f"{p}att.{lora}1", (C, rank)), (f"{p}att.{lora}2", (rank, C))]
        out += [(f"{p}att.g1", (C, ranks["gate_g"])), (f"{p}att.g2", (ranks["gate_g"], C))]
        out += [(f"{p}att.k_k", (1, 1, C)), (f"{p}att.k_a", (1, 1, C)), (f"{p}att.r_k", (C // N, N))]
        out += [(f"{p}att.{m}.weight", (C, C)) for m in ("receptance", "key", "value", "output")]
        out += [(f"{p}att.ln_x.weight", (C,)), (f"{p}att.ln_x.bias", (C,))]
        out += [(f"{p}ffn.x_k", (1, 1, C)), (f"{p}ffn.key.weight", (F, C)), (f"{p}ffn.value.weight", (C, F))]
    out += [("ln_out.weight", (C,)), ("ln_out.bias", (C,)), ("head.weight", (V, C))]
    return [(name, shape, torch.bfloat16) for name, shape in out]


def registered_families() -> list[str]:
    """Every family the registries hold: SAT's `FAMILIES` by name, and FLA's RWKV-7."""
    from adapters.fla.specs import SPECS
    from adapters.sat.specs import FAMILIES

    assert len(SPECS) == 1, "a new FLA spec: give it a folder under configs/ and a layout here"
    return [f.name for f in FAMILIES] + [RWKV7]


def _cases() -> list[Case]:
    cases = []
    for family in registered_families():
        for path in sorted((CONFIGS / family).glob("*.json")):
            cases.append(Case(family, path))
    return cases


CASES = _cases()
