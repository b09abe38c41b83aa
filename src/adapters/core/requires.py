"""Import a host's framework, or say exactly how to install it.

A host calls `require_modules` before its first import of SAT or FLA, so a missing framework (or one of the
modules the framework imports without declaring them, as SAT 0.4.12 does with `requests` and `triton`) is a typed
error with the install command instead of a bare `ModuleNotFoundError` from deep inside the framework.
"""

from __future__ import annotations

import importlib

from .errors import MissingDependencyError

__all__ = ["require_modules"]


def require_modules(host: str, modules: tuple[str, ...], install: str) -> None:
    """Import each of `modules`; a missing one, or a missing import of one, raises `MissingDependencyError`."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            missing = error.name or name
            via = "" if missing == name else f" (imported by {name!r})"
            raise MissingDependencyError(
                f"{host} needs the module {missing!r}{via}, which is not installed\n  hint: {install}",
                name=missing,
            ) from error
