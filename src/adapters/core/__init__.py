"""The engine: declarative specs, header-only planning, lazy readers, streaming materialisation, export.

Never imports `sat` or `fla`: hosts build on this, not the other way round.
"""

from .empty import empty_weights
from .errors import *  # noqa: F403
from .errors import __all__ as _errors
from .export import export, export_tensors
from .keys import KeyPattern, compress_keys, natural_key, summarize_keys
from .load import load, materialize
from .ops import BlockPermute, Concat, Op, Reshape, RotaryPermute, Scale, Split, Transpose
from .plan import Plan, Unit, plan
from .readers import Reader, RenamedReader, open_source
from .report import LoadReport
from .spec import Ignore, Rule, Spec, ignore, rule
from .table import ModelTable, TensorInfo, model_table

__all__ = [
    *_errors,
    "BlockPermute", "Concat", "Ignore", "KeyPattern", "LoadReport", "ModelTable", "Op", "Plan", "Reader",
    "RenamedReader", "Reshape", "RotaryPermute", "Rule", "Scale", "Spec", "Split", "TensorInfo", "Transpose", "Unit",
    "compress_keys", "empty_weights", "export", "export_tensors", "ignore", "load", "materialize", "model_table", "natural_key",
    "open_source", "plan", "rule", "summarize_keys",
]  # fmt: skip
