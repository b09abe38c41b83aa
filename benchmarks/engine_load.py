"""Engine load benchmark: the adapter against reading the bytes once (floor) and against a native load.

For each size, it builds a LLaMA-like toy checkpoint in the foreign layout, as sharded safetensors and as a
single ``.pth``, plus the same weights pre-converted to the toy model's own names (``native.safetensors``). Each
route runs in a fresh subprocess, with the files read once before (warm page cache), and reports wall time, CPU
time and peak RSS growth over the process' baseline after imports; the median of ``--runs`` runs is kept.

Routes:
    adapter   meta model + `adapters.load` from the foreign file (fp32, CPU)
    floor     the checkpoint's bytes read into memory once, nothing else
    native    the model built normally + `load_state_dict(load_file(native.safetensors))`: what a user of
              pre-converted weights runs

Usage:  python benchmarks/engine_load.py [--sizes-mb 512 2048] [--runs 3] [--out benchmarks/results-engine.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import json, sys, time
import psutil, torch
route, path, layers = sys.argv[1], sys.argv[2], int(sys.argv[3])
from safetensors.torch import load_file
from adapters.core import empty_weights, load
from adapters.core.readers import open_source
from adapters.demo import TOY_SPEC, ToyConfig, ToyModel, toy_dims
c = ToyConfig(vocab=1024, hidden=1024, layers=layers, heads=8, kv_heads=4, inner=2816)
proc = psutil.Process()
base = proc.memory_info().rss
t0, c0 = time.perf_counter(), time.process_time()
if route == "adapter":
    with empty_weights():
        model = ToyModel(c)
    load(TOY_SPEC, path, model, dims=toy_dims(c), progress=False)
elif route == "floor":
    import os
    folder = os.path.dirname(path)
    files = [path] if path.endswith(".pth") else [os.path.join(folder, f) for f in sorted(os.listdir(folder))]
    data = [open(f, "rb").read() for f in files]
elif route == "native":
    model = ToyModel(c)
    model.load_state_dict(load_file(path))
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child of a big parent starts at the parent's RSS.
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"wall": wall, "cpu": cpu, "rss": peak - base}))
"""

LAYER_MB = 46.2  # fp32 megabytes per toy layer at hidden 1024, inner 2816, 8 heads / 4 kv heads


def _build(folder: Path, layers: int) -> dict[str, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import torch
    from safetensors.torch import save_file

    from adapters.demo import ToyConfig, write_toy_checkpoint
    from adapters.demo.toy import toy_foreign_state

    c = ToyConfig(vocab=1024, hidden=1024, layers=layers, heads=8, kv_heads=4, inner=2816)
    state = toy_foreign_state(c, seed=0)
    paths = {
        "sharded": write_toy_checkpoint(folder / "sharded", state, "sharded"),
        "pth": write_toy_checkpoint(folder / "pth", state, "pth"),
    }
    native = {"embed.weight": state["model.embed_tokens.weight"], "norm.weight": state["model.norm.weight"],
              "head.weight": state["lm_head.weight"]}  # fmt: skip
    for i in range(layers):
        p, q = f"model.layers.{i}.", f"layers.{i}."
        gate, up = state[p + "mlp.gate_up_proj.weight"].chunk(2)
        native |= {q + "norm1.weight": state[p + "input_norm.weight"], q + "norm2.weight": state[p + "post_norm.weight"],
                   q + "attn.qkv.weight": torch.cat([state[p + f"self_attn.{x}_proj.weight"] for x in "qkv"]),
                   q + "attn.out.weight": state[p + "self_attn.o_proj.weight"].t().contiguous(),
                   q + "mlp.gate.weight": gate.contiguous(), q + "mlp.up.weight": up.contiguous(),
                   q + "mlp.down.weight": state[p + "mlp.down_proj.weight"], q + "mix": state[p + "mix"].reshape(-1),
                   q + "attn.inv_freq": 1.0 / 10000 ** (torch.arange(0, 128, 2).float() / 128)}  # fmt: skip
    save_file(native, folder / "native.safetensors")
    paths["native"] = folder / "native.safetensors"
    paths["bytes"] = sum(v.nbytes for k, v in state.items() if "inv_freq" not in k)  # type: ignore[assignment]
    return paths


def _warm(path: Path) -> None:
    files = [path] if path.is_file() and not path.name.endswith(".json") else list(path.parent.iterdir())
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def _run(route: str, path: Path, layers: int, runs: int) -> dict[str, float]:
    results = []
    for _ in range(runs):
        _warm(path)
        out = subprocess.run([sys.executable, "-c", _CHILD, route, str(path), str(layers)], capture_output=True,
                             text=True, check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})  # fmt: skip
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows, per_gb = [], {}
    for size in args.sizes_mb:
        layers = max(1, round(size / LAYER_MB))
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            paths = _build(Path(tmp), layers)
            os.sync()  # write the new files back before measuring: dirty pages being flushed skew the runs
            gb = paths.pop("bytes") / 1e9  # type: ignore[operator]
            native = _run("native", paths["native"], layers, args.runs)
            for fmt in ("sharded", "pth"):
                ad, fl = _run("adapter", paths[fmt], layers, args.runs), _run("floor", paths[fmt], layers, args.runs)
                per_gb.setdefault(fmt, []).append(ad["wall"] / gb)
                rows.append((f"{gb:.2f} GB", fmt, ad, fl, native, gb))
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}; page cache warm; "
        f"median of {args.runs}; fp32 to CPU; RSS = peak growth over the baseline after imports",
        "",
        "| size | source | adapter wall / cpu | floor wall | native wall | adapter/floor | adapter/native | adapter RSS / model bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, fmt, ad, fl, nat, gb in rows:
        lines.append(f"| {size} | {fmt} | {ad['wall']:.2f} s / {ad['cpu']:.2f} s | {fl['wall']:.2f} s | {nat['wall']:.2f} s | "
                     f"{ad['wall'] / fl['wall']:.2f} | {ad['wall'] / nat['wall']:.2f} | {ad['rss'] / (gb * 1e9):.2f} |")  # fmt: skip
    if len(args.sizes_mb) > 1:
        lines.append("")
        for fmt, times in per_gb.items():
            lines.append(
                f"scaling ({fmt}): {times[-1] / times[0]:.2f}x the per-GB time of the smallest size at the largest"
            )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
