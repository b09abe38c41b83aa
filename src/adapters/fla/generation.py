"""FLA's `generate()` on transformers that name the generation cache `cache` (5.24 and later).

The upstream cause (flash-linear-attention 0.6.0 against transformers 5.24.0):

- transformers 5.24 renamed the cache argument of generation from `past_key_values` to `cache`:
  `GenerationMixin.prepare_inputs_for_generation` now takes `cache` (with
  `@deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")`) and returns it as `model_inputs["cache"]`;
  `_update_model_kwargs_for_generation` reads `outputs["cache"]`, and model outputs store `past_key_values=` under
  the key `cache`.
- FLA's `FLAGenerationMixin.prepare_inputs_for_generation` still takes `past_key_values` by name (None: generate
  now passes `cache`) and calls the parent with `past_key_values=None` *and* the real cache in `**kwargs`. The
  parent keeps `cache` ("Both `past_key_values` and `cache` are set ..."), and `generate` calls the model with
  `cache=<state>`.
- `RWKV7ForCausalLM.forward` (like every FLA model) takes `past_key_values`; `cache` falls into its `**kwargs`
  and is never read. So every step after the prompt runs the one new token from an *empty* recurrent state:
  greedy decoding goes wrong from the second generated token, with no error.

The shim, installed by `import adapters.fla` only where the parent takes `cache`, replaces
`FLAGenerationMixin.prepare_inputs_for_generation` with one that accepts either name, calls transformers' own
preparation with `cache=`, and hands the model its state as `past_key_values`, the name FLA's forwards read. On
transformers that still say `past_key_values` (5.23 and earlier) nothing is installed.
"""

from __future__ import annotations

import inspect

from transformers.generation import GenerationMixin

__all__ = ["install_generation_shim", "needs_generation_shim"]

_MARK = "_adapters_cache_shim"


def needs_generation_shim() -> bool:
    """Whether this transformers passes the generation cache as `cache` (5.24+), which FLA 0.6 does not read."""
    return "cache" in inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters


def install_generation_shim() -> bool:
    """Install the shim on FLA's generation mixin when this transformers needs it (idempotent); True if active."""
    from fla.models.generation_utils import FLAGenerationMixin

    if not needs_generation_shim():
        return False
    if not getattr(FLAGenerationMixin.prepare_inputs_for_generation, _MARK, False):
        FLAGenerationMixin.prepare_inputs_for_generation = _prepare_inputs_for_generation
    return True


def _prepare_inputs_for_generation(
    self, input_ids=None, cache=None, past_key_values=None, cache_position=None, next_sequence_length=None, **kwargs
):
    # FLA's own rule, kept: a `cache_position` (older callers) says how many tokens are new.
    if cache_position is not None and next_sequence_length is None:
        next_sequence_length = len(cache_position)
    inputs = GenerationMixin.prepare_inputs_for_generation(
        self,
        input_ids,
        next_sequence_length=next_sequence_length,
        cache=cache if cache is not None else past_key_values,
        **kwargs,
    )
    if "cache" in inputs:  # FLA's forwards read the state under its old name
        inputs["past_key_values"] = inputs.pop("cache")
    return inputs


setattr(_prepare_inputs_for_generation, _MARK, True)
