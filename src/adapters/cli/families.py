"""The supported-families table, generated from the registries (the README's table is this output, pasted)."""

from __future__ import annotations

__all__ = ["rows", "table"]

_HEADER = ("host", "family", "source (HF model_type / file)", "target class")


def rows() -> list[tuple[str, str, str, str]]:
    """One row per family: SAT families from `adapters.sat.specs.FAMILIES`, then the FLA BlinkDL loader."""
    from ..sat.specs import FAMILIES

    out = []
    for f in FAMILIES:
        source = ", ".join(f"`{t}`" for t in f.model_types)
        if f.architectures:
            source += " (or architectures " + ", ".join(f"`{a}`" for a in f.architectures) + ")"
        out.append(("SAT", f.name, source, f"`{f.sat_class}`"))
    from ..fla.variants import SUPPORTED

    out.append(("FLA", "rwkv7", f"BlinkDL `.pth`: {SUPPORTED}", "`fla.models.RWKV7ForCausalLM`"))
    return out


def table() -> str:
    """The families as a Markdown table."""
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows()]
    return "\n".join(lines)
