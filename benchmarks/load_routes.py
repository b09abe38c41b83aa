"""Load-route benchmark (issue #8): the adapters against the ways users load the same weights today.

For each size it builds two synthetic bf16 checkpoints, once, cached under ``--workdir``:
    sat side  a LLaMA-shaped HF checkpoint as transformers saves it (``model-0000X-of-0000N.safetensors``,
              ``model.safetensors.index.json``, ``config.json``), written shard by shard
    fla side  a BlinkDL RWKV-7 x070 ``.pth`` of a released model's shape
Every route runs ``--repeats`` times, each run in a fresh child process (``_route_child.py``) right after an
untimed read of its input files (page cache warm), and the median of each figure is kept. Building is never timed.

SAT routes (HF LLaMA -> SAT LLaMAModel, CPU, bf16 params):
    adapter       ``import adapters.sat``; ``LLaMAModel.from_hf(path, device="cpu", dtype=torch.bfloat16)``
    native        SAT's ``AutoModel.from_pretrained(sat_folder, args)`` with ``skip_init=True``, as SAT's
                  inference scripts set it
    native-init   the same with SAT's default ``skip_init=False``: SAT initialises the model, then loads over it
    offline       transform_param.py's chain in one process: transformers ``LlamaForCausalLM.from_pretrained``,
                  SAT ``LLaMAModel``, weights assigned (q/k/v concatenated), SAT ``save_checkpoint``, then SAT's
                  ``from_pretrained`` of the result
    transformers  ``AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)``
    floor         safetensors ``load_file`` of every shard: the bytes read once
FLA routes (BlinkDL .pth -> FLA RWKV7ForCausalLM, CPU, bf16):
    adapter       ``import adapters.fla``; ``RWKV7ForCausalLM.from_pretrained(pth, dtype=torch.bfloat16)``
    native        ``RWKV7ForCausalLM.from_pretrained(fla_folder, dtype=torch.bfloat16)`` (FLA's own, no adapters)
    offline       FLA's utils/convert_from_rwkv7.py chain in one process: ``torch.load``, model from config, every
                  tensor copied, ``save_pretrained``, then ``from_pretrained`` of the result
    floor         ``torch.load(pth, mmap=False)``
The native checkpoints are what the offline route writes (its first run's output is kept), so every route of a
side loads the same weights.

Usage:  python benchmarks/load_routes.py [--sizes small,large] [--repeats 3] [--out benchmarks/results-routes.md]
                                         [--workdir DIR] [--sides sat,fla]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHILD = HERE / "_route_child.py"
SRC = HERE.parent / "src"

ROUTES = {
    "sat": ("floor", "offline", "native", "native-init", "adapter", "transformers"),  # offline first: it makes native
    "fla": ("floor", "offline", "native", "adapter"),
}
RATIOS = {
    "sat": ("native", "native-init", "offline", "transformers", "floor"),
    "fla": ("native", "offline", "floor"),
}
TITLES = {
    "sat": "SAT: HF LLaMA (sharded safetensors) -> SAT LLaMAModel, CPU, bf16",
    "fla": "FLA: BlinkDL RWKV-7 .pth -> FLA RWKV7ForCausalLM, CPU, bf16",
}


@dataclass(frozen=True, slots=True)
class Llama:
    """A LlamaForCausalLM shape; `shard_mb` is the max_shard_size the checkpoint is split with."""

    vocab: int
    hidden: int
    inter: int
    layers: int
    heads: int
    kv_heads: int
    shard_mb: float

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) in the order transformers saves them."""
        h, kv = self.hidden, self.hidden // self.heads * self.kv_heads
        layer = (("self_attn.q_proj", (h, h)), ("self_attn.k_proj", (kv, h)), ("self_attn.v_proj", (kv, h)),
                 ("self_attn.o_proj", (h, h)), ("mlp.gate_proj", (self.inter, h)), ("mlp.up_proj", (self.inter, h)),
                 ("mlp.down_proj", (h, self.inter)), ("input_layernorm", (h,)), ("post_attention_layernorm", (h,)))  # fmt: skip
        names = [("model.embed_tokens.weight", (self.vocab, h))]
        names += [(f"model.layers.{i}.{name}.weight", shape) for i in range(self.layers) for name, shape in layer]
        return names + [("model.norm.weight", (h,)), ("lm_head.weight", (self.vocab, h))]

    def config(self) -> dict:
        return dict(vocab_size=self.vocab, hidden_size=self.hidden, intermediate_size=self.inter,
                    num_hidden_layers=self.layers, num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
                    max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Rwkv:
    """A BlinkDL RWKV-7 x070 shape: V, C, L, F and the LoRA ranks (D_w, D_a, D_v, D_g); heads of 64."""

    vocab: int
    hidden: int
    layers: int
    ffn: int
    lora: tuple[int, int, int, int]


# TinyLlama-1.1B's width (hidden 2048, 32 heads / 4 kv heads, FFN 5632, vocab 32000): 3 layers = 0.53 GB, all 22 =
# 2.20 GB. RWKV-7 0.1B / 0.4B / 1.5B are the released G1 shapes (mappings-rwkv.md): 0.38 / 0.90 / 3.06 GB.
SIZES: dict[str, dict[str, Llama | Rwkv]] = {
    "tiny": {"sat": Llama(2048, 256, 688, 2, 4, 2, shard_mb=1.0), "fla": Rwkv(1024, 128, 2, 512, (24, 20, 16, 40))},
    "small": {"sat": Llama(32000, 2048, 5632, 3, 32, 4, shard_mb=500), "fla": Rwkv(65536, 768, 12, 3072, (64, 64, 32, 128))},
    "large": {"sat": Llama(32000, 2048, 5632, 22, 32, 4, shard_mb=500), "fla": Rwkv(65536, 1024, 24, 4096, (64, 64, 32, 128))},
    "xl": {"fla": Rwkv(65536, 2048, 24, 8192, (96, 96, 64, 256))},
}  # fmt: skip


# --- building (never timed) -------------------------------------------------------------------------------------


def build(folder: Path, side: str, shape: Llama | Rwkv) -> tuple[Path, int]:
    """The side's source checkpoint under `folder` and its tensor bytes; reused when `built.json` matches."""
    manifest, wanted = folder / "built.json", json.loads(json.dumps(asdict(shape)))  # tuples as JSON lists
    if manifest.exists() and (built := json.loads(manifest.read_text()))["shape"] == wanted:
        return folder / ("hf" if side == "sat" else "rwkv7.pth"), built["bytes"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"building {folder} ...", file=sys.stderr, flush=True)
    path, nbytes = write_llama(folder / "hf", shape) if side == "sat" else write_rwkv(folder / "rwkv7.pth", shape)  # type: ignore[arg-type]
    os.sync()  # written back before any timing: dirty pages being flushed would skew the first runs
    manifest.write_text(json.dumps({"shape": wanted, "bytes": nbytes}))
    return path, nbytes


def write_llama(folder: Path, shape: Llama) -> tuple[Path, int]:
    """Sharded bf16 safetensors + index + config.json, as ``save_pretrained`` writes them; one shard in memory."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    shards = _shards(shape.tensors(), int(shape.shard_mb * 2**20))
    gen = torch.Generator().manual_seed(0)
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir()
    weight_map = {}
    for n, shard in enumerate(shards, 1):
        name = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        tensors = {key: _random(s, gen) for key, s in shard}
        save_file(tensors, tmp / name, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(tensors, name)
    numel = sum(math.prod(s) for _, s in shape.tensors())
    index = {"metadata": {"total_parameters": numel, "total_size": 2 * numel}, "weight_map": weight_map}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    config = LlamaConfig(**shape.config(), dtype="bfloat16")
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(tmp)
    tmp.rename(folder)
    return folder, 2 * numel


def _shards(tensors: list[tuple[str, tuple[int, ...]]], limit: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    """huggingface_hub's split_torch_state_dict_into_shards on shapes: greedy, in order, a tensor over the limit alone."""
    shards, current, size = [], [], 0
    for key, shape in tensors:
        nbytes = 2 * math.prod(shape)
        if nbytes > limit:
            shards.append([(key, shape)])
            continue
        if current and size + nbytes > limit:
            shards.append(current)
            current, size = [], 0
        current.append((key, shape))
        size += nbytes
    return shards + ([current] if current else [])


def _random(shape: tuple[int, ...], gen):
    import torch

    if len(shape) == 1:  # RMSNorm weights
        return (1 + 0.1 * torch.randn(shape, generator=gen)).to(torch.bfloat16)
    return (torch.randn(shape, generator=gen) * shape[1] ** -0.5).to(torch.bfloat16)


def write_rwkv(path: Path, shape: Rwkv) -> tuple[Path, int]:
    """A random x070 state dict of the shape (adapters.fla.tiny), bf16, saved with torch.save as BlinkDL does."""
    import torch

    sys.path.insert(0, str(SRC))  # the checkout's adapters, as the children get it
    from adapters.fla.tiny import tiny_blinkdl_rwkv7

    state = tiny_blinkdl_rwkv7(vocab_size=shape.vocab, hidden_size=shape.hidden, num_layers=shape.layers,
                               ffn_size=shape.ffn, lora_ranks=shape.lora, dtype=torch.bfloat16)  # fmt: skip
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)
    return path, sum(t.nbytes for t in state.values())


# --- measuring ------------------------------------------------------------------------------------------------------


def warm(path: Path) -> None:
    """Read every file of the input once, untimed: the runs then find the page cache warm."""
    for f in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def measure(route: str, source: Path, native: Path, scratch: Path, repeats: int) -> dict[str, float]:
    """Median of `repeats` fresh-process runs of ``side.route``. The first offline run's output becomes `native`."""
    side, name = route.split(".")
    path = {"native": native, "native-init": native}.get(name, source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    runs = []
    for _ in range(repeats):
        warm(path)
        out = scratch / "offline"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, str(CHILD), route, str(path)] + ([str(out)] if name == "offline" else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise RuntimeError(f"route {route} on {path} exited with {proc.returncode}:\n{proc.stderr[-4000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        if name == "offline":
            if native.exists():
                shutil.rmtree(out)
            else:
                out.rename(native)
            os.sync()  # the written checkpoint reaches the disk before the next run starts
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


# --- reporting ------------------------------------------------------------------------------------------------------


def machine(repeats: int, workdir: Path) -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())  # fmt: skip
    ram = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    versions = ", ".join(f"{name} {_version(dist)}" for name, dist in (("torch", "torch"), ("transformers", "transformers"),
                         ("sat", "SwissArmyTransformer"), ("fla", "flash-linear-attention"), ("safetensors", "safetensors")))  # fmt: skip
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- machine: {cpu}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
        f"{ram / 2**30:.1f} GiB RAM, {platform.system()} {platform.release()}; load average at start {load}",
        f"- software: Python {platform.python_version()}, {versions}",
        f"- page cache: warm. Every input file is read once, untimed, right before each run; the workdir "
        f"({workdir}) is on `{_filesystem(workdir)}`. Files an offline run writes are synced after it, untimed",
        f"- figures: median of {repeats} runs, each in a fresh child process. wall = elapsed; cpu = user + sys of "
        "the child; peak = VmHWM of the whole child (imports included, nothing subtracted); baseline = its RSS "
        "after imports, before the load; model = the checkpoint's tensor bytes (bf16); mmap-backed = the share of "
        "the loaded tensors' bytes that are views of the checkpoint file mapped into the process (zero-copy: their "
        "pages count in RSS as file pages, shared with the page cache). GB = 1e9 bytes",
    ]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _filesystem(path: Path) -> str:
    best = ("?", "")
    for line in open("/proc/mounts"):
        _, mount, fstype, *_ = line.split()
        if str(path.resolve()).startswith(mount) and len(mount) >= len(best[1]):
            best = (fstype, mount)
    return best[0]


def report(side: str, results: dict[str, dict[str, dict[str, float]]], nbytes: dict[str, int]) -> list[str]:
    """Markdown for one side: the figures, the adapter's ratios, and the scaling between the sizes' extremes."""
    lines = [f"## {TITLES[side]}", "",
             "| size | model | route | wall s | cpu s | peak RSS GB | baseline GB | peak / model | (peak - baseline) / model | mmap-backed |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for size, routes in results.items():
        gb = nbytes[size] / 1e9
        for route in ROUTES[side]:
            r = routes[route]
            lines.append(f"| {size} | {gb:.3g} GB | {route} | {r['wall']:.3g} | {r['cpu']:.3g} | {r['peak'] / 1e9:.2f} | "
                         f"{r['baseline'] / 1e9:.2f} | {r['peak'] / nbytes[size]:.2f} | "
                         f"{(r['peak'] - r['baseline']) / nbytes[size]:.2f} | {r['mapped']:.0%} |")  # fmt: skip
    lines += ["", "Adapter / other route (below 1: the adapter is faster or smaller):", "",
              "| size | figure | " + " | ".join(f"adapter/{other}" for other in RATIOS[side]) + " |",
              "|---|---|" + "---:|" * len(RATIOS[side])]  # fmt: skip
    for size, routes in results.items():
        for figure, key in (("wall", "wall"), ("cpu", "cpu"), ("peak RSS", "peak")):
            cells = [f"{routes['adapter'][key] / routes[other][key]:.2f}" for other in RATIOS[side]]
            lines.append(f"| {size} | {figure} | " + " | ".join(cells) + " |")
    if len(results) > 1:
        first, last = next(iter(results)), list(results)[-1]
        byte_ratio = nbytes[last] / nbytes[first]
        lines += ["", f"Scaling from {first} to {last} (bytes x{byte_ratio:.2f}); 1.00 = time linear in bytes:", "",
                  f"| route | wall {first} s | wall {last} s | time ratio | time ratio / byte ratio |",
                  "|---|---:|---:|---:|---:|"]  # fmt: skip
        for route in ROUTES[side]:
            a, b = results[first][route]["wall"], results[last][route]["wall"]
            lines.append(f"| {route} | {a:.3g} | {b:.3g} | {b / a:.2f} | {b / a / byte_ratio:.2f} |")
    return lines + [""]


def _check_loaded(route: str, figures: dict[str, float], nbytes: int) -> None:
    """A route that ended with much less than the checkpoint did not load it: stop rather than report it."""
    if figures["loaded"] < 0.9 * nbytes:
        raise RuntimeError(
            f"route {route} ended with {figures['loaded']:.0f} tensor bytes of {nbytes}: not a full load"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="small,large", help=f"comma-separated, from {', '.join(SIZES)}")
    parser.add_argument("--sides", default="sat,fla", help="comma-separated, from sat, fla")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write the results to")
    parser.add_argument("--workdir", type=Path, default=None, help="where built checkpoints are cached (default: a temp dir, removed)")  # fmt: skip
    args = parser.parse_args(argv)
    sizes, sides = args.sizes.split(","), args.sides.split(",")
    unknown = sorted({s for s in sizes if s not in SIZES} | {s for s in sides if s not in ROUTES})
    if unknown:
        parser.error(f"unknown size or side {unknown}; sizes: {', '.join(SIZES)}; sides: sat, fla")

    temp = None if args.workdir else tempfile.TemporaryDirectory(prefix="load-routes-")
    workdir = (args.workdir or Path(temp.name)).resolve()  # type: ignore[union-attr]
    lines = ["# Load routes: the adapters against native, offline and transformers loads", ""]
    lines += machine(args.repeats, workdir) + [""]
    try:
        for side in sides:
            results, nbytes = {}, {}
            for size in (s for s in sizes if side in SIZES[s]):
                folder = workdir / size / side
                source, nbytes[size] = build(folder, side, SIZES[size][side])
                results[size] = {}
                for route in ROUTES[side]:
                    print(f"{side} {size} {route} ...", file=sys.stderr, flush=True)
                    figures = measure(f"{side}.{route}", source, folder / "native", folder, args.repeats)
                    _check_loaded(f"{side}.{route}", figures, nbytes[size])
                    results[size][route] = figures
            if results:
                lines += report(side, results, nbytes)
    finally:
        if temp is not None:
            temp.cleanup()
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
