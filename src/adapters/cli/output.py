"""What the commands print: human lines, ``--quiet`` (the result line only) or ``--json`` (one object)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from ..core import AdapterError

__all__ = ["Output", "CLIError"]


class CLIError(AdapterError, ValueError):
    """A command given arguments it cannot honour (a conversion that does not exist, an output that exists)."""


@dataclass
class Output:
    """Collects a command's result; humans get lines as they come, scripts one JSON object at the end."""

    quiet: bool = False
    as_json: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def progress(self) -> bool | None:
        """tqdm setting for long work: None (a bar on a terminal) unless output is for scripts or quiet."""
        return False if (self.quiet or self.as_json) else None

    def line(self, text: str = "") -> None:
        """A detail line (not shown with --quiet or --json)."""
        if not (self.quiet or self.as_json):
            print(text)

    def result(self, text: str, **data: Any) -> None:
        """The result line (shown with --quiet) and the fields --json reports."""
        self.data.update(data)
        if not self.as_json:
            print(text)

    def error(self, e: AdapterError) -> None:
        self.data = {"ok": False, "error": type(e).__name__, "message": str(e)}
        if not self.as_json:
            print(f"error: {e}", file=sys.stderr)

    def flush(self) -> None:
        if self.as_json:
            self.data.setdefault("ok", True)
            print(json.dumps(self.data, indent=2, default=str))
