"""The tensors `save_pretrained` writes for a config, at full size, found on the meta device (no memory, no init).

transformers builds the model class the config names (``architectures[0]``, else the family's usual head) under
``torch.device("meta")``; then the state dict goes through the steps `PreTrainedModel.save_pretrained` takes before
writing: drop ``_keys_to_ignore_on_save``, drop tied aliases (`remove_tied_weights_from_state_dict`), and undo
transformers' load-time conversions (`revert_weight_conversion`: e.g. Mixtral's fused experts back to
``block_sparse_moe.experts.{e}.w1/w2/w3``). What is left is the name, shape and dtype of every tensor in the file.
"""

from __future__ import annotations

import torch
import transformers
from transformers.core_model_loading import revert_weight_conversion
from transformers.modeling_utils import remove_tied_weights_from_state_dict

from sparse import Tensor

__all__ = ["config_dtype", "hf_tensors"]

# The class a config without ``architectures`` (or naming a class transformers lacks) was published from.
DEFAULT_CLASS = {"bert": "BertForMaskedLM", "roberta": "RobertaForMaskedLM", "gpt2": "GPT2LMHeadModel",
                 "llama": "LlamaForCausalLM", "mixtral": "MixtralForCausalLM", "vit": "ViTModel",
                 "clip": "CLIPModel", "glm": "GlmForCausalLM"}  # fmt: skip


def config_dtype(config: dict, default: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype the release was saved in: ``dtype`` (transformers 5) or ``torch_dtype``, else `default`."""
    name = config.get("dtype") or config.get("torch_dtype")
    return getattr(torch, name) if isinstance(name, str) else default


def _model_class(config: dict, model_type: str) -> type:
    for name in (config.get("architectures") or [])[:1]:
        if hasattr(transformers, name):
            return getattr(transformers, name)
    return getattr(transformers, DEFAULT_CLASS[model_type])


def hf_tensors(config: dict, model_type: str) -> list[Tensor]:
    """Every tensor `save_pretrained` would write for `config`, in its order; `model_type` if the config has none."""
    model_type = config.get("model_type") or model_type
    fields = {k: v for k, v in config.items() if k != "model_type"}
    hf_config = transformers.AutoConfig.for_model(model_type, **fields)
    with torch.device("meta"):
        model = _model_class(config, model_type)(hf_config)
    state = model.state_dict()
    for key in model._keys_to_ignore_on_save or ():
        state.pop(key, None)
    state = remove_tied_weights_from_state_dict(state, model)
    state = revert_weight_conversion(model, state)
    dtype = config_dtype(config)
    return [(name, tuple(t.shape), dtype if t.is_floating_point() else t.dtype) for name, t in state.items()]
