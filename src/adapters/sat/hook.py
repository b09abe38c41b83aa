"""The load hook: ``from_hf`` on every SAT model class, and SAT's ``from_pretrained`` accepting HF checkpoints.

After `install_hook()`:

* ``LLaMAModel.from_hf(path)`` (any `BaseModel` subclass, SAT's or the user's) and ``AutoModel.from_hf(path)``;
* ``LLaMAModel.from_pretrained(hf_dir_or_hub_id, args)`` and ``AutoModel.from_pretrained(...)`` route an HF
  checkpoint (a folder with ``config.json`` and no SAT ``model_config.json``, or ``org/name``) to `from_hf`;
  SAT checkpoints and SAT's own model names go to SAT's code unchanged, except where SAT's path would reshard
  through rank 0 over CUDA or build the wrong size: a SAT folder with ``model_parallel_size`` in
  ``overwrite_args``, or saved by N > 1 ranks and loaded outside a job of N ranks, goes to `load_sat`
  (the rule and why: `adapters.sat.sat_checkpoint`).
"""

from __future__ import annotations

from typing import Any

from ..core import HookError
from .from_hf import from_hf
from .hf_checkpoint import is_hf_checkpoint
from .partition import job_world_size
from .sat_checkpoint import is_sat_checkpoint, load_sat, stored_model_parallel_size

__all__ = ["install_hook"]

_MARK = "_adapters_hf_hook"
# SAT from_pretrained options that have no meaning for an HF checkpoint; refused when set to anything but these.
_SAT_ONLY = {"home_path": None, "url": None, "prefix": "", "specific_iteration": None}
# Where SAT looks up a name that is not a local folder; load_sat reads local folders only, as SAT then does.
_SAT_LOOKUP = ("home_path", "url")


def install_hook() -> None:
    """Add `from_hf` to `BaseModel` and `AutoModel` and wrap both `from_pretrained` (idempotent)."""
    from sat.model.base_model import AutoModel, BaseModel

    BaseModel.from_hf = classmethod(_model_from_hf)
    AutoModel.from_hf = classmethod(_auto_from_hf)
    for owner, auto in ((BaseModel, False), (AutoModel, True)):
        current = owner.__dict__["from_pretrained"]
        if getattr(current.__func__, _MARK, False):
            continue
        owner.from_pretrained = classmethod(_routing(current.__func__, auto))


def _model_from_hf(cls, name_or_path, args=None, **kwargs):
    """Build this SAT class from an HF checkpoint folder or hub id; returns ``(model, args)``. See `from_hf`."""
    return from_hf(cls, name_or_path, args, **kwargs)


def _auto_from_hf(cls, name_or_path, args=None, **kwargs):
    """Build the SAT class the HF config calls for; returns ``(model, args)``. See `from_hf`."""
    return from_hf(None, name_or_path, args, **kwargs)


def _routing(original, auto: bool):
    def from_pretrained(
        cls, name, args=None, *, build_only=False, use_node_group=True, overwrite_args=None, **kwargs: Any
    ):
        if not is_hf_checkpoint(name):
            if not build_only and _resharding(name, overwrite_args):
                for key in _SAT_LOOKUP:
                    kwargs.pop(key, None)
                return load_sat(None if auto else cls, name, args, overwrite_args=overwrite_args, **kwargs)
            return original(cls, name, args, build_only=build_only, use_node_group=use_node_group,
                            overwrite_args={} if overwrite_args is None else overwrite_args, **kwargs)  # fmt: skip
        for key, neutral in _SAT_ONLY.items():
            if kwargs.pop(key, neutral) != neutral:
                raise HookError(
                    f"{name}: from_pretrained({key}=...) applies to SAT checkpoints; {name} is an HF checkpoint\n"
                    f"  hint: drop {key}= when loading HF weights"
                )
        return from_hf(
            None if auto else cls, name, args, build_only=build_only, overwrite_args=overwrite_args, **kwargs
        )

    from_pretrained.__doc__ = original.__doc__
    from_pretrained.__name__ = original.__name__
    setattr(from_pretrained, _MARK, True)
    return from_pretrained


def _resharding(name, overwrite_args: dict | None) -> bool:
    """Whether SAT's own path would reshard on rank 0 (CUDA only) or build the wrong size for this SAT folder."""
    if not is_sat_checkpoint(name):
        return False
    if overwrite_args and "model_parallel_size" in overwrite_args:
        return True
    stored = stored_model_parallel_size(name)
    return stored > 1 and job_world_size() % stored != 0
