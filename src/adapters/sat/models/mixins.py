"""CogVLM's vision experts as SAT mixins: a second set of attention and MLP weights for image tokens.

A CogVLM layer runs each token through one of two weight sets. Tokens marked in ``vision_expert_mask`` (``[B, L]``,
nonzero = vision) use the vision expert, all others the layer's own LLaMA weights (the language expert); attention
itself runs over all tokens together. Only the layers in ``vision_layer_range`` have a vision expert (CogVLM: the
first ``min(32, num_layers)``); the rest, and every forward without a vision token, are plain LLaMA layers.

Names and layouts (as in the CogVLM repository's ``utils/models/mixin.py``; ``H`` hidden, ``I`` MLP width, ``i`` a
layer with a vision expert, ``l`` any layer)::

    mixins.rotary.rotary_emb.inv_freq                       [head_dim / 2]  RoPE, base 10000, half-split (NeoX) pairs
    mixins.rotary.vision_query_key_value_list.{i}.weight    [3H, H]   rows [Q; K; V], as the layer's query_key_value
    mixins.rotary.vision_dense_list.{i}.weight              [H, H]
    mixins.mlp.gate_proj.{l}.weight                         [I, H]    the language expert's gate (every layer)
    mixins.mlp.vision_gate_proj.{i}.weight                  [I, H]
    mixins.mlp.vision_dense_h_to_4h_list.{i}.weight         [I, H]    up
    mixins.mlp.vision_dense_4h_to_h_list.{i}.weight         [H, I]    down

The MLP of either expert is ``down(silu(gate(x)) * up(x))``; neither expert has biases.

Model parallel (N ranks), as in the repository: every weight above is a SAT parallel layer, cut like the layer's
own. ``vision_query_key_value`` is column-parallel with stride 3 (rank r holds its heads of Q, of K and of V:
``[3H/N, H]``), ``gate_proj``/``vision_gate_proj``/``vision_dense_h_to_4h`` are column-parallel (``[I/N, H]``),
``vision_dense``/``vision_dense_4h_to_h`` row-parallel (``[H, H/N]``, ``[H, I/N]``). Routing by token happens on
the local shards; the row-parallel layers' all-reduce then sums the ranks' parts, as for the language expert.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from sat.model.base_model import BaseMixin
from sat.model.position_embedding.triton_rotary_embeddings import FastRotaryEmbedding
from sat.mpu import get_model_parallel_world_size
from sat.mpu.layers import ColumnParallelLinear, RowParallelLinear
from sat.mpu.utils import divide, split_tensor_along_last_dim
from sat.transformer_defaults import attention_fn_default
from torch import nn

__all__ = ["LlamaVisionExpertAttnMixin", "LlamaVisionExpertFCMixin"]

Module = Callable[[torch.Tensor], torch.Tensor]


def _layer_range(explicit: Sequence[int] | None, num_vision_layers: int, num_layers: int) -> list[int]:
    return list(explicit) if explicit is not None else list(range(min(num_vision_layers, num_layers)))


def _per_layer(layers: list[int], build: Callable[[], nn.Module]) -> nn.ModuleDict:
    """One module per vision layer, keyed by the layer index as a string (the checkpoints' ``.{i}.`` names)."""
    return nn.ModuleDict({str(i): build() for i in layers})


def _routed(x: torch.Tensor, vision: torch.Tensor, language_fn: Module, vision_fn: Module) -> torch.Tensor:
    """``language_fn`` on the rows of `x` where `vision` (bool ``[B, L]``) is False, ``vision_fn`` where it is True."""
    language_out = language_fn(x[~vision])
    out = x.new_empty(*x.shape[:-1], language_out.shape[-1])
    out[~vision] = language_out
    out[vision] = vision_fn(x[vision])
    return out


def _vision_rows(mixin: nn.Module, kw_args: dict) -> torch.Tensor | None:
    """The bool vision-token mask when this layer routes by expert, else None (one LLaMA path for all tokens)."""
    mask = kw_args.get("vision_expert_mask")
    if int(kw_args["layer_id"]) not in mixin.vision_layer_range or mask is None or not mask.any():
        return None
    return mask.bool()


class LlamaVisionExpertFCMixin(BaseMixin):
    """Gated MLP with a vision expert: the language gate for every layer, and gate/up/down for each vision layer.

    The language expert's up and down projections are the layer's own ``mlp.dense_h_to_4h`` / ``mlp.dense_4h_to_h``.
    """

    def __init__(self, in_features: int, hidden_features: int, num_layers: int = 32, num_vision_layers: int = 0,
                 vision_layer_range: Sequence[int] | None = None, params_dtype: torch.dtype = torch.float,
                 device: torch.device | str = "cpu"):  # fmt: skip
        super().__init__()
        self.num_layers = num_layers
        self.num_vision_layers = num_vision_layers
        self.vision_layer_range = _layer_range(vision_layer_range, num_vision_layers, num_layers)
        common = dict(bias=False, params_dtype=params_dtype, skip_init=True, device=device)
        up = lambda: ColumnParallelLinear(in_features, hidden_features, gather_output=False, **common)  # noqa: E731
        self.gate_proj = nn.ModuleList(up() for _ in range(num_layers))
        self.vision_dense_h_to_4h_list = _per_layer(self.vision_layer_range, up)
        self.vision_dense_4h_to_h_list = _per_layer(
            self.vision_layer_range,
            lambda: RowParallelLinear(hidden_features, in_features, input_is_parallel=True, **common),
        )
        self.vision_gate_proj = _per_layer(self.vision_layer_range, up)

    def mlp_forward(self, hidden_states: torch.Tensor, **kw_args) -> torch.Tensor:
        layer_id = int(kw_args["layer_id"])  # SAT passes the index as a 0-d tensor
        mlp = self.transformer.layers[layer_id].mlp
        gate = self.gate_proj[layer_id]

        def language(x: torch.Tensor) -> torch.Tensor:
            return mlp.dense_4h_to_h(mlp.activation_func(gate(x)) * mlp.dense_h_to_4h(x))

        vision = _vision_rows(self, kw_args)
        if vision is None:
            return language(hidden_states).contiguous()
        key = str(layer_id)

        def vision_expert(x: torch.Tensor) -> torch.Tensor:
            up = self.vision_dense_h_to_4h_list[key](x)
            return self.vision_dense_4h_to_h_list[key](up * mlp.activation_func(self.vision_gate_proj[key](x)))

        return _routed(hidden_states, vision, language, vision_expert).contiguous()

    def copy_param(self) -> None:
        """Start every vision expert as a copy of its layer's language MLP (how CogVLM initialises training)."""
        with torch.no_grad():
            for i in self.vision_layer_range:
                mlp = self.transformer.layers[i].mlp
                self.vision_gate_proj[str(i)].weight.copy_(self.gate_proj[i].weight)
                self.vision_dense_h_to_4h_list[str(i)].weight.copy_(mlp.dense_h_to_4h.weight)
                self.vision_dense_4h_to_h_list[str(i)].weight.copy_(mlp.dense_4h_to_h.weight)


class LlamaVisionExpertAttnMixin(BaseMixin):
    """LLaMA self-attention (RoPE, base 10000) whose qkv and output projections switch to the vision expert per token.

    q, k and v come from the expert of each token; RoPE (``position_ids``), the attention hook (``attention_fn``:
    SAT's default, or e.g. ``CachedAutoregressiveMixin``'s) and the mask then see one sequence.
    """

    def __init__(self, hidden_size: int, num_heads: int, num_layers: int = 28, num_vision_layers: int = 0,
                 use_vision_expert: bool = True, vision_layer_range: Sequence[int] | None = None,
                 params_dtype: torch.dtype = torch.float, device: torch.device | str = "cpu"):  # fmt: skip
        super().__init__()
        self.hidden_size = hidden_size
        self.num_attention_heads = num_heads
        self.hidden_size_per_attention_head = divide(hidden_size, num_heads)
        self.num_attention_heads_per_partition = divide(num_heads, get_model_parallel_world_size())
        self.inner_hidden_size = num_heads * self.hidden_size_per_attention_head
        # Built on the default device, never on meta: the frequencies are computed here, not loaded.
        self.rotary_emb = FastRotaryEmbedding(hidden_size // num_heads, pos_idx_in_fp32=False)
        self.num_layers = num_layers
        self.num_vision_layers = num_vision_layers
        self.vision_layer_range = _layer_range(vision_layer_range, num_vision_layers, num_layers)
        self.use_vision_expert = use_vision_expert
        if use_vision_expert:
            common = dict(bias=False, params_dtype=params_dtype, skip_init=True, device=device)
            self.vision_query_key_value_list = _per_layer(
                self.vision_layer_range,
                lambda: ColumnParallelLinear(hidden_size, 3 * hidden_size, stride=3, gather_output=False, **common),
            )
            self.vision_dense_list = _per_layer(
                self.vision_layer_range,
                lambda: RowParallelLinear(
                    self.inner_hidden_size, hidden_size, input_is_parallel=True, final_bias=False, **common
                ),
            )

    def attention_forward(self, hidden_states: torch.Tensor, mask: torch.Tensor, **kw_args) -> torch.Tensor:
        layer_id = int(kw_args["layer_id"])  # SAT passes the index as a 0-d tensor
        attention = self.transformer.layers[layer_id].attention
        attention_fn = attention.hooks.get("attention_fn", attention_fn_default)
        vision = _vision_rows(self, kw_args) if self.use_vision_expert else None
        key = str(layer_id)

        if vision is None:
            mixed = attention.query_key_value(hidden_states)
        else:
            mixed = _routed(hidden_states, vision, attention.query_key_value, self.vision_query_key_value_list[key])
        query, key_layer, value = (attention._transpose_for_scores(t) for t in split_tensor_along_last_dim(mixed, 3))
        position_ids = kw_args["position_ids"]
        query, key_layer = self.rotary_emb(query, key_layer, position_ids, max_seqlen=position_ids.max() + 1,
                                           layer_id=layer_id)  # fmt: skip
        dropout = attention.attention_dropout if attention.training else None
        context = attention_fn(query, key_layer, value, mask, dropout, **kw_args)
        context = context.permute(0, 2, 1, 3).contiguous()
        context = context.view(*context.shape[:-2], attention.hidden_size_per_partition)

        if vision is None:
            output = attention.dense(context)
        else:
            output = _routed(context, vision, attention.dense, self.vision_dense_list[key])
        if attention.training:
            output = attention.output_dropout(output)
        return output.contiguous()

    def copy_param(self) -> None:
        """Start every vision expert as a copy of its layer's language attention (how CogVLM initialises training)."""
        with torch.no_grad():
            for i in self.vision_layer_range:
                attention = self.transformer.layers[i].attention
                self.vision_query_key_value_list[str(i)].weight.copy_(attention.query_key_value.weight)
                self.vision_dense_list[str(i)].weight.copy_(attention.dense.weight)
