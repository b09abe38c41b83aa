"""SAT specs, one file per HF family; `FAMILIES` is the registry `from_hf` searches."""

from . import llama, mixtral

FAMILIES = (llama.FAMILY, mixtral.FAMILY)
