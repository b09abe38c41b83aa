"""THUDM ChatGLM3-6B remote-code files (``model_type: chatglm``) → SAT `ChatGLM3Model`.

The files are ChatGLM2's (see `.chatglm2`); two things differ on the SAT side. SAT's ChatGLM3 computes
``silu(w2(x)) * dense_h_to_4h(x)``, so the halves of ``dense_h_to_4h = [gate; up]`` swap slots: gate →
``mixins.mlp.w2.{layer}``, up → ``dense_h_to_4h``. And ``rope_ratio`` (32k: 50, 128k: 500) multiplies the RoPE
base, which SAT's ChatGLM3 takes as ``base_scale``. GLM-4 files compute the same function and load here too.
ChatGLM3 is also the default for a ChatGLM2/3 config that names neither release (see `._glm.release`).
"""

from __future__ import annotations

from ..family import Family
from ..hf_checkpoint import HFCheckpoint
from ._glm import (
    SAT_MLP_IN,
    SAT_MLP_W2,
    config_error,
    release,
    released_as,
    rope_ratio,
    set_rope,
    thudm_args,
    thudm_dims,
    thudm_hf_config,
    thudm_spec,
)

CLASS = "ChatGLM3Model"


def chatglm3_spec(ckpt: HFCheckpoint, keys: frozenset[str]):
    return thudm_spec(ckpt, "hf-chatglm3->sat-chatglm3", gate=SAT_MLP_W2, up=SAT_MLP_IN)


def require_base_scaling(ckpt: HFCheckpoint, class_name: str) -> None:
    """Refuse a ChatGLM2 config whose ``rope_ratio`` divides positions: ChatGLM3/4 read it as a base scale."""
    if release(ckpt) == "chatglm2" and rope_ratio(ckpt) != 1:
        raise config_error(
            ckpt,
            f"rope_ratio={ckpt.get('rope_ratio')} of a ChatGLM2 checkpoint divides positions (ChatGLM2-6B-32k), "
            f"but SAT's {class_name} multiplies the RoPE base by it",
            "SAT has no ChatGLM2 model with position interpolation; loading would give wrong outputs, so it is refused",
        )


def chatglm3_args(ckpt: HFCheckpoint) -> dict:
    args = thudm_args(ckpt, CLASS)
    require_base_scaling(ckpt, CLASS)
    return {**args, "base_scale": rope_ratio(ckpt)}


def chatglm3_finish(model, ckpt: HFCheckpoint) -> None:
    # ChatGLM3Model already built its base from base_scale; this sets the rotary dim when kv_channels != hidden/heads.
    set_rope(model, ckpt, 10000.0 * rope_ratio(ckpt), thudm_dims(ckpt)["rotary_dim"])


def chatglm3_hf_config(model, args, recorded: dict | None):
    return thudm_hf_config(model, args, recorded, "chatglm3")


FAMILY = Family(
    name="chatglm3",
    model_types=("chatglm",),
    sat_class="sat.model.official.chatglm3_model.ChatGLM3Model",
    args=chatglm3_args,
    spec=chatglm3_spec,
    dims=thudm_dims,
    accepts=released_as("chatglm3"),
    finish=chatglm3_finish,
    hf_config=chatglm3_hf_config,
)
