"""SAT's model-parallel layout: which parameters a rank holds a part of, and how, read off the built model.

SAT (``sat.mpu.layers``) shares three module types among the ranks of a model-parallel group; everything else
(norms, small ``nn.Embedding``s, plain ``nn.Linear`` heads in mixins, ``inv_freq`` buffers) is replicated:

    ColumnParallelLinear   weight [out/N, in], bias [out/N]: dim 0, in segments proportional to `stride`
                           (fused qkv MHA: stride 3 → [Q; K; V]; GQA: stride [nh/N, nkv/N, nkv/N])
    RowParallelLinear      weight [out, in/N]: dim 1, one segment; bias full (replicated)
    VocabParallelEmbedding weight [V/N, H]: dim 0, one segment (SAT uses it for vocab_size >= 1000)

Rank r of a segmented tensor holds chunk r of every segment, concatenated (`adapters.core.partition`).

SAT's LoRA (``sat.model.finetune.lora2.LoraLinear``) wraps such a layer as ``original`` and adds per-segment
matrices whose shapes follow the wrapped layer's local shape: over a ColumnParallelLinear each ``matrix_B.i``
[rows of segment i / N, r] is cut on dim 0; over a RowParallelLinear ``matrix_A.0`` [r, in/N] is cut on dim 1;
the other matrix is replicated.
"""

from __future__ import annotations

import math
import os
import sys
from argparse import Namespace

from torch import nn

from ..core import HookError
from ..core.partition import Partition, Sharding

__all__ = ["job_world_size", "prepare_parallel", "sat_partitions", "sat_sharding"]


def _column(module, ways: int) -> Partition:
    return _cut(module.stride, module.weight.shape[0] * ways)


def _cut(stride: int | list[int], full: int) -> Partition:
    """A ColumnParallelLinear's `full` rows in segments of the ratio `stride` (an int: that many equal ones)."""
    strides = [1] * stride if isinstance(stride, int) else list(stride)
    factor, rest = divmod(full, sum(strides))
    if rest:  # SAT asserts the same when it partitions a full weight
        raise HookError(
            f"a ColumnParallelLinear of {full} rows cannot be cut in the ratio {strides}: {full} is not a multiple "
            f"of {sum(strides)}\n  hint: the layer's size does not fit its own stride; the model was built with "
            "args that disagree (heads, kv heads, head size)"
        )
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


def sat_partitions(model: nn.Module) -> dict[str, Partition]:
    """How SAT cuts each partitioned tensor of `model` among model-parallel ranks, at full sizes.

    Read off the module types and their full sizes (``output_size``, ``input_size``, ``num_embeddings``), so
    `model` may be built (on meta) at any model-parallel size, and no model-parallel group need exist: the same
    partitions describe a checkpoint written by N ranks for any N. Keys not named are replicated. Unlike
    `sat_sharding`, this also covers the matrices of SAT's LoRA layers (see the module docstring).
    """
    from sat.mpu.layers import ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding

    lora = _lora_class()
    parts: dict[str, Partition] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        prefix = f"{name}." if name else ""
        if isinstance(module, ColumnParallelLinear):
            part = _cut(module.stride, module.output_size)
            parts[prefix + "weight"] = part
            if getattr(module, "bias", None) is not None and module.bias.numel():
                parts[prefix + "bias"] = part
        elif isinstance(module, RowParallelLinear):
            parts[prefix + "weight"] = Partition(1, (module.input_size,))
        elif isinstance(module, VocabParallelEmbedding):
            parts[prefix + "weight"] = Partition(0, (module.num_embeddings,))
        elif lora is not None and isinstance(module, lora):
            parts |= _lora_parts(module, prefix, ColumnParallelLinear, RowParallelLinear)
    return parts


def _lora_class() -> type | None:
    """SAT's `LoraLinear`, if its module was imported (a model can hold one only then); importing it warns."""
    module = sys.modules.get("sat.model.finetune.lora2")
    return None if module is None else module.LoraLinear


def _lora_parts(module, prefix: str, column: type, row: type) -> dict[str, Partition]:
    original = module.original
    if isinstance(original, column):
        # one matrix_B per segment (q, k, v), each cut like its segment
        rows = _cut(original.stride, original.output_size).segments
        return {f"{prefix}matrix_B.{i}": Partition(0, (size,)) for i, size in enumerate(rows)}
    if isinstance(original, row):
        return {f"{prefix}matrix_A.{i}": Partition(1, (original.input_size,)) for i in range(len(module.matrix_A))}
    return {}


def job_world_size() -> int:
    """The torch.distributed world size: the running group's, else what SAT's own init will read (WORLD_SIZE)."""
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
    world = job_world_size()
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
    """The sizes SAT's parallel layers divide by the model-parallel size, as (args field, value): the model's, and
    those of a vision tower that is a SAT model itself (CogVLM's ``eva_args``: SAT builds it with the same size)."""
    sizes = _model_sizes(vars(args), "")
    tower = getattr(args, "eva_args", None)
    if isinstance(tower, dict) and tower:
        sizes += _model_sizes(tower, "eva_args.")
    return sizes


def _model_sizes(fields: dict, prefix: str) -> list[tuple[str, int]]:
    sizes = [(prefix + "num_attention_heads", int(fields["num_attention_heads"]))]
    if fields.get("num_multi_query_heads"):
        sizes.append((prefix + "num_multi_query_heads", int(fields["num_multi_query_heads"])))
    inner = fields.get("inner_hidden_size")
    if inner:
        sizes.append((prefix + "inner_hidden_size", int(inner)))
    else:
        sizes.append((f"4 * {prefix}hidden_size", 4 * int(fields["hidden_size"])))
    if int(fields.get("vocab_size") or 0) >= 1000:  # below, SAT keeps a plain (replicated) nn.Embedding
        sizes.append((prefix + "vocab_size", int(fields["vocab_size"])))
    return sizes
