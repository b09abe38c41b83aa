"""``convert HF_DIR --to sat OUT``: an HF folder as a SAT checkpoint folder that SAT's own `from_pretrained` loads.

Layout written (whole or not at all, `write_folder_atomically`)::

    OUT/latest                          "1"
    OUT/model_config.json               model_class, model_parallel_size 1, the family's translated SAT args,
                                        adapters_family, adapters_hf_config: the HF family and config.json it
                                        came from, for `convert OUT --to hf` (extra SAT args, unused by SAT)
    OUT/1/mp_rank_00_model_states.pt    {"module": the model's state dict, "iteration": 1}

A checkpoint whose RoPE `from_hf` installs at load time (a base SAT hard-codes otherwise: Llama 3's 5e5, GLM-4's
``rope_ratio``; a scaling such as ``llama3``) is refused too, after the load and before anything is written. The
folder's ``inv_freq`` buffer would carry the frequencies, but SAT's rotary recomputes them from its own base whenever
the buffer is not float32 (bf16/fp16 inference, SAT's usual), and nothing stores yarn's attention factor: wrong
angles, no error.

A checkpoint without its task head (``BertModel``/``ViTModel`` files: no MLM head, no classifier) is refused before
any tensor is read: `from_hf` swaps SAT's head mixin for one returning the hidden states (`adapters.sat.headless`),
but SAT's own class always builds its head, so SAT would refuse the folder (missing keys) or, told to go on
(``force_inference``), run an untrained head. No folder could give the outputs `from_hf` gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..core import ExportError, open_source
from ..core.export import write_folder_atomically

__all__ = ["FAMILY_FIELD", "HF_CONFIG_FIELD", "load_recorded", "write_sat_folder"]

# Extra SAT args: the HF family (glm4 or glm, ...) and config.json the folder came from. save_hf needs both to write
# the same HF folder back: fields SAT args do not hold (CLIP's text eos_token_id, labels) live only in the config.
FAMILY_FIELD, HF_CONFIG_FIELD = "adapters_family", "adapters_hf_config"


def write_sat_folder(path: Path, dest: Path, dtype: torch.dtype, progress: bool | None) -> Path:
    """Load HF folder `path` with `from_hf` (CPU, `dtype`) and write it as a SAT checkpoint folder at `dest`."""
    from adapters.sat.from_hf import from_hf, resolve_target

    target = resolve_target(None, path, device="cpu", dtype=dtype)
    _refuse_headless(target)
    model, _ = from_hf(None, path, device="cpu", dtype=dtype, progress=progress)
    _refuse_runtime_rope(model, target)
    config = {"model_class": type(model).__name__, "model_parallel_size": 1, **target.family.args(target.ckpt),
              FAMILY_FIELD: target.family.name, HF_CONFIG_FIELD: dict(target.ckpt.config)}  # fmt: skip

    def write(tmp: Path) -> None:
        (tmp / "1").mkdir()
        torch.save({"module": model.state_dict(), "iteration": 1}, tmp / "1" / "mp_rank_00_model_states.pt")
        (tmp / "model_config.json").write_text(json.dumps(config, indent=2, default=str))
        (tmp / "latest").write_text("1")

    return write_folder_atomically(dest, write)


def load_recorded(folder: Path, progress: bool | None):
    """A SAT folder that records its HF family (`write_sat_folder`'s) as ``(model, args)``, with the family and HF
    config `save_hf` reads from a `from_hf` model; None for other SAT folders (`save_hf` then picks by class)."""
    from adapters.sat import load_sat
    from adapters.sat.specs import FAMILIES

    config = json.loads((folder / "model_config.json").read_text())
    family = next((f for f in FAMILIES if f.name == config.get(FAMILY_FIELD)), None)
    if family is None or config.get("model_class") != family.class_name:
        return None
    # The family's class, imported: SAT knows a class only once its module ran (adapters.sat.shims.CLIP).
    model, args = load_sat(family.load_class(), folder, device="cpu", overwrite_args={"model_parallel_size": 1},
                           progress=progress)  # fmt: skip
    model.adapters_family, model.adapters_hf_config = family.name, config.get(HF_CONFIG_FIELD)
    return model, args


def _refuse_runtime_rope(model, target) -> None:
    """`ExportError` when `from_hf` installed RoPE (a base, a scaling, a rotary width) that SAT's own class, built
    from the folder's args, would not compute: SAT hard-codes its bases and has no field for scaling, so its
    `from_pretrained` would run the folder with wrong angles and no error."""
    from adapters.sat.rope import runtime_rope

    changes = runtime_rope(model)
    if not changes:
        return
    name, family = type(model).__name__, target.family.name
    raise ExportError(
        f"{target.ckpt.path}: a {family} checkpoint whose RoPE SAT's own {name} does not compute cannot be "
        "converted --to sat\n"
        + "".join(f"  from_hf:  {line}\n" for line in changes)
        + "  SAT:      model_config.json has no field for it; SAT keeps the file's inv_freq only while it stays "
        "float32 and recomputes its own RoPE once loaded in bf16/fp16 (a yarn factor is never stored): wrong "
        "outputs, no error\n"
        f"  hint: load the HF folder itself (import adapters.sat; {name}.from_hf(PATH)): adapters computes this RoPE "
        "at load time"
    )


def _refuse_headless(target) -> None:
    """`ExportError` when `from_hf` would drop the SAT class's head for this file (decided on meta, from headers)."""
    from adapters.sat.from_hf import build_on_meta
    from adapters.sat.headless import dropped_head

    with open_source(target.ckpt.path) as reader:
        model, _ = build_on_meta(target, frozenset(reader.keys()))
    head = dropped_head(model)
    if head is None:
        return
    name, family = type(model).__name__, target.family.name
    raise ExportError(
        f"{target.ckpt.path}: a {family} checkpoint without its task head cannot be converted --to sat\n"
        f"  from_hf:  {name} without its '{head}' mixin, returning the last hidden states\n"
        f"  SAT:      its own {name} always builds '{head}', so from_pretrained refuses the folder "
        f"(missing mixins.{head}.* keys) or, forced, runs an untrained head\n"
        f"  hint: load the HF folder itself (import adapters.sat; {name}.from_hf(PATH)), or convert a checkpoint "
        "saved with its head"
    )
