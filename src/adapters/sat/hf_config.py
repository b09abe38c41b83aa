"""SAT model → HF ``config.json``: what a family's `Family.hf_config` returns, and the helpers those functions share.

Each family translates SAT args back into its HF config in its own spec file, next to the forward translation
(``llama_args`` ↔ ``llama_hf_config``). A model `from_hf` loaded carries the config it was read from
(``model.adapters_hf_config``): every field SAT args do not hold (token ids, labels, remote-code fields) is kept from
it, and every field SAT args do hold is written from the args. A model trained in SAT has no recorded config; the
function then writes the family's defaults. RoPE bases (and the RoPE scaling `rope.install_rope` installed) come
from the model's rotary embeddings, where SAT keeps them.

`save_hf` checks each translation by running it forward again: the family's `args` on the written config must give
back the model's args, or the export is refused before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core import ExportError, HookError
from .rope import Rope

__all__ = ["HFLayout", "first", "keep", "rope_of", "rotary", "write_rope", "write_rope_parameters", "start", "tensor",
           "tied"]  # fmt: skip


@dataclass(frozen=True)
class HFLayout:
    """What one export writes besides the model's own tensors.

    Attributes:
        config: the HF ``config.json``.
        keys: HF key names the family's `spec` reads its file layout from (a stored head, a wrapper prefix, a task
            head); `save_hf` passes them as the spec's `keys`, so the export has the layout transformers saves.
        extra: tensors the HF file holds and the SAT model does not (buffers the remote code saves, a token-type
            table SAT dropped because it was zero), by HF name; floating ones are written in the export dtype.
    """

    config: dict[str, Any]
    keys: frozenset[str] = frozenset()
    extra: Mapping[str, torch.Tensor] = field(default_factory=dict)


def start(recorded: Mapping[str, Any] | None, **defaults: Any) -> dict[str, Any]:
    """A copy of the recorded config (or an empty one) with `defaults` for the fields it lacks."""
    config = dict(recorded or {})
    for key, value in defaults.items():
        config.setdefault(key, value)
    return config


def keep(recorded: Mapping[str, Any] | None, key: str, value: Any, read: Callable[[Any], Any] = lambda v: v) -> Any:
    """The recorded field `key` when the forward translation (`read`) turns it into `value`; else `value`.

    Keeps what the args cannot hold, e.g. an ``eos_token_id`` list whose first id is the args' one.
    """
    if recorded is not None and key in recorded and read(recorded[key]) == value:
        return recorded[key]
    return value


def first(value: Any) -> Any:
    """The first id of a list of ids (how the forward translations read ``eos_token_id``)."""
    return value[0] if isinstance(value, list) and value else value


def tensor(model: nn.Module, key: str) -> torch.Tensor:
    """The parameter or buffer `key` of `model`."""
    module_name, _, name = key.rpartition(".")
    module = model.get_submodule(module_name)
    found = getattr(module, name, None)
    if not isinstance(found, torch.Tensor):
        raise ExportError(
            f"{type(model).__name__} has no tensor {key}\n"
            "  hint: the model does not have the layout its family exports from; name another family="
        )
    return found


def tied(model: nn.Module, embedding: str, head: str, recorded: Mapping[str, Any] | None, default: bool) -> bool:
    """Whether to write the head tied to the embedding: the config ties it (recorded, else the HF default) and the
    two SAT tensors are equal. SAT keeps them apart; a fine-tune that moved one apart is written untied."""
    wants = bool((recorded or {}).get("tie_word_embeddings", default))
    return wants and torch.equal(tensor(model, embedding), tensor(model, head))


def rotary(model: nn.Module) -> tuple[float, int]:
    """``(base, dim)`` of the model's rotary embeddings (SAT `FastRotaryEmbedding`), which must agree."""
    from sat.model.position_embedding.triton_rotary_embeddings import FastRotaryEmbedding

    found = {(float(m.base), int(m.dim)) for m in model.modules() if isinstance(m, FastRotaryEmbedding)}
    if len(found) != 1:
        what = "no rotary embedding" if not found else f"rotary embeddings of {len(found)} settings {sorted(found)}"
        raise ExportError(
            f"{type(model).__name__} has {what}, so no single RoPE base and width can be written\n"
            "  hint: the model does not have the layout its family exports from; name another family="
        )
    return found.pop()


def write_rope(config: dict[str, Any], theta: float, **extra: Any) -> None:
    """Write RoPE base `theta` as transformers 5 does (``rope_parameters``, a recorded ``rope_type`` kept), and into
    a top-level ``rope_theta`` too where an older recorded config has one."""
    config["rope_parameters"] = {"rope_type": "default", **dict(config.get("rope_parameters") or {}),
                                 "rope_theta": theta, **extra}  # fmt: skip
    if "rope_theta" in config:
        config["rope_theta"] = theta


def rope_of(model: nn.Module) -> Rope:
    """The RoPE of the model's rotary embeddings, which must agree: what `install_rope` recorded on them, else plain
    RoPE of their base (a model SAT built, or one whose base was set by hand)."""
    from sat.model.position_embedding.triton_rotary_embeddings import FastRotaryEmbedding

    found = [getattr(m, "adapters_rope", None) or Rope.default(m.base)
             for m in model.modules() if isinstance(m, FastRotaryEmbedding)]  # fmt: skip
    settings = sorted({json.dumps(dict(r.parameters), sort_keys=True) for r in found})
    if len(settings) != 1:
        what = "no rotary embedding" if not found else f"rotary embeddings of {len(settings)} RoPE settings {settings}"
        raise ExportError(
            f"{type(model).__name__} has {what}, so no single RoPE can be written\n"
            "  hint: the model does not have the layout its family exports from; name another family="
        )
    return found[0]


def write_rope_parameters(config: dict[str, Any], rope: Rope, read: Callable[[dict[str, Any]], Rope]) -> None:
    """Write `rope` into `config`. The recorded RoPE fields stay as they are (``rope_parameters``, a legacy
    ``rope_scaling``, a top-level ``rope_theta``) when `read`, the family's forward reading, gives `rope` back from
    them; otherwise ``rope_parameters`` is written whole, as transformers 5 writes it, a legacy ``rope_scaling`` is
    dropped (transformers would read it instead), and top-level fields that would override it are updated."""
    try:
        if dict(read(config).parameters) == dict(rope.parameters):
            return
    except HookError:
        pass  # recorded fields that conflict, or ask for what the model does not compute: written anew
    config.pop("rope_scaling", None)
    config["rope_parameters"] = dict(rope.parameters)
    for name in ("rope_theta", "original_max_position_embeddings"):
        if name in config and name in rope.parameters:
            config[name] = rope.parameters[name]
