"""SAT's model-parallel layout: which parameters a rank holds a part of, and how, read off the built model.

SAT (``sat.mpu.layers``) shares three module types among the ranks of a model-parallel group; everything else
(norms, small ``nn.Embedding``s, plain ``nn.Linear`` heads in mixins, ``inv_freq`` buffers) is replicated:

    ColumnParallelLinear   weight [out/N, in], bias [out/N]: dim 0, in segments proportional to `stride`
                           (fused qkv MHA: stride 3 → [Q; K; V]; GQA: stride [nh/N, nkv/N, nkv/N])
    RowParallelLinear      weight [out, in/N]: dim 1, one segment; bias full (replicated)
    VocabParallelEmbedding weight [V/N, H]: dim 0, one segment (SAT uses it for vocab_size >= 1000)

Rank r of a segmented tensor holds chunk r of every segment, concatenated (`adapters.core.partition`).
"""

from __future__ import annotations

import math
import os
from argparse import Namespace

from torch import nn

from ..core import HookError
from ..core.partition import Partition, Sharding

__all__ = ["prepare_parallel", "sat_sharding"]


def _column(module, ways: int) -> Partition:
    strides = [1] * module.stride if isinstance(module.stride, int) else list(module.stride)
    full = module.weight.shape[0] * ways
    factor, rest = divmod(full, sum(strides))
    if rest:  # SAT asserts the same when it partitions a full weight
        raise HookError(f"a ColumnParallelLinear of {full} rows cannot be cut in the ratio {strides}")
    return Partition(0, tuple(factor * s for s in strides))


def sat_sharding(model: nn.Module) -> Sharding:
    """This rank's `Sharding` of `model`, a SAT model built (on meta) with SAT's model-parallel groups set up."""
    from sat import mpu
    from sat.mpu.layers import ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding

    ways, rank = mpu.get_model_parallel_world_size(), mpu.get_model_parallel_rank()
    parts: dict[str, Partition] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        prefix = f"{name}." if name else ""
        if isinstance(module, ColumnParallelLinear):
            part = _column(module, ways)
            parts[prefix + "weight"] = part
            if getattr(module, "bias", None) is not None and module.bias.numel():
                parts[prefix + "bias"] = Partition(0, part.segments)
        elif isinstance(module, RowParallelLinear):
            parts[prefix + "weight"] = Partition(1, (module.weight.shape[1] * ways,))
        elif isinstance(module, VocabParallelEmbedding):
            parts[prefix + "weight"] = Partition(0, (module.weight.shape[0] * ways,))
    return Sharding(ways, rank, parts)


def _world_size() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))  # what SAT's own init will use


def prepare_parallel(args: Namespace, where: str) -> None:
    """Refuse a ``model_parallel_size`` the job or the model cannot honour, with the numbers, before building;
    in a job whose process group is up, set up SAT's model-parallel groups (else SAT's own init does, from the
    environment, when the model is built)."""
    ways = int(args.model_parallel_size)
    sizes = _shared_sizes(args)
    uneven = [(name, n) for name, n in sizes if n % ways]
    if ways < 1 or uneven:
        fits = [d for d in range(1, math.gcd(*(n for _, n in sizes)) + 1) if all(n % d == 0 for _, n in sizes)]
        lines = "".join(f"  {name}={n} is not a multiple of {ways}\n" for name, n in uneven)
        raise HookError(
            f"{where}: model_parallel_size={ways} cannot split this model evenly\n{lines}"
            "  hint: SAT gives every rank an equal share of the attention heads, kv heads, MLP columns and "
            f"vocabulary rows; model_parallel_size must divide each of them (here: {', '.join(map(str, fits))})"
        )
    world = _world_size()
    if world % ways:
        raise HookError(
            f"{where}: model_parallel_size={ways} needs a torch.distributed job whose world size is a multiple of "
            f"{ways}; this one has {world}\n"
            f"  hint: start {ways} processes (torchrun --nproc-per-node {ways}, or set RANK, WORLD_SIZE, MASTER_ADDR "
            "and MASTER_PORT), or init_process_group before loading"
        )
    from sat import mpu

    if mpu.model_parallel_is_initialized() and mpu.get_model_parallel_world_size() != ways:
        raise HookError(
            f"{where}: model_parallel_size={ways}, but SAT's model-parallel groups in this process were set up for "
            f"{mpu.get_model_parallel_world_size()}\n"
            "  hint: SAT cannot change the model-parallel size of a process; load with the size it was set up for"
        )
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and not mpu.model_parallel_is_initialized():
        mpu.initialize_model_parallel(ways)


def _shared_sizes(args: Namespace) -> list[tuple[str, int]]:
    """The sizes SAT's parallel layers divide by the model-parallel size, as (args field, value)."""
    sizes = [("num_attention_heads", int(args.num_attention_heads))]
    if getattr(args, "num_multi_query_heads", 0):
        sizes.append(("num_multi_query_heads", int(args.num_multi_query_heads)))
    inner = getattr(args, "inner_hidden_size", None)
    sizes.append(("inner_hidden_size", int(inner)) if inner else ("4 * hidden_size", 4 * int(args.hidden_size)))
    if int(getattr(args, "vocab_size", 0)) >= 1000:  # below, SAT keeps a plain (replicated) nn.Embedding
        sizes.append(("vocab_size", int(args.vocab_size)))
    return sizes
