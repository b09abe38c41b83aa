"""A model-parallel CogVLM and CogAgent job, started by tests/sat/test_model_parallel_cogvlm.py.

    MASTER_ADDR=127.0.0.1 MASTER_PORT=p python _mp_cogvlm_worker.py OUT WORLD COGVLM COGAGENT

starts WORLD ranks (forked as in ``_mp_worker.py``), each with ``model_parallel_size=WORLD``. Unlike there, no rank
starts a process group itself: CogVLM loads the way CogVLM's ``basic_demo/cli_demo_sat.py`` loads under torchrun
(``AutoModel.from_pretrained(path, args=<its namespace>, overwrite_args={"model_parallel_size": WORLD})``), and
SAT's own initialisation builds the gloo group from the environment while it builds the model. CogAgent then
loads with ``CogAgentModel.from_hf`` in the same job. Each rank runs the image + text forward on the inputs the
test saved in ``OUT/inputs.pt`` and saves, per checkpoint, what ``_mp_worker.main`` saves.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from _mp_worker import launch, parallel_ranks, preload, record_reads


def _result(model, args, logits: torch.Tensor, log: list) -> dict:
    return dict(
        logits=logits,
        bytes_read=model.adapters_load_report.bytes_read,
        reads=list(log),
        local_shapes={k: tuple(v.shape) for k, v in model.state_dict().items()},
        mp=(args.model_parallel_size, type(model).__name__),
        ranks=parallel_ranks(),
    )


def main(out: str, cogvlm: str, cogagent: str) -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    import cogagent_fixtures
    import cogvlm_fixtures
    from sat import AutoModel

    from adapters.sat import CogAgentModel

    inputs = torch.load(os.path.join(out, "inputs.pt"))
    log: list = []
    record_reads(log)
    namespace = cogvlm_fixtures.cli_demo_args(cogvlm, rank=rank, local_rank=rank, world_size=world,
                                              model_parallel_size=world)  # fmt: skip
    model, args = AutoModel.from_pretrained(cogvlm, args=namespace, overwrite_args={"model_parallel_size": world})
    results = {cogvlm: _result(model, args, cogvlm_fixtures.sat_logits(model.eval(), *inputs["cogvlm"]), log)}
    log.clear()
    model, args = CogAgentModel.from_hf(cogagent, device="cpu", overwrite_args={"model_parallel_size": world})
    results[cogagent] = _result(model, args, cogagent_fixtures.sat_logits(model.eval(), *inputs["cogagent"]), log)
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    out, world, *paths = sys.argv[1:]
    preload()
    import cogagent_fixtures  # noqa: F401  (with the tiny writers and adapters.sat.models)

    sys.exit(launch(int(world), lambda rank: main(out, *paths)))
