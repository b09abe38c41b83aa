"""SAT LoRA layers (``sat.model.finetune.lora2``) seen from outside: merged into their base weights, or as PEFT.

lora2's `LoraMixin` replaces the attention linears of `layer_range` (``query_key_value``, ``dense``; on decoder
layers also cross-attention ``query``, ``key_value``, ``dense``) by a `LoraLinear`::

    {p}.original.weight  [out, in]   (+ {p}.original.bias)   the frozen base layer
    {p}.matrix_A.{i}     [r, in]                              one A per partition i
    {p}.matrix_B.{i}     [out_i, r]                           rows out_i of partition i
    forward: original(x) + cat_i((x @ A_i^T) @ B_i^T) * scaling,    scaling = lora_alpha / r

The partitions are the row blocks of a fused weight: ``query_key_value`` has three (q, k, v: equal for MHA, the
``[heads, kv_heads, kv_heads]`` stride for GQA), cross ``key_value`` two (k, v), the others one. So the layer computes
``W + scaling * cat_i(B_i @ A_i)`` with the rows stacked, that is ``W + scaling * B @ A`` for the block-diagonal
``B = diag(B_0, B_1, ...)`` ``[out, p*r]`` and the stacked ``A = [A_0; A_1; ...]`` ``[p*r, in]``.

`LoraReader` presents such a model with each LoRA layer under its base names (``{p}.weight``): merged (the sum, in
float32, then the weight's dtype, as lora2's own ``merge_linear_lora`` computes it) or as the base weight alone. It
never changes the model. `peft_adapter` carries ``B`` and ``A`` through the export rules of the layer's weight to the
HF modules: row ops (split, concat, row permutations, scales) act on ``B``'s rows as on the weight's, so a fused HF
module gets rank ``p*r`` (``B`` block-structured, zero elsewhere) and a module split out of one partition rank ``r``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..core import BlockPermute, Concat, ExportError, Plan, Reader, RotaryPermute, Scale, Split, Transpose, Unit
from ..core.ops import OnParts, Op
from ..core.readers.module import ModuleReader
from ..core.table import TensorInfo

__all__ = ["LoraLayer", "LoraReader", "PeftAdapter", "find_lora", "peft_adapter"]

_MERGE_HINT = "hint: export with lora='merge' (the default): the LoRA update is added into the base weights"


@dataclass(frozen=True)
class LoraLayer:
    """One lora2 `LoraLinear`: its module path in the SAT model, its factors per partition and its scaling."""

    module: str
    a: tuple[torch.Tensor, ...]
    b: tuple[torch.Tensor, ...]
    r: int
    lora_alpha: float
    dropout: float

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.r

    def delta(self) -> torch.Tensor:
        """``scaling * cat_i(B_i @ A_i)`` in float32, rows stacked (lora2's ``merge_linear_lora``)."""
        return torch.cat([b.detach().float() @ a.detach().float() * self.scaling for a, b in zip(self.a, self.b)], 0)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, A)``: block-diagonal ``B`` ``[out, p*r]`` and stacked ``A`` ``[p*r, in]``, with ``B @ A`` the
        update before scaling."""
        a = torch.cat([a.detach() for a in self.a], 0)
        return torch.block_diag(*(b.detach() for b in self.b)), a


def find_lora(model: nn.Module) -> dict[str, LoraLayer]:
    """The model's lora2 layers by module path; refuses LoRA kinds it cannot read (QLoRA, SAT's older LoRAMixin)."""
    layers: dict[str, LoraLayer] = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind == "LoRAMixin":
            raise ExportError(
                f"{type(model).__name__} has SAT's older LoRAMixin (sat.model.finetune.lora) at {name}, whose "
                "updates live in the mixin, outside the layers\n"
                "  hint: fine-tune with sat.model.finetune.lora2.LoraMixin, which save_hf merges or exports as PEFT"
            )
        if kind != "LoraLinear":
            continue
        if module.original.weight.dtype == torch.uint8:
            raise ExportError(
                f"{name} is a QLoRA layer: its base weight is 4-bit NF4, which an HF checkpoint of this family cannot "
                "hold\n  hint: rebuild the model without qlora=True and load the fine-tuned LoRA matrices into it"
            )
        dropout = module.lora_dropout.p if isinstance(module.lora_dropout, nn.Dropout) else 0.0
        layers[name] = LoraLayer(name, tuple(module.matrix_A), tuple(module.matrix_B), int(module.r),
                                 float(module.lora_alpha), float(dropout))  # fmt: skip
    return layers


class LoraReader(Reader):
    """The model's tensors with every LoRA layer under its base names: ``{p}.weight`` merged (``merge=True``) or
    the base weight alone, ``{p}.bias`` the base bias; the A/B matrices are not listed."""

    def __init__(self, model: nn.Module, layers: Mapping[str, LoraLayer], *, merge: bool) -> None:
        self._inner = ModuleReader(model)
        self.path = self._inner.path
        self.bytes_read = 0
        self.tensors_read = 0
        self._merge = merge
        self._layers = {f"{p}.weight": layer for p, layer in layers.items()}
        hidden = {f"{p}.matrix_{m}.{i}" for p, layer in layers.items() for m in "AB" for i in range(len(layer.a))}
        self._names: dict[str, str] = {}  # our key -> the model's key
        for key in self._inner.keys():
            if key in hidden:
                continue
            module, _, leaf = key.rpartition(".")
            base = module.removesuffix(".original")
            ours = f"{base}.{leaf}" if module != base and base in layers else key
            self._names[ours] = key

    def keys(self) -> list[str]:
        return list(self._names)

    def info(self, key: str) -> TensorInfo:
        return self._inner.info(self._names[key])

    def _read(self, key: str) -> torch.Tensor:
        tensor = self._inner.read(self._names[key])
        layer = self._layers.get(key)
        if layer is None or not self._merge:
            return tensor
        return (tensor.float() + layer.delta()).to(tensor.dtype)

    def lora_of(self, key: str) -> LoraLayer | None:
        """The LoRA layer whose base weight `key` is, if any."""
        return self._layers.get(key)


@dataclass(frozen=True)
class PeftAdapter:
    """A PEFT LoRA adapter: ``adapter_model.safetensors`` tensors and ``adapter_config.json``."""

    tensors: dict[str, torch.Tensor]
    config: dict


def peft_adapter(
    the_plan: Plan, reader: LoraReader, *, base_model: str, dtype: torch.dtype | None = None
) -> PeftAdapter:
    """The PEFT adapter of the LoRA layers `reader` sees, on the HF modules the plan writes their weights to.

    Raises:
        ExportError: a LoRA weight that an export rule mixes with other tensors or moves other than by rows.
    """
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, tuple[int, float]] = {}
    chosen: list[tuple[int, float]] = []  # (r, lora_alpha) of each SAT layer: the config's r and alpha
    dropouts: set[float] = set()
    transposed: dict[bool, str] = {}  # PEFT's fan_in_fan_out is one flag for every module
    for unit in the_plan.units:
        loras = [(k, reader.lora_of(k)) for k in unit.sources if reader.lora_of(k) is not None]
        if not loras:
            continue
        key, layer = loras[0]
        if len(unit.sources) != 1:
            raise _not_peft(key, f"its export rule joins it with {', '.join(k for k in unit.sources if k != key)}")
        for module, b, a, rank in _carry(unit, key, layer):
            if not module.endswith(".weight"):
                raise _not_peft(key, f"it becomes {module}, which is not a module's weight")
            module = module.removesuffix(".weight")
            prefix = f"base_model.model.{module}."
            tensors[prefix + "lora_A.weight"] = a.to(dtype or a.dtype).contiguous()
            tensors[prefix + "lora_B.weight"] = b.to(dtype or b.dtype).contiguous()
            ranks[module] = (rank, layer.scaling * rank)
        transposed.setdefault(sum(isinstance(op, Transpose) for op in unit.ops) % 2 == 1, key)
        if len(transposed) > 1:
            raise _not_peft(key, f"PEFT has one fan_in_fan_out for all modules; {transposed[True]} is stored "
                                 f"transposed and {transposed[False]} is not")  # fmt: skip
        dropouts.add(layer.dropout)
        chosen.append((layer.r, layer.lora_alpha))
    r, alpha = Counter(chosen).most_common(1)[0][0]
    return PeftAdapter(tensors, _peft_config(ranks, r, alpha, dropouts, True in transposed, base_model))


def _peft_config(ranks: dict[str, tuple[int, float]], r: int, alpha: float, dropouts: set[float],
                 fan_in_fan_out: bool, base: str) -> dict:  # fmt: skip
    """PEFT's ``LoraConfig`` as JSON: `r`/`alpha` the LoRA's own; fused modules (rank ``p*r``, alpha ``p*alpha``:
    the same scaling) in ``rank_pattern``/``alpha_pattern``, by exact module name."""
    return {
        "peft_type": "LORA",
        "base_model_name_or_path": base,
        "task_type": None,
        "inference_mode": True,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": max(dropouts),
        "target_modules": sorted(ranks),
        "rank_pattern": {m: k for m, (k, _) in sorted(ranks.items()) if k != r},
        "alpha_pattern": {m: a for m, (_, a) in sorted(ranks.items()) if a != alpha},
        "fan_in_fan_out": fan_in_fan_out,
        "bias": "none",
        "use_rslora": False,
        "modules_to_save": None,
        "init_lora_weights": True,
    }


def _not_peft(key: str, why: str) -> ExportError:
    return ExportError(f"the LoRA update of {key} cannot be written as a PEFT adapter: {why}\n  {_MERGE_HINT}")


def _row_op(op: Op) -> bool:
    """Whether `op` moves, cuts or joins the rows of a 2-D weight only (so it acts on B's rows the same way)."""
    if isinstance(op, OnParts):
        return _row_op(op.op)
    if isinstance(op, (Split, Concat, BlockPermute, RotaryPermute)):
        return op.dim in (0, -2)
    return False


def _carry(unit: Unit, key: str, layer: LoraLayer):
    """``(HF name, B, A, rank)`` per target of `unit`: B's rows moved by the unit's ops as the weight's rows are,
    and per target only the partitions whose rows it holds (tracked with a one-hot owner of each row)."""
    b, a = layer.factors()
    parts, r = len(layer.a), layer.r
    owner = torch.block_diag(*(torch.ones(x.shape[0], 1) for x in layer.b))  # [out, parts]
    bs, owners = (b,), (owner,)
    for i, op in enumerate(unit.ops):
        if isinstance(op, Scale):
            bs = op.apply(bs)
        elif isinstance(op, Transpose) and all(isinstance(o, (Transpose, Scale)) for o in unit.ops[i + 1 :]):
            continue  # an HF Conv1D stores the weight [in, out]; PEFT keeps A, B as for a Linear (fan_in_fan_out)
        elif _row_op(op):
            bs, owners = op.apply(bs), op.apply(owners)
        else:
            raise _not_peft(key, f"its export rule applies {op}, which is not a row operation")
    for name, bt, ot in zip(unit.targets, bs, owners):
        used = [p for p in range(parts) if bool(ot[:, p].any())]
        cols = torch.cat([torch.arange(p * r, (p + 1) * r) for p in used])
        yield name, bt[:, cols], a[cols], r * len(used)
