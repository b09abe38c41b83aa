"""A model-parallel `from_hf` job on this machine: one process per rank, and the helpers the tests start it with.

    MASTER_ADDR=127.0.0.1 MASTER_PORT=p python _mp_worker.py OUT WORLD MP CKPT [CKPT ...]

starts WORLD ranks. Each initialises a gloo process group itself (the "inside a torch.distributed job" case), loads
every checkpoint with ``model_parallel_size=MP`` (the first through SAT's ``AutoModel.from_pretrained``, the others
through ``AutoModel.from_hf``), runs the model-parallel forward, and saves, per checkpoint: the logits, the
report's ``bytes_read``, every whole read and every slice read (key, shape, ranges) the rank made, its local
shapes, and its model-parallel and data-parallel rank. With WORLD a multiple of MP, SAT makes WORLD / MP
model-parallel groups of consecutive ranks (data-parallel replicas).

The ranks are forked from one process that has imported torch, transformers and SAT (`launch`): importing them
takes seconds of CPU per process, the rest of a tiny rank's work a fraction of one. Nothing rank-specific exists
before the fork (no process group, no SAT model-parallel groups, no torch thread pool), so each child starts as a
separately launched rank would.

The test side: `run_ranks` runs a worker script (this one or ``_mp_cogvlm_worker.py``) and collects what each rank
saved; `source_sizes` reads a checkpoint's key shapes and bytes from its headers; `assert_reads_share` and
`assert_slices_tile` check what the ranks read against them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

RESULTS_TIMEOUT_S = 300


def record_reads(log: list) -> None:
    """Append ``(kind, key, shape, ranges)`` to `log` for every tensor any reader of this process returns: kind
    ``"whole"`` (ranges None) or ``"slice"`` (ranges: ``(start, stop)`` per dim, None for a full dim)."""
    from adapters.core.readers.base import Reader

    read, read_slice = Reader.read, Reader.read_slice

    def recording_read(self, key):
        tensor = read(self, key)
        log.append(("whole", key, tuple(tensor.shape), None))
        return tensor

    def recording_slice(self, key, index):
        tensor = read_slice(self, key, index)
        log.append(("slice", key, tuple(tensor.shape), tuple((i.start, i.stop) for i in index)))
        return tensor

    Reader.read, Reader.read_slice = recording_read, recording_slice


def parallel_ranks() -> tuple[int, int, int]:
    """This process' (model-parallel size, model-parallel rank, data-parallel rank), from SAT's groups."""
    from sat import mpu

    return mpu.get_model_parallel_world_size(), mpu.get_model_parallel_rank(), mpu.get_data_parallel_rank()


def launch(world: int, rank_main: Callable[[int], None]) -> int:
    """Fork `world` children, child r running ``rank_main(r)`` with RANK/LOCAL_RANK=r, WORLD_SIZE=world set; the
    exit status (0 when every rank succeeded). When a rank fails the others are killed: they would wait for it
    in a collective forever."""
    children = {}
    for rank in range(world):
        pid = os.fork()
        if pid == 0:  # the rank
            os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                              LOCAL_WORLD_SIZE=str(world))  # fmt: skip
            code = 0
            try:
                rank_main(rank)
            except BaseException:
                print(f"rank {rank} failed:", file=sys.stderr)
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # not the launcher's exit handlers
        children[pid] = rank
    status = 0
    while children:
        pid, code = os.wait()
        children.pop(pid)
        if code:
            status = 1
            for other in children:
                os.kill(other, signal.SIGKILL)
    return status


def main(out: str, ways: str, *paths: str) -> None:
    """Rank ``$RANK``'s part of the job (see the module docstring)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    init = f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)

    from sat import AutoModel
    from sat_forward import causal_logits, token_ids

    import adapters.sat  # noqa: F401  (installs the hooks)

    log: list = []
    record_reads(log)
    results = {}
    for i, path in enumerate(paths):
        log.clear()
        overwrite = {"model_parallel_size": int(ways)}
        if i == 0:
            model, args = AutoModel.from_pretrained(path, overwrite_args=overwrite)
        else:
            model, args = AutoModel.from_hf(path, device="cpu", overwrite_args=overwrite)
        report = model.adapters_load_report
        results[path] = dict(
            logits=causal_logits(model.eval(), token_ids(args.vocab_size)),
            bytes_read=report.bytes_read,
            reads=list(log),
            local_shapes={k: tuple(v.shape) for k, v in model.state_dict().items()},
            mp=(args.model_parallel_size, type(model).__name__),
            ranks=parallel_ranks(),
        )
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def preload() -> None:
    """What every rank imports, imported once before the fork; none of it starts a thread or a process group."""
    import sat  # noqa: F401
    import sat_forward  # noqa: F401
    import transformers  # noqa: F401

    import adapters.sat  # noqa: F401


# --- the test side --------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(worker: Path, out: Path, world: int, *args: object) -> list[dict]:
    """Run ``python worker OUT WORLD *args`` (a job of `world` ranks on this machine); each rank's saved results."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(worker), str(out), str(world), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        log = proc.communicate(timeout=RESULTS_TIMEOUT_S)[0]
    finally:
        if proc.poll() is None:  # the launcher and its ranks are one session: none is left behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"{worker.name} failed:\n{log[-6000:]}"
    return [torch.load(out / f"rank{r}.pt") for r in range(world)]


def source_sizes(path: Path) -> dict[str, tuple[tuple[int, ...], int]]:
    """Key → (shape, nbytes) of a sharded safetensors checkpoint, from its headers."""
    from safetensors import safe_open

    sizes = {}
    weight_map = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    for shard in sorted(set(weight_map.values())):
        with safe_open(path / shard, framework="pt") as f:
            for key in f.keys():
                t = f.get_slice(key)
                shape = tuple(t.get_shape())
                sizes[key] = (shape, torch.Size(shape).numel() * _DTYPE_BYTES[t.get_dtype()])
    return sizes


_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}


def assert_reads_share(result: dict, sizes: dict, whole: set[str], ways: int) -> None:
    """This rank read 1/ways of every partitioned tensor (in slices) and the `whole` (replicated) tensors whole,
    and its bytes stay within 1.1 x its share of the partitioned bytes plus the replicated bytes."""
    replicated = sum(sizes[k][1] for k in whole)
    partitioned = sum(n for k, (_, n) in sizes.items() if k not in whole)
    assert result["bytes_read"] <= 1.1 * partitioned / ways + replicated
    sliced: dict[str, int] = {}
    for kind, key, shape, _ in result["reads"]:
        if kind == "whole":
            assert key in whole, f"{key} {sizes[key][0]} read whole"
        else:
            sliced[key] = sliced.get(key, 0) + torch.Size(shape).numel()
    assert set(sliced) == set(sizes) - whole
    for key, numel in sliced.items():
        assert numel * ways == torch.Size(sizes[key][0]).numel(), key


def assert_slices_tile(group: list[dict], sizes: dict) -> None:
    """The slices the ranks of one model-parallel group read of each tensor cover it exactly once."""
    covered: dict[str, torch.Tensor] = {}
    for result in group:
        for kind, key, _, ranges in result["reads"]:
            if kind == "slice":
                count = covered.setdefault(key, torch.zeros(sizes[key][0], dtype=torch.int8))
                count[tuple(slice(*r) for r in ranges)] += 1
    for key, count in covered.items():
        assert bool((count == 1).all()), f"{key}: elements read {sorted(set(count.flatten().tolist()))} times"


if __name__ == "__main__":
    out, world, ways, *paths = sys.argv[1:]
    preload()
    sys.exit(launch(int(world), lambda rank: main(out, ways, *paths)))
