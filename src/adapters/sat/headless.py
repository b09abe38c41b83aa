"""Checkpoints without a task head: the SAT model returns hidden states instead of growing a random head.

SAT's model classes add their head as a mixin (``bert-final``, ``cls``, ``lm``). Deleting the mixin is not enough:
SAT then falls back to ``final_forward_default``, a projection onto the word embeddings, which is an untrained
head in disguise. `drop_head` puts a parameter-free mixin in its place whose ``final_forward`` returns the hidden
states unchanged; it is `replacable`, so a head mixin added on purpose later takes over (SAT warns as usual).
"""

from __future__ import annotations

import functools

from torch import nn

__all__ = ["HIDDEN_STATES_MIXIN", "drop_head", "dropped_head"]

HIDDEN_STATES_MIXIN = "hidden-states"


@functools.cache
def _hidden_states_mixin_class() -> type:
    # Built on first use, so that listing the families imports no SAT.
    from sat.model.base_model import BaseMixin, replacable

    class HiddenStatesMixin(BaseMixin):
        """Stands in for a head the checkpoint lacks: the forward returns the last hidden states."""

        def __init__(self, replaces: str):
            super().__init__()
            self.replaces = replaces  # the head mixin's name, for messages (a plain attribute: no state-dict key)

        @replacable
        def final_forward(self, logits, **kw_args):
            return logits

    return HiddenStatesMixin


def drop_head(model: nn.Module, head_mixin: str) -> bool:
    """Replace `model`'s mixin `head_mixin` with the hidden-states mixin; False when the model has no such head."""
    if head_mixin not in model.mixins:
        return False
    model.del_mixin(head_mixin)
    model.add_mixin(HIDDEN_STATES_MIXIN, _hidden_states_mixin_class()(head_mixin))
    return True


def dropped_head(model: nn.Module) -> str | None:
    """The name of the head mixin `drop_head` replaced in `model` (``"bert-final"``, ``"cls"``), or None."""
    mixins = getattr(model, "mixins", {})
    return mixins[HIDDEN_STATES_MIXIN].replaces if HIDDEN_STATES_MIXIN in mixins else None
