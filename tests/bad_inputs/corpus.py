"""Builders of bad inputs: each writes one broken checkpoint (or spec, or environment) and returns the call that
must fail on it. `test_corpus.py` runs them as a table; the files are generated, never checked in.

A builder takes the test's folder and a `pytest.MonkeyPatch` (for simulated faults: permission denied as root,
a full disk) and returns an `Attempt`: the call, and the model it fills when the caller owns one (that model must
be left entirely on meta afterwards: no partial model).
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from adapters.core import empty_weights, export, load, open_source, rule
from adapters.core.spec import Spec
from adapters.demo import TOY_SPEC, ToyConfig, ToyModel, toy_dims, toy_foreign_state, write_toy_checkpoint

__all__ = ["Attempt", "MARKER", "st_bytes", "tiny_hf_llama", "tiny_blinkdl", "toy_target", "deny_reading"]

MARKER = "PWNED"  # the file a hostile pickle would create; it must never appear


@dataclass(frozen=True)
class Attempt:
    """The call that must raise, and the model it fills (checked to be all on meta afterwards), if any."""

    call: Callable[[], object]
    model: torch.nn.Module | None = None


# --- safetensors bytes --------------------------------------------------------------------------------------------


def st_bytes(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    """A safetensors file from a header (dict or raw bytes) and a data section; `length` overrides the prefix."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def f32(shape: list[int], start: int, end: int) -> dict:
    return {"dtype": "F32", "shape": shape, "data_offsets": [start, end]}


# --- pickles that need code -----------------------------------------------------------------------------------------


class Hostile:
    """Unpickling it would run `exec` and create `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def hostile_pth(path: Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    torch.save({**(state or {"w": torch.ones(2)}), "evil": Hostile(path.parent / MARKER)}, path)
    return path


def hostile_legacy(path: Path) -> Path:
    """A legacy (non-zip) torch file, as old ``.bin``s are, whose pickle would run code."""
    torch.save({"w": torch.ones(2), "evil": Hostile(path.parent / MARKER)}, path, _use_new_zipfile_serialization=False)
    return path


# --- torch zip surgery ----------------------------------------------------------------------------------------------


def rezip(src: Path, dst: Path, *, drop: str | None = None, shorten: str | None = None) -> Path:
    """Copy a torch zip, leaving out the record ending in `drop` and cutting the one ending in `shorten` to 4 bytes."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            if drop and name.endswith(drop):
                continue
            data = zin.read(name)
            zout.writestr(name, data[:4] if shorten and name.endswith(shorten) else data)
    return dst


# --- tiny checkpoints of both hosts ---------------------------------------------------------------------------------


def tiny_hf_llama(folder: Path, **config) -> Path:
    """A tiny HF LLaMA folder (one model.safetensors) written by transformers itself."""
    from transformers import LlamaConfig, LlamaForCausalLM

    fields = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=32, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**{**fields, **config})).save_pretrained(folder)
    return folder


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


def edit_safetensors(path: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    from safetensors.torch import load_file

    state = load_file(path)
    change(state)
    save_file(state, path, metadata={"format": "pt"})


def tiny_blinkdl(path: Path, change: Callable[[dict[str, torch.Tensor]], None] | None = None) -> Path:
    """A tiny BlinkDL x070 .pth (hidden 32, heads of 16, 2 layers, vocab 64), optionally edited before saving."""
    from adapters.fla.tiny import tiny_blinkdl_rwkv7

    state = tiny_blinkdl_rwkv7(vocab_size=64, hidden_size=32, head_size=16, lora_ranks=(8, 6, 4, 10))
    if change is not None:
        change(state)
    torch.save(state, path)
    return path


def toy_target(folder: Path, state: dict[str, torch.Tensor] | None = None, fmt: str = "safetensors"):
    """A toy foreign checkpoint under `folder` and a fresh meta `ToyModel` for it."""
    config = ToyConfig(layers=2)
    path = write_toy_checkpoint(folder, state if state is not None else toy_foreign_state(config), fmt)
    with empty_weights():
        model = ToyModel(config)
    return path, model, toy_dims(config)


def toy_load(folder: Path, state=None, fmt: str = "safetensors", **kwargs) -> Attempt:
    path, model, dims = toy_target(folder, state, fmt)
    return Attempt(lambda: load(TOY_SPEC, path, model, dims=dims, progress=False, **kwargs), model)


def loaded_toy(folder: Path):
    path, model, dims = toy_target(folder)
    load(TOY_SPEC, path, model, dims=dims, progress=False)
    return model, dims


def export_toy(model, dims, dest: Path) -> Callable[[], object]:
    return lambda: export(TOY_SPEC, model, dest, dims=dims)


# --- simulated faults -----------------------------------------------------------------------------------------------


def deny_reading(mp, path: Path) -> None:
    """Make `path` unreadable: chmod 000 where that binds, else (as root) an `open` that says EACCES for it."""
    if os.geteuid() != 0:
        path.chmod(0)
        return
    import builtins

    from adapters.core.readers import open as open_module
    from adapters.core.readers import sharded

    real = builtins.open

    def guarded(file, *args, **kwargs):
        if os.fspath(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real(file, *args, **kwargs)

    for module in (open_module, sharded):
        mp.setattr(module, "open", guarded, raising=False)


def no_space_left(mp, module, name: str) -> None:
    """Replace `module.name` (a writer taking the path second) with one that writes half a file, then fails."""

    def interrupted(obj, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    mp.setattr(module, name, interrupted)


def open_and_read(path: Path) -> Callable[[], object]:
    """Open `path` and read every tensor (a reader that opens fine must still fail on its data)."""

    def run():
        with open_source(path) as reader:
            return [reader.read(k) for k in reader.keys()]

    return run


def spec_of(*rules) -> Callable[[], Spec]:
    return lambda: Spec("bad", tuple(rule(*r) for r in rules))
