"""Build a host's target on meta and plan a checkpoint onto it, as the hooks do, without reading tensor data."""

from __future__ import annotations

from pathlib import Path

import torch

from ..core import Plan, Reader, empty_weights, plan

__all__ = ["sat_plan", "blinkdl_plan", "fla_plan"]


def sat_plan(path: Path, reader: Reader) -> tuple[str, Plan]:
    """The SAT family reading HF folder `path` (``"llama -> LLaMAModel"``) and its plan over `reader`."""
    import adapters.sat  # noqa: F401  (SAT CPU fallbacks)
    from adapters.sat.from_hf import family_of, merge_args, target_class

    family, ckpt = family_of(path)
    sat_cls = target_class(None, family, ckpt)
    args = merge_args(sat_cls, family.args(ckpt), None, {}, ckpt)
    keys = frozenset(reader.keys())
    spec = family.spec(ckpt, keys)
    args.skip_init, args.use_gpu_initialization = True, False
    with empty_weights():
        model = sat_cls(args, params_dtype=torch.float32)
    if family.prepare is not None:
        family.prepare(model, ckpt, keys)
    return f"SAT family {family.name} -> {family.class_name}", plan(spec, reader, model, dims=family.dims(ckpt))


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
