"""THUDM ChatGLM2-6B remote-code files (``model_type: chatglm``) → SAT `ChatGLM2Model` (RMSNorm, SwiGLU, GQA).

The files keep q, k and v in one ``query_key_value`` whose rows are already SAT's global ``[Q; K; V]`` (both with
``multi_query_attention``; without it, rows per head are reordered), and rotate interleaved pairs on the first
half of each head, as SAT's ChatGLM2 does: no permutation. ``dense_h_to_4h`` stores ``[gate; up]``; SAT's ChatGLM2
computes ``silu(dense_h_to_4h(x)) * w2(x)``, so gate → ``dense_h_to_4h`` and up → ``mixins.mlp.w2.{layer}``.
ChatGLM2-6B-32k's ``rope_ratio`` divides positions, which SAT's ChatGLM2 cannot do: such configs are refused.
Shared parts (table, release detection): `._glm`.
"""

from __future__ import annotations

from ..family import Family
from ..hf_checkpoint import HFCheckpoint
from ._glm import (
    SAT_MLP_IN,
    SAT_MLP_W2,
    config_error,
    released_as,
    rope_ratio,
    set_rope,
    thudm_args,
    thudm_dims,
    thudm_hf_config,
    thudm_spec,
)

CLASS = "ChatGLM2Model"


def chatglm2_spec(ckpt: HFCheckpoint, keys: frozenset[str]):
    return thudm_spec(ckpt, "hf-chatglm2->sat-chatglm2", gate=SAT_MLP_IN, up=SAT_MLP_W2)


def chatglm2_args(ckpt: HFCheckpoint) -> dict:
    args = thudm_args(ckpt, CLASS)
    if rope_ratio(ckpt) != 1:
        raise config_error(
            ckpt,
            f"rope_ratio={ckpt.get('rope_ratio')} asks for ChatGLM2-6B-32k's position interpolation (positions "
            f"divided by rope_ratio), which SAT's {CLASS} does not compute",
            "if this is a ChatGLM3 or GLM-4 checkpoint (rope_ratio scales the RoPE base), call "
            "ChatGLM3Model.from_hf(...) or ChatGLM4Model.from_hf(...)",
        )
    return args


def chatglm2_finish(model, ckpt: HFCheckpoint) -> None:
    set_rope(model, ckpt, 10000.0, thudm_dims(ckpt)["rotary_dim"])


def chatglm2_hf_config(model, args, recorded: dict | None):
    return thudm_hf_config(model, args, recorded, "chatglm2")


FAMILY = Family(
    name="chatglm2",
    model_types=("chatglm",),
    sat_class="sat.model.official.chatglm2_model.ChatGLM2Model",
    args=chatglm2_args,
    spec=chatglm2_spec,
    dims=thudm_dims,
    accepts=released_as("chatglm2"),
    finish=chatglm2_finish,
    hf_config=chatglm2_hf_config,
)
