"""One rank of a model-parallel SAT save and reload, started by tests/sat/test_sat_checkpoint.py.

    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python _mp_save_worker.py OUT HF LORA_FULL MP1_FOLDER

With a gloo group of 2 and ``model_parallel_size=2``, each rank:

1. loads the HF checkpoint with `from_hf` and saves it with SAT's own ``save_checkpoint`` (``OUT/plain``);
2. builds `LoraLLaMA` (SAT's lora2 on every attention layer), copies the base weights in, sets its LoRA matrices
   to its part of the full ones in ``LORA_FULL`` (cut by hand: where the local shape is smaller, chunk ``rank``),
   and saves it the same way (``OUT/lora``);
3. loads both back at the same size (SAT's own path, and `load_sat` through the hook), and the size-1 folder
   ``MP1_FOLDER`` into 2 ranks through the hook, and compares each with what it saved.

Saves ``OUT/rank{r}.pt``: which loads came back equal, which path loaded them, and the bytes `load_sat` read from
each rank file.
"""

from __future__ import annotations

import os
import sys
from argparse import Namespace

import torch
import torch.distributed as dist
from sat.model import LLaMAModel
from sat.model.finetune.lora2 import LoraMixin


class LoraLLaMA(LLaMAModel):
    """LLaMA with SAT's LoRA (lora2, r=4) wrapping every layer's fused qkv and attention output."""

    def __init__(self, args, transformer=None, **kwargs):
        super().__init__(args, transformer=transformer, **kwargs)
        self.add_mixin("lora", LoraMixin(args.num_layers, r=4, lora_alpha=8), reinit=True)


def lora_matrices(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {k: v for k, v in model.named_parameters() if ".matrix_" in k}


def _save(model, args: Namespace, folder: str) -> None:
    from sat.training.model_io import save_checkpoint

    save_args = Namespace(**vars(args))
    save_args.save, save_args.mode = folder, "inference"
    save_checkpoint(1, model, None, None, save_args)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _recording(log: list) -> None:
    from adapters.sat.sat_reader import SatReader

    close = SatReader.close

    def recording_close(self):
        if self._ranks:
            log.append(self.file_bytes_read)
        close(self)

    SatReader.close = recording_close


def main(out: str, hf: str, lora_full: str, mp1: str) -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    init = f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)

    from sat.model import AutoModel

    import adapters.sat  # noqa: F401  (installs the hooks)
    from adapters.sat import load_sat

    two = {"model_parallel_size": 2}
    base, args = LLaMAModel.from_hf(hf, device="cpu", overwrite_args=dict(two))
    _save(base, args, os.path.join(out, "plain"))

    lora = LoraLLaMA(args)
    lora.load_state_dict(base.state_dict(), strict=False)  # lora2's layers take a plain layer's weight
    full = torch.load(lora_full)
    with torch.no_grad():
        for name, param in lora_matrices(lora).items():
            cut = [d for d in range(param.dim()) if param.shape[d] != full[name].shape[d]]
            param.copy_(full[name].chunk(2, cut[0])[rank] if cut else full[name])
    _save(lora, args, os.path.join(out, "lora"))
    dist.barrier()

    log: list = []
    _recording(log)
    native, _ = LLaMAModel.from_pretrained(os.path.join(out, "plain"))  # same size: SAT's own path
    hooked, _ = AutoModel.from_pretrained(os.path.join(out, "plain"), overwrite_args=dict(two))
    plain_bytes = log[-1]
    lora_back, _ = load_sat(LoraLLaMA, os.path.join(out, "lora"), device="cpu")
    lora_bytes = log[-1]
    up, _ = AutoModel.from_pretrained(mp1, overwrite_args=dict(two))
    results = dict(
        native_equal=_same(native, base),
        native_is_sats=not hasattr(native, "adapters_load_report"),
        hooked_equal=_same(hooked, base),
        hooked_is_ours=hasattr(hooked, "adapters_load_report"),
        plain_bytes=plain_bytes,
        plain_local_bytes=sum(t.nbytes for t in base.state_dict().values()),
        lora_equal=_same(lora_back, lora),
        lora_bytes=lora_bytes,
        lora_local_bytes=sum(t.nbytes for t in lora.state_dict().values()),
        up_equal=_same(up, base),
        up_class=type(up).__name__,
    )
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
