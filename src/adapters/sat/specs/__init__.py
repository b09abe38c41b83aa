"""SAT specs, one file per HF family; `FAMILIES` is the registry `from_hf` searches."""

from . import bert, chatglm, chatglm2, chatglm3, clip, cogagent, cogvlm, glm4, glm4v, gpt2, llama, mixtral, roberta, vit

FAMILIES = (
    llama.FAMILY,
    mixtral.FAMILY,
    gpt2.FAMILY,
    bert.FAMILY,
    roberta.FAMILY,
    vit.FAMILY,
    clip.FAMILY,
    chatglm.FAMILY,
    chatglm2.FAMILY,
    chatglm3.FAMILY,
    glm4.FAMILY,
    glm4.HF_FAMILY,
    glm4v.FAMILY,
    cogvlm.FAMILY,
    cogagent.FAMILY,
)
