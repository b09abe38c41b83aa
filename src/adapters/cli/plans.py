"""Build a host's target on meta and plan a checkpoint onto it, as the hooks do, without reading tensor data."""

from __future__ import annotations

from pathlib import Path

import torch

from ..core import Plan, Reader, plan

__all__ = ["sat_plan", "blinkdl_plan", "fla_plan"]


def sat_plan(path: Path, reader: Reader) -> tuple[str, Plan]:
    """The SAT family reading HF folder `path` (``"llama -> LLaMAModel"``) and its plan over `reader`.

    The model is built on meta by `from_hf`'s own steps (`resolve_target`, `build_on_meta`), so inspect plans
    exactly what a load would: the same args, the same class, the same head dropped for a headless file.
    """
    from adapters.sat.from_hf import build_on_meta, resolve_target

    target = resolve_target(None, path, device="cpu")
    model, spec = build_on_meta(target, frozenset(reader.keys()))
    family = target.family
    return f"SAT family {family.name} -> {family.class_name}", plan(spec, reader, model, dims=family.dims(target.ckpt))


def blinkdl_plan(reader: Reader) -> tuple[str, Plan]:
    """The BlinkDL generation/variant of `reader` (refused by name when not final x070) and its plan onto FLA."""
    from fla.models import RWKV7Config, RWKV7ForCausalLM

    from ..core.empty import no_init
    from ..fla.blinkdl import _without_fla_init, config_from_shapes
    from ..fla.specs.rwkv7 import SPEC
    from ..fla.variants import canonical_reader, detect_variant

    variant = detect_variant(reader.table(), reader.path)
    source = canonical_reader(reader)
    config = RWKV7Config(**config_from_shapes(source.table(), reader.path))
    with torch.device("meta"), no_init(), _without_fla_init():
        model = RWKV7ForCausalLM(config)
    spelled = [f"prefix {variant.prefix!r}"] * bool(variant.prefix) + ["attn"] * variant.attn + ["rc4a"] * variant.rc4a
    what = f"BlinkDL RWKV-7 x070 ({', '.join(spelled) or 'canonical names'}) -> FLA RWKV7ForCausalLM"
    what += f" (hidden {config.hidden_size}, {config.num_hidden_layers} layers, vocab {config.vocab_size})"
    return what, plan(SPEC, source, model)


def fla_plan(reader: Reader) -> tuple[str, Plan]:
    """An FLA RWKV-7 checkpoint's plan back to BlinkDL's names (the export direction)."""
    from ..fla.specs.rwkv7 import SPEC

    return "FLA RWKV7ForCausalLM -> BlinkDL RWKV-7 x070 .pth (convert --to blinkdl)", plan(SPEC.inverse(), reader, None)
