"""A family: everything `from_hf` needs to know about one HF architecture and the SAT class that holds it.

Each ``specs/<family>.py`` defines one `Family` and the registry in ``specs/__init__.py`` lists them. The spec
itself stays a table; the callables here are the few places a config decides something (tied heads, rope base).
"""

from __future__ import annotations

import importlib
from argparse import Namespace
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..core import HookError, Spec
from .hf_checkpoint import HFCheckpoint
from .hf_config import HFLayout

__all__ = ["Family", "find_family"]

Args = dict[str, Any]


@dataclass(frozen=True)
class Family:
    """One HF architecture → one SAT model class.

    Attributes:
        name: short name used in messages and the supported-families table (``"llama"``).
        model_types: the HF ``config.json`` ``model_type`` values it reads.
        sat_class: dotted path of the SAT class (imported on use, so listing families imports no SAT).
        args: HF config → SAT model args (architecture only; `from_hf` adds the loading ones).
        spec: HF checkpoint (config and source keys) → the `Spec` to load with.
        dims: HF config → the named sizes the spec's ops use.
        accepts: tells apart families that share a ``model_type`` (ChatGLM v1/2/3, GLM-4); None accepts all.
        architectures: HF ``architectures`` that name the family when ``config.json`` has no ``model_type``
            (THUDM's CogVLM remote code writes none).
        compatible_class_names: names of classes that hold the family without deriving from `sat_class`: the
            same parameter names by construction, e.g. the CogVLM repository's own ``CogVLMModel``. A class whose
            MRO has one of these names is accepted; the plan still checks every parameter name and shape.
        prepare: adjusts the freshly built model (still on meta) before loading, e.g. drops a head mixin.
        finish: fixes the loaded model where SAT hard-codes something the config says otherwise (rope base).
        hf_config: the way back, for `save_hf`: ``(model, args, recorded config or None)`` → `HFLayout`, the HF
            ``config.json`` that builds this model, the key names that steer `spec`, and tensors only HF stores.
            None: the family cannot be exported.
    """

    name: str
    model_types: tuple[str, ...]
    sat_class: str
    args: Callable[[HFCheckpoint], Args]
    spec: Callable[[HFCheckpoint, frozenset[str]], Spec]
    dims: Callable[[HFCheckpoint], Mapping[str, int]] = lambda ckpt: {}
    accepts: Callable[[HFCheckpoint], bool] | None = None
    prepare: Callable[[nn.Module, HFCheckpoint, frozenset[str]], None] | None = None
    finish: Callable[[nn.Module, HFCheckpoint], None] | None = None
    architectures: tuple[str, ...] = ()
    compatible_class_names: tuple[str, ...] = ()
    hf_config: Callable[[nn.Module, Namespace, Mapping[str, Any] | None], HFLayout] | None = None

    def load_class(self) -> type:
        module, _, name = self.sat_class.rpartition(".")
        return getattr(importlib.import_module(module), name)

    @property
    def class_name(self) -> str:
        return self.sat_class.rpartition(".")[2]

    def reads(self, ckpt: HFCheckpoint) -> bool:
        """The checkpoint's ``model_type`` is one of ours, or, without one, its ``architectures`` name us."""
        if ckpt.model_type:
            return ckpt.model_type in self.model_types
        return bool(set(ckpt.get("architectures") or ()) & set(self.architectures))

    def holds(self, cls: type) -> bool:
        """`cls` is (or derives from) the SAT class, or carries one of `compatible_class_names` in its MRO."""
        if issubclass(cls, self.load_class()):
            return True
        return any(base.__name__ in self.compatible_class_names for base in cls.__mro__)


def find_family(ckpt: HFCheckpoint, families: tuple[Family, ...], cls: type | None = None) -> Family:
    """The one family that reads `ckpt`, or a `HookError` that lists what is supported.

    `cls` is the SAT class ``from_hf`` was called on, if any. Among the families of the checkpoint's
    ``model_type``, the one whose SAT class `cls` is (or derives from) wins over `Family.accepts`, preferring one
    that also accepts the config: calling ``ChatGLM3Model.from_hf`` names a version that the config alone may not
    tell (ChatGLM2 and ChatGLM3 write the same fields). The family's own `args` still refuse what it cannot read.
    """
    model_type = ckpt.model_type
    candidates = [f for f in families if f.reads(ckpt)]
    matched = [f for f in candidates if f.accepts is None or f.accepts(ckpt)]
    chosen = _holding(cls, candidates, matched)
    if chosen is not None:
        return chosen
    if len(matched) == 1:
        return matched[0]
    supported = ", ".join(sorted({t for f in families for t in f.model_types}))
    archs = ", ".join(ckpt.get("architectures") or []) or "none listed"
    if not candidates:
        raise HookError(
            f"{ckpt.path}: model_type {model_type!r} (architectures: {archs}) has no SAT mapping\n"
            f"  supported model_types: {supported}\n"
            "  hint: a new family is one spec file in adapters/sat/specs/ plus one registry line"
        )
    names = ", ".join(f.name for f in (matched or candidates))
    classes = " or ".join(dict.fromkeys(f"{f.class_name}.from_hf(...)" for f in (matched or candidates)))
    raise HookError(
        f"{ckpt.path}: model_type {model_type!r} matches {'several' if matched else 'none'} of the families "
        f"reading it ({names})\n  hint: the config lacks the fields that tell these versions apart; "
        f"name the version by its SAT class: {classes}"
    )


def _holding(cls: type | None, families: list[Family], accepting: list[Family]) -> Family | None:
    """The family whose SAT class is the nearest base of `cls` (the most derived one), or None.

    Nearest wins over `accepts`: ``GLM4VModel.from_hf`` on a text-only GLM-4 file must reach the GLM-4V family,
    whose args refuse it by name, not the GLM-4 family, which would build a GLM4VModel without its vision args.
    Between families holding the same class, one that accepts the config wins.
    """
    if not isinstance(cls, type):
        return None
    fits = [(len(f.load_class().__mro__), f in accepting, f) for f in families if f.holds(cls)]
    return max(fits, key=lambda fit: fit[:2])[2] if fits else None
