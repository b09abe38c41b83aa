"""Model-parallel loading benchmark (issue #6): rank-local slices against SAT's rank-0 path, on CPU over gloo.

It builds one synthetic bf16 LLaMA-shaped HF checkpoint (sharded as transformers saves it; `load_routes.build`,
cached under ``--workdir``) and, for each model-parallel size N in ``--ways``, runs each route as an N-rank gloo job
on this machine. A job's ranks are processes forked from one rank server that has imported torch, SAT and the
adapters (`serve`): each starts as a torchrun rank would after its imports, without paying those imports (seconds
of CPU per process) again for every rank of every job. Each rank joins the process group; the timed part starts at
a barrier after that. Per rank it records the load's wall time, the bytes it read from the checkpoint files, the
bytes it received from other ranks, and its peak RSS (VmHWM, the whole process) next to its RSS before the load
(baseline). A forked rank's RSS counts the server's heap from the start but shared-library pages only once it
touches them, so baselines are lower than a separately started rank's (0.28 against 0.42 GB here); the load's own
memory is peak - baseline either way.

Routes:
    adapter     ``LLaMAModel.from_hf(path, overwrite_args={"model_parallel_size": N})``: every rank builds its
                partition on meta and reads only its slices (``bytes read`` = the load report's ``bytes_read``)
    sat-rank0   SAT's own resharding (``BaseModel.from_pretrained`` with a new ``model_parallel_size``), simulated
                on CPU: every rank builds its partition (``skip_init``), rank 0 loads the whole mp=1 model (here
                with ``from_hf``: the fastest full load there is, zero-copy views of the file) and sends each rank
                its slices, broadcasting the replicated tensors, as ``sat.mpu.operation.mp_split_model_rank0`` /
                ``mp_split_model_receive`` do; those move tensors with ``.cuda()`` (NCCL), so their CPU twins live
                here (`_split_rank0`, `_receive`), sending over gloo
    repl-read   replicated tensors, every rank reads them: each rank reads the whole checkpoint (every tensor
                treated as replicated) from the files
    repl-bcast  replicated tensors, rank 0 reads them once and broadcasts each (``dist.broadcast`` over gloo)
Both model routes must give every rank the same parameters (checked by digest, outside the timing).

Usage:  python benchmarks/model_parallel.py [--ways 2,4] [--size small] [--repeats 3] [--warmup 1]
                                            [--cache warm,cold] [--out benchmarks/results-mp.md]
                                            [--json FIGURES.json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(HERE))

from load_routes import SIZES as ROUTE_SIZES  # noqa: E402
from load_routes import Llama, _filesystem, _version, build, warm  # noqa: E402

ROUTES = ("adapter", "sat-rank0", "repl-read", "repl-bcast")
# Heads, kv heads, MLP width and vocabulary divide by 4: every size runs with 2 and 4 ranks.
SIZES: dict[str, Llama] = {
    "tiny": Llama(2048, 256, 512, 2, 8, 4, shard_mb=0.25),
    "small": ROUTE_SIZES["small"]["sat"],  # TinyLlama's width, 3 layers: 0.53 GB
    "medium": Llama(32000, 2048, 5632, 8, 32, 4, shard_mb=500),  # 8 layers: 0.97 GB
}
FIGURES = ("wall", "read", "received", "peak", "baseline")
JOB_TIMEOUT_S = 900


# --- one rank (a child process) -------------------------------------------------------------------------------------


def memory_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
    return fields


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor as a flat uint8 view of its storage: gloo moves bytes whatever the dtype."""
    return tensor.detach().contiguous().view(-1).view(torch.uint8)


def route_adapter(path: str, ways: int) -> tuple[dict, object]:
    from sat.model import LLaMAModel

    model, _ = LLaMAModel.from_hf(path, device="cpu", dtype=torch.bfloat16, progress=False,
                                  overwrite_args={"model_parallel_size": ways})  # fmt: skip
    return {"read": model.adapters_load_report.bytes_read, "received": 0}, model


def route_sat_rank0(path: str, ways: int) -> tuple[dict, object]:
    """SAT's from_pretrained resharding order: partition built everywhere, full model on rank 0, then split."""
    import torch.distributed as dist
    from sat import mpu
    from sat.model import LLaMAModel

    model, _ = LLaMAModel.from_hf(path, device="cpu", dtype=torch.bfloat16, build_only=True,
                                  overwrite_args={"model_parallel_size": ways, "skip_init": True})  # fmt: skip
    mpu.destroy_model_parallel()
    mpu.initialize_model_parallel(1)
    full, read = None, 0
    if dist.get_rank() == 0:
        full, _ = LLaMAModel.from_hf(path, device="cpu", dtype=torch.bfloat16, progress=False)
        read = full.adapters_load_report.bytes_read
    dist.barrier()
    mpu.destroy_model_parallel()
    mpu.initialize_model_parallel(ways)
    received = _receive(model) if full is None else _split_rank0(model, full)
    return {"read": read, "received": received}, model


def _split_rank0(model, full) -> int:
    """`sat.mpu.operation.mp_split_model_rank0` on CPU: partition, keep slice 0, send slice i to rank i."""
    import torch.distributed as dist
    from sat.mpu import ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding

    ways = dist.get_world_size()
    for (_, new), (_, old) in zip(model.named_children(), full.named_children()):
        if isinstance(old, (ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding)):
            weights, biases = old.partition()
            for parts, param in ((weights, new.weight), (biases, getattr(new, "bias", None))):
                if not parts:
                    continue
                param.data.copy_(parts[0])
                for rank in range(1, ways):
                    dist.send(_bytes(parts[rank]), rank)
        else:
            for (_, p_new), (_, p_old) in zip(new.named_parameters(recurse=False), old.named_parameters(recurse=False)):
                p_new.data.copy_(torch.clone(p_old.data).detach())
                dist.broadcast(_bytes(p_new.data), 0)
        _split_rank0(new, old)
    return 0


def _receive(model) -> int:
    """`sat.mpu.operation.mp_split_model_receive` on CPU; the bytes received."""
    import torch.distributed as dist
    from sat.mpu import ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding

    received = 0
    for _, module in model.named_children():
        if isinstance(module, (ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding)):
            tensors = [module.weight.data]
            bias = getattr(module, "bias", None)
            if not isinstance(module, VocabParallelEmbedding) and bias is not None and bias.numel():
                tensors.append(bias.data)
            for t in tensors:
                dist.recv(_bytes(t), 0)  # a view of the parameter's own storage: received in place
                received += t.nbytes
        else:
            for _, p in module.named_parameters(recurse=False):
                dist.broadcast(_bytes(p.data), 0)
                received += p.nbytes
        received += _receive(module)
    return received


def route_repl_read(path: str, ways: int) -> tuple[dict, object]:
    from adapters.core import open_source

    with open_source(path) as reader:
        tensors = {k: reader.read(k) for k in reader.keys()}
        return {"read": reader.bytes_read, "received": 0}, tensors


def route_repl_bcast(path: str, ways: int) -> tuple[dict, object]:
    import torch.distributed as dist

    from adapters.core import open_source

    with open_source(path) as reader:
        tensors, received = {}, 0
        for key in reader.keys():
            if dist.get_rank() == 0:
                tensor = reader.read(key)
            else:
                info = reader.info(key)  # headers: every rank knows the shapes without reading data
                tensor = torch.empty(info.shape, dtype=info.dtype)
                received += tensor.nbytes
            dist.broadcast(_bytes(tensor), 0)
            tensors[key] = tensor
        return {"read": reader.bytes_read, "received": received}, tensors


def _digest(result) -> str:
    """sha1 over this rank's parameters (models) or tensors (replicated routes), in name order."""
    items = result.items() if isinstance(result, dict) else result.named_parameters()
    h = hashlib.sha1()
    for name, t in sorted(items, key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(_bytes(t).numpy().tobytes())
    return h.hexdigest()


def rank_main(route: str, path: str, out: str) -> None:
    """One rank of a job (a child of the rank server, everything imported): join the group, run, save figures."""
    rank, ways = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    import torch.distributed as dist

    init = f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=ways)
    torch.set_num_threads(1)
    dist.barrier()  # every rank has joined: the timed part starts together
    baseline = memory_status()["VmRSS"]
    start = time.perf_counter()
    figures, result = globals()["route_" + route.replace("-", "_")](path, ways)
    wall = time.perf_counter() - start
    peak = memory_status()["VmHWM"]
    figures |= {"wall": wall, "peak": peak, "baseline": baseline, "digest": _digest(result)}
    Path(out, f"rank{rank}.json").write_text(json.dumps(figures))
    dist.barrier()
    dist.destroy_process_group()


# --- the rank server: imports once, forks each job's ranks ---------------------------------------------------------


def serve() -> None:
    """Import what every rank needs, then for each request line on stdin (JSON: route, path, out, ways, port) fork
    the job's ranks, wait for them, and answer one line: the ranks that failed (their errors in ``out``)."""
    import torch.distributed  # noqa: F401
    from sat.model import LLaMAModel  # noqa: F401

    import adapters.sat  # noqa: F401  (installs from_hf)
    from adapters.core import open_source  # noqa: F401

    for line in sys.stdin:
        print(json.dumps(fork_ranks(**json.loads(line))), flush=True)


def fork_ranks(route: str, path: str, out: str, ways: int, port: int) -> list[int]:
    """Fork `ways` ranks of one job and wait for them; the ranks that failed (the others are then killed: they
    would wait for the failed one in a collective forever)."""
    children = {}
    for rank in range(ways):
        pid = os.fork()
        if pid == 0:
            _rank_child(route, path, out, ways, port, rank)
        children[pid] = rank
    failed = []
    while children:
        pid, status = os.wait()
        rank = children.pop(pid)
        if status:
            failed.append(rank)
            for other in children:
                os.kill(other, signal.SIGKILL)
    return sorted(failed)


def _rank_child(route: str, path: str, out: str, ways: int, port: int, rank: int) -> None:
    """A forked rank: the environment torchrun would give it, stdout dropped, stderr to ``out/rank{r}.err``."""
    code = 1
    try:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(ways), LOCAL_WORLD_SIZE=str(ways),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os.dup2(os.open(os.path.join(out, f"rank{rank}.err"), os.O_WRONLY | os.O_CREAT, 0o644), 2)
        try:
            rank_main(route, path, out)
            code = 0
        except BaseException:
            traceback.print_exc()
        sys.stderr.flush()
    finally:
        os._exit(code)  # never the server's own exit path


# --- the driver -------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def evict(path: Path) -> None:
    """Drop the checkpoint's pages from the page cache (POSIX_FADV_DONTNEED on each file; clean pages only)."""
    os.sync()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class RankServer:
    """The driver's handle on the rank server (``model_parallel.py _serve``), one per benchmark run."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": "1", "SAT_LOGLEVEL": "ERROR"}  # fmt: skip
        self.proc = subprocess.Popen([sys.executable, __file__, "_serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)  # fmt: skip

    def run(self, route: str, path: Path, ways: int, out: Path) -> list[int]:
        """Run one job; the ranks that failed."""
        request = {"route": route, "path": str(path), "out": str(out), "ways": ways, "port": _free_port()}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], JOB_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise RuntimeError(f"{route} with {ways} ranks: no answer from the rank server within {JOB_TIMEOUT_S} s")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and any rank still running
        self.proc.wait()


def run_job(server: RankServer, route: str, path: Path, ways: int, cache: str, scratch: Path) -> list[dict]:
    """One N-rank job of `route`, after warming or evicting the checkpoint's pages; each rank's figures."""
    warm(path) if cache == "warm" else evict(path)
    out = Path(tempfile.mkdtemp(prefix=f"{route}-", dir=scratch))
    failed = server.run(route, path, ways, out)
    if failed:
        errors = (out / f"rank{failed[0]}.err").read_text()
        raise RuntimeError(f"{route}: rank {failed[0]} of {ways} failed:\n{errors[-4000:]}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(ways)]


def measure(
    server: RankServer, jobs: list[tuple[str, int, str]], path: Path, repeats: int, warmup: int, scratch: Path
) -> tuple[dict, list[float]]:
    """Each job's per-rank figures, the median over `repeats` rounds; the 1-minute load average at each counted job.

    Rounds run every job once, in order, so drift on a shared machine spreads over all jobs; `warmup` untimed
    rounds first let the machine settle (fresh memory, files, caches) before the counted ones.
    """
    runs: dict[tuple[str, int, str], list[list[dict]]] = {job: [] for job in jobs}
    loads = []
    for round_ in range(-warmup, repeats):
        for cache, ways, route in jobs:
            name = f"round {round_ + 1}" if round_ >= 0 else "warm-up"
            print(f"{name}: {cache} mp={ways} {route} ...", file=sys.stderr, flush=True)
            load = os.getloadavg()[0]
            figures = run_job(server, route, path, ways, cache, scratch)
            if round_ >= 0:
                runs[(cache, ways, route)].append(figures)
                loads.append(load)
    results: dict = {}
    for (cache, ways, route), done in runs.items():
        ranks = []
        for rank in range(ways):
            per_run = [job[rank] for job in done]
            if len({r["digest"] for r in per_run}) != 1:
                raise RuntimeError(f"{route}: rank {rank} loaded different tensors in different runs")
            ranks.append({k: statistics.median(r[k] for r in per_run) for k in FIGURES} | {"digest": per_run[0]["digest"]})  # fmt: skip
        results.setdefault((cache, ways), {})[route] = ranks
    return results, loads


def check(results: dict, nbytes: int) -> None:
    """Both model routes give each rank the same parameters; the replicated routes every rank the whole file."""
    for (cache, ways), routes in results.items():
        for rank in range(ways):
            a, s = routes["adapter"][rank]["digest"], routes["sat-rank0"][rank]["digest"]
            if a != s:
                raise RuntimeError(f"{cache} mp={ways} rank {rank}: the adapter and sat-rank0 partitions differ")
            if routes["repl-read"][rank]["digest"] != routes["repl-bcast"][rank]["digest"]:
                raise RuntimeError(f"{cache} mp={ways} rank {rank}: read and broadcast tensors differ")
        if routes["sat-rank0"][0]["read"] < nbytes or routes["repl-read"][0]["read"] != nbytes:
            raise RuntimeError(f"{cache} mp={ways}: rank 0 did not read the whole checkpoint")


# --- reporting ----------------------------------------------------------------------------------------------------


def machine(size: str, shape: Llama, nbytes: int, repeats: int, warmup: int, workdir: Path) -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())  # fmt: skip
    ram = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    versions = ", ".join(f"{n} {_version(d)}" for n, d in (("torch", "torch"), ("sat", "SwissArmyTransformer"), ("safetensors", "safetensors")))  # fmt: skip
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- machine: {cpu}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {ram / 2**30:.1f} GiB "
        f"RAM, {platform.system()} {platform.release()}; load average at start {load}; no GPU: gloo over loopback TCP",
        f"- software: Python {platform.python_version()}, {versions}",
        f"- checkpoint: `{size}`, a bf16 LLaMA (vocab {shape.vocab}, hidden {shape.hidden}, MLP {shape.inter}, "
        f"{shape.layers} layers, {shape.heads} heads / {shape.kv_heads} kv heads), {nbytes / 1e9:.3f} GB in "
        f"{shape.shard_mb:g} MB shards as transformers saves them, on `{_filesystem(workdir)}`",
        f"- figures: per rank, median of {repeats} jobs, from {repeats} rounds that each run every job once (after "
        f"{warmup} untimed round(s)); each job is N processes (one per rank, OMP_NUM_THREADS=1; more ranks than "
        "cores share them) forked from a server that imported torch, SAT and the adapters; they join the gloo "
        "group and meet at a barrier before the timed part. wall = "
        "that rank's load; read = bytes it read from the checkpoint files; received = bytes it got from other "
        "ranks; peak = VmHWM of the rank's process; baseline = its RSS at the barrier (a forked rank counts "
        "shared-library pages only once it touches them: about 0.14 GB below a separately started rank's), so "
        "peak - baseline is the load's own memory. MB = 1e6 bytes, GB = 1e9",
        "- page cache: `warm` = every checkpoint file read once, untimed, before each job; `cold` = the "
        "checkpoint's pages dropped (POSIX_FADV_DONTNEED on each file) before each job",
    ]


def table(results: dict) -> list[str]:
    lines = ["| cache | N | route | rank | wall s | read MB | received MB | peak RSS GB | baseline GB |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for (cache, ways), routes in results.items():
        for route, ranks in routes.items():
            for rank, r in enumerate(ranks):
                lines.append(f"| {cache} | {ways} | {route} | {rank} | {r['wall']:.3g} | {r['read'] / 1e6:.1f} | "
                             f"{r['received'] / 1e6:.1f} | {r['peak'] / 1e9:.2f} | {r['baseline'] / 1e9:.2f} |")  # fmt: skip
    return lines


def summary(results: dict, nbytes: int) -> list[str]:
    """Per job: the slowest rank's wall (the job's load time), the bytes read by all ranks, the largest peak."""
    lines = ["| cache | N | route | job wall s (slowest rank) | read, all ranks / checkpoint | largest peak RSS GB | "
             "largest (peak - baseline) GB |", "|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for (cache, ways), routes in results.items():
        for route, ranks in routes.items():
            wall = max(r["wall"] for r in ranks)
            read = sum(r["read"] for r in ranks) / nbytes
            peak = max(r["peak"] for r in ranks) / 1e9
            grown = max(r["peak"] - r["baseline"] for r in ranks) / 1e9
            lines.append(f"| {cache} | {ways} | {route} | {wall:.3g} | {read:.3f} | {peak:.2f} | {grown:.2f} |")
    return lines


def ratios(results: dict) -> list[str]:
    lines = ["| cache | N | sat-rank0 / adapter (job wall) | repl-bcast / repl-read (job wall) |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for (cache, ways), routes in results.items():
        job = {route: max(r["wall"] for r in ranks) for route, ranks in routes.items()}
        lines.append(f"| {cache} | {ways} | {job['sat-rank0'] / job['adapter']:.2f} | "
                     f"{job['repl-bcast'] / job['repl-read']:.2f} |")  # fmt: skip
    return lines


def replicated_reading(results: dict) -> list[str]:
    """Which is better for replicated tensors, from the figures, and why."""
    speedups = {key: max(r["wall"] for r in routes["repl-bcast"]) / max(r["wall"] for r in routes["repl-read"])
                for key, routes in results.items()}  # fmt: skip
    cases = ", ".join(f"{cache} N={ways}: {x:.1f}x" for (cache, ways), x in speedups.items())
    if all(x > 1 for x in speedups.values()):
        verdict = f"Every rank reading the replicated tensors itself was faster than rank 0 reading them once and broadcasting them in every case ({cases}; broadcast job time / read job time)."
    elif all(x < 1 for x in speedups.values()):
        verdict = f"Rank 0 reading once and broadcasting was faster in every case ({cases}; broadcast job time / read job time)."
    else:
        verdict = f"Neither way won in every case ({cases}; broadcast job time / read job time)."
    if not all(x > 1 for x in speedups.values()):
        verdict += (
            " The mechanism below favours reading; figures against it point at contention (see the load averages)."
        )
    return [
        "## Replicated tensors: every rank reads, or rank 0 reads and broadcasts", "", verdict, "",
        "Why reading wins on one machine: the ranks share one page cache. Once a file's pages are cached (warm: "
        "before the job; cold: the first rank to touch a page brings it in for all), a read is one memcpy out of "
        "the page cache into the rank's tensor, and the ranks do theirs in parallel without waiting for each "
        "other. A gloo broadcast moves the same bytes after rank 0 has read them: a copy into a socket buffer on "
        "the sender and one out of it on each receiver (loopback TCP), and every tensor is a collective that "
        "waits for the slowest rank. Both end with the same bytes in every rank's memory, so the broadcast saves "
        "no memory either. It can pay off only where each read is expensive and the network is not: ranks on "
        "different nodes reading from slow shared storage, one read per node. On one node, every rank reads, "
        "which is what `from_hf` does for replicated tensors.", "",
    ]  # fmt: skip


def report(results: dict, header: list[str], nbytes: int) -> list[str]:
    return [
        "# Model-parallel loading: rank-local slices against SAT's rank-0 path (CPU, gloo)", "", *header, "",
        "## Per job", "", *summary(results, nbytes), "", *ratios(results), "",
        *replicated_reading(results), "## Per rank", "", *table(results), "",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_serve"]:
        serve()
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ways", default="2,4", help="comma-separated model-parallel sizes (ranks per job)")
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds of every job before the counted ones")
    parser.add_argument("--cache", default="warm", help="comma-separated, from warm, cold")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write the results to")
    parser.add_argument("--json", type=Path, default=None, help="file to write the per-rank figures to, as JSON")
    parser.add_argument("--workdir", type=Path, default=None, help="where the checkpoint is cached (default: a temp dir, removed)")  # fmt: skip
    args = parser.parse_args(argv)
    ways_list, caches = [int(w) for w in args.ways.split(",")], args.cache.split(",")
    if any(c not in ("warm", "cold") for c in caches) or any(w < 1 for w in ways_list):
        parser.error(f"--cache takes warm and/or cold, --ways positive sizes; got {args.cache!r}, {args.ways!r}")

    temp = None if args.workdir else tempfile.TemporaryDirectory(prefix="model-parallel-")
    workdir = (args.workdir or Path(temp.name)).resolve()  # type: ignore[union-attr]
    try:
        shape = SIZES[args.size]
        path, nbytes = build(workdir / args.size / "sat", "sat", shape)
        header = machine(args.size, shape, nbytes, args.repeats, args.warmup, workdir)
        scratch = Path(tempfile.mkdtemp(prefix="jobs-", dir=workdir))
        jobs = [(cache, ways, route) for cache in caches for ways in ways_list for route in ROUTES]
        server = RankServer()
        try:
            results, loads = measure(server, jobs, path, args.repeats, args.warmup, scratch)
        finally:
            server.close()
        check(results, nbytes)
    finally:
        if temp is not None:
            temp.cleanup()
    header.append(
        f"- 1-minute load average at the start of the counted jobs: median {statistics.median(loads):.2f}, "
        f"max {max(loads):.2f} (other work on this machine included)"
    )
    text = "\n".join(report(results, header, nbytes))
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        raw = [{"cache": cache, "ways": ways, "route": route, "ranks": ranks}
               for (cache, ways), routes in results.items() for route, ranks in routes.items()]  # fmt: skip
        args.json.write_text(json.dumps({"bytes": nbytes, "jobs": raw}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
