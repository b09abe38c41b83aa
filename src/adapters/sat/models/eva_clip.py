"""CogVLM's vision tower: SAT's own `EVA2CLIPModel`, and the args CogVLM builds it with.

SAT 0.4.12 ships ``sat.model.official.eva_clip_model.EVA2CLIPModel`` with the same modules and forward code as the
CogVLM repository's ``utils/models/eva_clip_model.py``: a `ViTModel`-style patch embedding (``patch_embedding``),
the whole position table added (``pos_embedding``), post-sublayer LayerNorms (``newpost``: ``x + LN1(attn(x))``,
``x + LN2(mlp(x))``), and a final mixin that drops the CLS row (``final``). The one difference is attention: the
CogVLM repository always adds an ``xattn`` mixin that calls ``xformers.ops.memory_efficient_attention`` with scale
``head_dim ** -0.5`` and no mask; SAT adds it only when ``USE_XFORMERS`` is set. Without it, SAT's default
attention computes the same softmax attention (scale ``1/sqrt(head_dim)``, full mask, torch SDPA). The mixin has no
parameters, so the state dict is the same either way. We therefore reuse SAT's class rather than write another.

Tower layout (state-dict names under the host's ``mixins.eva.vit_model.``), ``Hv`` the tower width,
``N = (image_size / patch_size)^2``::

    mixins.patch_embedding.proj.{weight [Hv, 3, p, p], bias}
    transformer.word_embeddings.weight        [1, Hv]       the CLS token (vocab_size 1, pre_len 1)
    transformer.position_embeddings.weight    [1 + N, Hv]   CLS first, then patches row by row
    transformer.layers.{j}.{input_layernorm, attention.query_key_value (rows [Q; K; V]), attention.dense,
                            post_attention_layernorm, mlp.dense_h_to_4h, mlp.dense_4h_to_h}.{weight, bias}

Model parallel (``model_parallel_size`` copied from the host's args): the tower's layers are SAT's parallel layers,
``query_key_value`` (stride 3) and ``mlp.dense_h_to_4h`` cut by rows with their biases, ``attention.dense`` and
``mlp.dense_4h_to_h`` by columns with their biases whole (``row_parallel_linear_final_bias=False``: each rank adds
its share of the bias before the all-reduce). Every rank holds the patch embedding, CLS and position tables whole.
"""

from __future__ import annotations

import argparse

from sat.model.official.eva_clip_model import EVA2CLIPModel

__all__ = ["EVA2CLIPModel", "tower_args"]

# Run fields the tower takes from the host's namespace, as CogVLM's ``override_dist_dtype_device_args`` copies them.
_RUN_FIELDS = ("world_size", "rank", "local_rank", "skip_init", "use_gpu_initialization", "deepspeed", "bf16",
               "fp16", "mode", "device")  # fmt: skip


def tower_args(args: argparse.Namespace) -> argparse.Namespace:
    """`EVA2CLIPModel` args for the tower of a CogVLM built from `args`.

    ``args.eva_args`` (a dict: ``num_layers``, ``hidden_size``, ``image_size``, ...) gives the architecture; the run
    fields (``mode``, ``world_size``, ``fp16``, ``device``, ...) and ``model_parallel_size`` come from `args`. Outside
    ``mode="inference"`` the tower trains without dropout and with ``vit_checkpoint_activations`` (else the host's
    ``checkpoint_activations``), as in the CogVLM repository. Unlike there, a missing run field is simply left to
    the tower's default (a namespace from ``CogVLMModel.get_args()`` has none; it counts as inference), and
    ``args.eva_args`` is copied, never written to.
    """
    fields = dict(args.eva_args)
    if hasattr(args, "model_parallel_size"):
        fields["model_parallel_size"] = args.model_parallel_size
    fields.update({name: getattr(args, name) for name in _RUN_FIELDS if hasattr(args, name)})
    if getattr(args, "mode", "inference") != "inference":
        checkpointing = getattr(args, "vit_checkpoint_activations", getattr(args, "checkpoint_activations", False))
        fields.update(checkpoint_activations=checkpointing, hidden_dropout=0.0, attention_dropout=0.0,
                      checkpoint_num_layers=getattr(args, "checkpoint_num_layers", 1))  # fmt: skip
    return EVA2CLIPModel.get_args(**fields)
