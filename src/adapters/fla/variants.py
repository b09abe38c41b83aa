"""Which BlinkDL file this is, from its key table alone: final x070 under some spelling, or another generation.

Spellings of final RWKV-7 x070 that load (each undone by renaming, so the one spec serves all of them):

    wrapper prefix   every key under ``module.`` (DDP), ``_forward_module.`` (Lightning/DeepSpeed) or ``model.``
    attn             ``blocks.N.attn.*`` for BlinkDL's ``blocks.N.att.*`` (third-party trainers)
    rc4a             RWKV-LM's x070 names of 2024-11-21..29 (``time_maa_r``, ``time_decay``, ...): the math of
                     final x070 under older names (renamed in RWKV-LM 348e56e "better names")

Everything else with BlinkDL's layout is refused by name: RWKV-4/5, RWKV-6 (x060), the x070 previews rc2-rc4
(their math differs from final x070), x070a (DeepEmbed) and x070b (DeepEmbed + DEA attention); FLA has no model
for them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..core import HookError, Reader, RenamedReader, TensorInfo, summarize_keys

__all__ = ["Variant", "detect_variant", "canonical_reader"]

_WRAPPERS = ("module.", "_forward_module.", "model.")
_BLOCK = re.compile(r"(blocks\.\d+\.)(.*)")

# rc4a name -> final name, under blocks.N. (RWKV-LM 348e56e). time_faaaa is also reshaped: [1, 1, H, N] -> [H, N].
# fmt: off
RC4A_RENAMES = {
    "att.time_maa_r": "att.x_r", "att.time_maa_w": "att.x_w", "att.time_maa_k": "att.x_k",
    "att.time_maa_v": "att.x_v", "att.time_maa_a": "att.x_a", "att.time_maa_g": "att.x_g",
    "att.time_decay": "att.w0", "att.time_decay_w1": "att.w1", "att.time_decay_w2": "att.w2",
    "att.time_aaaaa": "att.a0", "att.time_aaa_w1": "att.a1", "att.time_aaa_w2": "att.a2",
    "att.time_misc_v": "att.v0", "att.mv_w1": "att.v1", "att.mv_w2": "att.v2",
    "att.gate_w1": "att.g1", "att.gate_w2": "att.g2",
    "att.time_misc_kkk": "att.k_k", "att.time_misc_a": "att.k_a", "att.time_faaaa": "att.r_k",
    "ffn.time_maa_k": "ffn.x_k",
}
# fmt: on

SUPPORTED = (
    "RWKV-7 x070 (rwkv7-*.pth, RWKV-x070-*.pth), also with rc4a time_* names, blocks.N.attn.*, "
    "or a module./_forward_module./model. prefix"
)


@dataclass(frozen=True, slots=True)
class _Generation:
    """A generation that is not final x070, told apart by block-relative key names (``"qkv."`` = a whole module)."""

    name: str
    markers: tuple[str, ...]
    hint: str

    def found(self, suffixes: Mapping[str, str]) -> list[str]:
        """The file keys (by their block-relative names in `suffixes`) that give this generation away."""
        return [key for key, name in suffixes.items() if any(_marks(m, name) for m in self.markers)]


def _marks(marker: str, name: str) -> bool:
    return name == marker or (marker.endswith(".") and name.startswith(marker))


# Checked in this order: x070b files also hold x070a's DeepEmbed keys, x070 previews also hold x060's time_maa_x.
_OTHER_GENERATIONS = (
    _Generation("RWKV-7 x070b (DeepEmbed + DEA attention)", ("qkv.",),
                "FLA has no DeepEmbed or DEA layer; run the file with BlinkDL's rwkv_v7b_demo.py"),
    _Generation("RWKV-7 x070a (DeepEmbed)", ("ffn.s_emb.weight", "ffn.s_emb_x.weight", "ffn.s0", "ffn.s1", "ffn.s2"),
                "FLA has no DeepEmbed layer; run the file with BlinkDL's rwkv_v7a_demo.py"),
    _Generation("an RWKV-7 x070 preview (rc2-rc4, Sep-Nov 2024)",
                ("att.time_kkk_w1", "att.mv_w", "att.time_misc_k", "att.time_aaa"),
                "previews compute differently from final x070; use a final x070 release of the model"),
    _Generation("RWKV-6 (x060)", ("att.time_maa_x", "att.time_maa_w1"),
                "FLA's RWKV6 model needs another mapping, which adapters does not have; run x060 with BlinkDL's rwkv package"),
    _Generation("RWKV-4/5 (x040-x052)", ("att.time_mix_k", "att.time_first"),
                "FLA has no model for these generations; run them with BlinkDL's rwkv package"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Variant:
    """How a final-x070 file spells its keys, and the renaming that gives them BlinkDL's canonical names.

    Attributes:
        prefix: the wrapper prefix stripped from every key ("" for none; stacked ones are joined).
        attn: the file spells the time-mix module ``attn``.
        rc4a: the file uses the rc4a ``time_*`` names.
        renames: file key → canonical key, for the keys that change.
        shapes: canonical key → shape, for the tensors stored in another shape (rc4a's ``time_faaaa``).
    """

    prefix: str = ""
    attn: bool = False
    rc4a: bool = False
    renames: Mapping[str, str] = field(default_factory=dict)
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


def _strip_wrappers(keys: list[str]) -> str:
    # Stacked wrappers (a DDP model inside a Lightning module) strip one layer at a time.
    prefix = ""
    while keys:
        found = next((p for p in _WRAPPERS if all(k.startswith(prefix + p) for k in keys)), None)
        if found is None:
            return prefix
        prefix += found
    return prefix


def detect_variant(table: Mapping[str, TensorInfo], path: str = "checkpoint") -> Variant:
    """The `Variant` of a BlinkDL final-x070 key table; a `HookError` naming the generation of any other file.

    Only names are read (and rc4a's ``time_faaaa`` shape); whether every needed key is there is left to
    `config_from_shapes` and the plan, which name what is missing.
    """
    keys = list(table)
    prefix = _strip_wrappers(keys)
    names = {k: k[len(prefix) :] for k in keys}  # file key -> canonical key, built up below
    if "emb.weight" not in names.values() or not any(_BLOCK.match(n) for n in names.values()):
        raise HookError(
            f"{path} is not a BlinkDL RWKV checkpoint: it lacks BlinkDL's emb.weight and blocks.N.* keys\n"
            f"  found:     {summarize_keys(keys, limit=4)}\n"
            f"  supported: {SUPPORTED}\n"
            "  hint: other checkpoints (FLA or HF folders with a config.json) load through their own from_pretrained"
        )
    suffixes, attn = _block_suffixes(names)
    _refuse_other_generations(suffixes, path)
    rc4a = "att.time_aaaaa" in suffixes.values()  # previews have it too, but were refused above
    shapes = _rename_rc4a(names, suffixes, table) if rc4a else {}
    renames = {k: n for k, n in names.items() if k != n}
    return Variant(prefix=prefix, attn=attn, rc4a=rc4a, renames=renames, shapes=shapes)


def _block_suffixes(names: dict[str, str]) -> tuple[dict[str, str], bool]:
    """File key -> its name under ``blocks.N.`` with ``attn`` spelled ``att`` (rewritten in `names` too), and
    whether any key spelled it ``attn``."""
    suffixes: dict[str, str] = {}
    attn = False
    for key, name in names.items():
        if m := _BLOCK.match(name):
            block, rest = m.groups()
            if rest.startswith("attn."):
                attn, rest = True, "att." + rest[len("attn.") :]
            suffixes[key] = rest
            names[key] = block + rest
    return suffixes, attn


def _rename_rc4a(
    names: dict[str, str], suffixes: dict[str, str], table: Mapping[str, TensorInfo]
) -> dict[str, tuple[int, ...]]:
    """Rewrite rc4a names in `names` to final ones; the new shape of each ``time_faaaa`` stored as [1, 1, H, N]."""
    shapes: dict[str, tuple[int, ...]] = {}
    for key, rest in suffixes.items():
        if rest in RC4A_RENAMES:
            names[key] = names[key][: -len(rest)] + RC4A_RENAMES[rest]
            if rest == "att.time_faaaa" and len(table[key].shape) == 4:
                shapes[names[key]] = table[key].shape[2:]
    return shapes


def _refuse_other_generations(suffixes: dict[str, str], path: str) -> None:
    for generation in _OTHER_GENERATIONS:
        if found := generation.found(suffixes):
            raise HookError(
                f"{path} is {generation.name}, not final RWKV-7 x070\n"
                f"  found:     {summarize_keys(found, limit=4)}\n"
                f"  supported: {SUPPORTED}\n"
                f"  hint: {generation.hint}"
            )


def canonical_reader(reader: Reader) -> Reader:
    """`reader` under BlinkDL's final x070 names: itself when it already uses them, else a `RenamedReader` over it.

    Raises:
        HookError: the file is of another generation, or not a BlinkDL file at all (nothing has been read).
    """
    variant = detect_variant(reader.table(), reader.path)
    if not variant.renames and not variant.shapes:
        return reader
    return RenamedReader(reader, variant.renames, variant.shapes)
