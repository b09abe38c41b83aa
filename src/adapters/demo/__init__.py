"""The embedded default: a toy checkpoint built on the spot and loaded through the engine."""

from .toy import FORMATS, TOY_SPEC, ToyConfig, ToyModel, toy_dims, toy_foreign_state, write_toy_checkpoint

__all__ = ["FORMATS", "TOY_SPEC", "ToyConfig", "ToyModel", "toy_dims", "toy_foreign_state", "write_toy_checkpoint"]
