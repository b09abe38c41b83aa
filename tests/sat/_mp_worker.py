"""One rank of a model-parallel `from_hf` load, started by tests/sat/test_model_parallel.py.

    RANK=r WORLD_SIZE=n MASTER_ADDR=127.0.0.1 MASTER_PORT=p python _mp_worker.py OUT MP CKPT [CKPT ...]

Initialises a gloo process group itself (the "inside a torch.distributed job" case), loads every checkpoint with
``model_parallel_size=MP`` (the first through SAT's ``AutoModel.from_pretrained``, the others through
``AutoModel.from_hf``), runs the model-parallel forward, and saves, per checkpoint: the logits, the report's
``bytes_read``, every whole read and every slice read (key, shape) this rank made, and the units that fell back.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def _record(log: list) -> None:
    from adapters.core.readers.base import Reader

    read, read_slice = Reader.read, Reader.read_slice

    def recording_read(self, key):
        tensor = read(self, key)
        log.append(("whole", key, tuple(tensor.shape)))
        return tensor

    def recording_slice(self, key, index):
        tensor = read_slice(self, key, index)
        log.append(("slice", key, tuple(tensor.shape)))
        return tensor

    Reader.read, Reader.read_slice = recording_read, recording_slice


def main(out: str, ways: str, *paths: str) -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    init = f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)

    from sat import AutoModel
    from sat_forward import causal_logits, token_ids

    import adapters.sat  # noqa: F401  (installs the hooks)

    log: list = []
    _record(log)
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
        )
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
