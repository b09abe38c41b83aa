"""SAT model classes that SAT's pip package lacks, written on SAT's public building blocks.

This package stretches the house rule that ``adapters.sat`` holds only the hook, layouts, CPU fallbacks and specs:
CogVLM's SAT classes live in the THUDM/CogVLM repository, which cannot be installed, and loading an HF CogVLM into
SAT needs a SAT class to load into. The classes here keep the CogVLM repository's parameter names, mixin names and
forward semantics, so that its SAT checkpoints (``model_class: CogVLMModel``) and its inference and fine-tuning
scripts work with them unchanged. They need neither xformers nor timm nor apex: attention is SAT's default
(``torch.nn.functional.scaled_dot_product_attention`` where the mask allows it).

* `CogVLMModel` (`.cogvlm`): LLaMA with vision-expert attention and MLP (`.mixins`), the EVA2-CLIP-E tower and the
  GLU projector (`.eva_clip`, `.cogvlm`). Importing this package registers it in SAT's model registry.
* `CogAgentModel` (`.cogagent`): CogVLM with cross-attention in every layer to a high-resolution EVA-02-CLIP-L
  tower (`.cross_vision`); registered the same way.
"""

from .cogagent import CogAgentImageMixin, CogAgentModel
from .cogvlm import GLU, CogVLMModel, ImageMixin, sat_inputs_from_token_types
from .cross_vision import ExternalVisionModel
from .eva_clip import EVA2CLIPModel, tower_args
from .mixins import LlamaVisionExpertAttnMixin, LlamaVisionExpertFCMixin

__all__ = [
    "GLU",
    "CogVLMModel",
    "EVA2CLIPModel",
    "ImageMixin",
    "LlamaVisionExpertAttnMixin",
    "LlamaVisionExpertFCMixin",
    "sat_inputs_from_token_types",
    "tower_args",
    "CogAgentImageMixin",
    "CogAgentModel",
    "ExternalVisionModel",
]
