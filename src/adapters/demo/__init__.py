"""The embedded defaults (``python -m adapters.demo``).

The mission demo (`mission`, `sat_demo`, `fla_demo`) builds a tiny HF LLaMA and a tiny BlinkDL RWKV-7 and loads
them into SAT and FLA; the toy demo (``--toy``, `toy_demo`) runs the engine alone on the toy model and foreign
format below, which the engine's tests use too.
"""

from .toy import FORMATS, TOY_SPEC, ToyConfig, ToyModel, toy_dims, toy_foreign_state, write_toy_checkpoint

__all__ = ["FORMATS", "TOY_SPEC", "ToyConfig", "ToyModel", "toy_dims", "toy_foreign_state", "write_toy_checkpoint"]
