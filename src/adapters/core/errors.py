"""The `AdapterError` hierarchy.

Every error the library raises on purpose is one of these. Messages follow one form: a summary line that names
what and where, indented detail lines (expected vs got, the rule, the file), and a last `hint:` line with the fix.

    AdapterError
    ├── SpecError                 a spec or rule is malformed (raised when it is built)
    ├── PlanError                 source and target do not fit (raised before any tensor byte is read)
    │   ├── MissingSourceError    a target parameter no source produces, or a merge group with a part missing
    │   ├── UnusedSourceError     a source key no rule uses and no ignore entry names
    │   ├── ShapeMismatchError    a rule would produce a shape other than the target's
    │   ├── DtypeError            a source dtype that cannot become the target dtype
    │   └── DuplicateTargetError  two rules (or two keys of one rule) write one target
    ├── ReadError                 a source file cannot be read
    │   ├── SourceNotFoundError   no such file, nothing loadable in a folder, or a shard named by an index is missing
    │   ├── CorruptFileError      truncated file, bad header, bad index
    │   ├── UnsupportedFormatError a file of a format we do not read (unknown bytes)
    │   └── UnsafePickleError     a pickle that needs code to load: refused, nothing executed
    ├── HookError                 a checkpoint of another family or generation than the hook loads
    ├── FallbackError             a CPU fallback op called with arguments it cannot take
    ├── UnsupportedOnCPUError     a feature the CPU fallbacks do not implement (the GPU kernels do)
    ├── StateError                an RNN state (a foreign one, a host cache, a state file) that does not fit the model
    ├── MissingDependencyError    a host's framework (SAT, FLA) or one of its imports is not installed
    ├── LoadError                 materialisation failed after a clean plan (device, memory, ...)
    │   └── NonFiniteError        a source tensor holds NaN or Inf (checked on request: check_finite=True)
    └── ExportError               writing the foreign format failed; nothing half-written is left behind
"""

from __future__ import annotations

__all__ = [
    "AdapterError",
    "SpecError",
    "PlanError",
    "MissingSourceError",
    "UnusedSourceError",
    "ShapeMismatchError",
    "DtypeError",
    "DuplicateTargetError",
    "ReadError",
    "SourceNotFoundError",
    "CorruptFileError",
    "UnsafePickleError",
    "UnsupportedFormatError",
    "HookError",
    "FallbackError",
    "UnsupportedOnCPUError",
    "StateError",
    "MissingDependencyError",
    "LoadError",
    "NonFiniteError",
    "ExportError",
]


class AdapterError(Exception):
    """Base of every error `adapters` raises on purpose."""


class SpecError(AdapterError, ValueError):
    """A spec, rule, pattern or op is malformed. Raised at construction, long before any file is opened."""


class PlanError(AdapterError):
    """Source and target do not fit. `problems` lists every finding; nothing has been read yet."""

    def __init__(self, message: str, problems: tuple = ()) -> None:
        super().__init__(message)
        self.problems = problems


class MissingSourceError(PlanError):
    """A target parameter that no source key produces (or a merge group with a part missing)."""


class UnusedSourceError(PlanError):
    """A source key that no rule uses and no `ignore` entry names."""


class ShapeMismatchError(PlanError):
    """A rule would produce a tensor whose shape differs from the target parameter's."""


class DtypeError(PlanError):
    """A source dtype that cannot be cast to the target dtype without changing its meaning."""


class DuplicateTargetError(PlanError):
    """More than one source group would write the same target parameter."""


class ReadError(AdapterError, OSError):
    """A source file cannot be read as a checkpoint."""


class SourceNotFoundError(ReadError, FileNotFoundError):
    """A path that does not exist, a folder with nothing loadable, or a shard named by an index that is missing."""


class CorruptFileError(ReadError):
    """A file that exists but is truncated, has a malformed header, or a malformed index."""


class UnsupportedFormatError(ReadError):
    """A file in a format `adapters` does not read (bytes of no known checkpoint format)."""


class UnsafePickleError(ReadError):
    """A pickle that references code (globals outside torch's weights-only allowlist). Refused; nothing executed."""


class HookError(AdapterError, ValueError):
    """A host hook was given a checkpoint of another family or generation than it loads."""


class FallbackError(AdapterError, ValueError):
    """A torch fallback for a GPU-only op (SAT rotary, FLA RWKV-7) got arguments outside the kernel's contract."""


class UnsupportedOnCPUError(AdapterError, NotImplementedError):
    """A feature the CPU fallbacks do not implement; the GPU kernels do."""


class StateError(AdapterError, ValueError):
    """An RNN state to convert (a foreign package's state, a host cache, a state-tuning file) whose layer count,
    shapes or batch size do not fit the model it is meant for. Raised before anything is converted."""


class MissingDependencyError(AdapterError, ImportError):
    """A host's framework, or a module it imports, is not installed. The message carries the install command."""


class LoadError(AdapterError, RuntimeError):
    """Materialising a clean plan failed (device placement, memory). The model is left on `meta`, never half-filled."""


class NonFiniteError(LoadError):
    """Source tensors hold NaN or Inf. Checked only on request (``check_finite=True``); the model is reset to meta."""


class ExportError(AdapterError, OSError):
    """Writing the foreign format failed. The destination is untouched; no partial file is left behind."""
