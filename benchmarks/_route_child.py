"""One timed load in a fresh process, for benchmarks/load_routes.py; prints one JSON line.

Run as:  python _route_child.py ROUTE PATH [OUT]
    ROUTE  one of `ROUTES` (``sat.adapter``, ``fla.offline``, ...)
    PATH   the route's input: an HF folder, a SAT checkpoint folder, a ``.pth`` or an FLA folder
    OUT    offline routes only: the folder the converted checkpoint is written to (it is kept: the parent uses
           the first one as the native checkpoint)

The modules a route needs are imported before the baseline is taken, so the figures are the load alone:
    wall      seconds (perf_counter) around the route
    cpu       user + sys seconds of this process (every thread) around the route
    baseline  RSS after the imports, before the route (VmRSS)
    peak      peak RSS of the whole process (VmHWM), imports included, nothing subtracted
    loaded    bytes of the tensors the route ended with (the model's state dict, or the tensors read), a check
              that the route did load the whole checkpoint
    mapped    the share of those bytes that are views of a file mapping (the checkpoint mmap'd, zero-copy, as
              transformers' from_pretrained leaves bf16 safetensors on CPU) rather than private memory
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("SAT_LOGLEVEL", "ERROR")  # SAT logs "DeepSpeed Not Installed" and per-rank lines otherwise

import torch

BF16 = torch.bfloat16


def memory_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes. VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child of a
    big parent would start at the parent's RSS."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
    return fields


def mapped_share(tensors: list[torch.Tensor]) -> float:
    """The share of the tensors' storage bytes that lie in a file mapping of this process (/proc/self/maps)."""
    files = []
    with open("/proc/self/maps") as f:
        for line in f:
            span, *rest = line.split()
            if len(rest) >= 5 and rest[4].startswith("/"):
                files.append(tuple(int(x, 16) for x in span.split("-")))
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    mapped = sum(n for ptr, n in storages.items() if any(lo <= ptr < hi for lo, hi in files))
    return mapped / max(1, sum(storages.values()))


# --- SAT side: HF LLaMA -> SAT LLaMAModel ---------------------------------------------------------------------


def sat_args(**fields) -> argparse.Namespace:
    """What a SAT inference script passes: CPU, bf16 params, SAT's own defaults for everything else."""
    from sat.model import LLaMAModel

    return LLaMAModel.get_args(device="cpu", bf16=True, **fields)


def sat_adapter(path: str, out: str | None):
    from sat.model import LLaMAModel

    import adapters.sat  # noqa: F401  (installs from_hf)

    model, _ = LLaMAModel.from_hf(path, device="cpu", dtype=BF16, progress=False)
    return model


def sat_native(path: str, out: str | None, skip_init: bool = True):
    from sat import AutoModel

    model, _ = AutoModel.from_pretrained(path, sat_args(skip_init=skip_init))
    return model


def sat_native_init(path: str, out: str | None):
    return sat_native(path, out, skip_init=False)


# SAT LLaMAModel (is_rotary_emb, is_gated_mlp: the layout SAT's own LLaMA checkpoints use) <- LlamaForCausalLM,
# as examples/llama/transform_param.py copies it: `.data` assignment, q/k/v concatenated.
SAT_FROM_HF = (
    ("attention.dense", "self_attn.o_proj"),
    ("mlp.dense_h_to_4h", "mlp.up_proj"),
    ("mlp.dense_h_to_4h_gate", "mlp.gate_proj"),
    ("mlp.dense_4h_to_h", "mlp.down_proj"),
    ("input_layernorm", "input_layernorm"),
    ("post_attention_layernorm", "post_attention_layernorm"),
)


def sat_convert(hf_path: str, out: str) -> None:
    """transformers `from_pretrained` -> SAT `LLaMAModel` -> SAT's `save_checkpoint`: the transform_param.py way."""
    from sat.model import LLaMAModel
    from sat.training.model_io import save_checkpoint
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(hf_path, dtype=BF16)
    c = hf.config
    args = sat_args(
        num_layers=c.num_hidden_layers, vocab_size=c.vocab_size, hidden_size=c.hidden_size,
        num_attention_heads=c.num_attention_heads, inner_hidden_size=c.intermediate_size,
        num_multi_query_heads=0 if c.num_key_value_heads == c.num_attention_heads else c.num_key_value_heads,
        max_sequence_length=c.max_position_embeddings, layernorm_epsilon=c.rms_norm_eps,
        bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, pad_token_id=-1, use_bias=False,
        layernorm_order="pre", is_rotary_emb=True, is_gated_mlp=True, hidden_dropout=0.0, attention_dropout=0.0,
        skip_init=True, mode="inference", save=out, deepspeed=None,
    )  # fmt: skip
    sat = LLaMAModel(args, params_dtype=BF16)
    with torch.no_grad():
        _assign(sat.transformer.word_embeddings, hf.model.embed_tokens)
        _assign(sat.get_mixin("lm").lm_head, hf.lm_head)
        _assign(sat.transformer.final_layernorm, hf.model.norm)
        for src, dst in zip(hf.model.layers, sat.transformer.layers, strict=True):
            a = src.self_attn
            qkv = torch.cat([a.q_proj.weight.data, a.k_proj.weight.data, a.v_proj.weight.data], 0)
            _assign(dst.attention.query_key_value, qkv)
            for sat_name, hf_name in SAT_FROM_HF:
                _assign(dst.get_submodule(sat_name), src.get_submodule(hf_name))
    save_checkpoint(1, sat, None, None, args)


def _assign(dst: torch.nn.Module, src: torch.nn.Module | torch.Tensor) -> None:
    weight = src if isinstance(src, torch.Tensor) else src.weight.data
    if dst.weight.shape != weight.shape:
        raise ValueError(f"{type(dst).__name__}: SAT weight {list(dst.weight.shape)}, HF weight {list(weight.shape)}")
    dst.weight.data = weight


def sat_offline(path: str, out: str):
    sat_convert(path, out)
    gc.collect()  # the converter's models are gone, as they would be at the end of a conversion script
    return sat_native(out, None)


def sat_transformers(path: str, out: str | None):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=BF16)


def sat_floor(path: str, out: str | None):
    from safetensors.torch import load_file

    # backend="pread": the default mmap backend returns views of the file and reads nothing until they are used
    shards = sorted(Path(path).glob("*.safetensors"))
    return [t for shard in shards for t in load_file(shard, backend="pread").values()]


# --- FLA side: BlinkDL .pth -> FLA RWKV7ForCausalLM ------------------------------------------------------------


def fla_adapter(path: str, out: str | None):
    from fla.models import RWKV7ForCausalLM

    import adapters.fla  # noqa: F401  (installs the from_pretrained hook)

    return RWKV7ForCausalLM.from_pretrained(path, dtype=BF16)


def fla_native(path: str, out: str | None):
    from fla.models import RWKV7ForCausalLM

    return RWKV7ForCausalLM.from_pretrained(path, dtype=BF16)


# BlinkDL -> FLA names, as FLA's utils/convert_from_rwkv7.py translates them.
FLA_BLOCK = {"att": "attn", "ffn": "ffn", "ln0": "pre_norm", "ln1": "attn_norm", "ln2": "ffn_norm"}
FLA_ATT = {"receptance": "r_proj", "key": "k_proj", "value": "v_proj", "ln_x": "g_norm", "output": "o_proj"}
FLA_TOP = {"emb.weight": "model.embeddings.weight", "ln_out.weight": "model.norm.weight",
           "ln_out.bias": "model.norm.bias", "head.weight": "lm_head.weight"}  # fmt: skip
FLA_LORA = {"0": "2.bias", "1": "0.weight", "2": "2.weight"}
FLA_UNUSED = ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")


def fla_name(name: str) -> tuple[str, bool]:
    """The FLA key of a BlinkDL key, and whether the tensor is transposed on the way (LoRA matrices)."""
    if name in FLA_TOP:
        return FLA_TOP[name], False
    _, layer, block, part, *rest = name.split(".")
    if block == "att" and len(part) == 2 and part[0] in "wvag" and part[1] in FLA_LORA:
        return f"model.layers.{layer}.attn.{part[0]}_lora.lora.{FLA_LORA[part[1]]}", part[1] != "0"
    part = FLA_ATT.get(part, part) if block == "att" else part
    return ".".join(["model.layers", layer, FLA_BLOCK[block], part, *rest]), False


def fla_convert(pth: str, out: str) -> None:
    """Full `torch.load`, FLA model from config, every tensor copied in, `save_pretrained`: the upstream script."""
    from fla.models import RWKV7Config
    from transformers import AutoModelForCausalLM

    weights = torch.load(pth, weights_only=True, map_location="cpu")
    ffn = weights["blocks.0.ffn.key.weight"]
    layers = sum(1 for k in weights if k.endswith(".ffn.key.weight"))
    config = RWKV7Config(
        vocab_size=weights["emb.weight"].shape[0], hidden_size=ffn.shape[1], intermediate_size=ffn.shape[0],
        hidden_ratio=ffn.shape[0] / ffn.shape[1], num_hidden_layers=layers, value_dim=[ffn.shape[1]] * layers,
        decay_low_rank_dim=weights["blocks.0.att.w1"].shape[1], gate_low_rank_dim=weights["blocks.0.att.g1"].shape[1],
        a_low_rank_dim=weights["blocks.0.att.a1"].shape[1], v_low_rank_dim=weights["blocks.1.att.v1"].shape[1],
        head_dim=weights["blocks.0.att.r_k"].shape[1], dtype="bfloat16",
    )  # fmt: skip
    model = AutoModelForCausalLM.from_config(config).to(dtype=BF16)
    target = model.state_dict()
    unfilled = set(target)
    with torch.no_grad():
        for name, weight in weights.items():
            if name in FLA_UNUSED:
                continue
            key, transposed = fla_name(name)
            weight = weight.t() if transposed else weight.reshape(-1) if weight.dim() == 3 else weight  # [1, 1, C]
            if target[key].shape[-weight.dim() :] != weight.shape:
                raise ValueError(f"{name} -> {key}: .pth {list(weight.shape)}, FLA {list(target[key].shape)}")
            target[key].copy_(weight)
            unfilled.discard(key)
    if unfilled:
        raise KeyError(f"the .pth left these FLA parameters unfilled: {sorted(unfilled)}")
    model.save_pretrained(out, max_shard_size="1000GB")


def fla_offline(path: str, out: str):
    fla_convert(path, out)
    gc.collect()
    return fla_native(out, None)


def fla_floor(path: str, out: str | None):
    return list(torch.load(path, mmap=False, weights_only=True).values())


# route -> (what it loads, modules imported before the baseline)
ROUTES = {
    "sat.adapter": (sat_adapter, ("adapters.sat", "sat.model")),
    "sat.native": (sat_native, ("sat", "sat.model", "sat.training.model_io")),
    "sat.native-init": (sat_native_init, ("sat", "sat.model", "sat.training.model_io")),
    "sat.offline": (sat_offline, ("sat", "sat.model", "sat.training.model_io", "transformers.models.llama")),
    "sat.transformers": (sat_transformers, ("transformers", "transformers.models.llama.modeling_llama")),
    "sat.floor": (sat_floor, ("safetensors.torch",)),
    "fla.adapter": (fla_adapter, ("adapters.fla", "fla.models")),
    "fla.native": (fla_native, ("fla.models",)),
    "fla.offline": (fla_offline, ("fla.models", "transformers")),
    "fla.floor": (fla_floor, ()),
}


def _prepare(route: str, modules: tuple[str, ...]) -> None:
    for name in modules:
        importlib.import_module(name)
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()  # no tqdm to a pipe, as on the adapter side
    if route == "fla.adapter":
        from adapters.fla.cpu_ops import install_cpu_fallbacks

        install_cpu_fallbacks()  # first-call import work of from_blinkdl, done once per process


def main() -> int:
    route, path, out = sys.argv[1], sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else None)
    load, modules = ROUTES[route]
    _prepare(route, modules)
    gc.collect()
    baseline = memory_status()["VmRSS"]
    t0, c0 = time.perf_counter(), time.process_time()
    result = load(path, out)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = memory_status()["VmHWM"]
    tensors = list(result.state_dict().values()) if isinstance(result, torch.nn.Module) else result
    loaded, mapped = sum(t.nbytes for t in tensors), mapped_share(tensors)
    print(
        json.dumps({"wall": wall, "cpu": cpu, "baseline": baseline, "peak": peak, "loaded": loaded, "mapped": mapped})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
